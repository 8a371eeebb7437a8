"""`hsi-xai evaluate` with a detector on the Multispectral Object Detection dataset's layout: generated held-out frames
registered by the node's own multispectral front end, written as `ConvertedImages/{rgb,mir}/NNNNNN.png` with YOLO
and VOC labels; the figures against a reference run here (the front end's stack of the same images, ONNX Runtime,
the project's mAP over boxes in network pixels)."""

import json

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from hsi_xai_node.classes import DETECTION_CLASSES
from hsi_xai_node.cli import main
from hsi_xai_node.datasets import DatasetError, ModsDataset
from hsi_xai_node.detection.card import load_detector
from hsi_xai_node.detection.evaluation import MIN_HEIGHT_PX, Detections, GroundTruth, evaluate_map
from hsi_xai_node.evaluate import evaluate_detection
from hsi_xai_node.runtime.detection import DEFAULT_DETECTOR, DetectionPipeline, DetectionPipelineConfig
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.multispectral import boxes_to_network

FRAMES = (0, 12, 24, 36)


@pytest.fixture(scope="module")
def mods(tmp_path_factory, hsi_drive):
    """(root, [(registered images as stored, boxes in network pixels, class names)]) for 4 frames of test drive 3001;
    frames 0 and 24 labelled in YOLO, 12 and 36 in VOC XML (with a class the model lacks)."""
    root = tmp_path_factory.mktemp("mods")
    pipeline = DetectionPipeline(DetectionPipelineConfig(backend="ort-cpu"))
    stack = pipeline.frontend.config
    (w, h) = stack.input_size
    gen = DriveGenerator(hsi_drive, seed=3001, render_hsi=False)
    for cam in ("rgb", "mir"):
        (root / "ConvertedImages" / cam).mkdir(parents=True)
    (root / "labels" / "rgb").mkdir(parents=True)
    frames = []
    for k, index in enumerate(FRAMES):
        frame = gen.frame(index)
        registered = pipeline.frontend.register_all({n: c.image for n, c in frame.cameras.items()})
        rgb = np.clip(np.rint(registered["rgb"]), 0, 255).astype(np.uint8)
        mir = np.clip(np.rint(registered["mir"]), 0, 65535).astype(np.uint16)
        name = f"{index:06d}"
        cv2.imwrite(str(root / "ConvertedImages" / "rgb" / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "ConvertedImages" / "mir" / f"{name}.png"), mir)
        boxes = boxes_to_network(np.array([o.box for o in frame.camera_objects]).reshape(-1, 4), stack)
        names = [DETECTION_CLASSES[o.class_id].name for o in frame.camera_objects]
        if k % 2 == 0:
            lines = [f"{[c.name for c in DETECTION_CLASSES].index(n)} {(b[0] + b[2]) / 2 / w:.9f} "
                     f"{(b[1] + b[3]) / 2 / h:.9f} {(b[2] - b[0]) / w:.9f} {(b[3] - b[1]) / h:.9f}"
                     for b, n in zip(boxes, names)]
            (root / "labels" / "rgb" / f"{name}.txt").write_text("\n".join(lines) + "\n")
        else:
            objs = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{float(b[0])!r}</xmin>"
                           f"<ymin>{float(b[1])!r}</ymin><xmax>{float(b[2])!r}</xmax><ymax>{float(b[3])!r}</ymax>"
                           "</bndbox></object>" for b, n in zip(boxes, names))
            objs += ("<object><name>truck</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>30</xmax><ymax>30</ymax>"
                     "</bndbox></object>")
            (root / "labels" / "rgb" / f"{name}.xml").write_text(
                f"<annotation><size><width>{w}</width><height>{h}</height></size><daytime>day</daytime>{objs}"
                "</annotation>")
        frames.append(({"rgb": rgb, "mir": mir}, boxes, names))
    return root, frames, pipeline


def reference(frames, pipeline):
    """The node front end's stack of the stored images (RGB planes, the card's normalisation), the loaded detector on
    ONNX Runtime, the project's mAP with boxes lower than the protocol's height ignored."""
    loaded = load_detector(DEFAULT_DETECTOR)
    sess = ort.InferenceSession(loaded.model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [c.name for c in loaded.card.classes]
    dets, gts = [], []
    for images, boxes, classes in frames:
        x = pipeline.frontend.stack({"rgb": images["rgb"].astype(np.float32), "mir": images["mir"].astype(np.float32)})
        b, s, c = sess.run(["det_boxes", "det_scores", "det_classes"], {loaded.card.input.tensor: x})
        kept = c.reshape(-1) >= 0
        dets.append(Detections(b.reshape(-1, 4)[kept], s.reshape(-1)[kept], c.reshape(-1)[kept]))
        gts.append(GroundTruth(boxes, np.array([names.index(n) for n in classes]),
                               (boxes[:, 3] - boxes[:, 1]) < MIN_HEIGHT_PX))
    return evaluate_map(dets, gts, num_classes=len(names))


def test_detector_figures_on_the_mods_layout(mods, capsys, tmp_path):
    root, frames, pipeline = mods
    want = reference(frames, pipeline)
    dataset = ModsDataset(root, ("rgb", "mir"))
    got = evaluate_detection(DEFAULT_DETECTOR, dataset)
    assert got.frames == 4 and not got.skipped
    assert (got.result.tp, got.result.fp, got.result.num_gt) == (want.tp, want.fp, want.num_gt)
    assert got.result.ap == pytest.approx(want.ap, abs=1e-9) and sum(want.num_gt) > 10
    assert got.not_model_classes == {"truck": 2}  # the VOC frames' extra class: ignored, counted
    # the command: the card tells a detector; every figure headed by dataset and model
    out = tmp_path / "det.json"
    assert main(["evaluate", str(DEFAULT_DETECTOR), "--dataset", str(root), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"dataset  Multispectral Object Detection dataset {root} (ConvertedImages, cameras rgb+mir" in text
    assert "AP at IoU 0.5 over the boxes kept at the card's score threshold 0.45" in text
    doc = json.loads(out.read_text())
    assert doc["per_class"]["car"]["objects"] == want.num_gt[1] and doc["frames"] == 4
    assert doc["false_positives_per_frame"] == pytest.approx(sum(want.fp) / 4)


def test_yolo_and_voc_labels_read_the_same_boxes(mods):
    root, frames, _ = mods
    samples = list(ModsDataset(root, ("rgb", "mir")))
    w, h = 320, 256
    for sample, (_, boxes, names) in zip(samples, frames):
        keep = [n != "truck" for n in sample.classes]
        np.testing.assert_allclose(sample.boxes[keep] * [w, h, w, h], boxes, atol=1e-6)
        assert [n for n, k in zip(sample.classes, keep) if k] == names
    assert samples[1].meta["daytime"] == "day"


@pytest.mark.parametrize("content, message", [
    ("9 0.5 0.5 0.1 0.1\n", "is not 'class cx cy w h' with a class id below 5"),
    ("1 0.5 0.5 -0.1 0.1\n", "a positive size"),
    ("<annotation><size><width>0</width>", "not well-formed XML"),
])
def test_bad_label_files_are_skipped_and_counted(mods, tmp_path, content, message):
    root, *_ = mods
    import shutil

    copy = tmp_path / "mods"
    shutil.copytree(root, copy)
    suffix = ".xml" if content.startswith("<") else ".txt"
    for old in (copy / "labels" / "rgb").glob("000000.*"):
        old.unlink()
    (copy / "labels" / "rgb" / f"000000{suffix}").write_text(content)
    (copy / "ConvertedImages" / "mir" / "000012.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    got = evaluate_detection(DEFAULT_DETECTOR, ModsDataset(copy, ("rgb", "mir")))
    assert got.frames == 2 and got.skipped["unreadable or wrong-shaped file"]["count"] == 2
    assert message in got.skipped["unreadable or wrong-shaped file"]["first"]
    with pytest.raises(DatasetError, match="no ConvertedImages/fir folder"):
        ModsDataset(copy, ("rgb", "fir"))
