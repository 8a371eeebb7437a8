"""Segmentation explanations for every class of a frame, appended to the model's ONNX graph.

One engine call then returns the logits and, per class c in batch row c:

* `activation@L`: paper 000's conservative map at the layer L before the final 1x1 conv:
  sum_k w_ck A_k (the logit minus its bias, exactly), plus the top-k channel
  contributions w_ck A_k by weight (`activation_topk@L`) and the second conv block's
  activations (`second_block`). No backward pass.
* the CAM family at each target layer L (the table in _cams.py: one function per method):
  `seg_gradcam` (Vinogradova 2020) and `seg_gradcam_signed` (no ReLU), `hires` (paper 002),
  `gradcam_pp`, `xgradcam`, `layercam`, `seg_xres` (windows of `xres_window` px) and `eigencam`
  (gradient-free); at the input of the final 1x1 conv in closed form, elsewhere from one
  reverse-mode pass for all classes.
* `scorecam@L` (Wang 2020): the model run again on the input masked by each channel of L, all
  channels in one batch inside the same graph (_scorecam.py); offline-grade cost.
* `spectral`: gradient x input summed over the class region, per input band.

S_c is the sum of logit c over the seed region: the predicted region of class c
(argmax == c, computed in the graph), an ROI mask fed as input `roi`, or one pixel
fed as input `pixel` (row, col). Maps are optionally resized to the input size and
scaled to uint8 in the graph (`..._u8`), ready to colour and blend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ._cams import CAMS, CamContext, Head, build_cam
from ._graph import Builder, ExplainError, drop_unread
from ._maps import MapOutput  # noqa: F401  (re-exported)
from ._maps import ExplainGraph, MapWriter, resolve_layer, sums_in_region
from ._reverse import append_backward
from ._attributions import INPUT_METHODS, PathOptions, append_input_attributions
from ._composites import LrpOptions
from ._scorecam import append_scorecam
from .rules import node_attr

# segmentation method name -> the CAM table's (_cams.CAMS)
CAM_METHODS = {"seg_gradcam": "gradcam", "seg_gradcam_signed": "gradcam_signed", "hires": "hires",
               "gradcam_pp": "gradcam_pp", "xgradcam": "xgradcam", "layercam": "layercam", "seg_xres": "xres",
               "eigencam": "eigencam", "fem": "fem"}
METHODS = ("activation", *CAM_METHODS, "scorecam", "spectral", *INPUT_METHODS)
GRADIENT_METHODS = tuple(m for m, c in CAM_METHODS.items() if CAMS[c].gradient)
SEEDS = ("predicted", "roi", "pixel")
UINT8_ROWS = ("classes", "predicted")


@dataclass(frozen=True)
class SegmentationExplainConfig:
    methods: tuple[str, ...] = ("activation", "seg_gradcam", "hires")
    layers: tuple[str, ...] = ("penultimate",)  # card roles or tensor names; activation uses "penultimate"
    seed: str = "predicted"
    top_k: int = 3  # channels per class in activation_topk
    second_block: bool = True  # expose the second conv block's activations with "activation"
    upsample: bool = True  # add maps resized to the model input size
    uint8: bool = True  # add uint8 versions of the (resized) maps
    uint8_scale: str = "frame"  # "frame": each row by its own peak; "input": by graph inputs (MapWriter)
    # "classes": a uint8 map per class (K, 1, H, W); "predicted": per pixel the predicted class's map (1, 1, H, W),
    # scaled by that class's scale: what a fused overlay shows (the node's default), a fifth of the work
    uint8_rows: str = "classes"
    xres_window: int = 2  # seg_xres: gradients max-pooled over windows of this many pixels per side
    fem_k: float = 2.0  # fem: a channel's pixels at or above its mean + fem_k standard deviations are "strong"
    lrp: LrpOptions = LrpOptions()  # the LRP methods' epsilon, gamma and stabiliser (_composites.py)
    paths: PathOptions = PathOptions()  # SmoothGrad's samples and noise, integrated gradients' steps, baselines

    def validated(self) -> "SegmentationExplainConfig":
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ExplainError(f"unknown explanation method(s) {bad}; known: {list(METHODS)}")
        if self.seed not in SEEDS:
            raise ExplainError(f"unknown seed {self.seed!r}; known: {list(SEEDS)}")
        if self.top_k < 0:
            raise ExplainError("top_k must be >= 0")
        if self.uint8_rows not in UINT8_ROWS:
            raise ExplainError(f"uint8_rows must be one of {list(UINT8_ROWS)}, got {self.uint8_rows!r}")
        if not 0.0 <= self.fem_k <= 10.0:
            raise ExplainError(f"fem_k must be 0..10 standard deviations, got {self.fem_k}")
        if not 1 <= self.xres_window <= 64:
            raise ExplainError(f"xres_window must be 1..64 pixels, got {self.xres_window}")
        return self


def _find_head(b: Builder, logits: str, through_resize: bool = False):
    """(node, weight (K, C), bias (K,)) of the final ungrouped 1x1 Conv producing `logits`.

    With `through_resize`, a spatial Resize between that conv and the logits (mmsegmentation's decode head
    resizes its logits to the input) is looked through: a linear or nearest Resize mixes each output pixel
    from input pixels with weights summing to one, so Resize(W A + b) = Resize(W A) + b and the logits less
    the bias are still sum_k w_ck A_k, resized. The closed-form gradient (dS_c/dA_k = w_ck on the region)
    does not hold through it, so the CAMs' caller does not ask for this."""
    node = b.producer(logits)
    if through_resize and node is not None and node.op_type == "Resize" \
            and b.shape(node.input[0])[:2] == b.shape(logits)[:2]:
        node = b.producer(node.input[0])
    if node is None or node.op_type != "Conv":
        raise ExplainError(f"activation maps need a final 1x1 Conv producing {logits!r}; "
                           f"found {node.op_type if node else 'no node'}")
    w = b.require_constant(node.input[1], node, "the final conv weight")
    if w.shape[2:] != (1, 1) or node_attr(node, "group", 1) != 1:
        raise ExplainError(f"activation maps need a final ungrouped 1x1 Conv; the conv before {logits!r} has "
                           f"weight {w.shape} (without 'activation', the CAMs and input attributions still run)")
    bias = b.require_constant(node.input[2], node, "the final conv bias") if len(node.input) > 2 and node.input[2] \
        else np.zeros(w.shape[0], np.float32)
    return node, w[:, :, 0, 0], bias


class _Seeds:
    """In-graph seed regions: class c's region in batch row c."""

    def __init__(self, b: Builder, logits: str, classes: int, eg: ExplainGraph, seed: str):
        self.b, self.logits, self.k, self.eg, self.kind = b, logits, classes, eg, seed
        self._argmax: str | None = None

    def argmax(self) -> str:
        """(1, 1, H, W) int64: the predicted class per pixel (the first of tied maxima, as numpy's argmax), one
        node shared by the predicted seed and the label output. Taken along the last axis of the logits transposed
        to channels-last and reshaped, where OpenVINO's CPU plugin ran the ArgMax over the channel axis of
        its blocked layout as a TopK of 1.0 ms, most of the default graph's 1.7 ms beside the bundled U-Net's
        forward; the same indices."""
        if self._argmax is None:
            b = self.b
            h, w = b.shape(self.logits)[2:]
            nhwc = b.op("Transpose", [self.logits], "logits_nhwc", perm=[0, 2, 3, 1])
            per_pixel = b.op("ArgMax", [nhwc], "argmax_nhwc", axis=3, keepdims=1)
            self._argmax = b.op("Reshape", [per_pixel, b.ints([1, 1, h, w])], "argmax")
        return self._argmax

    def region(self) -> str:
        """(K, 1, H, W) float: the seed region of each class."""
        b, k = self.b, self.k
        h, w = b.shape(self.logits)[2:]
        if self.kind == "predicted":
            hit = b.op("Equal", [self.argmax(), b.const(np.arange(k).reshape(k, 1, 1, 1), "class_ids", np.int64)], "is_class")
        elif self.kind == "roi":
            roi = b.add_input("roi", (1, 1, h, w))
            self.eg.extra_inputs["roi"] = (1, 1, h, w)
            return b.op("Expand", [roi, b.ints([k, 1, h, w])], "roi_region")
        else:
            pixel = b.add_input("pixel", (2,), onnx.TensorProto.INT64)
            self.eg.extra_inputs["pixel"] = (2,)
            row = b.op("Gather", [pixel, b.ints(0)], "pixel_row", axis=0)
            col = b.op("Gather", [pixel, b.ints(1)], "pixel_col", axis=0)
            rows = b.op("Equal", [b.const(np.arange(h).reshape(1, 1, h, 1), "rows", np.int64), row], "at_row")
            cols = b.op("Equal", [b.const(np.arange(w).reshape(1, 1, 1, w), "cols", np.int64), col], "at_col")
            hit = b.op("Expand", [b.op("And", [rows, cols], "at_pixel"), b.ints([k, 1, h, w])], "pixel_region")
        return b.op("Cast", [hit], "region", to=onnx.TensorProto.FLOAT)

    def seed(self, region: str) -> str:
        """(K, K, H, W): row c holds class c's region in channel c."""
        eye = self.b.const(np.eye(self.k, dtype=np.float32).reshape(self.k, self.k, 1, 1), "class_eye")
        return self.b.op("Mul", [region, eye], "seed")


def _logit_minus_bias(b: Builder, logits: str, bias: np.ndarray) -> str:
    """(K, 1, H, W) sum_k w_ck A_k: the logits less the head's bias, class in the batch axis (a Reshape, not a
    Transpose: with batch 1 the memory layout is the same, so no copy)."""
    k = bias.shape[0]
    centred = b.op("Sub", [logits, b.const(bias.reshape(1, k, 1, 1), "head_bias")], "logit_minus_bias")
    h, w = b.shape(logits)[2:]
    return b.op("Reshape", [centred, b.ints([k, 1, h, w])], "activation")


def has_activation_map(model: onnx.ModelProto, logits: str) -> bool:
    """Whether `activation` can be built for this model: a final ungrouped 1x1 conv before the logits (a spatial
    Resize after it allowed)."""
    try:
        _find_head(Builder(model), logits, through_resize=True)
    except ExplainError:
        return False
    return True


def _linear_head_input(b: Builder, logits: str) -> str | None:
    """The tensor A feeding a final ungrouped 1x1 Conv z = W A + b with constant W and b, if there is one.

    The closed form dS_c/dA_k = w_ck on class c's region then holds whatever else reads A (the top-k channel
    Gather of `activation`, a user's extra output): in a graph without cycles no other reader of A can lead
    back into the logits, whose only inputs are A and constants."""
    try:
        head, _, _ = _find_head(b, logits)
    except ExplainError:
        return None
    return head.input[0]


def build_segmentation_explainer(model: onnx.ModelProto, input_name: str, logits: str, layers: dict[str, str],
                                 config: SegmentationExplainConfig = SegmentationExplainConfig()) -> ExplainGraph:
    """A copy of `model` with the configured explanations appended as extra outputs.

    `layers` maps roles/block names to tensor names (a model card's `layers`); it must
    name "penultimate" for activation maps and "second_conv_block" for `second_block`.
    """
    cfg = config.validated()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    b = Builder(out)
    classes = b.shape(logits)[1]
    if b.shape(input_name)[0] != 1:
        raise ExplainError(f"the model input {input_name!r} must have batch 1 (got {b.shape(input_name)})")
    eg = ExplainGraph(model=out, input=input_name, logits=logits, classes=classes)
    seeds = _Seeds(b, logits, classes, eg, cfg.seed)
    maps = MapWriter(b, eg, classes, cfg.upsample, cfg.uint8, uint8_scale=cfg.uint8_scale,
                     select=seeds.argmax() if cfg.uint8_rows == "predicted" else None)
    centred = {}  # the logits less the head bias, class in the batch axis: built once, read by several maps

    def logit_minus_bias(bias: np.ndarray) -> str:
        if "act" not in centred:
            centred["act"] = _logit_minus_bias(b, logits, bias)
        return centred["act"]

    if "activation" in cfg.methods:
        pen = resolve_layer(layers, "penultimate", b)
        head, w, bias = _find_head(b, logits, through_resize=True)
        if head.input[0] != pen:
            raise ExplainError(f"the final 1x1 conv reads {head.input[0]!r}, not the penultimate layer {pen!r}")
        eg.head_bias = bias.astype(np.float32)
        c = w.shape[1]
        # at the logits' size: the penultimate layer's, unless a Resize follows the head (_find_head)
        maps.finish(logit_minus_bias(bias), "activation", pen, signed=True, hw=b.shape(logits)[2:])
        k = min(cfg.top_k, c)
        if k:
            idx = np.argsort(-w, axis=1, kind="stable")[:, :k]  # strongest positive weights first
            picked = b.op("Gather", [pen, b.ints(idx.ravel())], "topk_channels", axis=1)
            scaled = b.op("Mul", [picked, b.const(w[np.arange(classes)[:, None], idx].reshape(1, -1, 1, 1), "topk_w")])
            h, wd = b.shape(pen)[2:]
            top = b.op("Reshape", [scaled, b.ints([classes, k, h, wd])], "activation_topk")
            maps.output(top, "activation_topk", pen, (classes, k, h, wd), signed=True)
            eg.topk_channels = idx
        if cfg.second_block:
            second = resolve_layer(layers, "second_conv_block", b)
            ident = b.op("Identity", [second], "second_block")
            maps.output(ident, "second_block", second, b.shape(second), signed=False)

    wanted_cams = [m for m in cfg.methods if m in CAM_METHODS]
    want_spectral = "spectral" in cfg.methods
    want_score = "scorecam" in cfg.methods
    inputs = [m for m in cfg.methods if m in INPUT_METHODS]
    region = seeds.region() if (wanted_cams or want_spectral or want_score or inputs) else None
    if inputs:
        if tuple(b.shape(logits)[2:]) != tuple(b.shape(input_name)[2:]):
            raise ExplainError(f"input attributions need logits at the input's size: {b.shape(logits)} vs "
                               f"{b.shape(input_name)}")
        append_input_attributions(b, maps, logits, seeds.seed(region), region, input_name, classes, inputs,
                                  cfg.lrp, cfg.paths)
    if wanted_cams or want_spectral or want_score:
        layer_targets = list(dict.fromkeys(resolve_layer(layers, n, b) for n in cfg.layers)) \
            if wanted_cams or want_score else []
        head_input = _linear_head_input(b, logits)
        need_grads = any(CAMS[CAM_METHODS[m]].gradient for m in wanted_cams)
        # the head input has its gradient in closed form; other layers (and the input) need the backward pass
        backward = [t for t in layer_targets if t != head_input and need_grads] + ([input_name] if want_spectral else [])
        grads = append_backward(b, {logits: seeds.seed(region)}, backward, classes) if backward else {}
        head = None
        if head_input is not None and head_input in layer_targets and wanted_cams:
            _, w, bias = _find_head(b, logits)
            head = Head(w, region, logit_minus_bias(bias))
        for layer in layer_targets:
            ctx = CamContext(b, classes, layer, grad=grads.get(layer), head=head if layer == head_input else None,
                             xres_window=cfg.xres_window, fem_k=cfg.fem_k)
            for method in wanted_cams:
                cam_map, signed = build_cam(CAM_METHODS[method], ctx)
                maps.finish(cam_map, method, layer, signed=signed)
            if want_score:
                maps.finish(append_scorecam(b, model, input_name, logits, layer, region, classes), "scorecam", layer,
                            signed=False)
        if want_spectral:
            gx = b.op("Mul", [grads[input_name], input_name], "grad_x_input")
            _, bands, h, w = b.shape(input_name)
            spectral = sums_in_region(b, gx, region, classes, h * w, "spectral")
            maps.output(spectral, "spectral", input_name, (classes, bands), signed=True)
    # the predicted class per pixel, as the engine computed it (the seed regions' own, when seeded so): the host
    # need not take the argmax of the logits again (1.7 ms in numpy at 5 x 208 x 400, 0.4 ms in the engine)
    # as uint8 (int32 past 255 classes): a quarter of int64's copy, and engines without 64-bit integers (OpenVINO's
    # CPU plugin, TensorRT) would convert it anyway
    h, w = b.shape(logits)[2:]
    small = classes <= 256
    label = b.op("Cast", [seeds.argmax()], "predicted_class",
                 to=onnx.TensorProto.UINT8 if small else onnx.TensorProto.INT32)
    maps.output(label, "argmax", logits, (1, 1, h, w), signed=False, dtype="uint8" if small else "int32")
    drop_unread(out.graph)
    onnx.checker.check_model(out)
    return eg
