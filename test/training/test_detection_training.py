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


def test_crop_boxes_by_hand():
    boxes = np.array([[10, 10, 30, 50], [100, 40, 140, 60], [0, 0, 4, 3]], np.float32)
    b, c, ignore = D.crop_boxes(boxes, np.array([1, 4, 2]), zoom=2.0, oy=20.0, ox=0.0, crop_hw=(128, 160),
                                ignore_below_px=8.0)
    # (x - 0) * 2, (y - 20) * 2: the first box becomes [20, -20, 60, 60], clipped to [20, 0, 60, 60] (3/4 of it
    # visible: learnt); the second lands at x 200..280, beyond the 160-px crop, and the third above it: dropped
    np.testing.assert_allclose(b, [[20, 0, 60, 60]], atol=1e-6)
    assert list(c) == [1] and list(ignore) == [False]
    b, c, ignore = D.crop_boxes(np.array([[70, 0, 90, 24], [50, 50, 54, 53]], np.float32), np.array([3, 4]),
                                1.0, 20.0, 0.0, (128, 160), ignore_below_px=4.0)
    # a box with 4 of its 24 rows in the crop, and one 3 px tall: neither learnt nor taught as background
    np.testing.assert_allclose(b, [[70, 0, 90, 4], [50, 30, 54, 33]], atol=1e-6)
    assert list(ignore) == [True, True]


def test_match_ignores_anchors_of_ignored_boxes():
    anchors = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], np.float32)
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    state, best = D.match(anchors, boxes, np.array([False, True]))
    assert list(state) == [1, -1, 0] and best[0] == 0


def test_crop_batch_targets_equal_a_fresh_assignment(data):
    """Zoom 1: the crop is the frame's pixels at an offset (gain and offset aside), and its targets are those
    of a fresh assignment of the crop's anchors to the shifted, clipped boxes."""
    cfg = D.DetectionTrainConfig(crop=(128, 160), zoom=(1.0, 1.0), ignore_below_px=0.0)
    crop_anchors = generate_anchors(SMALL.anchors, cfg.crop)
    channels = D.stack_channels("rgb+mir")
    assert channels == [0, 1, 2, 4]
    rng = np.random.default_rng(5)
    x, cls_t, box_t, state = D._batch(data, np.arange(len(data)), channels, crop_anchors, SMALL, cfg, rng)
    assert x.shape == (len(data), 4, 128, 160)
    rng = np.random.default_rng(5)  # replay the batch's random draws
    for j in range(len(data)):
        flip = bool(rng.random() < 0.5)
        zoom = float(np.exp(rng.uniform(0.0, 0.0)))
        oy, ox = float(rng.uniform(0, 256 - 128)), float(rng.uniform(0, 320 - 160))
        gain, offset = rng.uniform(0.85, 1.15, (4, 1, 1)), rng.normal(0, 0.1, (4, 1, 1))
        assert zoom == 1.0
        boxes = D.flip_boxes(data.boxes[j], 320) if flip else data.boxes[j]
        shifted = boxes - np.array([ox, oy, ox, oy], np.float32)
        clipped = np.stack([shifted[:, 0].clip(0, 160), shifted[:, 1].clip(0, 128), shifted[:, 2].clip(0, 160),
                            shifted[:, 3].clip(0, 128)], 1)
        area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
        keep = area(clipped) > 0
        ignore = area(clipped)[keep] < 0.5 * area(shifted)[keep]
        cls_ref, box_ref, state_ref = D.assign(crop_anchors, clipped[keep], data.classes[j][keep], 5, ignore)
        np.testing.assert_array_equal(state[j].numpy(), state_ref)
        np.testing.assert_array_equal(cls_t[j].numpy(), cls_ref)
        np.testing.assert_allclose(box_t[j].numpy(), box_ref, atol=1e-4)
        image = data.images[j, channels].astype(np.float32)
        image = image[:, :, ::-1] if flip else image
        # a sub-pixel shift: bilinear between the four neighbours (OpenCV's fixed-point weights: 1/32 px)
        iy, ix = int(np.floor(oy)), int(np.floor(ox))
        fy, fx = oy - iy, ox - ix
        ref = ((1 - fy) * (1 - fx) * image[:, iy:iy + 128, ix:ix + 160] + (1 - fy) * fx * image[:, iy:iy + 128, ix + 1:ix + 161]
               + fy * (1 - fx) * image[:, iy + 1:iy + 129, ix:ix + 160] + fy * fx * image[:, iy + 1:iy + 129, ix + 1:ix + 161])
        np.testing.assert_allclose(x[j].numpy(), ref * gain + offset, atol=0.05 * np.abs(image).max())


def test_repeat_factors_favour_frames_with_rare_classes(data):
    w = D.repeat_factors(data)
    assert w.shape == (len(data),) and np.isclose(w.sum(), 1.0) and (w > 0).all()


TINY_RECIPE = D.DetectionTrainConfig(steps=3, batch=2, eval_every=3, threads=1)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "models"
    return out, D.run_study(["rgb+mir", "fir"], out, TINY_RECIPE, splits=SPLITS, model_config=SMALL, command="test",
                            log=lambda m: None)


def test_train_detection_command_writes_a_loadable_model_and_study(study):
    out, results = study
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
    at = results["fir"]["test"]["at_node_threshold"]
    assert table.splitlines()[-1].endswith(f"| **{results['fir']['test']['map']:.3f}** | {at['score_threshold']:g} | "
                                            f"{at['map']:.3f} | {at['fp_per_frame']:.2f} |")
    assert at["fp_per_frame"] == sum(at["fp"].values()) / 2  # 2 test frames


def test_stacks_trained_side_by_side_give_the_same_results(study, tmp_path):
    """jobs=2: each stack in its own spawned process, the splits read back from a scratch cache; the numbers
    are those of the one-process study (same seed, same batches, one thread), the log lines reach the caller."""
    _, sequential = study
    lines = []
    parallel = D.run_study(["fir", "rgb+mir"], tmp_path, TINY_RECIPE, bundle=(), splits=SPLITS, model_config=SMALL,
                           command="test", log=lines.append, jobs=2)
    assert list(parallel) == ["fir", "rgb+mir"] and not list(tmp_path.glob("*.onnx"))
    for stack in parallel:
        assert parallel[stack]["history"][-1]["loss"] > 0  # the losses, bit for bit, say the training was the same
        for key in ("history", "test", "val_map", "postprocess", "parameters"):
            assert parallel[stack][key] == sequential[stack][key], (stack, key)
    assert any(m.startswith("[fir] test mAP@0.5") for m in lines) and any("[rgb+mir] step 3:" in m for m in lines)
    assert "| fir | 1 |" in (tmp_path / "detection_study_bundled.md").read_text()


def test_train_detection_options_reach_the_training_config(monkeypatch, tmp_path):
    """--threads/--steps/--seed/--stacks/--bundle arrive in run_study as given (the study's record is its config)."""
    from hsi_xai_node.cli import main

    seen = {}
    monkeypatch.setattr(D, "run_study", lambda stacks, out, cfg, **kw: seen.update(stacks=stacks, out=out, cfg=cfg, **kw))
    assert main(["train-detection", "--stacks", "mir,fir", "--bundle", "", "--threads", "3", "--steps", "40",
                 "--seed", "7", "--cache", "", "--out", str(tmp_path)]) == 0
    assert seen["stacks"] == ["mir", "fir"] and seen["bundle"] == ("",) and seen["cache"] is None
    assert (seen["cfg"].threads, seen["cfg"].steps, seen["cfg"].seed, seen["jobs"]) == (3, 40, 7, 1)
    assert seen["cfg"].zoom == D.DetectionTrainConfig().zoom  # the rest is the default recipe
    assert main(["train-detection", "--jobs", "2", "--out", str(tmp_path)]) == 0
    assert (seen["cfg"].threads, seen["jobs"]) == (1, 2)  # 2 threads shared by 2 runs
    assert main(["train-detection", "--jobs", "0", "--out", str(tmp_path)]) == 2  # refused with a clear line


def test_training_on_the_multispectral_object_detection_layout(tmp_path, capsys):
    """Generated frames written in the dataset's layout (all four cameras registered by the full stack's front end,
    stored as 8/16-bit PNGs; YOLO labels; split files): read back as a DetectionSet equal to the generator's own to
    the PNG rounding, and the study trains on it, naming the dataset in the card."""
    import cv2

    from hsi_xai_node.classes import DETECTION_CLASSES
    from hsi_xai_node.cli import main
    from hsi_xai_node.scenes.drive import DriveGenerator
    from hsi_xai_node.sensor.calibration import load_profile
    from hsi_xai_node.sensor.multispectral import MultispectralFrontEnd, boxes_to_network

    root = tmp_path / "mods"
    fe = MultispectralFrontEnd(D.full_stack())
    w, h = D.INPUT_SIZE
    for cam in D.ALL_CAMERAS:
        (root / "ConvertedImages" / cam).mkdir(parents=True)
    (root / "labels" / "rgb").mkdir(parents=True)
    splits = {"train": [], "val": [], "test": []}
    for split, seed, count in (("train", 0, 3), ("val", 1000, 2), ("test", 3000, 2)):
        gen = DriveGenerator(load_profile("hsi-drive"), seed=seed, render_hsi=False)
        for k in range(count):
            frame = gen.frame(k * SPLITS[split].stride)
            name = f"{seed:04d}{k:02d}"
            registered = fe.register_all({n: c.image for n, c in frame.cameras.items()})
            for cam, img in registered.items():
                stored = np.clip(np.rint(img), 0, 255 if cam in ("rgb", "nir") else 65535).astype(
                    np.uint8 if cam in ("rgb", "nir") else np.uint16)
                cv2.imwrite(str(root / "ConvertedImages" / cam / f"{name}.png"),
                            cv2.cvtColor(stored, cv2.COLOR_RGB2BGR) if stored.ndim == 3 else stored)
            boxes = boxes_to_network(np.array([o.box for o in frame.camera_objects]).reshape(-1, 4), fe.config)
            (root / "labels" / "rgb" / f"{name}.txt").write_text("".join(
                f"{o.class_id} {(b[0] + b[2]) / 2 / w:.9f} {(b[1] + b[3]) / 2 / h:.9f} {(b[2] - b[0]) / w:.9f} "
                f"{(b[3] - b[1]) / h:.9f}\n" for o, b in zip(frame.camera_objects, boxes)))
            splits[split].append(name)
    for split, names in splits.items():
        (root / f"{split}.txt").write_text("\n".join(names) + "\n")
    assert [c.name for c in DETECTION_CLASSES] == ["bike", "car", "car_stop", "color_cone", "person"]

    from types import SimpleNamespace

    from hsi_xai_node.training.cli import mods_splits

    args = SimpleNamespace(dataset=str(root), splits=None, images="ConvertedImages", labels=None, class_map=None)
    readers = mods_splits(args)
    got = D.from_dataset(readers["train"], log=lambda m: None)
    want = D.generate(SPLITS["train"], workers=1)
    scale = min(s for c in D.full_stack().cameras for s in c.scale)
    np.testing.assert_allclose(got.images.astype(np.float32), want.images.astype(np.float32),
                               atol=0.5 / scale + 2e-3 * np.abs(want.images.astype(np.float32)).max())
    for a, b, ca, cb in zip(got.boxes, want.boxes, got.classes, want.classes):
        np.testing.assert_allclose(a, b, atol=1e-4)
        assert (ca == cb).all()
    out = tmp_path / "models"
    results = D.run_study(["rgb+mir"], out, TINY_RECIPE, model_config=SMALL, command="test", log=lambda m: None,
                          datasets=readers)
    card = load_detector(out / "efficientdet_rgb_mir.onnx").card
    assert card.training["data"]["test"].endswith("split test, 2 frames") and "splits" not in card.training
    assert card.metrics["test_dataset"]["map"] == results["rgb+mir"]["test"]["map"] and not card.overlay_scales
    assert "Test mAP@0.5 (Pascal VOC all-point AP) on Multispectral Object Detection dataset" in \
        (out / "detection_study_bundled.md").read_text()
    # no split files: one line saying the dataset has none and how to give one
    (root / "val.txt").unlink()
    assert main(["train-detection", "--dataset", str(root), "--out", str(tmp_path / "x"), "--steps", "1"]) == 2
    assert "has no official split: write train.txt, val.txt and test.txt" in capsys.readouterr().err
