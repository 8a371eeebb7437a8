"""The compact EfficientDet, its ONNX export (decoding and NMS in the graph) and its training targets
and loss, each against a hand computation or an independent reference."""

import math

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="torch is the reference here: pip install -e '.[test]'")

from hsi_xai_node.detection.anchors import generate_anchors
from hsi_xai_node.detection.boxes import MAX_LOG_SCALE, decode, encode, iou_matrix
from hsi_xai_node.detection.postprocess import PostprocessConfig
from hsi_xai_node.explain import check_tensorrt
from hsi_xai_node.training.detection import assign, export_onnx, loss_fn
from hsi_xai_node.training.efficientdet import (DetectorExport, EfficientDet, FastFusion, MBConv, SqueezeExcite,
                                                decode_boxes)
from test.detection.tiny_efficientdet import HW, TINY, image, run, tiny_model, with_score_threshold
from test.detection.tiny_efficientdet import one_torch_thread  # noqa: F401 (autouse fixture)

nn = torch.nn


# --- architecture ------------------------------------------------------------------------------

def test_squeeze_excite_matches_hand_computation():
    torch.manual_seed(0)
    se = SqueezeExcite(6, 2).double()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    w1, b1 = se.reduce.weight[:, :, 0, 0], se.reduce.bias
    w2, b2 = se.expand.weight[:, :, 0, 0], se.expand.bias
    s = x.mean((2, 3))                                   # (2, 6) squeeze
    h = s @ w1.T + b1
    h = h / (1 + torch.exp(-h))                          # SiLU
    gate = 1 / (1 + torch.exp(-(h @ w2.T + b2)))         # sigmoid
    np.testing.assert_allclose(se(x).detach().numpy(), (x * gate[:, :, None, None]).detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("cin, cout, expand, stride, residual", [
    (8, 8, 4, 1, True), (8, 8, 1, 1, True), (8, 8, 4, 2, False), (8, 12, 4, 1, False)])
def test_mbconv_structure_and_residual(cin, cout, expand, stride, residual):
    torch.manual_seed(1)
    block = MBConv(cin, cout, expand, stride, 3).eval()
    assert block.residual is residual
    mid = cin * expand
    assert isinstance(block.expand, nn.Identity) == (expand == 1)
    assert isinstance(block.se, SqueezeExcite) and block.se.reduce.in_channels == mid
    assert block.se.reduce.out_channels == max(1, cin // 4)
    assert block.depthwise[0].groups == mid and block.depthwise[0].stride == (stride, stride)
    assert isinstance(block.depthwise[-1], nn.SiLU) and len(block.project) == 2  # projection is linear
    if expand != 1:
        assert isinstance(block.expand[-1], nn.SiLU)
    x = torch.randn(1, cin, 8, 10)
    y = block(x)
    assert y.shape == (1, cout, 8 // stride, 10 // stride)
    # a zero projection (BN scale and shift 0) leaves exactly the skip path: x, or nothing
    with torch.no_grad():
        block.project[1].weight.zero_()
        block.project[1].bias.zero_()
        y0 = block(x)
    assert torch.equal(y0, x) if residual else torch.equal(y0, torch.zeros_like(y0))


def test_no_relu_activations_anywhere():
    model = EfficientDet(TINY)
    assert any(isinstance(m, nn.SiLU) for m in model.modules())
    assert not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in model.modules())


@pytest.mark.parametrize("weights", [(0.3, 0.9), (-0.5, 2.0), (0.0, 0.0)])
def test_fast_fusion_weights_are_relud_and_normalised(weights):
    fusion = FastFusion(2, 4).double()
    fusion.conv = nn.Identity()  # look at the fused, activated input of the separable conv
    with torch.no_grad():
        fusion.weights.copy_(torch.tensor(weights, dtype=torch.float64))
    g = torch.Generator().manual_seed(2)
    a, b = (torch.randn(1, 4, 3, 5, generator=g, dtype=torch.float64) for _ in range(2))
    w0, w1 = max(weights[0], 0.0), max(weights[1], 0.0)
    mixed = (w0 * a + w1 * b) / (w0 + w1 + 1e-4)
    expected = mixed / (1 + torch.exp(-mixed))  # SiLU
    np.testing.assert_allclose(fusion([a, b]).detach().numpy(), expected.numpy(), rtol=1e-12, atol=1e-15)


def test_heads_share_convs_across_levels_with_per_level_bn():
    model = EfficientDet(TINY).eval()
    levels = len(TINY.anchors.strides)
    x = torch.from_numpy(image())
    for head in (model.class_net, model.box_net):
        calls = {}

        def hook(name, calls=calls):
            return lambda m, i, o: calls.setdefault(name, []).append(tuple(i[0].shape[2:]))
        handles = [head.convs[0].register_forward_hook(hook("conv"))]
        handles += [head.bns[lv][0].register_forward_hook(hook(f"bn{lv}")) for lv in range(levels)]
        with torch.no_grad():
            model(x)
        for h in handles:
            h.remove()
        sizes = TINY.anchors.level_shapes(HW)
        assert calls["conv"] == sizes                       # one conv module for every level ...
        assert [calls[f"bn{lv}"] for lv in range(levels)] == [[s] for s in sizes]  # ... its own BN per level
        assert len(head.convs) == TINY.head_layers and len(head.bns) == levels
        bn_params = {id(p) for lv in range(levels) for p in head.bns[lv].parameters()}
        assert len(bn_params) == levels * TINY.head_layers * 2  # distinct BN scale/shift per level
        # the shared conv parameters are the same objects whatever level uses them: counted once
        assert sum(p.numel() for p in head.parameters()) == (
            sum(p.numel() for p in head.convs.parameters()) + sum(p.numel() for p in head.bns.parameters())
            + sum(p.numel() for p in head.predict.parameters()))


def test_output_shapes_and_anchor_order():
    model = EfficientDet(TINY).eval()
    x = torch.from_numpy(np.concatenate([image(0), image(1)]))
    per_level = []
    handle = model.class_net.predict.register_forward_hook(lambda m, i, o: per_level.append(o.detach()))
    with torch.no_grad():
        logits, deltas = model(x)
    handle.remove()
    a, c, p = TINY.anchors.count(HW), TINY.num_classes, TINY.anchors.per_cell
    assert a == len(generate_anchors(TINY.anchors, HW)) == (16 * 24 + 8 * 12 + 4 * 6 + 2 * 3) * 6
    assert logits.shape == (2, a, c) and deltas.shape == (2, a, 4)
    # anchor index = level offset + (row * W + col) * per_cell + k, class channel k * C + class (anchors.py)
    offset = 0
    for y, (h, w) in zip(per_level, TINY.anchors.level_shapes(HW)):
        assert y.shape == (2, p * c, h, w)
        r, col, k, cls = h - 1, w // 2, p - 1, 1
        np.testing.assert_array_equal(logits[:, offset + (r * w + col) * p + k, cls], y[:, k * c + cls, r, col])
        offset += h * w * p
    assert offset == a


def test_class_bias_prior_and_zero_box_bias():
    model = EfficientDet(TINY)
    bias = model.class_net.predict[1].bias.detach().numpy()
    assert bias.shape == (TINY.anchors.per_cell * TINY.num_classes,)
    np.testing.assert_allclose(bias, -math.log(99.0), rtol=1e-7)
    np.testing.assert_allclose(1 / (1 + np.exp(-bias.astype(np.float64))), 0.01, rtol=1e-6)
    # zero features into the prediction conv: every anchor's every class starts at p = 0.01
    zero = torch.zeros(1, TINY.fpn_channels, 4, 6)
    np.testing.assert_allclose(torch.sigmoid(model.class_net.predict(zero)).detach().numpy(), 0.01, rtol=1e-6)
    assert not model.box_net.predict[1].bias.detach().any()


def test_decode_boxes_equals_numpy_decode():
    rng = np.random.default_rng(3)
    centre, size = rng.uniform(0, 100, (50, 2)), rng.uniform(2, 40, (50, 2))
    anchors = np.concatenate([centre - size / 2, centre + size / 2], 1)
    deltas = rng.normal(0, 0.7, (2, 50, 4))
    deltas[0, :5, 2:] = [[10.0, 50.0], [MAX_LOG_SCALE + 1e-3, -3.0], [-5.0, 8.0], [100.0, 100.0], [4.2, 4.1]]
    got = decode_boxes(torch.from_numpy(deltas), torch.from_numpy(anchors)).numpy()
    np.testing.assert_allclose(got, decode(deltas, anchors), rtol=1e-12, atol=1e-9)
    # a clamped side is the anchor's times exp(MAX_LOG_SCALE) (= 62.5): 1000 px for a 16 px anchor
    w = got[0, 3, 2] - got[0, 3, 0]
    assert abs(w - (anchors[3, 2] - anchors[3, 0]) * 1000 / 16) < 1e-9
    unclamped = np.abs(deltas[..., 2:]).max(-1) < MAX_LOG_SCALE
    np.testing.assert_allclose(encode(got, anchors)[unclamped], deltas[unclamped], atol=1e-9)


# --- export --------------------------------------------------------------------------------------

POST = PostprocessConfig(score_threshold=0.55, iou_threshold=0.5, max_detections=25)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_model(0)
    path = tmp_path_factory.mktemp("effdet") / "tiny.onnx"
    export_onnx(model, path, HW, POST)
    return model, onnx.load(str(path))


def nms_reference(boxes: np.ndarray, scores: np.ndarray, cfg: PostprocessConfig):
    """Greedy per-class NMS (keep score > threshold; suppress IoU > threshold; equal scores by
    anchor), then the global top K by score. Also returns the smallest |IoU - threshold| met."""
    a, c = scores.shape
    kept, closest = [], np.inf
    for k in range(c):
        chosen = []
        for i in np.lexsort((np.arange(a), -scores[:, k])):
            if scores[i, k] <= np.float32(cfg.score_threshold) or len(chosen) == cfg.max_per_class:
                break
            ious = iou_matrix(boxes[i], boxes[chosen])[0]
            closest = min(closest, np.abs(ious[ious > 0] - cfg.iou_threshold).min(initial=np.inf))
            if (ious <= cfg.iou_threshold).all():
                chosen.append(i)
        kept += [(scores[i, k], i, k) for i in chosen]
    top = sorted(kept, key=lambda t: -t[0])[:cfg.max_detections]  # stable: ties keep class, anchor order
    k = cfg.max_detections
    out = {"det_boxes": np.zeros((1, k, 4), np.float32), "det_scores": np.zeros((1, k), np.float32),
           "det_classes": np.full((1, k), -1, np.int64), "det_pairs": np.full((1, k), -1, np.int64)}
    for slot, (s, i, cls) in enumerate(top):
        out["det_boxes"][0, slot], out["det_scores"][0, slot] = boxes[i], s
        out["det_classes"][0, slot], out["det_pairs"][0, slot] = cls, i * c + cls
    return out, len(kept), closest


def test_onnx_runtime_equals_pytorch_and_nms_equals_reference(exported):
    model, m = exported
    assert m.ir_version <= 8
    assert "BatchNormalization" not in {n.op_type for n in m.graph.node}  # folded into the convs
    names = [o.name for o in m.graph.output]
    assert names == ["scores", "boxes", "det_boxes", "det_scores", "det_classes", "det_pairs"]
    x = image(5)
    got = run(m, {"image": x})
    with torch.no_grad():
        scores, boxes = DetectorExport(model, HW).eval()(torch.from_numpy(x))
        logits, deltas = model(torch.from_numpy(x))
    # DetectorExport is sigmoid(logits) and the numpy decoding of the deltas
    np.testing.assert_allclose(scores.numpy(), torch.sigmoid(logits).numpy(), rtol=1e-6)
    anchors = generate_anchors(TINY.anchors, HW)
    np.testing.assert_allclose(boxes.numpy(), decode(deltas.numpy(), anchors), rtol=1e-5, atol=1e-4)
    a = TINY.anchors.count(HW)
    assert got["scores"].shape == (1, a, TINY.num_classes) and got["boxes"].shape == (1, a, 4)
    assert scores.max() - scores.min() > 0.5  # the scores spread (not all at the prior)
    np.testing.assert_allclose(got["scores"], scores.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["boxes"], boxes.numpy(), rtol=1e-4, atol=1e-4 * np.abs(boxes.numpy()).max())

    want, kept, closest = nms_reference(got["boxes"][0], got["scores"][0], POST)
    assert closest > 1e-5, "an IoU within float32 rounding of the threshold: pick another image seed"
    assert kept > POST.max_detections  # NMS kept more than K: the top-K cut is exercised
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_fewer_kept_than_k_fill_empty_slots(exported):
    _, m = exported
    # a threshold between the 3rd and 4th kept scores: greedy NMS keeps the same boxes above it, so 3
    top = run(m, {"image": image(5)}, ["det_scores"])["det_scores"][0]
    post = PostprocessConfig(score_threshold=float(top[2] + top[3]) / 2, iou_threshold=0.5, max_detections=25)
    got = run(with_score_threshold(m, post.score_threshold), {"image": image(5)})
    want, kept, _ = nms_reference(got["boxes"][0], got["scores"][0], post)
    assert kept == 3
    np.testing.assert_array_equal(got["det_scores"][0, :3], top[:3])
    assert (got["det_pairs"][0, kept:] == -1).all() and (got["det_classes"][0, kept:] == -1).all()
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_bifpn_tensors_are_the_class_head_inputs(exported):
    model, m = exported
    names = [f"bifpn_p{lv}" for lv in range(2, 6)]
    produced = {o for n in m.graph.node for o in n.output}
    assert set(names) <= produced
    m2 = onnx.ModelProto()
    m2.CopyFrom(m)
    for n in names:
        m2.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    x = image(6)
    got = run(m2, {"image": x}, names)
    with torch.no_grad():
        feats = model.features(torch.from_numpy(x))
    for n, f, s in zip(names, feats, TINY.anchors.strides):
        assert f.shape == (1, TINY.fpn_channels, HW[0] // s, HW[1] // s)
        np.testing.assert_allclose(got[n], f.numpy(), rtol=1e-4, atol=1e-4 * float(f.abs().max()), err_msg=n)
    # and they feed the class head: bifpn_p2 is an input of a Conv
    assert any(n.op_type == "Conv" and "bifpn_p2" in n.input for n in m.graph.node)


def test_export_is_tensorrt_compatible(exported):
    assert check_tensorrt(exported[1]) == []


# --- training targets and loss --------------------------------------------------------------------

def test_assign_thresholds_by_hand():
    box = np.array([[0, 0, 10, 12]], np.float32)     # centre (5, 6), 10 x 12
    anchors = np.array([[1, 0, 11, 10],               # IoU 90 / 130 = 0.69: positive
                        [0, 0, 10, 26],               # IoU 120 / 260 = 0.46: ignored
                        [0, 0, 10, 40]], np.float32)  # IoU 120 / 400 = 0.30: negative
    cls_t, box_t, state = assign(anchors, box, np.array([2]), 3)
    np.testing.assert_allclose(iou_matrix(anchors, box)[:, 0], [90 / 130, 120 / 260, 120 / 400])
    assert state.tolist() == [1, -1, 0]
    assert cls_t.tolist() == [[0, 0, 1], [0, 0, 0], [0, 0, 0]]
    # anchor 0: centre (6, 5), 10 x 10 -> ((5 - 6) / 10, (6 - 5) / 10, log(10 / 10), log(12 / 10))
    np.testing.assert_allclose(box_t[0], [-0.1, 0.1, 0.0, math.log(1.2)], rtol=1e-6, atol=1e-7)
    assert not box_t[1:].any()


def test_assign_boundaries_are_inclusive():
    box = np.array([[0, 0, 10, 20]], np.float32)
    anchors = np.array([[0, 0, 10, 20], [0, 0, 10, 10], [0, 0, 10, 8], [0, 0, 10, 7.9]], np.float32)
    # IoU 1, exactly 0.5 (positive), exactly 0.4 (ignored), 0.395 (negative)
    _, _, state = assign(anchors, box, np.array([0]), 1)
    assert state.tolist() == [1, 1, -1, 0]


def test_tiny_box_still_gets_its_best_anchor():
    boxes = np.array([[1, 1, 4, 4], [60, 60, 62, 61]], np.float32)  # both far below IoU 0.4 with any anchor
    anchors = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 70, 70]], np.float32)
    cls_t, box_t, state = assign(anchors, boxes, np.array([1, 0]), 2)
    assert iou_matrix(anchors, boxes).max() < 0.4
    assert state.tolist() == [1, 0, 1]
    assert cls_t.tolist() == [[0, 1], [0, 0], [1, 0]]
    np.testing.assert_allclose(box_t[0], [(2.5 - 5) / 10, (2.5 - 5) / 10, math.log(0.3), math.log(0.3)], rtol=1e-6)
    np.testing.assert_allclose(box_t[2], [(61 - 60) / 20, (60.5 - 60) / 20, math.log(0.1), math.log(0.05)], rtol=1e-6)
    # no boxes: everything negative
    cls_t, box_t, state = assign(anchors, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 2)
    assert not state.any() and not cls_t.any() and not box_t.any()


def test_perfect_prediction_has_zero_loss():
    rng = np.random.default_rng(4)
    cls_t = np.zeros((2, 30, 3), np.float32)
    state = rng.integers(-1, 2, (2, 30)).astype(np.int8)
    pos = state == 1
    cls_t[pos, rng.integers(0, 3, pos.sum())] = 1
    box_t = np.where(pos[..., None], rng.normal(0, 0.3, (2, 30, 4)), 0).astype(np.float32)
    logits = torch.from_numpy(np.where(cls_t == 1, 40.0, -40.0).astype(np.float32))
    loss, focal, box = loss_fn(logits, torch.from_numpy(box_t), torch.from_numpy(cls_t), torch.from_numpy(box_t),
                               torch.from_numpy(state))
    assert float(loss) < 1e-12 and float(focal) < 1e-12 and float(box) == 0.0


def test_focal_and_huber_terms_by_hand():
    # anchor 0 positive (class 1), anchor 1 negative, anchor 2 ignored (its huge errors must not count)
    z = [[0.3, -0.7], [1.2, -2.0], [9.0, 9.0]]
    logits = torch.tensor([z], dtype=torch.float64)
    cls_t = torch.tensor([[[0, 1], [0, 0], [1, 0]]], dtype=torch.float64)
    state = torch.tensor([[1, 0, -1]])
    box_t = torch.zeros(1, 3, 4, dtype=torch.float64)
    deltas = torch.tensor([[[0.05, -0.3, 0.0, 0.2], [5, 5, 5, 5], [7, 7, 7, 7]]], dtype=torch.float64)
    loss, focal, box = loss_fn(logits, deltas, cls_t, box_t, state)

    def sig(v):
        return 1 / (1 + math.exp(-v))

    def neg(v):  # target 0: alpha 0.75, (p)^2, -log(1 - p)
        return 0.75 * sig(v) ** 2 * -math.log(1 - sig(v))

    def pos_(v):  # target 1: alpha 0.25, (1 - p)^2, -log(p)
        return 0.25 * (1 - sig(v)) ** 2 * -math.log(sig(v))
    want_focal = (neg(0.3) + pos_(-0.7) + neg(1.2) + neg(-2.0)) / 1  # one positive
    # Huber(0.1): 0.5 d^2 if |d| <= 0.1 else 0.1 (|d| - 0.05); summed over the positive's 4 deltas / (4 * 1)
    want_box = (0.5 * 0.05 ** 2 + 0.1 * (0.3 - 0.05) + 0.0 + 0.1 * (0.2 - 0.05)) / 4
    assert float(focal) == pytest.approx(want_focal, rel=1e-12)
    assert float(box) == pytest.approx(want_box, rel=1e-12)
    assert float(loss) == pytest.approx(want_focal + 50 * want_box, rel=1e-12)
