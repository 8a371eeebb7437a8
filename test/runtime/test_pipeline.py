"""The frame pipeline on ONNX Runtime CPU: values against independent computations, and bad input."""

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
                                   class_maps=True), dark, white)


def test_the_graph_the_pipeline_runs_is_tensorrt_compatible(pipeline):
    from hsi_xai_node.explain import check_tensorrt
    assert check_tensorrt(pipeline.graph.model, "pipeline graph") == []


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
    with pytest.raises(InputError, match="unknown colormap 'rainbow'"):
        PipelineConfig(colormap="rainbow").validated()


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
                                        explain_classes=("road",)), dark, white).process(raw)
    road = full.labels == 1
    assert road.any() and (~road & (full.labels > 0)).any()
    np.testing.assert_array_equal(only_road.gradcam_overlay[road], full.gradcam_overlay[road])
    np.testing.assert_array_equal(only_road.gradcam_overlay[~road], full.preview[~road])
    with pytest.raises(InputError, match=r"explain_classes \['pedestrian'\] are not classes"):
        Pipeline(PipelineConfig(model=str(MODEL), backend="ort-cpu", explain_classes=("pedestrian",)), dark, white)
