"""The detection pipeline on a real (tiny, random-weight) exported detector, against the raw engine
outputs, hand-computed box mapping and blending, and its error cases."""

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from hsi_xai_node.errors import FrameError, InputError
from hsi_xai_node.runtime.detection import DetectionPipeline, DetectionPipelineConfig, load_rig
from hsi_xai_node.runtime.pipeline import COLORMAPS
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


def test_overlay_is_the_weighted_blend_of_the_fused_box_maps(pipeline, frames):
    images = frames[1]
    result = pipeline.process(images)
    x = pipeline.frontend(images)
    maps = pipeline.engine.run({"image": x}, [pipeline._plan["maps_u8"]])[pipeline._plan["maps_u8"]]
    explained = [d.slot for d in result.detections if d.slot < len(maps)]
    assert explained
    fused = maps[explained, 0].max(0)
    colour = cv2.applyColorMap(fused, COLORMAPS["jet"]).astype(np.float64)
    w = 0.6 * fused.astype(np.float64)[..., None] / 255.0
    expect = np.clip(np.floor(result.preview * (1 - w) + colour * w + 0.5), 0, 255)
    # boxes and labels are drawn on top: compare away from them
    drawn = np.zeros(fused.shape, bool)
    for d in result.detections:
        x0, y0, x1, y1 = (int(round(v)) for v in d.box)
        drawn[max(y0 - 12, 0):y1 + 2, max(x0 - 2, 0):x1 + 100] = True
    assert (~drawn).sum() > 0.3 * drawn.size
    diff = np.abs(result.detection_overlay.astype(np.float64) - expect)[~drawn]
    assert diff.max() <= 1.0  # float32 vs float64 rounding at .5
    assert (fused[~drawn] > 0).mean() > 0.05  # the maps do cover the scene


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
    with pytest.raises(InputError, match="invertible 3x3"):
        load_rig(tmp_path / "bad.yaml")
    (tmp_path / "no_mir.yaml").write_text("cameras:\n  - {name: rgb, encoding: bgr8, width: 640, height: 480, "
                                          "homography: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}\n")
    with pytest.raises(InputError, match="needs camera 'mir'"):
        DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), rig=str(tmp_path / "no_mir.yaml")))
    with pytest.raises(InputError, match="overlay_method"):
        DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), overlay_method="hires"))
