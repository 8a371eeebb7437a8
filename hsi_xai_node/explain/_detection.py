"""Per-box explanations for detectors (paper 001), for the top-K boxes of a frame, in the graph.

Box k's seed is one-hot at its (anchor, class) pair in batch row k; the gradient of that class
score w.r.t. each chosen class-head input layer gives the CAM family of _cams.py per box:
`box_gradcam` (and `box_gradcam_signed`, no ReLU), `box_hires`, `box_gradcam_pp`,
`box_xgradcam`, `box_layercam`, `box_xres` and `box_eigencam` (gradient-free: one map for
every box). With `box_spectral` the gradient reaches the input too: per box, gradient x input
summed over the box, per input channel (K, C_in) (the camera shares of a detection). Every input
attribution of _attributions.py is there per box as `box_<method>` (`box_gradient`,
`box_input_x_gradient`, `box_smoothgrad`, `box_integrated_gradients`, `box_deeplift`, `box_lrp_...`):
the per-pixel map (K, 1, H, W), per box the sums inside the box per input channel
(`box_<method>_bands`), the total and, for a conserving method, its target. Box regions come from the
boxes NMS kept (`boxes`, (1, D, 4) xyxy input pixels). Which pairs:

- `pairs` given (the detector's `det_pairs` output, (1, D) int64 anchor * classes +
  class after NMS, -1 in empty slots): the first K detections NMS kept, so every row
  explains a distinct reported box; rows of empty slots have a zero seed and a zero map.
- `pairs` None: the K highest-scoring pairs before NMS (TopK over the flattened scores),
  output as `topk_scores` and `topk_index`; neighbouring anchors of one object may repeat.

The layer `box_level` (BOX_LEVEL) explains each box at its own pyramid level: the CAM is taken at every
tensor the card's `layers` name, with the backward stopped at each of them, so a box's score reaches only the named
tensors nearest to it. On a card that names the class head's input of every level (the bundled EfficientDet's
bifpn_p2..bifpn_p5) that is the feature the head read to score the box, reached through the head alone: its
Grad-CAM is Grad-CAM at the box's level (for a box of the finest level, the map at `class_head_input` itself). The
maps of the levels are each resized to the input and added (a row's map is zero at every level its score does
not reach; the gradient-free methods are masked to those levels), so these maps are always at the input's size;
`box_level_index` says which level each row reached, and each level's part is an output of its own at the level's
size (method `<name>_level_part`, its layer the level's tensor): a caller that shows a box only around itself resizes
that crop alone. A box of a coarse level no longer pays for a backward through
the feature pyramid to the finest level (at `class_head_input`, most of what ten boxes cost on the bundled
detector): what is left is the class head, run once on K windows, each row's cropped from its own level and through
its level's own pointwise weights (_windows.same_heads), and the element-moving tail from the scores to each
level's logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ._attributions import INPUT_METHODS, PathOptions, append_input_attributions
from ._cams import CAMS, CamContext, build_cam
from ._composites import LrpOptions
from ._graph import Builder, ExplainError, drop_unread
from ._maps import ExplainGraph, MapWriter, resolve_layer, sums_in_region
from ._reverse import append_backward
from ._onehot import OneHot
from ._windows import Placed


# detection method name -> the CAM table's (_cams.CAMS)
BOX_CAMS = {f"box_{name}": name for name in CAMS}
# detection method name -> the input attribution's (_attributions.INPUT_METHODS)
BOX_ATTRIBUTIONS = {f"box_{name}": name for name in INPUT_METHODS}
BOX_INPUT_METHODS = ("box_spectral", *BOX_ATTRIBUTIONS)  # the methods that reach the input
BOX_METHODS = (*BOX_CAMS, *BOX_INPUT_METHODS)
BOX_LEVEL = "box_level"  # the layer "each box at its own pyramid level" (module docstring)
# method suffix of a BOX_LEVEL map's part at one level, at that level's size (the output's layer is the level's
# tensor): the BOX_LEVEL map is the sum of its parts, each resized to the input
LEVEL_PART = "_level_part"


@dataclass(frozen=True)
class DetectionExplainConfig:
    layers: tuple[str, ...]  # class-head input tensors (card roles or tensor names), or BOX_LEVEL: each box at its own
    top_k: int = 10
    methods: tuple[str, ...] = ("box_gradcam", "box_gradcam_signed")
    upsample: bool = True
    uint8: bool = True
    xres_window: int = 2
    fem_k: float = 2.0  # box_fem: the K-sigma rule's K (_cams.py)
    lrp: LrpOptions = LrpOptions()  # box_lrp_*: epsilon, gamma, stabiliser
    paths: PathOptions = PathOptions()  # box_smoothgrad, box_integrated_gradients, box_deeplift
    # each box's backward through the class head on a window around its anchor (_windows.py; exact), not over the
    # whole map: False only to measure what it saves
    window_backward: bool = True

    def validated(self) -> "DetectionExplainConfig":
        bad = [m for m in self.methods if m not in BOX_METHODS]
        if bad:
            raise ExplainError(f"unknown per-box method(s) {bad}; known: {list(BOX_METHODS)} (box_scorecam is not "
                               "built: Score-CAM needs a masked forward per channel and box)")
        return self


def box_regions(b: Builder, boxes: str, k: int, hw: tuple[int, int]) -> str:
    """(k, 1, H, W) float: 1 on every pixel a box overlaps (pixel [x, x+1) x [y, y+1) against the box's edges
    x0 < x+1, x < x1, likewise in y), so even a box narrower than a pixel has its pixels; 0 elsewhere."""
    h, w = hw
    first = b.op("Slice", [boxes, b.ints([0]), b.ints([k]), b.ints([1])], "explained_boxes")  # (1, k, 4)
    xyxy = b.op("Reshape", [first, b.ints([k, 4, 1, 1])], "box_edges")
    x0, y0, x1, y1 = (b.op("Slice", [xyxy, b.ints([i]), b.ints([i + 1]), b.ints([1])], f"box_e{i}") for i in range(4))
    left = b.const(np.arange(w, dtype=np.float32).reshape(1, 1, 1, w), "pixel_x0")
    top = b.const(np.arange(h, dtype=np.float32).reshape(1, 1, h, 1), "pixel_y0")
    inside_x = b.op("And", [b.op("Less", [x0, b.op("Add", [left, b.const(1.0)])]), b.op("Less", [left, x1])], "in_x")
    inside_y = b.op("And", [b.op("Less", [y0, b.op("Add", [top, b.const(1.0)])]), b.op("Less", [top, y1])], "in_y")
    return b.op("Cast", [b.op("And", [inside_x, inside_y], "in_box")], "box_region", to=onnx.TensorProto.FLOAT)


def box_levels(layers: dict[str, str]) -> list[str]:
    """The tensors BOX_LEVEL explains at: every tensor the card's `layers` name, once each, in the card's order
    (`box_level_index` counts in this order)."""
    return list(dict.fromkeys(layers.values()))


def box_level_cams(b: Builder, maps: MapWriter, seeds: dict[str, str], layers: dict[str, str], cams: list[str],
                   config: DetectionExplainConfig, in_hw: tuple[int, int]) -> None:
    """Each CAM method at each box's own level (BOX_LEVEL): (K, 1, H, W) at the input's size, one output each, with
    its part at each level (K, 1, h, w) (LEVEL_PART); and
    `box_level_index` (K,) int64, the level each row's score reached (its place in `box_levels`; 0 for an empty
    slot), so that a map can be shown on the scale of its class at its level (a Grad-CAM's mean over a coarse
    level's few pixels makes it larger than a fine level's)."""
    k = config.top_k
    levels = box_levels({role: resolve_layer(layers, role, b) for role in layers})  # each checked in the graph
    grads = append_backward(b, seeds, levels, k, one_hot_rows=config.window_backward, stop_at_targets=True,
                            placed=True)
    contexts = [CamContext(b, k, level, grad=grads[level], xres_window=config.xres_window, fem_k=config.fem_k)
                for level in levels]
    reached = [_reaches(b, grads[level], k) for level in levels]
    # the first level a row reaches (a card naming tensors on several paths could let a score reach two)
    table = b.op("Reshape", [b.op("Concat", reached, "levels_reached", axis=1) if len(reached) > 1 else reached[0],
                             b.ints([k, len(levels)])], "levels_table")
    index = b.op("ArgMax", [table], "box_level_index", axis=1, keepdims=0)  # ties: the first
    maps.output(index, "box_level_index", BOX_LEVEL, (k,), signed=False, dtype="int64")
    for method in cams:
        per_level, signed = [], False
        for level, ctx, rows in zip(levels, contexts, reached):
            cam_map, signed = build_cam(BOX_CAMS[method], ctx)
            if not CAMS[BOX_CAMS[method]].gradient:  # the same map in every row: kept in the rows reaching the level
                cam_map = b.op("Mul", [cam_map, rows], "box_level_only")
            per_level.append((cam_map, ctx.hw))
            # the level's part at its own size: a caller that shows each box only around itself resizes just that
            # crop (runtime/detection.py), where the sum at the input's size is K full maps of products
            maps.output(cam_map, method + LEVEL_PART, level, (k, 1, *ctx.hw), signed)
        maps.finish(maps.resized_sum(per_level), method, BOX_LEVEL, signed=signed, hw=tuple(in_hw))


def _reaches(b: Builder, grad: str | Placed, k: int) -> str:
    """(K, 1, 1, 1) float: 1 in the rows whose score reaches the level, else 0: where the gradient there is not all
    zero, or, from a head shared by the levels, where the row's seed is at this level (`Placed.rows`)."""
    if isinstance(grad, Placed) and grad.rows is not None:
        return grad.rows
    values = grad.values if isinstance(grad, Placed) else grad
    magnitude = b.reduce("ReduceSum", b.op("Reshape", [b.op("Abs", [values]), b.ints([k, -1])], "level_flat"), [1], 1,
                         "level_magnitude")
    reached = b.op("Greater", [b.op("Reshape", [magnitude, b.ints([k, 1, 1, 1])]), b.const(0.0)], "level_reached")
    return b.op("Cast", [reached], "level_row", to=onnx.TensorProto.FLOAT)


def build_detection_explainer(model: onnx.ModelProto, input_name: str, scores: str, layers: dict[str, str],
                              config: DetectionExplainConfig, pairs: str | None = None,
                              layout: str = "nchw", boxes: str | None = None) -> ExplainGraph:
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
    # row k: 1 at its pair, zero elsewhere; an empty slot (pair -1) a zero row. One scatter into zeros, where an
    # Equal against every pair id and a Cast went twice over the k x anchors x classes seed (and the ids were a
    # 1.6 MB constant in the bundled detector's graph)
    row_pair = b.op("Reshape", [index, b.ints([k, 1])], "box_index")
    present = b.op("Cast", [b.op("GreaterOrEqual", [row_pair, b.const(0, "no_pair", np.int64)], "box_present")],
                   "box_value", to=onnx.TensorProto.FLOAT)
    pair = b.op("Max", [row_pair, b.const(0, "first_pair", np.int64)], "box_pair")

    def one_hot(value: str) -> str:  # (k, anchors, classes): `value` at each row's pair
        zeros = b.op("Expand", [b.const(0.0, "zero"), b.ints([k, anchors * classes])], "box_zeros")
        hit = b.op("ScatterElements", [zeros, pair, value], "box_onehot", axis=1)
        return b.op("Reshape", [hit, b.ints([k, anchors, classes])], "box_seed")

    config = config.validated()
    cams = [m for m in config.methods if m in BOX_CAMS]
    inputs = [m for m in config.methods if m in BOX_INPUT_METHODS]
    seed = one_hot(present) if inputs else None  # the attributions' (they differentiate `scores` themselves)
    # the CAMs' backward: with windows, each row's seed as its one element (_onehot.py), carried so through the
    # Sigmoid, Concat, Reshape and Transposes to each level's logits, not as K x anchors x classes dense tensors
    cam_seeds = {scores: OneHot(pair, present) if config.window_backward else
                 (seed if seed is not None else one_hot(present))}
    targets = list(dict.fromkeys(resolve_layer(layers, n, b) for n in config.layers if n != BOX_LEVEL)) if cams else []
    # the plain gradient at the input, in the CAMs' backward pass: box_spectral's and (shared) the attributions'
    plain = [m for m in inputs if m in ("box_spectral", "box_gradient", "box_input_x_gradient")]
    needs = [t for t in targets if any(CAMS[BOX_CAMS[m]].gradient for m in cams)] + ([input_name] if plain else [])
    grads = append_backward(b, cam_seeds, list(dict.fromkeys(needs)), k,
                            one_hot_rows=config.window_backward) if needs else {}
    in_shape = b.shape(input_name)
    in_hw = in_shape[1:3] if layout == "nhwc" else in_shape[2:4]
    maps = MapWriter(b, eg, k, config.upsample, config.uint8, in_hw)
    for layer in targets:
        ctx = CamContext(b, k, layer, grad=grads.get(layer), xres_window=config.xres_window,
                         fem_k=config.fem_k)
        for method in cams:
            cam_map, signed = build_cam(BOX_CAMS[method], ctx)
            maps.finish(cam_map, method, layer, signed=signed)
    if cams and BOX_LEVEL in config.layers:
        box_level_cams(b, maps, cam_seeds, layers, cams, config, in_hw)
    if inputs:
        if boxes is None:
            raise ExplainError(f"{inputs} need the kept boxes (pass boxes='det_boxes')")
        regions = box_regions(b, boxes, k, in_hw)
        attributions = [BOX_ATTRIBUTIONS[m] for m in inputs if m in BOX_ATTRIBUTIONS]
        if attributions:
            if layout != "nchw":
                raise ExplainError(f"{[f'box_{m}' for m in attributions]} need an NCHW input; this detector's is "
                                   f"{layout} (box_spectral and the per-box CAMs work with either)")
            append_input_attributions(b, maps, scores, seed, regions, input_name, k, attributions, config.lrp,
                                      config.paths, prefix="box_", gradient=grads.get(input_name),
                                      one_hot_rows=config.window_backward)
        channels = in_shape[3] if layout == "nhwc" else in_shape[1]
        if "box_spectral" in inputs:
            gx = b.op("Mul", [grads[input_name], input_name], "box_grad_x_input")  # (k, C, H, W) or (k, H, W, C)
            maps.output(sums_in_region(b, gx, regions, k, in_hw[0] * in_hw[1], "box_spectral",
                                       channels_last=layout == "nhwc"), "box_spectral", input_name, (k, channels),
                        signed=True)
    if pairs is None:
        maps.output(b.op("Identity", [values], "topk_scores"), "topk_scores", scores, (1, k), False)
        maps.output(b.op("Identity", [index], "topk_index"), "topk_index", scores, (1, k), False, "int64")
    drop_unread(out.graph)
    onnx.checker.check_model(out)
    return eg
