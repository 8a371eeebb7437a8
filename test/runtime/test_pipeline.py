"""The frame pipeline on ONNX Runtime CPU: values against independent computations, and bad input."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from hsi_xai_node.classes import colourise
from hsi_xai_node.errors import FrameError, InputError
from hsi_xai_node.model_card import ModelError, load_model
from hsi_xai_node.runtime import Pipeline, PipelineConfig
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.frontend import FrontEnd
from test.conftest import REPO

MODEL = REPO / "models" / "unet_bundled_3.onnx"


@pytest.fixture(scope="module")
def drive(hsi_drive):
    gen = DriveGenerator(hsi_drive, seed=2001, render_cameras=False)
    return gen, gen.references()


@pytest.fixture(scope="module")
def pipeline(drive):
    if not MODEL.exists():
        pytest.skip("bundled models are made by `hsi-xai train-segmentation --out models`")
    _, (dark, white) = drive
    return Pipeline(PipelineConfig(model=str(MODEL), backend="ort-cpu", methods=("activation", "seg_gradcam", "spectral"),
                                   class_maps=True, overlay_scale="frame"), dark, white)


def test_the_graph_the_pipeline_runs_is_tensorrt_compatible(pipeline):
    from hsi_xai_node.explain import check_tensorrt
    assert check_tensorrt(pipeline.graph.model, "pipeline graph") == []


def test_the_default_pipeline_graph_computes_only_what_it_reads(drive):
    """The default methods (activation maps, Seg-Grad-CAM and HiRes at the layer before the final conv):
    the closed form holds although `activation` also reads that layer, so there is no backward node and no
    multiply-add beyond the forward's; every output is one the pipeline reads, and nothing else is computed."""
    import onnx

    from hsi_xai_node.explain import multiply_adds

    _, (dark, white) = drive
    p = Pipeline(PipelineConfig(model=str(MODEL), backend="ort-cpu"), dark, white)
    names = [n.name for n in p.graph.model.graph.node]
    assert not [n for n in names if n.startswith("xai/backward/")]
    assert {o.name for o in p.graph.model.graph.output} == set(p._plan.values())
    assert set(p.engine.outputs) == set(p._plan.values())
    forward = onnx.load(str(MODEL))
    assert multiply_adds(p.graph.model) <= 1.001 * multiply_adds(forward)
    # every node leads to an output (nothing is computed for nobody)
    needed = {o.name for o in p.graph.model.graph.output}
    for node in reversed(p.graph.model.graph.node):
        assert set(node.output) & needed, node.name
        needed.update(node.input)
    # with HiRes asked for as a class map, the same graph gains its output and still no backward
    q = Pipeline(PipelineConfig(model=str(MODEL), backend="ort-cpu", class_maps=True), dark, white)
    assert any(o.method == "hires" for o in q.graph.outputs.values())
    assert not [n for n in q.graph.model.graph.node if n.name.startswith("xai/backward/")]


def test_frame_result_matches_independent_computation(pipeline, drive, hsi_drive):
    gen, (dark, white) = drive
    frame = gen.frame(20)
    r = pipeline.process(frame.raw)
    loaded = load_model(MODEL, profile=hsi_drive)
    card = loaded.card
    cube = FrontEnd(hsi_drive, dark, white, card.frontend_config()).process(frame.raw).cube.data
    logits = ort.InferenceSession(loaded.onnx_bytes, providers=["CPUExecutionProvider"]).run(
        None, {"input": card.model_input(cube)})[0]
    i = card.input
    window = (slice(i.crop_top, i.crop_top + i.height), slice(i.crop_left, i.crop_left + i.width))
    np.testing.assert_array_equal(r.labels[window], card.label_ids()[logits[0].argmax(0)])
    outside = np.ones(r.labels.shape, bool)
    outside[window] = False
    assert (r.labels[outside] == 0).all() and r.labels.shape == (216, 409)
    np.testing.assert_array_equal(r.segmentation, colourise(r.labels))
    assert np.mean(r.labels[window] == frame.labels[window]) > 0.8  # and it segments the scene
    # overlays: the preview shows through outside the window, the blend inside
    for overlay in (r.gradcam_overlay, r.activation_overlay):
        assert overlay.shape == (216, 409, 3) and overlay.dtype == np.uint8
        np.testing.assert_array_equal(overlay[outside], r.preview[outside])
        assert np.abs(overlay[window].astype(int) - r.preview[window]).mean() > 5
    present = np.isfinite(r.residuals["activation"])
    assert present.sum() >= 3 and r.residuals["activation"][present].max() < 1e-5
    assert r.spectra.shape == (5, 3)
    assert r.class_maps["activation@dec1"].shape == (5, 208, 400)
    assert set(r.timings_ms) == {"frontend", "engine", "post", "total"}


def test_bad_frames_raise_and_the_next_frame_still_works(pipeline, drive):
    gen, _ = drive
    with pytest.raises(FrameError, match="frame is 1080x2048"):
        pipeline.process(gen.frame(0).raw[:1080])
    with pytest.raises(FrameError, match="dtype float32"):
        pipeline.process(gen.frame(0).raw.astype(np.float32))
    assert pipeline.process(gen.frame(1).raw).labels.any()


def test_model_that_does_not_fit_the_sensor_is_refused(drive):
    if not MODEL.exists():
        pytest.skip("no bundled model")
    with pytest.raises(ModelError, match="sensor profile 'imec-665-975'"):
        Pipeline(PipelineConfig(model=str(MODEL), profile="imec-665-975", backend="ort-cpu"))


def test_bad_config():
    with pytest.raises(InputError, match="overlay_alpha"):
        PipelineConfig(overlay_alpha=1.5).validated()
    with pytest.raises(InputError, match=r"colormap 'rainbow': one-sided maps need a sequential colormap"):
        PipelineConfig(colormap="rainbow").validated()
    with pytest.raises(InputError, match=r"colormap 'coolwarm': one-sided maps need a sequential colormap"):
        PipelineConfig(colormap="coolwarm").validated()
    with pytest.raises(InputError, match=r"signed_colormap 'jet': signed maps need a diverging colormap"):
        PipelineConfig(signed_colormap="jet").validated()
    with pytest.raises(InputError, match=r"overlay_scale must be one of \['card', 'running', 'frame'\]"):
        PipelineConfig(overlay_scale="auto").validated()


def test_header_passes_through_and_references_can_be_replaced(pipeline, drive):
    gen, (dark, white) = drive
    raw = gen.frame(3).raw
    header = {"stamp_ns": gen.frame(3).stamp_ns, "frame_id": "hsi_camera"}
    before = pipeline.process(raw, header)
    assert before.header is header
    # a white reference not brighter than the dark one would make NaNs: refused, old references kept
    with pytest.raises(FrameError, match="not brighter than the dark reference"):
        pipeline.set_references(dark, dark)
    np.testing.assert_array_equal(pipeline.process(raw).labels, before.labels)
    # a brighter white reference lowers every reflectance: the preview darkens
    pipeline.set_references(dark, (white.astype(np.int32) * 2).clip(0, 65535).astype(np.uint16))
    darker = pipeline.process(raw)
    assert darker.preview.mean() < before.preview.mean() - 5
    pipeline.set_references(dark, white)
    np.testing.assert_array_equal(pipeline.process(raw).preview, before.preview)


def test_explain_classes_limit_the_overlays_to_those_classes(pipeline, drive):
    gen, (dark, white) = drive
    raw = gen.frame(8).raw
    full = pipeline.process(raw)
    only_road = Pipeline(PipelineConfig(model=str(MODEL), backend="ort-cpu", methods=("activation", "seg_gradcam"),
                                        explain_classes=("road",), overlay_scale="frame"), dark, white).process(raw)
    road = full.labels == 1
    assert road.any() and (~road & (full.labels > 0)).any()
    np.testing.assert_array_equal(only_road.gradcam_overlay[road], full.gradcam_overlay[road])
    np.testing.assert_array_equal(only_road.gradcam_overlay[~road], full.preview[~road])
    with pytest.raises(InputError, match=r"explain_classes \['pedestrian'\] are not classes"):
        Pipeline(PipelineConfig(model=str(MODEL), backend="ort-cpu", explain_classes=("pedestrian",)), dark, white)


BUNDLED = REPO / "models" / "unet_bundled_25pn.onnx"


@pytest.fixture(scope="module")
def bundled(drive):
    if not BUNDLED.exists():
        pytest.skip("no bundled model")
    _, (dark, white) = drive
    return dark, white


def _float_map(pipeline, raw, method):
    """The engine's float map (K, H, W) of `method` at the penultimate layer, and the logits' argmax (the
    pipeline must read its float maps: class_maps=True)."""
    fe = pipeline.frontend.process(raw)
    x = pipeline.card.model_input(fe.cube.data)
    name = next(n for n, o in pipeline.graph.outputs.items() if o.method == method and o.layer == "dec1")
    out = pipeline.engine.run({pipeline.card.input.tensor: x, **pipeline.scale_feeds()}, [name, pipeline.graph.logits])
    return out[name][:, 0], out[pipeline.graph.logits][0].argmax(0)


def test_card_scales_give_a_value_the_same_colour_in_every_frame(bundled, drive):
    """overlay_scale card: each class's map is divided by the card's reference for that class (the 99th
    percentile on validation drives), the same in every frame; signed maps on the diverging colormap."""
    import cv2

    from hsi_xai_node.model_card import ModelCard
    from hsi_xai_node.runtime.overlay import colormap_lut, to_uint8

    gen, _ = drive
    p = Pipeline(PipelineConfig(backend="ort-cpu", methods=("activation", "seg_gradcam"), focus_class="road",
                                class_maps=True), *bundled)
    assert p.scales.mode == "card"
    card = ModelCard.load(BUNDLED.with_suffix(".json"))
    names = [c.name for c in card.classes]
    expect = np.array([card.overlay_scales["activation@dec1"]["classes"][n] for n in names], np.float32)
    for index in (2, 9):
        feeds = p.scale_feeds()
        np.testing.assert_array_equal(feeds["overlay_scale.activation.dec1"].ravel(), expect)
        raw = gen.frame(index).raw
        r = p.process(raw)
        act, channel = _float_map(p, raw, "activation")
        u8 = to_uint8(act, expect[:, None, None], signed=True)  # the host twin of the graph's scaling
        fused = np.take_along_axis(u8, channel[None], 0)[0]
        rows, cols = p._window()
        coloured = colormap_lut("coolwarm")[fused]
        expected = cv2.addWeighted(r.preview[rows, cols], 0.5, coloured, 0.5, 0.0)
        off = np.abs(r.activation_overlay[rows, cols].astype(int) - expected).max(-1)
        assert (off > 1).mean() < 1e-3  # float32 rounding at .5 may move a grey level by one
        # the focus overlay: road's own map everywhere in the window, its predicted region outlined in white
        road = channel == names.index("road")
        assert road.any()
        # border pixels: road pixels with a 4-neighbour outside road (the window's edge counts as outside)
        cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
        edge = road & ~cv2.erode(road.astype(np.uint8), cross, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
        white = (r.focus_overlay[rows, cols] == 255).all(-1)
        assert white[edge].mean() > 0.95 and not (white & ~road).any()  # traced on the region's own border pixels
        inside = ~cv2.dilate((edge | ~road).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        gradcam, _ = _float_map(p, raw, "seg_gradcam")
        ref = card.overlay_scales["seg_gradcam@dec1"]["classes"]["road"]
        focus = cv2.addWeighted(r.preview[rows, cols], 0.5,
                                colormap_lut("inferno")[to_uint8(gradcam[names.index("road")], ref, False)], 0.5, 0.0)
        assert (np.abs(r.focus_overlay[rows, cols][inside].astype(int) - focus[inside]).max(-1) > 1).mean() < 1e-3


def test_running_scales_follow_each_class_peak_and_frame_scales_are_per_frame(bundled, drive):
    from hsi_xai_node.runtime.overlay import RUNNING_RATE

    gen, _ = drive
    p = Pipeline(PipelineConfig(backend="ort-cpu", methods=("activation",), overlay_scale="running", class_maps=True),
                 *bundled)
    assert p.scales.mode == "running" and p.scale_feeds()["overlay_scale.activation.dec1"].max() == 0.0  # own peak
    peaks = []
    for index in (1, 4, 7):
        act, _ = _float_map(p, gen.frame(index).raw, "activation")
        peaks.append(np.abs(act).reshape(len(act), -1).max(1))
        p.process(gen.frame(index).raw)
    expect = peaks[0]
    for peak in peaks[1:]:
        expect = expect + RUNNING_RATE * (peak - expect)
    u8 = next(iter(p.graph.scale_inputs))
    np.testing.assert_allclose(p.scales.scale(u8), expect, rtol=1e-5)
    legends = p.legends()
    assert set(legends) == {"activation_overlay"} and legends["activation_overlay"].dtype == np.uint8


def test_a_card_without_scales_falls_back_to_running_and_says_so(drive, caplog):
    gen, (dark, white) = drive
    caplog.set_level("WARNING", logger="hsi_xai_node.runtime.overlay")
    card = REPO / "models" / "unet_bundled_3.json"
    import json
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        doc = json.loads(card.read_text())
        doc.pop("overlay_scales", None)
        (Path(tmp) / "m.json").write_text(json.dumps(doc))
        shutil.copy(MODEL, Path(tmp) / "m.onnx")
        p = Pipeline(PipelineConfig(model=str(Path(tmp) / "m.onnx"), backend="ort-cpu", methods=("activation",)),
                     dark, white)
    assert p.scales.mode == "running" and "has no overlay scale for ['activation@dec1']" in caplog.text


def test_an_input_attribution_as_the_overlay_with_its_conservation_and_bands(drive, hsi_drive):
    """overlay_method deeplift (frame scale): the explanation overlay is DeepLIFT's per-pixel map of each pixel's
    predicted class, built here from the library graph's float map on the same input and the colour table (not the
    pipeline's code); per class, the per-band sums over the region add up to the map's sum there, and DeepLIFT's and
    LRP's conservation residuals come out per class and on the diagnostics' keys."""
    import cv2

    from hsi_xai_node.explain import SegmentationExplainConfig, build_segmentation_explainer
    from hsi_xai_node.runtime.overlay import colormap_lut, to_uint8

    gen, (dark, white) = drive
    p = Pipeline(PipelineConfig(model=str(MODEL), backend="ort-cpu", overlay_scale="frame",
                                methods=("activation", "deeplift", "lrp_epsilon"), overlay_method="deeplift"),
                 dark, white)
    raw = gen.frame(11).raw
    r = p.process(raw)
    loaded = load_model(MODEL, profile=hsi_drive)
    card = loaded.card
    x = card.model_input(FrontEnd(hsi_drive, dark, white, card.frontend_config()).process(raw).cube.data)
    import onnx
    eg = build_segmentation_explainer(onnx.load_model_from_string(loaded.onnx_bytes), card.input.tensor, card.logits,
                                      card.layers, SegmentationExplainConfig(methods=("deeplift",), uint8=False))
    names = eg.output_names()
    out = dict(zip(names, ort.InferenceSession(eg.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        names, {card.input.tensor: x})))
    by = {o.method: out[n] for n, o in eg.outputs.items()}
    maps, channel = by["deeplift"][:, 0], out[card.logits][0].argmax(0)
    peaks = np.abs(maps).max(axis=(1, 2))
    fused = np.take_along_axis(to_uint8(maps, peaks[:, None, None], signed=True), channel[None], 0)[0]
    rows, cols = p._window()
    expected = cv2.addWeighted(r.preview[rows, cols], 0.5, colormap_lut("coolwarm")[fused], 0.5, 0.0)
    off = np.abs(r.gradcam_overlay[rows, cols].astype(int) - expected).max(-1)
    assert (off > 1).mean() < 1e-3
    present = [c for c in range(maps.shape[0]) if (channel == c).any()]
    assert len(present) >= 3
    for c in present:  # the bands' sums over the region = the map's sum over the region
        in_region = maps[c][channel == c].sum(dtype=np.float64)
        assert abs(r.band_attributions["deeplift"][c].sum(dtype=np.float64) - in_region) <= \
            1e-5 * np.abs(maps[c][channel == c]).sum(dtype=np.float64) + 1e-6
    assert r.band_attributions["deeplift"].shape == (5, 3) and "lrp_epsilon" in r.band_attributions
    assert np.nanmax(r.residuals["deeplift"]) < 1e-3  # summation-to-delta on the real pipeline's frame
    assert np.isfinite(r.residuals["lrp_epsilon"][present]).all()  # what biases and epsilon absorb, per class
    values = r.conservation_values()
    assert set(values) == {"conservation_residual_max deeplift", "conservation_residual_max lrp_epsilon"}
    assert float(values["conservation_residual_max deeplift"]) == pytest.approx(np.nanmax(r.residuals["deeplift"]),
                                                                                rel=1e-2)
