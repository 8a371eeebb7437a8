"""The detection pipeline on a real (tiny, random-weight) exported detector, against the raw engine
outputs, hand-computed box mapping and blending, and its error cases."""

import dataclasses
import cv2
import numpy as np
import onnxruntime as ort
import pytest

from hsi_xai_node.errors import FrameError, InputError
from hsi_xai_node.runtime.detection import DetectionPipeline, DetectionPipelineConfig, load_rig
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.calibration import load_profile


@pytest.fixture(scope="module")
def frames():
    gen = DriveGenerator(load_profile("hsi-drive"), seed=41, render_hsi=False)
    return [{n: c.image for n, c in gen.frame(i * 9).cameras.items()} for i in range(2)]


@pytest.fixture(scope="module")
def pipeline(tiny_detector):
    return DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), backend="ort-cpu", threads=1,
                                                     explain_boxes=4))


def test_detections_are_the_engine_outputs(pipeline, frames):
    images = frames[0]
    result = pipeline.process(images, header="hdr")
    assert result.header == "hdr" and set(result.timings_ms) == {"frontend", "engine", "post", "total"}
    session = ort.InferenceSession(pipeline.loaded.model.SerializeToString(), providers=["CPUExecutionProvider"])
    boxes, scores, classes = session.run(["det_boxes", "det_scores", "det_classes"],
                                         {"image": pipeline.frontend(images)})
    kept = np.flatnonzero(classes[0] >= 0)
    assert len(kept) > 0 and len(result.detections) == len(kept)
    names = {c.channel: c.name for c in pipeline.card.classes}
    for d, k in zip(result.detections, kept):
        assert d.slot == k
        np.testing.assert_allclose(d.box, boxes[0, k], rtol=1e-5, atol=1e-3)
        assert d.score == pytest.approx(float(scores[0, k]), rel=1e-5)
        assert d.class_name == names[int(classes[0, k])]
    assert pipeline.cameras == ["rgb", "mir"] and pipeline.primary == "rgb"
    # the network view, made when read: the RGB camera registered into it, as bgr8
    registered = pipeline.frontend.register("rgb", images["rgb"])
    assert result.preview.shape == (256, 320, 3)
    np.testing.assert_array_equal(result.preview, np.clip(np.rint(registered), 0, 255).astype(np.uint8)[..., ::-1])


def test_camera_boxes_follow_the_rig_homography(tiny_detector, frames, tmp_path):
    # a primary camera at twice the common view's scale, shifted by (10, 5) pixel centres
    rig = load_rig(None)
    lines = ["cameras:"]
    for name, cam in rig.items():
        h = [[2.0, 0.0, 10.0], [0.0, 2.0, 5.0], [0.0, 0.0, 1.0]] if name == "rgb" else np.asarray(cam.homography).tolist()
        lines.append(f"  - {{name: {name}, encoding: {cam.encoding}, width: {cam.width}, height: {cam.height}, "
                     f"homography: {h}}}")
    (tmp_path / "rig.yaml").write_text("\n".join(lines) + "\n")
    p = DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), backend="ort-cpu", threads=1,
                                                  rig=str(tmp_path / "rig.yaml"), explain_boxes=0))
    result = p.process(frames[0])
    assert result.detections
    for d in result.detections:
        x0, y0, x1, y1 = d.box
        # network edges -> common-view edges: x * 640/320, y * 480/256; then edge' = 2 (edge - 0.5) + t + 0.5
        sx, sy = 2.0, 480 / 256
        expect = (2 * sx * x0 + 9.5, 2 * sy * y0 + 4.5, 2 * sx * x1 + 9.5, 2 * sy * y1 + 4.5)
        np.testing.assert_allclose(d.camera_box, expect, atol=1e-6)


def _inferno(u8):
    return cv2.applyColorMap(u8, cv2.COLORMAP_INFERNO).astype(np.float64)


def test_each_box_map_is_shown_around_its_own_box(tiny_detector, frames):
    """The overlay recomputed from the engine's float maps: per box (weakest first), its map in the box grown
    by the margin, over its own peak (frame scale), inferno, weighted by its magnitude, in the network view;
    carried into the RGB camera's pixels (the rig file's homography, common view 640x480 -> network 320x256,
    pixel centres) 2x zoomed and blended over the camera's own image, also 2x."""
    import yaml

    p = DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), backend="ort-cpu", threads=1,
                                                  explain_boxes=4, overlay_scale="frame", box_maps=True,
                                                  overlay_zoom=2))
    images = frames[1]
    result = p.process(images)
    x = p.frontend(images)
    maps = p.engine.run({"image": x}, [p._plan["maps"]])[p._plan["maps"]][:, 0].astype(np.float64)
    explained = [d for d in result.detections if d.slot < len(maps)]
    assert len(explained) >= 2
    # in the network view: each box in turn over a black picture (colour), and what shows through (1 - weight)
    colour, through = np.zeros((256, 320, 3)), np.ones((256, 320, 1))
    for d in sorted(explained, key=lambda d: d.score):
        m = maps[d.slot]
        x0, y0, x1, y1 = d.box
        mx, my = 0.25 * (x1 - x0) + 2, 0.25 * (y1 - y0) + 2
        r = slice(max(int(np.floor(y0 - my)), 0), min(int(np.ceil(y1 + my)), 256))
        c = slice(max(int(np.floor(x0 - mx)), 0), min(int(np.ceil(x1 + mx)), 320))
        # uint8 levels as the graph makes them, in float32 (a level tied at .5 in float64 would differ)
        peak = np.float32(max(m.max(), 1e-12))
        u8 = np.clip(np.round(np.maximum(m[r, c].astype(np.float32), 0) * (np.float32(255.0) / peak)), 0, 255)
        u8 = u8.astype(np.uint8)
        w = 0.6 * u8[..., None] / 255.0
        colour[r, c] = colour[r, c] * (1 - w) + _inferno(u8) * w
        through[r, c] *= 1 - w
    # network pixel centre -> common view -> RGB camera (the rig file) -> 2x zoom, all pixel centres
    rig = yaml.safe_load(open(p.config.rig or "config/rig_default.yaml"))
    (rgb,) = [np.array(c["homography"]) for c in rig["cameras"] if c["name"] == "rgb"]
    to_common = np.array([[2.0, 0, 0.5], [0, 480 / 256, 0.5 * 480 / 256 - 0.5], [0, 0, 1]])
    zoom = np.array([[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]])
    warp = zoom @ rgb @ to_common
    # OpenCV's warp quantises sub-pixel positions differently for float32 and float64 images (up to 2 grey levels
    # apart here at steep map edges): warp the float32 layers the pipeline warps
    colour_z = cv2.warpPerspective(colour.astype(np.float32), warp, (1280, 960), flags=cv2.INTER_LINEAR)
    weight_z = cv2.warpPerspective((1 - through).astype(np.float32), warp, (1280, 960),
                                   flags=cv2.INTER_LINEAR)[..., None].astype(np.float64)
    picture = np.kron(images["rgb"], np.ones((2, 2, 1), np.uint8))  # bgr8, each pixel a 2x2 block
    expect = np.clip(np.floor(picture * (1 - weight_z) + colour_z + 0.5), 0, 255)
    # boxes and labels are drawn on top, in the camera's pixels: compare away from them
    drawn = np.zeros(expect.shape[:2], bool)
    for d in result.detections:
        x0, y0, x1, y1 = (int(round(2 * v)) for v in d.camera_box)
        drawn[max(y0 - 20, 0):y1 + 20, max(x0 - 4, 0):x1 + 120] = True
    drawn[-100:] = True  # the random test detector's crowd of boxes gets numbers and a key along the bottom
    assert result.detection_overlay.shape == (960, 1280, 3)
    free = ~drawn
    assert free.sum() > 0.3 * free.size
    diff = np.abs(result.detection_overlay.astype(np.float64) - expect)[free]
    assert diff.max() <= 1.0  # float32 vs float64 rounding at .5
    # nothing is painted away from the explained boxes: there the overlay is the camera's own image, zoomed
    away = free & (weight_z[..., 0] == 0)
    assert away.sum() > 0.3 * away.size and (weight_z[..., 0] > 0.05).sum() > 1000
    np.testing.assert_array_equal(result.detection_overlay[away], picture[away])
    np.testing.assert_allclose(result.box_maps, maps, rtol=1e-6)


def test_card_and_running_scales_fix_the_colour_of_a_value(tiny_detector, frames, tmp_path):
    """card: one scale per class and level (box_level, the default) or per class (class_head_input) from the card,
    the same in every frame; running: follows the boxes' peaks, per class and level; a card without scales falls
    back to running and says so."""
    import json
    import shutil

    shutil.copy(tiny_detector, tmp_path / "det.onnx")
    card = json.loads(tiny_detector.with_suffix(".json").read_text())
    levels = list(dict.fromkeys(card["layers"].values()))
    assert len(levels) == 4  # bifpn_p2..p5: the pipeline's box_level explains each box at its own
    names = [c["name"] for c in card["classes"]]
    value = {f"{n}@{lv}": 0.1 * (i + 1) + 0.01 * (j + 1) for i, n in enumerate(names) for j, lv in enumerate(levels)}
    card["overlay_scales"] = {"box_gradcam@box_level": {"classes": value},
                              f"box_gradcam@{card['layers']['class_head_input']}": {"classes": {n: 0.5 for n in names}}}
    (tmp_path / "det.json").write_text(json.dumps(card))
    config = DetectionPipelineConfig(model=str(tmp_path / "det.onnx"), backend="ort-cpu", threads=1, explain_boxes=4,
                                     box_maps=True)
    fixed = DetectionPipeline(config)
    assert fixed.scales.mode == "card"
    assert fixed.scales.describe() == "card (fixed per class and level, from the model card)"  # the legend's line
    r = fixed.process(frames[0])
    explained = [d for d in r.detections if d.slot < 4]
    assert explained and all(d.level in levels for d in explained)
    np.testing.assert_allclose(fixed.box_scale(explained, {"maps": r.box_maps[:, None]}),
                               [value[f"{d.class_name}@{d.level}"] for d in explained], rtol=1e-6)
    head = DetectionPipeline(dataclasses.replace(config, layer="class_head_input"))
    assert head.scales.mode == "card" and head.scales.describe() == "card (fixed per class, from the model card)"
    r = head.process(frames[0])
    explained = [d for d in r.detections if d.slot < 4]
    assert all(d.level is None for d in r.detections)
    np.testing.assert_array_equal(head.box_scale(explained, {"maps": r.box_maps[:, None]}), 0.5)

    running = DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), backend="ort-cpu", threads=1,
                                                        explain_boxes=4, box_maps=True))
    assert running.scales.mode == "running"  # the tiny detector's card has no scales
    assert running.scales.describe().startswith("running (per class and level, rate ")
    r0 = running.process(frames[0])
    first = running.scales.scale("box").copy()
    assert first.shape == (len(names) * len(levels),)
    for d in r0.detections:
        if d.slot < 4:  # the first frame's scale of a class at a level is its boxes' largest peak there
            peak = max(r0.box_maps[e.slot].max() for e in r0.detections
                       if e.slot < 4 and e.class_id == d.class_id and e.level == d.level)
            row = names.index(d.class_name) * len(levels) + levels.index(d.level)
            assert first[row] == pytest.approx(peak, rel=1e-6)
    running.process(frames[1])
    assert running.scales.scale("box").shape == first.shape
    legend = running.legend()
    assert legend.ndim == 3 and legend.shape[1] == 420 and legend.dtype == np.uint8


def _bundled_with_gradient_scales(tmp_path) -> str:
    """The bundled detector with its card's box_gradcam scales also given to box_gradient (at the input)."""
    import json
    import shutil

    from hsi_xai_node.runtime.detection import DEFAULT_DETECTOR

    shutil.copy(DEFAULT_DETECTOR, tmp_path / "det.onnx")
    card = json.loads(DEFAULT_DETECTOR.with_suffix(".json").read_text())
    classes = {name.split("@")[0]: v for name, v in card["overlay_scales"]["box_gradcam@box_level"]["classes"].items()}
    card["overlay_scales"][f"box_gradient@{card['input']['tensor']}"] = {"classes": classes}
    (tmp_path / "det.json").write_text(json.dumps(card))
    return str(tmp_path / "det.onnx")


@pytest.mark.parametrize("layer,method", [("box_level", "box_gradcam"), ("class_head_input", "box_gradcam"),
                                          ("box_level", "box_gradient")])
def test_on_card_scales_each_box_map_is_resized_only_around_its_box(frames, tmp_path, layer, method):
    """With card scales (the bundled detector's) no box's peak is needed, so the engine returns each map at its
    layer's size (a CAM at box_level: one part per pyramid level, each zero in the rows of boxes at other levels; an
    input attribution: its map at the input's size) and the pipeline resizes only the crop it draws: its maps equal
    the explain graph's own maps at the input's size (ONNX Runtime running the unpruned graph: the resize and the sum
    of the levels in it), and its overlay the one drawn from those full-size maps."""
    model = _bundled_with_gradient_scales(tmp_path) if method == "box_gradient" else None
    config = DetectionPipelineConfig(**({"model": model} if model else {}), backend="ort-cpu", threads=1, layer=layer,
                                     overlay_method=method)  # the bundled detector: 10 boxes
    p = DetectionPipeline(config)
    assert p.scales.mode == "card" and "maps" not in p._plan
    hw = tuple(p.card.input.hw)
    parts = [v for k, v in p._plan.items() if k.startswith("part")]
    if method == "box_gradcam":  # a CAM at its layer's size: one part per pyramid level at box_level
        assert len(parts) == {"box_level": 4, "class_head_input": 1}[layer]
        assert not any(p.graph.outputs[n].shape[2:] == hw for n in p._plan.values() if n in p.graph.outputs)
    else:  # an input attribution: its one map, at the input's size
        assert len(parts) == 1 and p.graph.outputs[parts[0]].shape[2:] == hw
    images = frames[1]
    full_name = next(n for n, o in p.graph.outputs.items()
                     if o.method in (method, method + "_full") and o.shape[2:] == hw)
    session = ort.InferenceSession(p.graph.model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run([*p._plan.values(), full_name], {p.card.input.tensor: p.frontend(images)})
    full = got.pop()[:, 0]
    got = dict(zip(p._plan, got))
    result = p.process(images)
    explained = [d for d in result.detections if d.slot < 10]
    if layer == "box_level" and method == "box_gradcam":  # boxes of several levels: the parts' sum is exercised
        assert len({d.level for d in explained}) >= 3
    atol = 1e-6 * np.abs(full).max()
    for d in explained:
        np.testing.assert_allclose(p.box_map(got, d.slot), full[d.slot], rtol=1e-5, atol=atol)
        x0, y0, x1, y1 = (int(v) for v in d.box)
        crop = (slice(max(y0 - 3, 0), y1 + 3), slice(max(x0 - 3, 0), x1 + 3))
        np.testing.assert_allclose(p.box_map(got, d.slot, *crop), full[d.slot][crop], rtol=1e-5, atol=atol)
    assert result.box_maps is None
    # the same frame drawn from the graph's full-size maps (box_maps: they are read, and drawn from)
    reference = DetectionPipeline(dataclasses.replace(config, box_maps=True)).process(images)
    np.testing.assert_allclose(reference.box_maps, full, rtol=1e-5, atol=atol)
    diff = result.detection_overlay != reference.detection_overlay
    assert diff.mean() < 1e-4  # the same pixels but where a map value 1 ulp apart sits at a grey level's rounding tie


@pytest.mark.parametrize("method", ["box_gradcam", "box_gradient"])
def test_without_card_scales_the_maps_are_read_whole_and_drawn(tiny_detector, frames, method):
    """The tiny detector's card has no scales: card falls back to running scales, which follow each box's peak over
    its whole map, so the engine returns the maps at the input's size; the overlay shows them around the boxes (it
    differs from the camera's picture there), for a CAM and for an input attribution."""
    p = DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), backend="ort-cpu", threads=1,
                                                  explain_boxes=4, overlay_method=method))
    assert p.scales.mode == "running" and "maps" in p._plan
    result = p.process(frames[0])
    explained = [d for d in result.detections if d.slot < 4]
    assert explained and p.scales.scale("box") is not None and (p.scales.scale("box") > 0).any()
    picture = p.frontend.camera_picture("rgb", frames[0]["rgb"])
    changed = (result.detection_overlay != picture).any(2)
    for d in explained:  # inside each explained box (its labels drawn above or below it, or inside its top)
        x0, y0, x1, y1 = (int(round(v)) for v in d.camera_box)
        assert changed[y0 + 12:y1 - 1, x0 + 1:x1 - 1].any(), d


def test_maps_are_warped_and_blended_only_around_groups_of_boxes():
    """_painted_regions: one overlay rectangle per group of boxes whose footprints (the box's corners carried over,
    grown by the bilinear reach) overlap; the rectangles never overlap (no pixel is blended twice), each box's
    footprint lies in one, and far-apart boxes get rectangles of their own."""
    from hsi_xai_node.runtime.detection import _painted_regions

    to_overlay = np.array([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])  # 2x, pixel centres
    # network rect (c0, r0, c1, r1) -> its footprint by hand: corners (c0 - 1, r0 - 1) = (9, 19) -> (18.5, 38.5),
    # floored less 1; (c1, r1) = (30, 40) -> (60.5, 80.5), ceiled plus 2
    assert _painted_regions([(10, 20, 30, 40)], to_overlay, (480, 640)) == [(18 - 1, 38 - 1, 61 + 2, 81 + 2)]
    far = [(10, 20, 30, 40), (200, 100, 240, 150)]
    assert len(_painted_regions(far, to_overlay, (480, 640))) == 2
    # overlapping boxes, and a chain: (a, b) overlap only through their footprints, c overlaps b's merged group
    chain = [(0, 0, 10, 10), (11, 0, 20, 10), (100, 100, 120, 120), (19, 5, 40, 30)]
    regions = _painted_regions(chain, to_overlay, (480, 640))
    assert len(regions) == 2
    for i, a in enumerate(regions):
        for b in regions[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    for rect in chain:
        (f,) = _painted_regions([rect], to_overlay, (480, 640))
        assert any(r[0] <= f[0] and r[1] <= f[1] and f[2] <= r[2] and f[3] <= r[3] for r in regions), (rect, f)
    # clipped to the image; a box wholly outside it paints nothing
    assert _painted_regions([(300, 230, 320, 256)], to_overlay, (480, 640)) == [(597, 457, 640, 480)]
    assert _painted_regions([(400, 300, 420, 320)], to_overlay, (480, 640)) == []


def test_labels_never_overlap_and_fall_back_to_numbers():
    from hsi_xai_node.runtime.detection import place_labels

    sizes = [(40, 12)] * 3
    spots = place_labels([(10, 30, 50, 60), (12, 32, 52, 62), (200, 100, 240, 140)], sizes, (256, 320))
    rects = [(x, y, x + w, y + h) for (x, y), (w, h) in zip(spots, sizes)]
    for i in range(3):
        for j in range(i + 1, 3):
            a, b = rects[i], rects[j]
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    assert spots[0] == (10, 17)  # above the first box
    assert spots[1] == (12, 63)  # the second, nearly on top of it, goes below its box
    # a crowd where no spot is free: None, and draw_boxes numbers every box instead
    crowd = [(0, 0, 320, 256)] * 4
    assert None in place_labels(crowd, [(300, 120)] * 4, (256, 320))


def test_score_threshold_filters_but_cannot_go_below_the_graph(tiny_detector, frames):
    base = DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), backend="ort-cpu", explain_boxes=0))
    scores = sorted(d.score for d in base.process(frames[0]).detections)
    cut = scores[len(scores) // 2]
    high = DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), backend="ort-cpu", explain_boxes=0,
                                                     score_threshold=cut))
    kept = [d.score for d in high.process(frames[0]).detections]
    assert kept == [s for s in sorted(scores, reverse=True) if s > cut]
    with pytest.raises(InputError, match="below .* in-graph NMS threshold 0.005"):
        DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), backend="ort-cpu", score_threshold=0.001))


def test_bad_inputs_name_the_problem(pipeline, tiny_detector, frames, tmp_path):
    with pytest.raises(FrameError, match="'mir'"):
        pipeline.process({"rgb": frames[0]["rgb"]})
    with pytest.raises(FrameError, match="'rgb'"):
        pipeline.process({**frames[0], "rgb": frames[0]["rgb"][:100]})
    with pytest.raises(InputError, match="no such file"):
        load_rig(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("cameras:\n  - {name: rgb, encoding: bgr8, width: 640, height: 480, "
                                       "homography: [[1, 0], [0, 1]]}\n")
    with pytest.raises(InputError, match=r"bad.yaml: cameras\[0\].homography: List should have at least 3 items"):
        load_rig(tmp_path / "bad.yaml")
    (tmp_path / "singular.yaml").write_text("cameras:\n  - {name: rgb, encoding: bgr8, width: 640, height: 480, "
                                            "homography: [[1, 0, 0], [2, 0, 0], [0, 0, 1]]}\n")
    with pytest.raises(InputError, match=r"cameras\[0\]: homography must be an invertible 3x3 matrix"):
        load_rig(tmp_path / "singular.yaml")
    (tmp_path / "no_mir.yaml").write_text("cameras:\n  - {name: rgb, encoding: bgr8, width: 640, height: 480, "
                                          "homography: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}\n")
    with pytest.raises(InputError, match="needs camera 'mir'"):
        DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), rig=str(tmp_path / "no_mir.yaml")))
    with pytest.raises(InputError, match="overlay_method"):
        DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), overlay_method="hires"))


def test_camera_shares_of_each_detection(tiny_detector, frames):
    """box_spectral: per box, gradient x input summed over the box, per input channel, grouped by the stack's
    cameras (RGB's three channels, MIR's one) into an attribution and a share of the total |attribution|."""
    p = DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), backend="ort-cpu", threads=1,
                                                  explain_boxes=4, methods=("box_gradcam", "box_spectral"),
                                                  overlay_scale="frame"))
    r = p.process(frames[0])
    spectral = p.engine.run({"image": p.frontend(frames[0])}, [p._plan["spectral"]])[p._plan["spectral"]]
    explained = [d for d in r.detections if d.slot < 4]
    assert explained and all(d.camera_shares is None for d in r.detections if d.slot >= 4)
    for d in explained:
        rgb, mir = spectral[d.slot][:3].sum(), spectral[d.slot][3]
        assert d.camera_attribution == pytest.approx({"rgb": rgb, "mir": mir}, rel=1e-5, abs=1e-9)
        total = abs(rgb) + abs(mir)
        assert d.camera_shares == pytest.approx({"rgb": abs(rgb) / total, "mir": abs(mir) / total}, rel=1e-5)
        assert sum(d.camera_shares.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("method, signed", [("box_deeplift", True), ("box_gradient", False)])
def test_an_input_attribution_as_the_detection_overlay(tiny_detector, frames, method, signed):
    """A per-box input attribution as the overlay: its map at the input size is the one drawn (signed ones on the
    diverging colormap), with the node's path settings passed to the graph."""
    from hsi_xai_node.explain import PathOptions

    p = DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), backend="ort-cpu", threads=1,
                                                  explain_boxes=3, overlay_method=method, overlay_scale="frame",
                                                  box_maps=True, paths=PathOptions(baseline="spectral_mean")))
    assert p.graph.outputs[p._plan["maps"]].method == method and p._signed is signed
    assert any(o.method == f"{method}_bands" for o in p.graph.outputs.values())
    result = p.process(frames[1])
    x = p.frontend(frames[1])
    maps = p.engine.run({"image": x}, [p._plan["maps"]])[p._plan["maps"]]
    assert maps.shape[1:] == (1, 256, 320) and np.abs(maps).max() > 0
    np.testing.assert_allclose(result.box_maps, maps[:, 0], rtol=1e-6)
    assert result.detection_overlay.shape == frames[1]["rgb"].shape  # overlay_zoom 1: the camera's own pixels
    assert not np.array_equal(result.detection_overlay, frames[1]["rgb"])
    with pytest.raises(InputError, match="overlay_method 'box_spectral' must be a per-box method with a map"):
        DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), overlay_method="box_spectral"))


def test_a_legend_of_many_scales_wraps_inside_its_width():
    """Per class and level (box_level) a legend lists 16 entries like "color_cone@bifpn_p5: 1 = 0.00573": they wrap
    onto as many lines as needed, none drawn past the image's right edge (three to a line ran off it)."""
    from hsi_xai_node.runtime.overlay import legend_image

    scales = {f"{c}@bifpn_p{level}": 0.000231 * level for c in ("car", "person", "bike", "color_cone")
              for level in (2, 3, 4, 5)}
    img = legend_image("detection overlay", "box-score gradient x activation", "inferno", False, scales, "card")
    text = img[44:]  # below the colour bar and its tick labels
    assert (text[:, -6:] == 255).all()  # nothing reaches the last pixels of the right margin
    ink = np.flatnonzero((text < 128).any(axis=(1, 2)))
    lines = 1 + int((np.diff(ink) > 3).sum())  # runs of rows with dark pixels
    assert lines >= 2 + 16 // 2  # title, scale, and at most two of these entries a line


def test_an_unknown_layer_is_refused_by_name(tiny_detector):
    """A detection_layer that names no tensor of the detector: one line naming it and the card's roles (the node
    refuses the parameter change with it and keeps its detector)."""
    with pytest.raises(InputError, match=r"target layer 'bifpn_p9' \('bifpn_p9'\) is not a tensor of the model; "
                                         r"the card names \['bifpn_p2'"):
        DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), backend="ort-cpu", threads=1,
                                                  layer="bifpn_p9"))
