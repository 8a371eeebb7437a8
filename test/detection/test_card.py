"""Detector cards and `load_detector`: our own exported EfficientDet loads as it is; every kind of
mismatch is a ModelError naming it; and an external detector in NVIDIA's TensorRT EfficientDet
sample conventions (NHWC input, raw logits, TF (ty, tx, th, tw) box coding on yxyx anchors, its
own tensor names, no NMS) is brought to the same outputs as ours and explained the same way."""

import copy
import dataclasses
import json
import warnings

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="torch is the reference here: pip install -e '.[test]'")

from hsi_xai_node.classes import DETECTION_CLASSES
from hsi_xai_node.detection.anchors import generate_anchors
from hsi_xai_node.detection.card import (DETECTOR_CARD_SCHEMA, NMS_OUTPUTS, DetectorCard, DetectorInput, RawOutputs,
                                         StackInput, load_detector)
from hsi_xai_node.detection.postprocess import PostprocessConfig
from hsi_xai_node.explain import DetectionExplainConfig, ExplainError, build_detection_explainer
from hsi_xai_node.model_card import ClassSpec, ModelError, file_sha256
from hsi_xai_node.training.detection import INPUT_SIZE, DetectionResult, export_onnx, write_model
from hsi_xai_node.training.efficientdet import DetectorExport, EfficientDetConfig, decode_boxes
from test.detection.tiny_efficientdet import HW, TINY, image, run, tiny_model
from test.detection.tiny_efficientdet import one_torch_thread  # noqa: F401 (autouse fixture)

POST = PostprocessConfig(score_threshold=0.55, iou_threshold=0.5, max_detections=10)
STACK = (StackInput("rgb", "bgr8", (0.4, 0.45, 0.5), (0.2, 0.2, 0.25)),)
CLASSES = tuple(ClassSpec(i, i + 1, f"c{i}", (0, 0, 255)) for i in range(TINY.num_classes))
EXPLAIN = DetectionExplainConfig(layers=("class_head_input",), top_k=6)


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """Our tiny EfficientDet exported (decoding and NMS in the graph): torch model and ONNX bytes."""
    model = tiny_model(0)
    path = tmp_path_factory.mktemp("native") / "tiny.onnx"
    export_onnx(model, path, HW, POST)
    return model, path.read_bytes()


def native_card(sha256: str, **changes) -> DetectorCard:
    card = DetectorCard(name="tiny", file="tiny.onnx", sha256=sha256,
                        input=DetectorInput("image", (1, 3, *HW), "nchw", STACK), classes=CLASSES,
                        layers={"class_head_input": "bifpn_p2", "bifpn_p3": "bifpn_p3"},
                        postprocess={"in_graph": True, **dataclasses.asdict(POST)})
    return dataclasses.replace(card, **changes)


def write_pair(tmp_path, data: bytes, **changes):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(data)
    (tmp_path / "tiny.json").write_text(native_card(file_sha256(path), **changes).to_json())
    return path


def edit_card(path, fn):
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


# --- our own models ------------------------------------------------------------------------------

def test_write_model_card_loads(tmp_path):
    config = EfficientDetConfig(**{**dataclasses.asdict(TINY), "in_channels": 4, "num_classes": len(DETECTION_CLASSES),
                                   "anchors": TINY.anchors})
    model = tiny_model(1, config)
    result = DetectionResult(model, "rgb+mir", 0.0, 0, 0.0, [])
    path, card = write_model(result, tmp_path, "tiny_rgb_mir", {"test": 1}, {"command": "test"})
    loaded = load_detector(path)
    assert loaded.card == DetectorCard.load(tmp_path / "tiny_rgb_mir.json")
    assert loaded.card.to_json() == card.to_json()  # JSON round trip (tuples come back as lists inside dicts)
    h, w = INPUT_SIZE[1], INPUT_SIZE[0]
    assert card.input.shape == (1, 4, h, w) and card.input.hw == (h, w) and card.input.channels == 4
    assert [s.camera for s in card.input.stack] == ["rgb", "mir"] and [len(s.offset) for s in card.input.stack] == [3, 1]
    assert [c.name for c in card.classes] == [c.name for c in DETECTION_CLASSES]
    assert card.layers["class_head_input"] == "bifpn_p2" and card.architecture["type"] == "efficientdet"
    assert card.schema == DETECTOR_CARD_SCHEMA and card.sha256 == file_sha256(path)
    outputs = [o.name for o in loaded.model.graph.output]
    assert outputs == ["scores", "boxes", *NMS_OUTPUTS]  # in the graph already: nothing appended
    x = image(2, (h, w), 4)
    got = run(loaded.model, {"image": x})
    with torch.no_grad():
        scores, boxes = DetectorExport(model, (h, w))(torch.from_numpy(x))
    np.testing.assert_allclose(got["scores"], scores.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["boxes"], boxes.numpy(), rtol=1e-4, atol=1e-4 * float(boxes.abs().max()))
    a = config.anchors.count((h, w))
    assert got["boxes"].shape == (1, a, 4) and got["det_pairs"].shape == (1, PostprocessConfig().max_detections)


def test_hand_written_card_loads_and_round_trips(tmp_path, native):
    path = write_pair(tmp_path, native[1])
    loaded = load_detector(path)
    assert loaded.card == native_card(file_sha256(path)) == DetectorCard.load(tmp_path / "tiny.json")
    assert [o.name for o in loaded.model.graph.output] == ["scores", "boxes", *NMS_OUTPUTS]
    assert loaded.model.SerializeToString() == onnx.load_model_from_string(native[1]).SerializeToString()


def test_missing_and_corrupt_files(tmp_path, native):
    with pytest.raises(ModelError, match=r"detector .*absent.onnx: no such file"):
        load_detector(tmp_path / "absent.onnx")
    path = write_pair(tmp_path, native[1])
    (tmp_path / "tiny.json").unlink()
    with pytest.raises(ModelError, match=r"detector card .*tiny.json: no such file"):
        load_detector(path)
    path = write_pair(tmp_path, native[1])
    data = bytearray(native[1])
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256 .* does not match its card"):
        load_detector(path)
    path.write_bytes(bytes(data[:len(data) // 3]))  # truncated, card updated to its hash
    edit_card(tmp_path / "tiny.json", lambda d: d.update(sha256=file_sha256(path)))
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_detector(path)
    (tmp_path / "tiny.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_detector(path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(schema="hsi_xai_node/model-card/1"), "schema: Input should be 'hsi_xai_node/detector-card/1'"),
    (lambda d: d.pop("input"), r"input: Field required"),
    (lambda d: d["input"].update(tensor="input"), r"card input tensor 'input' is not a graph input \(inputs: \['image'\]\)"),
    (lambda d: d["input"].update(shape=[1, 3, 64, 97]),
     r"graph input 'image' has shape \(1, 3, 64, 96\), card says \(1, 3, 64, 97\)"),
    (lambda d: d["input"].update(layout="chw"), r"input.layout: Input should be 'nchw' or 'nhwc' \(got 'chw'\)"),
    (lambda d: d["input"]["stack"].append({"camera": "mir", "encoding": "mono16", "offset": [0], "scale": [1]}),
     "card stack gives 4 channels for an input of 3"),
    (lambda d: d["input"]["stack"][0].update(scale=[1, 1]), r"input.stack\[0\]: scale gives 2 values for a 3-channel bgr8"),
    (lambda d: d["classes"][2].update(channel=1), r"class channel\(s\) \[1\] appear more than once"),
    (lambda d: d.update(classes=d["classes"][:2]),
     r"scores tensor 'scores' has shape \(1, 3060, 3\), expected \(1, anchors, 2\): the card lists 2 classes"),
    (lambda d: d.update(layers={"bifpn_p3": "bifpn_p3"}), "card layers must name a 'class_head_input'"),
    (lambda d: d["layers"].update(class_head_input="bifpn_p9"),
     r"card layer tensors not in the graph: \{'class_head_input': 'bifpn_p9'\}"),
    (lambda d: d.update(scores="probs"), r"card scores tensor 'probs' is not a graph output"),
    (lambda d: d["postprocess"].update(score_threshold=1.5), r"postprocess.score_threshold: Input should be less than 1"),
])
def test_card_against_graph(tmp_path, native, edit, message):
    path = write_pair(tmp_path, native[1])
    edit_card(tmp_path / "tiny.json", edit)
    with pytest.raises(ModelError, match=message):
        load_detector(path)


# --- an external detector: NVIDIA TensorRT EfficientDet sample conventions ---------------------------

class ForeignEfficientDet(torch.nn.Module):
    """NHWC image -> raw class logits (1, A, C) and TF-coded box regression (1, A, 4), no NMS.

    The regression is (ty, tx, th, tw) of the boxes our model predicts, relative to the same
    anchors in (y0, x0, y1, x1): ty = (cy - ya) / ha, tx = (cx - xa) / wa, th = log(h / ha),
    tw = log(w / wa), computed here from our decoded boxes."""

    def __init__(self, model, input_hw):
        super().__init__()
        self.model = model
        self.register_buffer("anchors", torch.from_numpy(generate_anchors(model.config.anchors, input_hw)))

    def forward(self, x):
        logits, deltas = self.model(x.permute(0, 3, 1, 2))
        b, a = decode_boxes(deltas, self.anchors), self.anchors
        ya, xa, ha, wa = (a[:, 1] + a[:, 3]) / 2, (a[:, 0] + a[:, 2]) / 2, a[:, 3] - a[:, 1], a[:, 2] - a[:, 0]
        cy, cx, h, w = (b[..., 1] + b[..., 3]) / 2, (b[..., 0] + b[..., 2]) / 2, b[..., 3] - b[..., 1], b[..., 2] - b[..., 0]
        return logits, torch.stack([(cy - ya) / ha, (cx - xa) / wa, torch.log(h / ha), torch.log(w / wa)], -1)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory, native):
    """The external detector's ONNX, anchors (.npy, yxyx) and card, in one folder."""
    model, _ = native
    folder = tmp_path_factory.mktemp("foreign")
    path = folder / "efficientdet_trt.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ForeignEfficientDet(model, HW).eval(), (torch.zeros(1, *HW, 3),), str(path), dynamo=False,
                          opset_version=17, input_names=["input_tensor"], output_names=["class_net_out", "box_net_out"])
    m = onnx.load(str(path))
    m.ir_version = min(m.ir_version, 8)
    onnx.save(m, str(path))
    # the finest BiFPN output under the graph's own name: the last node of the last P2 fusion
    last = len(model.bifpn) - 1
    p2 = [n for n in m.graph.node if n.name.startswith(f"/model/bifpn.{last}/top_down.2/")][-1].output[0]
    assert not p2.startswith("bifpn_p")
    np.save(folder / "anchors_yxyx.npy", generate_anchors(TINY.anchors, HW)[:, [1, 0, 3, 2]])
    card = DetectorCard(
        name="trt_sample_efficientdet", file=path.name, sha256=file_sha256(path),
        input=DetectorInput("input_tensor", (1, *HW, 3), "nhwc", STACK), classes=CLASSES,
        layers={"class_head_input": p2},
        raw=RawOutputs("class_net_out", "sigmoid", "box_net_out", "tf_yxhw_deltas", "anchors_yxyx.npy"),
        postprocess={"in_graph": False, **dataclasses.asdict(POST)})
    (folder / "efficientdet_trt.json").write_text(card.to_json())
    return path, p2


def test_foreign_graph_conventions(foreign):
    path, p2 = foreign
    assert p2 in {o for n in onnx.load(str(path)).graph.node for o in n.output}
    m = onnx.load(str(path))
    assert [i.name for i in m.graph.input] == ["input_tensor"]
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [1, *HW, 3]
    assert [o.name for o in m.graph.output] == ["class_net_out", "box_net_out"]
    ops = {n.op_type for n in m.graph.node}
    assert "NonMaxSuppression" not in ops
    assert next(n for n in m.graph.node if n.output[0] == "class_net_out").op_type != "Sigmoid"  # raw logits


def test_external_detector_matches_our_export(foreign, native):
    model, data = native
    path, p2 = foreign
    loaded = load_detector(path)
    assert loaded.card.input.hw == HW and loaded.card.input.channels == 3
    outputs = {o.name for o in loaded.model.graph.output}
    assert {loaded.card.scores, loaded.card.boxes, *NMS_OUTPUTS} <= outputs
    x = image(7)
    ours = run(onnx.load_model_from_string(data), {"image": x})
    theirs = run(loaded.model, {"input_tensor": np.ascontiguousarray(x.transpose(0, 2, 3, 1))})
    kept = int((ours["det_pairs"] >= 0).sum())
    assert kept == POST.max_detections
    np.testing.assert_allclose(theirs[loaded.card.scores], ours["scores"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(theirs[loaded.card.boxes], ours["boxes"], rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(theirs["det_pairs"], ours["det_pairs"])
    np.testing.assert_array_equal(theirs["det_classes"], ours["det_classes"])
    np.testing.assert_allclose(theirs["det_scores"], ours["det_scores"], rtol=1e-4)
    np.testing.assert_allclose(theirs["det_boxes"], ours["det_boxes"], rtol=1e-4, atol=1e-4 * np.abs(ours["det_boxes"]).max())
    # the card's layer is the graph's own finest BiFPN tensor: the same values as our bifpn_p2
    m = copy.deepcopy(loaded.model)
    m.graph.output.append(onnx.helper.make_empty_tensor_value_info(p2))
    feat = run(m, {"input_tensor": np.ascontiguousarray(x.transpose(0, 2, 3, 1))}, [p2])[p2]
    with torch.no_grad():
        want = model.features(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(feat, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_external_detector_explains_like_ours(foreign, native):
    _, data = native
    path, _ = foreign
    loaded = load_detector(path)
    card = loaded.card
    theirs = build_detection_explainer(loaded.model, card.input.tensor, card.scores, card.layers, EXPLAIN,
                                       pairs="det_pairs", layout=card.input.layout)
    ours = build_detection_explainer(onnx.load_model_from_string(data), "image", "scores",
                                     {"class_head_input": "bifpn_p2"}, EXPLAIN, pairs="det_pairs")
    x = image(7)
    outs = {}
    for eg, feed in ((theirs, np.ascontiguousarray(x.transpose(0, 2, 3, 1))), (ours, x)):
        got = run(eg.model, {eg.input: feed}, list(eg.outputs))
        outs[id(eg)] = {o.method: got[n] for n, o in eg.outputs.items()}
    t, o = outs[id(theirs)], outs[id(ours)]
    assert t.keys() == o.keys()
    for method in ("box_gradcam", "box_gradcam_signed", "box_gradcam_full", "box_gradcam_signed_full"):
        assert t[method].shape == o[method].shape, method
        scale = np.abs(o[method]).max()
        assert scale > 0 and np.abs(t[method] - o[method]).max() < 1e-4 * scale, method
    assert t["box_gradcam_u8"].shape == (EXPLAIN.top_k, 1, *HW)  # the NHWC input's H, W
    with pytest.raises(ExplainError, match="input layout must be 'nchw' or 'nhwc', got 'hwc'"):
        build_detection_explainer(loaded.model, card.input.tensor, card.scores, card.layers, EXPLAIN, layout="hwc")


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["raw"].update(anchors="missing.npy"), r"anchors file .*missing.npy not found"),
    (lambda d: d["raw"].pop("anchors"), "coding 'tf_yxhw_deltas' decodes against anchors: give raw.anchors"),
    (lambda d: d["raw"].update(anchors="short.npy"),
     r"anchors for 'tf_yxhw_deltas' must be finite with shape \(3060, 4\) to match 'box_net_out', got shape \(3059, 4\)"),
    (lambda d: d["raw"].update(coding="yxyx"), "raw.coding: Input should be 'xyxy', 'cxcywh_deltas' or 'tf_yxhw_deltas'"),
    (lambda d: d["raw"].update(activation="softmax"), "raw.activation: Input should be 'sigmoid' or 'none'"),
    (lambda d: d["raw"].update(logits="class_net"), "class logits tensor 'class_net' is not in the graph"),
    (lambda d: d["raw"].update(logits="box_net_out", deltas="class_net_out"),
     r"box deltas tensor 'class_net_out' has shape \(1, 3060, 3\), expected \(1, anchors, 4\)"),
    (lambda d: d["raw"].pop("coding"), r"raw.coding: Field required"),
])
def test_external_card_errors(foreign, tmp_path, edit, message):
    path, _ = foreign
    for f in path.parent.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    np.save(tmp_path / "short.npy", np.load(tmp_path / "anchors_yxyx.npy")[:-1])
    edit_card(tmp_path / "efficientdet_trt.json", edit)
    with pytest.raises(ModelError, match=message):
        load_detector(tmp_path / path.name)


def test_external_card_postprocess_settings_are_used(foreign, tmp_path):
    path, _ = foreign
    for f in path.parent.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    edit_card(tmp_path / "efficientdet_trt.json", lambda d: d["postprocess"].update(max_per_class=1, score_threshold=0.6))
    loaded = load_detector(tmp_path / path.name)
    x = np.ascontiguousarray(image(7).transpose(0, 2, 3, 1))
    got = run(loaded.model, {"input_tensor": x})
    scores, classes = got[loaded.card.scores][0], got["det_classes"][0]
    present = sorted(set(np.nonzero((scores > np.float32(0.6)).any(0))[0]))
    assert len(present) >= 2
    # one box per class that has a score above 0.6: that class's best
    assert sorted(classes[classes >= 0]) == present
    for slot, c in enumerate(classes[:len(present)]):
        assert got["det_scores"][0, slot] == scores[:, c].max()
