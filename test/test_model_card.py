"""Model cards and the loader: a valid pair loads; every kind of mismatch is named."""

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hsi_xai_node.model_card import (ClassSpec, InputSpec, ModelCard, ModelError, file_sha256,
                                     load_model)
from hsi_xai_node.sensor.calibration import load_profile

H, W = 16, 32
BANDS = (770.58, 858.95, 944.49)


def tiny_segmenter(path, bands=3, classes=5):
    """input -> 3x3 conv -> relu ('dec1') -> 1x1 conv ('logits')."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, bands, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((classes, 4, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["dec1"]),
             helper.make_node("Conv", ["dec1", "w2"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, bands, H, W])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes, H, W])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def write_pair(tmp_path, **card_changes):
    onnx_path = tmp_path / "m.onnx"
    tiny_segmenter(onnx_path)
    card = ModelCard(
        name="tiny", task="segmentation", file="m.onnx", sha256=file_sha256(onnx_path), sensor_profile="hsi-drive",
        input=InputSpec("input", (1, 3, H, W), BANDS, "none", 1.0, crop_top=100, crop_left=200),
        classes=tuple(ClassSpec(i, i + 1, f"c{i}", (0, 0, 0)) for i in range(5)),
        logits="logits", layers={"penultimate": "dec1"})
    card = dataclasses.replace(card, **card_changes)
    (tmp_path / "m.json").write_text(card.to_json())
    return onnx_path


def test_valid_pair_loads_and_prepares_input(tmp_path, hsi_drive):
    m = load_model(write_pair(tmp_path), profile=hsi_drive)
    assert m.card.layers == {"penultimate": "dec1"}
    assert m.card.frontend_config().bands == list(BANDS) and not m.card.frontend_config().normalise
    cube = np.arange(3 * 216 * 409, dtype=np.float32).reshape(3, 216, 409)
    x = m.card.model_input(cube)
    assert x.shape == (1, 3, H, W)
    assert x[0, 1, 0, 0] == cube[1, 100, 200] and x[0, 2, -1, -1] == cube[2, 100 + H - 1, 200 + W - 1]
    assert m.card.label_ids().tolist() == [1, 2, 3, 4, 5]
    # the card round-trips through JSON unchanged
    again = ModelCard.load(tmp_path / "m.json")
    assert again == m.card


def _edit_card(tmp_path, fn):
    path = tmp_path / "m.json"
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def test_missing_files(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        load_model(tmp_path / "absent.onnx")
    onnx_path = write_pair(tmp_path)
    (tmp_path / "m.json").unlink()
    with pytest.raises(ModelError, match=r"model card .*m.json: no such file"):
        load_model(onnx_path)


def test_corrupt_files(tmp_path):
    onnx_path = write_pair(tmp_path)
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its card"):
        load_model(onnx_path)
    # a truncated file whose card was updated to its hash: the hash passes, ONNX parsing does not
    onnx_path.write_bytes(bytes(data[: len(data) // 3]))
    _edit_card(tmp_path, lambda d: d.update(sha256=file_sha256(onnx_path)))
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_model(onnx_path)
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(onnx_path)


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.update(schema="other/1"), r"schema: Input should be 'hsi_xai_node/model-card/1' \(got 'other/1'\)"),
    (lambda d: d.pop("classes"), "classes: Field required"),
    (lambda d: d["input"].update(tensor="x"), "card input tensor 'x' is not a graph input"),
    (lambda d: d["input"].update(shape=[1, 3, H, W + 1]), r"graph input 'input' has shape \(1, 3, 16, 32\)"),
    (lambda d: d["input"].update(bands_nm=[770.58, 858.95]), "input.bands_nm lists 2 bands for an input of 3 channels"),
    (lambda d: d.update(logits="out"), "card logits tensor 'out' is not a graph output"),
    (lambda d: d.update(classes=d["classes"][:4]), r"has shape \(1, 5, 16, 32\), card implies \(1, 4, 16, 32\)"),
    (lambda d: d.update(layers={"penultimate": "enc9"}), r"card layer tensors not in the graph: \{'penultimate': 'enc9'\}"),
    (lambda d: d["input"].update(normalise="l2"),
     r"input.normalise: Input should be 'pn', 'none', 'max' or 'mean_std' \(got 'l2'\)"),
])
def test_card_against_graph(tmp_path, edit, message):
    onnx_path = write_pair(tmp_path)
    _edit_card(tmp_path, edit)
    with pytest.raises(ModelError, match=message):
        load_model(onnx_path)


def test_card_against_profile(tmp_path, hsi_drive):
    onnx_path = write_pair(tmp_path)
    # the 665-975 sensor has no band within 2 nm of 770.58 nm
    with pytest.raises(ModelError, match=r"needs bands at \[770.58.*sensor profile 'imec-665-975'"):
        load_model(onnx_path, profile=load_profile("imec-665-975"))
    _edit_card(tmp_path, lambda d: d["input"].update(crop_top=210))
    with pytest.raises(ModelError, match=r"window at \(210, 200\) does not fit the 216x409 cube"):
        load_model(onnx_path, profile=hsi_drive)


def test_model_input_rejects_a_cube_too_small(tmp_path):
    card = load_model(write_pair(tmp_path)).card
    with pytest.raises(ModelError, match="cannot hold the 16x32 window"):
        card.model_input(np.zeros((3, 50, 50), np.float32))


def test_the_normalisations_of_imported_models(tmp_path):
    """max: 2 x / max_b - 1 per band over the window (a dark band: -1); mean_std: (x - mean_b) / std_b; then the
    scale. Worked on a cube whose window values are known."""
    cube = np.zeros((3, 216, 409), np.float32)
    cube[:, 100:100 + H, 200:200 + W] = np.arange(3 * H * W, dtype=np.float32).reshape(3, H, W) / (3 * H * W)
    cube[0, 0, 0] = 50.0  # outside the window: not its maximum
    top = ((np.arange(3) + 1) * H * W - 1)[:, None, None] / (3 * H * W)  # band b's largest value
    spec = dataclasses.replace(load_model(write_pair(tmp_path)).card.input, normalise="max", scale=3.0)
    card = dataclasses.replace(load_model(write_pair(tmp_path)).card, input=spec)
    x = card.model_input(cube)
    window = cube[:, 100:100 + H, 200:200 + W]
    np.testing.assert_allclose(x[0], 3.0 * (2 * window / top - 1), rtol=1e-6, atol=1e-6)
    assert x.max() == pytest.approx(3.0) and x.min() == pytest.approx(-3.0)
    assert (card.model_input(np.zeros_like(cube)) == -3.0).all()  # dark: -1, no NaN
    cube[1] = 0.0
    assert (card.model_input(cube)[0, 1] == -3.0).all() and np.isfinite(card.model_input(cube)).all()

    spec = dataclasses.replace(spec, normalise="mean_std", scale=1.0, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    x = dataclasses.replace(card, input=spec).model_input(cube)
    expected = (window - np.array([0.1, 0.2, 0.3])[:, None, None]) / np.array([0.5, 0.25, 2.0])[:, None, None]
    np.testing.assert_allclose(x[0], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["input"].update(normalise="mean_std"), "normalise mean_std needs a mean and a std per band (3)"),
    (lambda d: d["input"].update(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]), "mean and std are for normalise "
                                                                             "mean_std, not 'none'"),
    (lambda d: d["input"].update(normalise="mean_std", mean=[0.0] * 3, std=[1.0, 0.0, 1.0]), "std.1"),
    (lambda d: d["input"].update(normalise="zscore"), "normalise"),
])
def test_normalisation_fields_are_checked(tmp_path, edit, message):
    path = write_pair(tmp_path)
    _edit_card(tmp_path, edit)
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_model(path)
