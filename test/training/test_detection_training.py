"""The detection training command end to end on a tiny split, and its crop targets."""

import json

import numpy as np
import pytest

pytest.importorskip("torch", reason="training needs torch: pip install -e '.[test]'")

from hsi_xai_node.detection.anchors import generate_anchors  # noqa: E402
from hsi_xai_node.detection.card import load_detector  # noqa: E402
from hsi_xai_node.training import detection as D  # noqa: E402
from hsi_xai_node.training.data import Split  # noqa: E402
from hsi_xai_node.training.efficientdet import EfficientDetConfig  # noqa: E402
from test.detection.tiny_efficientdet import one_torch_thread  # noqa: E402,F401

SMALL = EfficientDetConfig(stem=8, stages=((1, 8, 1, 1, 3), (2, 8, 1, 2, 3), (2, 16, 1, 2, 3), (2, 16, 1, 2, 3),
                                           (2, 16, 1, 2, 3)), fpn_channels=16, fpn_layers=1, head_layers=1)
SPLITS = {"train": Split((0,), 3, 9), "val": Split((1000,), 2, 20), "test": Split((3000,), 2, 20)}


@pytest.fixture(scope="module")
def data():
    return D.generate(SPLITS["train"], workers=1)


def test_crop_anchors_are_the_whole_frame_anchors_inside_it():
    cfg = EfficientDetConfig().anchors
    full, crop = generate_anchors(cfg, (256, 320)), generate_anchors(cfg, (128, 160))
    for oy, ox in [(0, 0), (96, 64), (128, 160)]:
        inside = D.window_indices(cfg, (256, 320), (128, 160), (oy, ox))
        np.testing.assert_allclose(full[inside] - np.array([ox, oy, ox, oy], np.float32), crop, atol=1e-4)


def test_crop_batch_targets_equal_a_fresh_assignment(data):
    anchors = generate_anchors(SMALL.anchors, (256, 320))
    cache = D.MatchCache(data, anchors)
    channels = D.stack_channels("rgb+mir")
    assert channels == [0, 1, 2, 4]
    rng = np.random.default_rng(5)
    x, cls_t, box_t, state = D._batch(data, cache, np.arange(len(data)), channels, anchors, SMALL, (128, 160), rng)
    assert x.shape == (len(data), 4, 128, 160)
    # replay the batch's random draws and recompute each crop's targets from scratch
    rng = np.random.default_rng(5)
    crop_anchors = generate_anchors(SMALL.anchors, (128, 160))
    for j in range(len(data)):
        flip = bool(rng.random() < 0.5)
        oy, ox = 32 * int(rng.integers(0, 5)), 32 * int(rng.integers(0, 6))
        gain, offset = rng.uniform(0.85, 1.15, (4, 1, 1)), rng.normal(0, 0.1, (4, 1, 1))
        boxes = D.flip_boxes(data.boxes[j], 320) if flip else data.boxes[j]
        # a fresh match over the whole frame, restricted to the crop (IoU is shift-invariant)
        cls_ref, box_ref, state_ref = D.assign(anchors, boxes, data.classes[j], 5)
        inside = D.window_indices(SMALL.anchors, (256, 320), (128, 160), (oy, ox))
        np.testing.assert_array_equal(state[j].numpy(), state_ref[inside])
        np.testing.assert_array_equal(cls_t[j].numpy(), cls_ref[inside])
        np.testing.assert_allclose(box_t[j].numpy(), box_ref[inside], atol=1e-5)
        # box deltas do not depend on the shift: those of the crop's own anchors to the shifted boxes
        pos = np.flatnonzero(state_ref[inside] == 1)
        shifted = boxes - np.array([ox, oy, ox, oy], np.float32)
        for a in pos[:5]:
            target = shifted[np.argmax(D.iou_matrix(crop_anchors[a:a + 1], shifted)[0])]
            np.testing.assert_allclose(box_t[j, a].numpy(), D.encode(target, crop_anchors[a]), atol=1e-4)
        image = data.images[j, channels].astype(np.float32)
        image = image[:, :, ::-1] if flip else image
        np.testing.assert_allclose(x[j].numpy(), image[:, oy:oy + 128, ox:ox + 160] * gain + offset, rtol=1e-6)


def test_train_detection_command_writes_a_loadable_model_and_study(tmp_path):
    out = tmp_path / "models"
    results = D.run_study(["rgb+mir", "fir"], out, D.DetectionTrainConfig(steps=3, batch=2, eval_every=3, threads=1),
                          splits=SPLITS, model_config=SMALL, command="test", log=lambda m: None)
    assert set(results) == {"rgb+mir", "fir"}
    assert (out / "efficientdet_rgb_mir.onnx").is_file() and not (out / "efficientdet_fir.onnx").exists()
    loaded = load_detector(out / "efficientdet_rgb_mir.onnx")
    card = loaded.card
    assert [s.camera for s in card.input.stack] == ["rgb", "mir"] and card.input.shape == (1, 4, 256, 320)
    assert card.layers["class_head_input"] == "bifpn_p2" and card.postprocess["in_graph"]
    assert card.metrics["test_generated"]["map"] == results["rgb+mir"]["test"]["map"]
    study = json.loads((out / "detection_study_bundled.json").read_text())
    assert set(study) == {"rgb+mir", "fir"}
    table = (out / "detection_study_bundled.md").read_text()
    assert "| rgb+mir | 4 |" in table and "| fir | 1 |" in table
