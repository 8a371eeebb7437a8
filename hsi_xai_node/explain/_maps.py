"""What every explain graph shares: its description and the writer of map outputs.

A map is (B, 1, h, w) with one row per explained class or box. `MapWriter.finish`
exposes it, plus (as configured) a copy resized to the model input and a uint8 copy,
ready to colour and blend. The uint8 copy is scaled per row either by the frame's own
peak (`uint8_scale="frame"`: colours mean nothing across frames) or by a scale fed as a
graph input (`"input"`: the card's or a running scale, so a colour means the same value
in every frame); then the graph also outputs each row's peak, for running scales.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from ._graph import Builder, ExplainError, keep_outputs


def linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32: ONNX Resize's linear interpolation with half-pixel coordinates along one axis (PyTorch's
    bilinear without align_corners), as a matrix: output o reads x = (o + 1/2) n_in / n_out - 1/2, clamped to the
    first and last sample, from its two neighbours."""
    x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1.0 - (x - lo))
    np.add.at(m, (np.arange(n_out), hi), x - lo)
    return m.astype(np.float32)


def sums_in_region(b: Builder, values: str, region: str, rows: int, pixels: int, hint: str,
                   channels_last: bool = False) -> str:
    """(rows, channels): each row's `values` (rows, C, H, W), or (rows, H, W, C) `channels_last`, summed over that
    row's `region` (rows, 1, H, W), H * W = `pixels`, per channel: a batched product with the region as a column.
    It reads the values once, where a product with the region wrote them again for two reductions to read (every
    input attribution of the bundled U-Net's five classes, 5 x 25 x 208 x 400: 1.3 ms against 8.5 on ONNX Runtime's
    CPU provider, and one frame-sized tensor less per method)."""
    column = b.op("Reshape", [region, b.ints([rows, pixels, 1] if not channels_last else [rows, 1, pixels])],
                  f"{hint}_region")
    flat = b.op("Reshape", [values, b.ints([rows, -1, pixels] if not channels_last else [rows, pixels, -1])],
                f"{hint}_pixels")
    summed = b.op("MatMul", [flat, column] if not channels_last else [column, flat], f"{hint}_summed")
    return b.op("Reshape", [summed, b.ints([rows, -1])], hint)


@dataclass(frozen=True)
class MapOutput:
    """One explanation output of the graph."""

    name: str  # graph output name
    method: str
    layer: str  # tensor name
    shape: tuple[int, ...]
    signed: bool  # values may be negative (uint8 versions put 0 at 128)
    dtype: str = "float32"


@dataclass
class ExplainGraph:
    model: onnx.ModelProto
    input: str
    logits: str
    classes: int
    outputs: dict[str, MapOutput] = field(default_factory=dict)
    extra_inputs: dict[str, tuple] = field(default_factory=dict)  # roi / pixel
    # uint8 output -> (its scale input (rows, 1, 1, 1), its per-row peak output (rows, 1, 1, 1)), when
    # the uint8 maps are scaled by inputs (uint8_scale="input")
    scale_inputs: dict[str, tuple[str, str]] = field(default_factory=dict)
    head_bias: np.ndarray | None = None  # final 1x1 conv bias, for conservativeness
    topk_channels: np.ndarray | None = None  # (K, top_k) channel indices of activation_topk

    def output_names(self) -> list[str]:
        return [self.logits, *self.outputs]

    def pruned(self, names) -> "ExplainGraph":
        """A copy holding only the outputs `names` (and the logits if named) and what they depend on: the
        graph an engine should run when its caller reads just those."""
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        keep_outputs(model.graph, names)
        kept = {o.name for o in model.graph.output}
        inputs = {i.name for i in model.graph.input}
        return ExplainGraph(model=model, input=self.input, logits=self.logits, classes=self.classes,
                            outputs={k: v for k, v in self.outputs.items() if k in kept},
                            extra_inputs={k: v for k, v in self.extra_inputs.items() if k in inputs},
                            scale_inputs={k: v for k, v in self.scale_inputs.items() if k in kept},
                            head_bias=self.head_bias, topk_channels=self.topk_channels)



UINT8_SCALES = ("frame", "input")


class MapWriter:
    """`select` (optional): a (1, 1, H, W) int64 tensor at the logits' size naming, per pixel, the row whose map the uint8 output
    holds there (the predicted class): the uint8 maps are then (1, 1, H, W), each pixel scaled by its row's
    scale, which is all a fused overlay reads, at a fifth of the work and copy of all rows' uint8 maps."""

    def __init__(self, b: Builder, eg: ExplainGraph, rows: int, upsample: bool, uint8: bool,
                 input_hw: tuple[int, int] | None = None, uint8_scale: str = "frame", select: str | None = None):
        if uint8_scale not in UINT8_SCALES:
            raise ExplainError(f"uint8_scale must be one of {list(UINT8_SCALES)}, got {uint8_scale!r}")
        self.b, self.eg, self.rows, self.upsample, self.uint8 = b, eg, rows, upsample, uint8
        self.uint8_scale, self.select = uint8_scale, select
        # maps are resized to the input's (H, W): an NCHW input's last two dims unless given
        self.in_hw = tuple(input_hw) if input_hw is not None else tuple(b.shape(eg.input)[2:])

    ELEM_TYPES = {"float32": onnx.TensorProto.FLOAT, "uint8": onnx.TensorProto.UINT8, "int64": onnx.TensorProto.INT64,
                  "int32": onnx.TensorProto.INT32}

    def output(self, tensor: str, method: str, layer: str, shape, signed: bool, dtype="float32") -> None:
        self.b.add_output(tensor, shape, self.ELEM_TYPES[dtype])
        self.eg.outputs[tensor] = MapOutput(tensor, method, layer, tuple(shape), signed, dtype)

    def max_hw(self, x: str) -> str:
        return self.b.reduce("ReduceMax", self.b.reduce("ReduceMax", x, [3], 1, "max_cols"), [2], 1, "max_hw")

    def finish(self, cam: str, method: str, layer: str, signed: bool, hw: tuple[int, int] | None = None) -> None:
        """Expose a (rows, 1, h, w) map, plus its resized and uint8 versions as configured; (h, w) is the
        layer's unless given (a map of the layer made at another size)."""
        b, k = self.b, self.rows
        h, w = hw or b.shape(layer)[2:]
        self.output(cam, method, layer, (k, 1, h, w), signed)
        full, full_hw = cam, (h, w)
        if self.upsample and (h, w) != tuple(self.in_hw):
            full_hw = tuple(self.in_hw)
            full = self.resized(cam, (h, w))
            self.output(full, method + "_full", layer, (k, 1, *full_hw), signed)
        if self.uint8:
            peak = self.peak(full, signed)  # each row's own peak: the frame scale, and what running scales follow
            scale = None
            if self.uint8_scale == "input":
                scale = self.b.add_input(f"overlay_scale.{method}.{layer}", (k, 1, 1, 1), onnx.TensorProto.FLOAT)
            v = self.scaled(full, signed, self.row_scale(peak, scale))
            rows = k
            if self.select is not None and tuple(b.shape(self.eg.logits)[2:]) == tuple(full_hw):  # select: per logit
                # scaled by each row's own scale, then each pixel's row picked: the rounding and the cast, the costly
                # part, on one row; a per-pixel Gather of the scales would cost more than it saves
                v = b.op("GatherElements", [v, self.select], "selected_map", axis=0)  # (1, 1, H, W)
                rows = 1
            u8 = self.quantised(v)
            if scale is not None:
                out = self.b.op("Identity", [peak], "overlay_peak")
                self.b.add_output(out, (k, 1, 1, 1), onnx.TensorProto.FLOAT)
                self.eg.scale_inputs[u8] = (scale, out)
            self.output(u8, method + "_u8", layer, (rows, 1, *full_hw), signed, "uint8")

    def resized(self, cam: str, hw: tuple[int, int]) -> str:
        """A (rows, 1, h, w) map at the input's (H, W), by ONNX Resize's linear half-pixel interpolation done as one
        matrix per axis, H x h @ map @ w x W: the same weights, and on OpenVINO's CPU plugin 7 ms -> under 1 for ten
        64x80 maps to 256x320 (the detector's)."""
        return self.resized_sum([(cam, hw)])

    def resized_sum(self, cams: list[tuple[str, tuple[int, int]]]) -> str:
        """The sum of (rows, 1, h_i, w_i) maps each resized to the input's (H, W) as `resized` does, with one product
        over the rows: the maps' columns resized, stacked along their rows, times the row matrices side by side
        (H x sum h_i), instead of a full-size product and a full-size Add per map."""
        b, (out_h, out_w) = self.b, self.in_hw
        cols = [b.op("MatMul", [cam, b.const(linear_resize_matrix(w, out_w).T, "resize_cols")], "resize_map_w")
                for cam, (_, w) in cams]
        rows = np.concatenate([linear_resize_matrix(h, out_h) for _, (h, _) in cams], axis=1)
        stacked = cols[0] if len(cols) == 1 else b.op("Concat", cols, "resize_stack", axis=2)
        return b.op("MatMul", [b.const(rows, "resize_rows"), stacked], "resize_map")

    def peak(self, m: str, signed: bool) -> str:
        """Per row: max |m| (signed maps) or max(m, 0) (one-sided ones), (rows, 1, 1, 1)."""
        return self.max_hw(self.b.op("Abs", [m]) if signed else self.non_negative(m))

    def non_negative(self, m: str) -> str:
        """ReLU(m), or m itself when it is already a ReLU output or a linear resize of one (every one-sided CAM
        ends in a ReLU: a second one would cost a pass over the map for nothing)."""
        node = self.b.producer(m)
        # convex weights (a resize, a resize matrix) or a pick keep the sign: look through them
        while node is not None and node.op_type in ("Resize", "GatherElements", "MatMul"):
            source = next(i for i in node.input if self.b.constant(i) is None)
            node = self.b.producer(source)
        return m if node is not None and node.op_type == "Relu" else self.b.op("Relu", [m])

    def row_scale(self, peak: str, scale: str | None) -> str:
        """Each row's s: its `scale` input (a row given 0 or less: its own `peak`), or its own peak when there is
        no input; at least 1e-12."""
        b, s = self.b, peak
        if scale is not None:
            s = b.op("Where", [b.op("Greater", [scale, b.const(0.0)], "scale_given"), scale, s], "row_scale")
        return b.op("Max", [s, b.const(1e-12)], "u8_scale")

    def scaled(self, m: str, signed: bool, s: str) -> str:
        """`m` onto 0..255 by its rows' `s`: [0, s] for non-negative maps, [-s, s] for signed ones (0 at 127.5);
        still float, not yet rounded or clipped."""
        b = self.b
        if signed:
            return b.op("Add", [b.op("Mul", [m, b.op("Div", [b.const(127.5), s])]), b.const(127.5)], "u8_signed")
        return b.op("Mul", [self.non_negative(m), b.op("Div", [b.const(255.0), s])], "u8")

    def quantised(self, v: str) -> str:
        """Rounded (half to even), values beyond the scale clipped, as uint8."""
        v = self.b.op("Clip", [self.b.op("Round", [v]), self.b.const(0.0), self.b.const(255.0)], "u8_clip")
        return self.b.op("Cast", [v], "map_u8", to=onnx.TensorProto.UINT8)


def resolve_layer(layers: dict[str, str], name: str, b: Builder) -> str:
    """A card role or block name (or a raw tensor name) -> a tensor of the graph."""
    tensor = layers.get(name, name)
    if b.producer(tensor) is None:
        raise ExplainError(f"target layer {name!r} ({tensor!r}) is not a tensor of the model; "
                           f"the card names {sorted(layers)}")
    return tensor
