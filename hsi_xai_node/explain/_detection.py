"""Per-box Grad-CAM for detectors (paper 001), for the top-K boxes of a frame, in the graph.

Box k's seed is one-hot at its (anchor, class) pair in batch row k; the gradient of
that class score w.r.t. each chosen class-head input layer gives Grad-CAM with
(`box_gradcam`) and without (`box_gradcam_signed`) the ReLU. Which pairs:

- `pairs` given (the detector's `det_pairs` output, (1, D) int64 anchor * classes +
  class after NMS, -1 in empty slots): the first K detections NMS kept, so every row
  explains a distinct reported box; rows of empty slots have a zero seed and a zero map.
- `pairs` None: the K highest-scoring pairs before NMS (TopK over the flattened scores),
  output as `topk_scores` and `topk_index`; neighbouring anchors of one object may repeat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ._graph import Builder, ExplainError
from ._maps import ExplainGraph, MapWriter, resolve_layer
from ._reverse import append_backward


@dataclass(frozen=True)
class DetectionExplainConfig:
    layers: tuple[str, ...]  # class-head input tensors (card roles or tensor names)
    top_k: int = 10
    relu: bool = True
    signed: bool = True
    upsample: bool = True
    uint8: bool = True


def build_detection_explainer(model: onnx.ModelProto, input_name: str, scores: str, layers: dict[str, str],
                              config: DetectionExplainConfig, pairs: str | None = None,
                              layout: str = "nchw") -> ExplainGraph:
    """`layout` is the input's ("nchw" or "nhwc", as the detector card says): the full-size maps
    are resized to its (H, W)."""
    if layout not in ("nchw", "nhwc"):
        raise ExplainError(f"input layout must be 'nchw' or 'nhwc', got {layout!r}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    b = Builder(out)
    shape = b.shape(scores)
    if len(shape) != 3 or shape[0] != 1:
        raise ExplainError(f"detection scores {scores!r} must be (1, anchors, classes), got {shape}")
    _, anchors, classes = shape
    k = config.top_k
    if not 1 <= k <= anchors * classes:
        raise ExplainError(f"top_k must be in 1..{anchors * classes}, got {k}")
    eg = ExplainGraph(model=out, input=input_name, logits=scores, classes=classes)
    if pairs is not None:
        kept = b.shape(pairs)
        if len(kept) != 2 or kept[0] != 1 or k > kept[1]:
            raise ExplainError(f"pairs {pairs!r} must be (1, D) with D >= top_k = {k}, got {kept}")
        index = b.op("Slice", [pairs, b.ints([0]), b.ints([k]), b.ints([1])], "explained_pairs")
    else:
        flat = b.op("Reshape", [scores, b.ints([1, anchors * classes])], "flat_scores")
        values, index = b.op("TopK", [flat, b.ints([k])], "topk", outputs=2, axis=1, largest=1, sorted=1)
    hit = b.op("Equal", [b.op("Reshape", [index, b.ints([k, 1])], "box_index"),
                         b.const(np.arange(anchors * classes).reshape(1, -1), "pair_ids", np.int64)], "is_box")
    seed = b.op("Reshape", [b.op("Cast", [hit], "box_onehot", to=onnx.TensorProto.FLOAT),
                            b.ints([k, anchors, classes])], "box_seed")
    targets = list(dict.fromkeys(resolve_layer(layers, n, b) for n in config.layers))
    grads = append_backward(b, {scores: seed}, targets, k)
    in_shape = b.shape(input_name)
    maps = MapWriter(b, eg, k, config.upsample, config.uint8, in_shape[1:3] if layout == "nhwc" else in_shape[2:4])
    maps.grad_cams(grads, "box_gradcam", relu=config.relu, signed=config.signed)
    if pairs is None:
        maps.output(b.op("Identity", [values], "topk_scores"), "topk_scores", scores, (1, k), False)
        maps.output(b.op("Identity", [index], "topk_index"), "topk_index", scores, (1, k), False, "int64")
    onnx.checker.check_model(out)
    return eg
