"""In-graph post-processing run by ONNX Runtime, against a brute-force NMS written here.

ONNX Runtime's NonMaxSuppression conventions (probed, and pinned by the tests below):
a box is a candidate only if score > score_threshold (strictly); it is suppressed only if
its IoU with a kept box of its class is > iou_threshold (strictly: IoU == threshold stays);
boxes with no intersection never suppress (even at iou_threshold 0); equal scores are
visited in ascending anchor order, and the selected indices come out class by class.
ORT's TopK puts equal values in ascending index order, so equal-scored detections come
out by class, then anchor.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as TP
from onnx import helper

from hsi_xai_node.detection.anchors import AnchorConfig, generate_anchors
from hsi_xai_node.detection.boxes import MAX_LOG_SCALE, decode
from hsi_xai_node.detection.postprocess import (
    PostprocessConfig,
    append_box_decoding,
    append_postprocess,
    apply_score_activation,
)
from hsi_xai_node.errors import InputError
from hsi_xai_node.explain import ExplainError, check_tensorrt


def identity_model(a: int, c: int | None) -> onnx.ModelProto:
    """Inputs in_boxes (1, a, 4) [and in_scores (1, a, c)], passed to outputs boxes [and scores]."""
    names = [("in_boxes", "boxes", [1, a, 4])] + ([("in_scores", "scores", [1, a, c])] if c else [])
    graph = helper.make_graph([helper.make_node("Identity", [i], [o]) for i, o, _ in names], "det",
                              [helper.make_tensor_value_info(i, TP.FLOAT, s) for i, _, s in names],
                              [helper.make_tensor_value_info(o, TP.FLOAT, s) for _, o, s in names])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run(model: onnx.ModelProto, **feeds) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {k: np.asarray(v, np.float32) for k, v in feeds.items()})))


def iou(p, q) -> float:
    p, q = [float(v) for v in p], [float(v) for v in q]  # float64, unlike ORT: see margin_ok
    w = min(p[2], q[2]) - max(p[0], q[0])
    h = min(p[3], q[3]) - max(p[1], q[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter)


def reference(boxes, scores, cfg: PostprocessConfig):
    """Greedy per-class NMS then global top-K, plainly. boxes (A, 4), scores (A, C) float32."""
    a, c = scores.shape
    kept = []  # (score, anchor, class), in NMS output order: class by class, by descending score
    for k in range(c):
        chosen = []
        for i in sorted(range(a), key=lambda i: (-scores[i, k], i)):
            if scores[i, k] <= np.float32(cfg.score_threshold) or len(chosen) == cfg.max_per_class:
                break
            if all(iou(boxes[i], boxes[j]) <= cfg.iou_threshold for j in chosen):
                chosen.append(i)
        kept += [(scores[i, k], i, k) for i in chosen]
    n, kk = len(kept), cfg.max_detections
    kept = sorted(kept, key=lambda t: -t[0])[:kk]  # stable: ties keep NMS order
    out = {"det_boxes": np.zeros((kk, 4), np.float32), "det_scores": np.zeros(kk, np.float32),
           "det_classes": np.full(kk, -1, np.int64), "det_pairs": np.full(kk, -1, np.int64)}
    for slot, (s, i, k) in enumerate(kept):
        out["det_boxes"][slot], out["det_scores"][slot] = boxes[i], s
        out["det_classes"][slot], out["det_pairs"][slot] = k, i * c + k
    return {name: v[None] for name, v in out.items()}, n


def check(boxes, scores, cfg: PostprocessConfig, expect_kept: int | None = None) -> dict[str, np.ndarray]:
    boxes, scores = np.float32(boxes), np.float32(scores)
    model = append_postprocess(identity_model(*scores.shape), "boxes", "scores", cfg)
    got = run(model, in_boxes=boxes[None], in_scores=scores[None])
    want, kept = reference(boxes, scores, cfg)
    if expect_kept is not None:
        assert kept == expect_kept
    np.testing.assert_array_equal(got["boxes"], boxes[None])  # the detector's outputs stay
    np.testing.assert_array_equal(got["scores"], scores[None])
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)  # gathered, so exact
    return got


def random_boxes(rng, a, extent=60.0, size=(4.0, 20.0), clusters=None):
    if clusters:  # boxes jittered around a few centres: heavy suppression
        centre = rng.uniform(10, extent, (clusters, 2))[rng.integers(0, clusters, a)] + rng.normal(0, 2, (a, 2))
    else:
        centre = rng.uniform(0, extent, (a, 2))
    half = rng.uniform(*size, (a, 2)) / 2
    return np.float32(np.concatenate([centre - half, centre + half], 1))


def margin_ok(boxes, cfg) -> bool:
    """No pairwise IoU within float32 rounding of the threshold, so float64 and ORT's float32 agree."""
    ious = np.array([[iou(p, q) for q in boxes] for p in boxes])
    ious = ious[ious > 0]  # no intersection is exact in both
    return ious.size == 0 or np.abs(ious - cfg.iou_threshold).min() > 1e-4


@pytest.mark.parametrize("seed, a, c, clusters, cfg", [
    (0, 40, 3, None, PostprocessConfig()),
    (1, 60, 2, 5, PostprocessConfig(score_threshold=0.1, iou_threshold=0.3, max_detections=30)),
    (2, 80, 4, 8, PostprocessConfig(score_threshold=0.5, iou_threshold=0.6, max_detections=10, max_per_class=3)),
    (3, 25, 1, 3, PostprocessConfig(score_threshold=0.0, iou_threshold=0.0, max_detections=50)),
    (4, 120, 5, 12, PostprocessConfig(score_threshold=0.2, iou_threshold=0.45, max_detections=7)),
])
def test_random_against_brute_force(seed, a, c, clusters, cfg):
    rng = np.random.default_rng(seed)
    while True:
        boxes = random_boxes(rng, a, clusters=clusters)
        if margin_ok(boxes, cfg):
            break
    scores = np.float32((rng.permutation(a * c).reshape(a, c) + 0.5) / (a * c))  # distinct: no ties
    got = check(boxes, scores, cfg)
    valid = got["det_classes"][0] >= 0
    assert np.all(np.diff(got["det_scores"][0]) <= 0) and np.all(valid[:valid.sum()])  # sorted, empties last


def test_many_overlapping_boxes_keep_one_per_class():
    rng = np.random.default_rng(5)
    boxes = np.float32([10, 10, 30, 30]) + np.float32(rng.uniform(-0.5, 0.5, (30, 4)))
    scores = np.float32(rng.uniform(0.4, 0.9, (30, 2)))
    got = check(boxes, scores, PostprocessConfig(max_detections=5), expect_kept=2)
    assert sorted(got["det_pairs"][0][:2] % 2) == [0, 1] and (got["det_pairs"][0][2:] == -1).all()
    assert sorted(got["det_scores"][0][:2]) == sorted(scores.max(0))


def test_fewer_and_zero_kept_fill_empty_slots():
    boxes = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]]
    got = check(boxes, [[0.9], [0.2], [0.35]], PostprocessConfig(max_detections=4), expect_kept=2)
    np.testing.assert_array_equal(got["det_pairs"], [[0, 2, -1, -1]])
    np.testing.assert_array_equal(got["det_boxes"][0, 2:], 0)
    got = check(boxes, [[0.1], [0.2], [0.3]], PostprocessConfig(max_detections=3), expect_kept=0)
    np.testing.assert_array_equal(got["det_classes"], [[-1, -1, -1]])
    np.testing.assert_array_equal(got["det_scores"], [[0, 0, 0]])


def test_more_kept_than_k_keeps_the_best_k():
    a = 50
    boxes = np.float32([[20 * i, 0, 20 * i + 10, 10] for i in range(a)])  # disjoint
    scores = np.float32(np.random.default_rng(6).permutation(a * 2).reshape(a, 2) / (a * 2) * 0.6 + 0.35)
    got = check(boxes, scores, PostprocessConfig(max_detections=8), expect_kept=2 * a)
    np.testing.assert_array_equal(got["det_scores"][0], np.sort(scores.ravel())[::-1][:8])


def test_several_classes_at_one_anchor_and_max_per_class():
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [30, 30, 40, 40], [60, 0, 70, 10]]
    scores = [[0.9, 0.8, 0.7], [0.95, 0.1, 0.1], [0.6, 0.1, 0.65], [0.55, 0.1, 0.1]]
    # class 0: anchor 1 (0.95) suppresses anchor 0 (IoU 9/11), keeps 2 and 3 but max_per_class=2 stops at 2
    got = check(boxes, scores, PostprocessConfig(max_per_class=2, max_detections=6), expect_kept=5)
    np.testing.assert_array_equal(got["det_pairs"], [[1 * 3 + 0, 0 * 3 + 1, 0 * 3 + 2, 2 * 3 + 2, 2 * 3 + 0, -1]])
    np.testing.assert_array_equal(got["det_classes"], [[0, 1, 2, 2, 0, -1]])


def test_threshold_inequalities():
    # IoU of [0,0,2,1] and [0,0,1,1] is exactly 1/2: kept at iou_threshold 0.5, suppressed below it
    boxes = [[0, 0, 2, 1], [0, 0, 1, 1]]
    got = check(boxes, [[0.9], [0.8]], PostprocessConfig(iou_threshold=0.5, max_detections=2), expect_kept=2)
    assert got["det_pairs"].tolist() == [[0, 1]]
    got = check(boxes, [[0.9], [0.8]], PostprocessConfig(iou_threshold=0.49, max_detections=2), expect_kept=1)
    # a score equal to score_threshold (0.25 is exact in float32) is dropped
    got = check([[0, 0, 1, 1], [5, 5, 6, 6]], [[0.5], [0.25]], PostprocessConfig(score_threshold=0.25), expect_kept=1)
    assert got["det_pairs"][0, :2].tolist() == [0, -1]
    # touching boxes (no intersection) never suppress, even at iou_threshold 0
    check([[0, 0, 1, 1], [1, 0, 2, 1]], [[0.9], [0.8]], PostprocessConfig(iou_threshold=0.0), expect_kept=2)


def test_tie_behaviour():
    """Equal scores: within a class, the lower anchor wins NMS; in the top-K, ORT orders equal scores
    by class, then anchor (NMS output order, TopK keeps the lower index). TensorRT does not promise
    the same order for ties, so consumers must not rely on it."""
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [50, 0, 60, 10]]
    scores = [[0.5, 0.5], [0.5, 0.5], [0.5, 0.7]]
    got = check(boxes, scores, PostprocessConfig(max_detections=5), expect_kept=4)
    # class 1: anchor 2 (0.7), then anchor 0 beats its twin anchor 1; class 0: anchors 0 and 2
    np.testing.assert_array_equal(got["det_pairs"], [[2 * 2 + 1, 0 * 2 + 0, 2 * 2 + 0, 0 * 2 + 1, -1]])


def test_graph_is_static_and_tensorrt_compatible():
    model = identity_model(10, 3)
    out = append_postprocess(model, "boxes", "scores", PostprocessConfig(max_detections=4))
    assert len(model.graph.output) == 2  # input model untouched
    onnx.checker.check_model(out, full_check=True)
    assert check_tensorrt(out) == []
    shapes = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in out.graph.output}
    assert shapes == {"boxes": [1, 10, 4], "scores": [1, 10, 3], "det_boxes": [1, 4, 4], "det_scores": [1, 4],
                      "det_classes": [1, 4], "det_pairs": [1, 4]}
    assert sum(n.op_type == "NonMaxSuppression" for n in out.graph.node) == 1


def test_postprocess_errors():
    model = identity_model(10, 3)
    cfg = PostprocessConfig()
    with pytest.raises(ExplainError, match="boxes tensor 'nope' is not in the graph"):
        append_postprocess(model, "nope", "scores", cfg)
    with pytest.raises(ExplainError, match=r"boxes tensor 'scores' has shape \(1, 10, 3\), expected \(1, anchors, 4\)"):
        append_postprocess(model, "scores", "scores", cfg)
    with pytest.raises(ExplainError, match=r"scores tensor 'in_scores' has shape \(1, 10, 3, 1\)"):
        bad = identity_model(10, 3)
        bad.graph.input[1].type.tensor_type.shape.dim.add().dim_value = 1
        bad.graph.output[1].type.tensor_type.shape.dim.add().dim_value = 1
        append_postprocess(bad, "boxes", "in_scores", cfg)
    other = identity_model(10, 3)
    other.graph.input[1].type.tensor_type.shape.dim[1].dim_value = 9
    other.graph.output[1].type.tensor_type.shape.dim[1].dim_value = 9
    with pytest.raises(ExplainError, match="has 10 anchors but scores 'scores' has shape"):
        append_postprocess(other, "boxes", "scores", cfg)
    once = append_postprocess(model, "boxes", "scores", cfg)
    with pytest.raises(ExplainError, match="det_boxes"):
        append_postprocess(once, "boxes", "scores", cfg)
    assert issubclass(ExplainError, InputError)


@pytest.mark.parametrize("kwargs, message", [
    ({"score_threshold": 1.0}, "score_threshold must be in"),
    ({"score_threshold": -0.1}, "score_threshold must be in"),
    ({"iou_threshold": 1.5}, "iou_threshold must be in"),
    ({"max_detections": 0}, "max_detections must be in"),
    ({"max_detections": 3840}, "TensorRT's TopK limit"),
    ({"max_per_class": 0}, "max_per_class must be in"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PostprocessConfig(**kwargs)


# --- external detectors: decoding and activation ---------------------------------------------------

TINY = AnchorConfig(strides=(8, 16), sizes=(8.0, 16.0), scales=(1.0, 1.5), ratios=(0.5, 1.0, 2.0))


def test_decoding_ours_matches_boxes_decode():
    anchors = generate_anchors(TINY, (32, 48))
    rng = np.random.default_rng(7)
    deltas = np.float32(rng.normal(0, 0.5, (len(anchors), 4)))
    deltas[:5, 2:] = 20.0  # beyond MAX_LOG_SCALE: clamped like boxes.decode
    out, name = append_box_decoding(identity_model(len(anchors), None), "boxes", anchors, "cxcywh_deltas")
    got = run(out, in_boxes=deltas[None])[name][0]
    np.testing.assert_allclose(got, decode(deltas, anchors), rtol=1e-5, atol=1e-5)
    assert np.allclose(got[0, 2] - got[0, 0], (anchors[0, 2] - anchors[0, 0]) * np.exp(MAX_LOG_SCALE), rtol=1e-5)
    assert check_tensorrt(out) == [] and name in [o.name for o in out.graph.output]


def test_decoding_tf_convention_by_hand():
    rng = np.random.default_rng(8)
    a = 30
    y0x0 = rng.uniform(0, 100, (a, 2))
    anchors = np.concatenate([y0x0, y0x0 + rng.uniform(4, 40, (a, 2))], 1)  # (y0, x0, y1, x1)
    deltas = np.float32(rng.normal(0, 0.7, (a, 4)))                         # (ty, tx, th, tw)
    out, name = append_box_decoding(identity_model(a, None), "boxes", anchors, "tf_yxhw_deltas")
    got = run(out, in_boxes=deltas[None])[name][0]
    ya, xa = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    ha, wa = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    y, x = deltas[:, 0] * ha + ya, deltas[:, 1] * wa + xa
    h, w = np.exp(deltas[:, 2]) * ha, np.exp(deltas[:, 3]) * wa
    np.testing.assert_allclose(got, np.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], 1), rtol=1e-5, atol=1e-5)
    assert check_tensorrt(out) == []


def test_decoding_xyxy_is_identity_and_chains_into_postprocess():
    model = identity_model(6, 2)
    out, name = append_box_decoding(model, "boxes", None, "xyxy")
    assert name == "boxes" and len(out.graph.node) == len(model.graph.node)
    # an external detector with logits: activation, decoding and NMS chained
    anchors = generate_anchors(AnchorConfig(strides=(8,), sizes=(8.0,), scales=(1.0,), ratios=(1.0, 2.0)), (8, 24))
    model = identity_model(len(anchors), 2)
    model, scores = apply_score_activation(model, "scores", "sigmoid")
    model, boxes = append_box_decoding(model, "boxes", anchors, "cxcywh_deltas")
    model = append_postprocess(model, boxes, scores, PostprocessConfig(score_threshold=0.5))
    assert check_tensorrt(model) == []
    rng = np.random.default_rng(9)
    deltas, logits = np.float32(rng.normal(0, 0.3, (6, 4))), np.float32(rng.normal(0, 2, (6, 2)))
    got = run(model, in_boxes=deltas[None], in_scores=logits[None])
    probs = np.float32(1 / (1 + np.exp(-np.float64(logits))))
    np.testing.assert_allclose(got[scores][0], probs, rtol=1e-5, atol=1e-7)
    want, _ = reference(got[boxes][0], got[scores][0], PostprocessConfig(score_threshold=0.5))
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value)


def test_score_activation_none_and_errors():
    model = identity_model(6, 2)
    out, name = apply_score_activation(model, "scores", "none")
    assert name == "scores" and len(out.graph.output) == 2
    with pytest.raises(ExplainError, match=r"unknown score activation 'softmax': expected one of 'none', 'sigmoid'"):
        apply_score_activation(model, "scores", "softmax")
    with pytest.raises(ExplainError, match=r"unknown box coding 'ltrb': expected one of 'xyxy', 'cxcywh_deltas', "
                                           r"'tf_yxhw_deltas'"):
        append_box_decoding(model, "boxes", None, "ltrb")
    with pytest.raises(ExplainError, match="class logits tensor 'logits' is not in the graph"):
        apply_score_activation(model, "logits", "sigmoid")
    with pytest.raises(ExplainError, match=r"box deltas tensor 'scores' has shape \(1, 6, 2\)"):
        append_box_decoding(model, "scores", np.zeros((6, 4)), "cxcywh_deltas")
    with pytest.raises(ExplainError, match=r"anchors for 'tf_yxhw_deltas' must be finite with shape \(6, 4\).*"
                                           r"got shape \(5, 4\)"):
        append_box_decoding(model, "boxes", np.zeros((5, 4)), "tf_yxhw_deltas")
