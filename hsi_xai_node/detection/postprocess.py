"""Detector post-processing inside the ONNX graph: box decoding, score activation, per-class NMS.

The exported detector ends in `scores` (1, A, C) class probabilities and `boxes` (1, A, 4)
decoded (x0, y0, x1, y1) input pixels. `append_postprocess` adds the standard ONNX
`NonMaxSuppression` per class and a global top-K, with fixed-size outputs (TensorRT and
downstream code see static shapes):

    det_boxes   (1, K, 4) float32  x0, y0, x1, y1 (0 in empty slots)
    det_scores  (1, K)    float32  (0 in empty slots)
    det_classes (1, K)    int64    (-1 in empty slots)
    det_pairs   (1, K)    int64    anchor * C + class, the seed of per-box Grad-CAM (-1 in empty slots)

Slots are sorted by descending score, empty slots last. NMS semantics are those of the ONNX
op as ONNX Runtime implements it (verified by test/detection/test_postprocess.py): a box is
a candidate only if its score is strictly greater than `score_threshold`; a candidate is
suppressed only if its IoU with an already kept box of its class is strictly greater than
`iou_threshold`; equal scores are visited in ascending anchor order. TensorRT's NMS layer
documents the same two inequalities, leaves the order of equal scores unspecified, and
considers only the best (anchor, class) candidates up to its TopK box limit (5000, or 2000 on
SM 5.3/6.2) per image over all classes: keep the score threshold high enough that fewer pass.

External detectors that end in raw regression outputs and logits get `append_box_decoding`
and `apply_score_activation` first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..explain import Builder, ExplainError
from .boxes import MAX_LOG_SCALE

OUTPUTS = ("det_boxes", "det_scores", "det_classes", "det_pairs")
BOX_CODINGS = ("xyxy", "cxcywh_deltas", "tf_yxhw_deltas")
SCORE_ACTIVATIONS = ("none", "sigmoid")
_TOPK_MAX_K = 3840  # TensorRT's TopK needs K < 3840


@dataclass(frozen=True)
class PostprocessConfig:
    score_threshold: float = 0.3  # keep scores > this
    iou_threshold: float = 0.5    # suppress IoU > this
    max_detections: int = 20      # K, the fixed number of output slots
    max_per_class: int = 100      # NMS's max_output_boxes_per_class

    def __post_init__(self):
        if not 0.0 <= self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in [0, 1) (scores are probabilities), "
                             f"got {self.score_threshold}")
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {self.iou_threshold}")
        if not 1 <= self.max_detections < _TOPK_MAX_K:
            raise ValueError(f"max_detections must be in 1..{_TOPK_MAX_K - 1} (TensorRT's TopK limit), "
                             f"got {self.max_detections}")
        if not 1 <= self.max_per_class <= np.iinfo(np.int32).max:
            raise ValueError(f"max_per_class must be in 1..{np.iinfo(np.int32).max}, got {self.max_per_class}")


def _copy(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Builder]:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out, Builder(out)


def _float_tensor(b: Builder, name: str, what: str, last: int | None = None) -> tuple[int, int, int]:
    """Shape (1, A, last) of an existing float32 tensor, else ExplainError naming it and its shape."""
    g = b.graph
    known = {v.name for v in g.input} | {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
    if not isinstance(name, str) or name not in known:
        raise ExplainError(f"{what} tensor {name!r} is not in the graph")
    shape = b.shape(name)
    want = f"(1, anchors, {last if last is not None else 'classes'})"
    if len(shape) != 3 or shape[0] != 1 or (last is not None and shape[2] != last) or 0 in shape:
        raise ExplainError(f"{what} tensor {name!r} has shape {shape}, expected {want}")
    t = b._types.get(name)  # elem types as the Builder inferred them
    elem = t.elem_type if t is not None else b._consts[name].data_type
    if elem != TensorProto.FLOAT:
        raise ExplainError(f"{what} tensor {name!r} is {TensorProto.DataType.Name(elem)}, expected FLOAT")
    return shape


def _ensure_output(b: Builder, name: str, shape) -> None:
    if name not in {o.name for o in b.graph.output}:
        b.add_output(name, shape)


def append_postprocess(model: onnx.ModelProto, boxes: str, scores: str, config: PostprocessConfig) -> onnx.ModelProto:
    """A copy of `model` with per-class NMS and top-K appended (outputs in the module docstring)."""
    if not isinstance(config, PostprocessConfig):
        raise ExplainError(f"config must be a PostprocessConfig, got {type(config).__name__}")
    out, b = _copy(model)
    _, anchors, _ = _float_tensor(b, boxes, "boxes", 4)
    _, a2, classes = _float_tensor(b, scores, "scores")
    if a2 != anchors:
        raise ExplainError(f"boxes {boxes!r} has {anchors} anchors but scores {scores!r} has shape {(1, a2, classes)}")
    taken = {v.name for v in out.graph.input} | {o for n in out.graph.node for o in n.output}
    taken |= {t.name for t in out.graph.initializer} | {o.name for o in out.graph.output}
    clash = [n for n in OUTPUTS if n in taken]
    if clash:
        raise ExplainError(f"graph already has tensors named {clash}: post-processing was appended before?")
    k = config.max_detections

    # NMS wants scores as (batch, classes, anchors); scalar 0-D thresholds are what TensorRT's importer takes
    per_class = b.op("Transpose", [scores], "nms_scores", perm=[0, 2, 1])
    limits = [b.const(np.int64(config.max_per_class), "nms_max", np.int64), b.const(config.iou_threshold, "nms_iou"),
              b.const(config.score_threshold, "nms_score")]
    selected = b.op("NonMaxSuppression", [boxes, per_class, *limits], "nms", center_point_box=0)  # (N, 3): b, c, a
    cls = b.op("Gather", [selected, b.const(np.int64(1), "col", np.int64)], "nms_class", axis=1)
    anchor = b.op("Gather", [selected, b.const(np.int64(2), "col", np.int64)], "nms_anchor", axis=1)
    pair = b.op("Add", [b.op("Mul", [anchor, b.ints(classes, "classes")], "pair_base"), cls], "nms_pair")
    kept = b.op("Gather", [b.op("Reshape", [scores, b.ints([anchors * classes])], "flat_scores"), pair], "kept_scores")

    # constant-K TopK over a data-dependent count: K padding entries of score -1 / pair -1 always exist
    padded = b.op("Concat", [kept, b.const(np.full(k, -1.0), "pad_scores")], "padded_scores", axis=0)
    pairs = b.op("Concat", [pair, b.ints(np.full(k, -1), "pad_pairs")], "padded_pairs", axis=0)
    top, idx = b.op("TopK", [padded, b.ints([k], "k")], "det_topk", outputs=2, axis=0, largest=1, sorted=1)
    top_pair = b.op("Gather", [pairs, idx], "top_pair", axis=0)
    valid = b.op("GreaterOrEqual", [top, b.const(0.0, "zero")], "valid")
    safe = b.op("Max", [top_pair, b.const(np.int64(0), "zero_i", np.int64)], "safe_pair")  # TensorRT: no -1 indices
    top_anchor = b.op("Div", [safe, b.ints(classes, "classes")], "top_anchor")
    top_class = b.op("Sub", [safe, b.op("Mul", [top_anchor, b.ints(classes, "classes")])], "top_class")
    box = b.op("Gather", [b.op("Reshape", [boxes, b.ints([anchors, 4])], "flat_boxes"), top_anchor], "top_box", axis=0)
    box = b.op("Where", [b.op("Unsqueeze", [valid, b.ints([1])], "valid_col"), box, b.const(0.0, "zero")], "box")
    results = {
        "det_boxes": (box, (1, k, 4), TensorProto.FLOAT),
        "det_scores": (b.op("Where", [valid, top, b.const(0.0, "zero")], "score"), (1, k), TensorProto.FLOAT),
        "det_classes": (b.op("Where", [valid, top_class, b.ints(-1, "minus1")], "cls"), (1, k), TensorProto.INT64),
        "det_pairs": (top_pair, (1, k), TensorProto.INT64),
    }
    for name, (tensor, shape, elem) in results.items():
        out.graph.node.append(helper.make_node("Reshape", [tensor, b.ints(shape, name + "_shape")], [name],
                                               name=b.fresh(name + "_node")))
        b.add_output(name, shape, elem)
    onnx.checker.check_model(out)
    return out


def append_box_decoding(model: onnx.ModelProto, deltas: str, anchors: np.ndarray | None,
                        coding: str) -> tuple[onnx.ModelProto, str]:
    """Decode a (1, A, 4) regression output to (1, A, 4) xyxy input-pixel boxes, in the graph.

    `anchors` is (A, 4) in the coding's own layout and the pixel units wanted for the boxes:
      "xyxy"            deltas are already boxes; anchors are ignored (may be None)
      "cxcywh_deltas"   ours (boxes.py): deltas (dx, dy, dw, dh), anchors (x0, y0, x1, y1);
                        dw, dh clamped at MAX_LOG_SCALE like `boxes.decode`
      "tf_yxhw_deltas"  Google AutoML / NVIDIA TensorRT EfficientDet sample: deltas (ty, tx, th, tw),
                        anchors (y0, x0, y1, x1); y = ty*ha + yca, x = tx*wa + xca, h = exp(th)*ha,
                        w = exp(tw)*wa (no clamp, as there)
    Returns the model copy and the name of the boxes tensor, which is made a graph output.
    """
    if coding not in BOX_CODINGS:
        raise ExplainError(f"unknown box coding {coding!r}: expected one of {', '.join(map(repr, BOX_CODINGS))}")
    out, b = _copy(model)
    _, n, _ = _float_tensor(b, deltas, "box deltas", 4)
    if coding == "xyxy":
        _ensure_output(b, deltas, (1, n, 4))
        return out, deltas
    a = np.asarray(anchors, np.float64) if anchors is not None else np.zeros((0,))
    if a.shape != (n, 4) or not np.isfinite(a).all():
        raise ExplainError(f"anchors for {coding!r} must be finite with shape ({n}, 4) to match {deltas!r}, "
                           f"got shape {a.shape}")
    # both codings: (first pair of deltas) * size + centre and exp(second pair) * size, in the anchors' axis order
    centre = ((a[:, :2] + a[:, 2:]) / 2)[None]
    size = (a[:, 2:] - a[:, :2])[None]
    d_c = b.op("Slice", [deltas, b.ints([0]), b.ints([2]), b.ints([2])], "d_centre")
    d_s = b.op("Slice", [deltas, b.ints([2]), b.ints([4]), b.ints([2])], "d_size")
    if coding == "cxcywh_deltas":
        d_s = b.op("Min", [d_s, b.const(MAX_LOG_SCALE, "max_log_scale")], "d_size_clamped")
    c = b.op("Add", [b.op("Mul", [d_c, b.const(size, "anchor_size")]), b.const(centre, "anchor_centre")], "centre")
    half = b.op("Mul", [b.op("Exp", [d_s]), b.const(size / 2, "anchor_half")], "half")
    box = b.op("Concat", [b.op("Sub", [c, half], "lo"), b.op("Add", [c, half], "hi")], "box_lohi", axis=2)
    if coding == "tf_yxhw_deltas":  # (y0, x0, y1, x1) -> (x0, y0, x1, y1)
        box = b.op("Gather", [box, b.ints([1, 0, 3, 2], "yx_to_xy")], "box_xyxy", axis=2)
    box = b.op("Identity", [box], "boxes")
    b.add_output(box, (1, n, 4))
    onnx.checker.check_model(out)
    return out, box


def apply_score_activation(model: onnx.ModelProto, logits: str, activation: str) -> tuple[onnx.ModelProto, str]:
    """Class probabilities (1, A, C) from an external detector's class output: "none" (already
    probabilities) or "sigmoid" (logits). Returns the model copy and the scores tensor, a graph output."""
    if activation not in SCORE_ACTIVATIONS:
        raise ExplainError(f"unknown score activation {activation!r}: expected one of "
                           f"{', '.join(map(repr, SCORE_ACTIVATIONS))}")
    out, b = _copy(model)
    shape = _float_tensor(b, logits, "class logits")
    scores = logits if activation == "none" else b.op("Sigmoid", [logits], "scores")
    _ensure_output(b, scores, shape)
    onnx.checker.check_model(out)
    return out, scores
