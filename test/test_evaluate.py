"""`hsi-xai evaluate` on HSI-Drive v2.0 written in its documented layouts (mmsegmentation's .npy/.png, the release's
.mat), a few generated frames in each, against a reference computed here with ONNX Runtime and the training code's
own normalisation; plus the bad files a real download holds."""

import json

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from hsi_xai_node.cli import main
from hsi_xai_node.datasets import DatasetError, HsiDriveMat, HsiDriveMmseg, open_segmentation_dataset
from hsi_xai_node.evaluate import evaluate_segmentation
from hsi_xai_node.metrics import confusion, scores
from hsi_xai_node.model_card import load_model
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.frontend import FrontEnd, FrontEndConfig
from test.conftest import REPO

MODEL = REPO / "models" / "unet_bundled_25pn.onnx"
NAMES = ("nf1111_101", "nf2112_204", "nf3221_303")  # HSI-Drive-like image numbering, kept as metadata


@pytest.fixture(scope="module")
def frames(hsi_drive):
    """Three held-out generated frames: (reflectance (25, 216, 409), labels)."""
    gen = DriveGenerator(hsi_drive, seed=2001, render_cameras=False)
    fe = FrontEnd(hsi_drive, *gen.references(), FrontEndConfig(normalise=False))
    return [(fe.process(gen.frame(k).raw).cube.data, gen.frame(k).labels) for k in (0, 15, 30)]


def reference(frames, values="reflectance"):
    """The confusion matrix by hand: the training code's PN x 25 (training.data), the card's window, ORT, argmax."""
    from hsi_xai_node.training.data import VARIANTS

    m = load_model(MODEL)
    i = m.card.input
    sess = ort.InferenceSession(m.onnx_bytes, providers=["CPUExecutionProvider"])
    cm = 0
    for cube, labels in frames:
        x = cube[None] if values == "model" else VARIANTS["25pn"].transform(cube[None], m.card.input.bands_nm)
        window = x[:, :, i.crop_top:i.crop_top + i.height, i.crop_left:i.crop_left + i.width]
        pred = m.card.label_ids()[sess.run([m.card.logits], {i.tensor: window})[0][0].argmax(0)]
        cm = cm + confusion(labels[i.crop_top:i.crop_top + i.height, i.crop_left:i.crop_left + i.width], pred, 256)
    return cm


def write_mmseg(root, frames, split="test", transform=None):
    (root / "images" / split).mkdir(parents=True)
    (root / "annotations" / split).mkdir(parents=True)
    for name, (cube, labels) in zip(NAMES, frames):
        np.save(root / "images" / split / f"{name}.npy", (transform(cube) if transform else cube).transpose(1, 2, 0))
        cv2.imwrite(str(root / "annotations" / split / f"{name}.png"), labels)
    return root


def test_mmseg_layout_reflectance_cubes_match_the_reference(tmp_path, frames):
    root = write_mmseg(tmp_path / "HSIDrive20", frames)
    dataset = open_segmentation_dataset(str(root))  # layout recognised from the folder
    assert isinstance(dataset, HsiDriveMmseg) and len(dataset) == 3
    result = evaluate_segmentation(MODEL, dataset, values="reflectance")
    want = reference(frames)
    cm = np.zeros((256, 256), np.int64)
    cm[:len(result.cm), :len(result.cm)] = result.cm
    assert cm.sum() == want.sum() == 3 * 208 * 400 - (want[0].sum())  # every labelled window pixel counted once
    # PN as x * (1 / sum) (the front end's) vs x / sum (training's): logits within float32 rounding, so at most a
    # near-tied pixel in 10^4 may take the other class
    assert np.abs(cm - want).sum() <= 2e-4 * want.sum()
    assert [f["image"] for f in result.per_frame] == list(NAMES) and result.per_frame[0]["split"] == "test"
    assert "split test, 3 cubes" in result.dataset and result.frames == 3 and not result.skipped


def test_mmseg_layout_model_values_match_the_reference_exactly(tmp_path, frames):
    """Cubes stored as the model's input (mmsegmentation's layout feeds them unchanged): the same pixels, the same
    engine, the same confusion matrix."""
    from hsi_xai_node.training.data import VARIANTS

    stored = [(VARIANTS["25pn"].transform(c[None], load_model(MODEL).card.input.bands_nm)[0], lab) for c, lab in frames]
    root = write_mmseg(tmp_path / "HSIDrive20", stored)
    result = evaluate_segmentation(MODEL, HsiDriveMmseg(root, "test"), values="model")
    want = reference(stored, values="model")
    assert (result.cm == want[:len(result.cm), :len(result.cm)]).all()
    s = scores(want, {c.id: c.name for c in load_model(MODEL).card.classes})
    assert result.figures() == scores(result.cm, result.names) and result.figures()["miou"] == s["miou"]


def test_mat_layout_either_axis_order_and_labels_beside(tmp_path, frames):
    savemat = pytest.importorskip("scipy.io", reason="reading .mat cubes needs scipy ([datasets] extra)").savemat
    cubes, labels = tmp_path / "release" / "cubes", tmp_path / "release" / "labels"
    cubes.mkdir(parents=True)
    labels.mkdir()
    for name, (cube, lab) in zip(NAMES, frames):
        savemat(cubes / f"{name}.mat", {"cube_fl32": cube})  # 25 x 216 x 409, as release v1.1
        cv2.imwrite(str(labels / f"{name}.png"), lab)
    result = evaluate_segmentation(MODEL, HsiDriveMat(tmp_path / "release", "chw"))
    mmseg = evaluate_segmentation(MODEL, HsiDriveMmseg(write_mmseg(tmp_path / "mm", frames), "test"))
    assert result.frames == 3 and (result.cm == mmseg.cm).all()
    wrong = list(HsiDriveMat(tmp_path / "release", "hwc"))
    assert all(isinstance(w, DatasetError) for w in wrong)
    assert "has no 25 bands on axis 2 (hwc) (its axis 0 has 25: the other axis order?)" in str(wrong[0])


def test_bad_files_are_skipped_and_counted(tmp_path, frames):
    root = write_mmseg(tmp_path / "HSIDrive20", frames[:1])
    images, notes = root / "images" / "test", root / "annotations" / "test"
    np.save(images / "z1_bands.npy", np.zeros((216, 409, 24), np.float32))
    np.save(images / "z2_pickle.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)  # never unpickled
    (images / "z3_truncated.npy").write_bytes(b"\x93NUMPY\x01\x00")
    np.save(images / "z4_no_labels.npy", frames[0][0].transpose(1, 2, 0))
    np.save(images / "z5_big_ids.npy", frames[0][0].transpose(1, 2, 0))
    cv2.imwrite(str(notes / "z5_big_ids.png"), np.full((216, 409), 40, np.uint8))
    result = evaluate_segmentation(MODEL, HsiDriveMmseg(root, "test"))
    assert result.frames == 1
    assert result.skipped["no annotation"]["count"] == 1
    bad = result.skipped["unreadable or wrong-shaped file"]
    assert bad["count"] == 4 and "z1_bands.npy: cube (216, 409, 24) has no 25 bands" in bad["first"]
    text = result.text()
    assert "skipped  unreadable or wrong-shaped file: 4, first:" in text


def test_the_command(tmp_path, frames, capsys):
    root = write_mmseg(tmp_path / "HSIDrive20", frames[:2], split="validation")
    out = tmp_path / "figures" / "eval.json"
    code = main(["evaluate", str(MODEL), "--dataset", str(root), "--split", "val", "--values", "reflectance",
                 "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0
    assert f"dataset  HSI-Drive v2.0 (mmsegmentation layout) {root}, split validation, 2 cubes" in text
    assert "model    unet_bundled_25pn (card sha256 f4772b91ae30)" in text and "values   reflectance" in text
    for name in ("road", "road_marks", "vegetation", "sky", "other"):
        assert any(line.startswith(name + " ") for line in text.splitlines()), name
    doc = json.loads(out.read_text())
    assert doc["dataset"].endswith("split validation, 2 cubes") and doc["frames"] == 2
    assert doc["scores"]["miou"] > 0.8  # the bundled model on held-out generated frames
    assert sum(map(sum, doc["confusion"]["counts_truth_by_prediction"])) == sum(f["labelled_pixels"]
                                                                                  for f in doc["per_frame"])
    # nothing evaluated is a failed run; a folder in no known layout is one line
    empty = tmp_path / "empty"
    write_mmseg(empty, [], split="test")
    np.save(empty / "images" / "test" / "x.npy", np.zeros((4, 4, 25), np.float32))
    assert main(["evaluate", str(MODEL), "--dataset", str(empty), "--no-progress"]) == 1
    assert main(["evaluate", str(MODEL), "--dataset", str(tmp_path / "figures")]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("neither mmsegmentation's HSI-Drive v2.0 layout (images/, annotations/) nor a folder "
                                "of .mat cubes; give --layout") and "Traceback" not in err


def test_generated_drives_are_a_dataset_too(frames):
    """Seed 2001's frames 0, 15, 30, rendered by the dataset, equal the fixture's rendering: the same figures."""
    dataset = open_segmentation_dataset("generated", split="2001", limit=3)
    result = evaluate_segmentation(MODEL, dataset)
    assert "seeds 2001-2001" in result.dataset and result.frames == 3
    assert [f["frame"] for f in result.per_frame] == [0, 15, 30]
    want = reference(frames)
    assert np.abs(result.cm - want[:len(result.cm), :len(result.cm)]).sum() <= 2e-4 * want.sum()


def test_a_pixel_predicted_unlabelled_is_a_miss():
    """A model with an 'unlabelled' channel (mmsegmentation's HSI-Drive v2.0) predicting id 0 on labelled truth:
    counted against the class and against the pixel accuracy; unlabelled truth is not counted at all."""
    truth = np.array([[1, 1, 2, 0]])
    pred = np.array([[1, 0, 2, 2]])
    s = scores(confusion(truth, pred, 3), {1: "road", 2: "road_marks"})
    assert s["accuracy"]["road"] == 0.5 and s["iou"]["road"] == 0.5 and s["iou"]["road_marks"] == 1.0
    assert s["pixel_accuracy"] == pytest.approx(2 / 3)
