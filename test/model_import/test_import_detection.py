"""`hsi-xai import-model --task detection` on an external detector in NVIDIA's TensorRT EfficientDet sample
conventions (NHWC input, raw logits, TF box coding on yxyx anchors, its own tensor names, no NMS): one command
writes the card the detector tests otherwise write by hand, the layer found is the graph's finest BiFPN output,
and the loaded detector keeps the boxes of, and explains them like, our own export of the same weights."""

import dataclasses
import json

import numpy as np
import onnx
import pytest

from test.detection.test_card import EXPLAIN, POST, foreign, native  # noqa: F401  (fixtures)
from test.detection.tiny_efficientdet import HW, image, run
from test.detection.tiny_efficientdet import one_torch_thread  # noqa: F401  (autouse fixture)

from hsi_xai_node.cli import main  # noqa: E402
from hsi_xai_node.detection.card import load_detector  # noqa: E402
from hsi_xai_node.explain import build_detection_explainer  # noqa: E402


@pytest.fixture(scope="module")
def exported(foreign):  # noqa: F811
    """The detector test's external detector (ONNX, yxyx anchors; its hand-written card is not used here)."""
    path, p2 = foreign
    return path.parent, path, p2


def _argv(folder, path, *extra):
    return ["import-model", str(path), "--task", "detection", "--classes", "c0,c1,c2", "--stack", "rgb:bgr8",
            "--stack-offset", "0.4,0.45,0.5", "--stack-scale", "0.2,0.2,0.25", "--anchors",
            str(folder / "anchors_yxyx.npy"), "--score-threshold", str(POST.score_threshold), "--max-detections", str(POST.max_detections), "--out",
            str(folder / "imported"), *extra]


def test_one_command_imports_the_trt_sample_detector(exported, native, capsys):  # noqa: F811
    folder, path, p2 = exported
    assert main(_argv(folder, path)) == 0
    text = capsys.readouterr().out
    assert "the finest of 4 pyramid levels, shared by the class and box heads" in text
    card_path = folder / "imported" / "efficientdet_trt_static.json"
    doc = json.loads(card_path.read_text())
    assert doc["layers"] == {"class_head_input": p2}
    assert doc["input"]["layout"] == "nhwc" and doc["input"]["shape"] == [1, *HW, 3]
    assert doc["raw"] == {"logits": "class_net_out", "activation": "sigmoid", "deltas": "box_net_out",
                          "coding": "tf_yxhw_deltas", "anchors": "efficientdet_trt_static_anchors.npy"}

    loaded = load_detector(folder / "imported" / "efficientdet_trt_static.onnx")
    model, data = native
    x = image(7)
    ours = run(onnx.load_model_from_string(data), {"image": x})
    theirs = run(loaded.model, {"input_tensor": np.ascontiguousarray(x.transpose(0, 2, 3, 1))})
    assert int((ours["det_pairs"] >= 0).sum()) == POST.max_detections
    np.testing.assert_array_equal(theirs["det_pairs"], ours["det_pairs"])
    np.testing.assert_array_equal(theirs["det_classes"], ours["det_classes"])
    # the kept boxes' Grad-CAM at the layer found equals ours at bifpn_p2 (checked against autograd elsewhere), and
    # so do the camera attributions summed in each box, over the NHWC input and over the NCHW one
    card = loaded.card
    explain = dataclasses.replace(EXPLAIN, methods=("box_gradcam", "box_spectral"))
    eg_t = build_detection_explainer(loaded.model, card.input.tensor, card.scores, card.layers, explain,
                                     pairs="det_pairs", layout="nhwc", boxes="det_boxes")
    eg_o = build_detection_explainer(onnx.load_model_from_string(data), "image", "scores",
                                     {"class_head_input": "bifpn_p2"}, explain, pairs="det_pairs", boxes="det_boxes")
    t = {o.method: v for (n, o), v in zip(eg_t.outputs.items(), run(eg_t.model, {eg_t.input: np.ascontiguousarray(
        x.transpose(0, 2, 3, 1))}, list(eg_t.outputs)).values())}
    o = {o.method: v for (n, o), v in zip(eg_o.outputs.items(), run(eg_o.model, {eg_o.input: x},
                                                                      list(eg_o.outputs)).values())}
    scale = np.abs(o["box_gradcam"]).max()
    assert scale > 0 and np.abs(t["box_gradcam"] - o["box_gradcam"]).max() < 1e-4 * scale
    shares = np.abs(o["box_spectral"]).max()
    assert shares > 0 and np.abs(t["box_spectral"] - o["box_spectral"]).max() < 1e-4 * shares


@pytest.mark.parametrize("change, message", [
    (["--coding", "cxcywh_deltas", "--anchors", ""], "--coding cxcywh_deltas decodes against anchors: give --anchors"),
    (["--stack", "rgb:bgr8,mir:mono16", "--stack-offset", "0", "--stack-scale", "1"],
     "neither axis 1 (NCHW) nor axis 3 (NHWC) is the 4"),
    (["--classes", "mods"], "the logits have 3 classes; class set 'mods' has 5"),
    (["--stack-scale", "1,2"], "--stack-scale gives 2 values for 3 stacked channels"),
])
def test_refusals(exported, tmp_path, capsys, change, message):
    folder, path, _ = exported
    argv = _argv(folder, path)
    argv[argv.index("--out") + 1] = str(tmp_path / "out")
    for k in range(0, len(change), 2):
        if change[k] in argv:
            argv[argv.index(change[k]) + 1] = change[k + 1]
        else:
            argv += change[k:k + 2]
    if "" in argv:
        i = argv.index("")
        del argv[i - 1:i + 1]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_detector_with_its_own_nms_is_refused(native, tmp_path, capsys):  # noqa: F811
    _, data = native
    (tmp_path / "ours.onnx").write_bytes(data)
    assert main(["import-model", str(tmp_path / "ours.onnx"), "--task", "detection", "--classes", "c0,c1,c2",
                 "--stack", "rgb:bgr8"]) == 2
    assert "the graph runs its own NMS: export it cut before the NMS" in capsys.readouterr().err
