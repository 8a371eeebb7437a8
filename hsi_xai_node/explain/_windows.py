"""The backward pass of a convolutional head on a window around each row's one seeded pixel.

A detector explains K boxes: row k's seed is one-hot at one anchor's class score. Between the scores and the
class head's last convolution there are only ops that move elements (Sigmoid, Concat, Reshape, Transpose), so
at each pyramid level's logits the row's cotangent is one pixel. Behind it, a stack of stride-1 convolutions and
element-wise ops (the class head: depthwise and pointwise convolutions, SiLU) spreads it over at most
(2r + 1) x (2r + 1) pixels of the head's input, r the sum of the convolutions' half-widths (3 for three 3x3
layers). The full-map backward computes every other pixel as an exact zero, K times, at every level: on the
bundled detector that is most of what explaining ten boxes costs.

Here such a stack (a *local region*) is differentiated on windows instead:

1. each row's pixel is found from its cotangent (the one pixel where it is non-zero; a row with a zero cotangent, an
   empty detection slot, gets some window and stays zero), or read from it when it arrives as one element per row
   (`OneHot`, _onehot.py), whose value is then the crop's seed;
2. the region's input is cropped around it (one Gather: (K, C, 2r+1, 2r+1), centred on the pixel, or moved
   inwards to stay inside the map near its border, where the copied convolutions then pad with zeros exactly where
   the network's do), and the region's nodes are copied to run on the crops;
3. the ordinary rules differentiate the copy, seeded with the cotangent's crop;
4. the window's gradient is added where it lies to the input's other cotangents (GatherElements, Add,
   ScatterElements), or scattered into zeros where it has none.

This is exact, not an approximation: the row's seeded logit is the same function of the window's pixels in the
copy as in the network (every value it reads lies within its receptive field, and where that field reaches past the
image's border both pad with zeros), and every pixel outside the window has a zero gradient. Tests check it against
float64 autograd at windows on the image's corners.

`local_regions` finds the regions from the graph alone: a region ends at a 4-D tensor whose cotangent can only
come through element-moving ops from the seeded outputs, and grows backwards over stride-1 "same"
convolutions, BatchNormalization and element-wise ops whose every consumer is inside, with one source tensor;
it stops at targets (their full gradient is wanted) and where a window would cover most of the map anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import NodeProto

from ._graph import Builder
from ._onehot import OneHot, dense
from .rules import RuleContext
from .rules.conv import conv_geometry

# element-wise ops a head is made of (each output pixel reads the same pixel of its inputs)
_ELEMENTWISE = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Clip", "Elu", "Selu",
                "Softplus", "Identity", "Add", "Sub", "Mul", "Div", "BatchNormalization"}
# ops between a head's logits and the seeded scores that move elements without mixing them: a one-hot row stays
# one element (per tensor) through them
_MOVERS = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Identity",
           "Cast", "Sigmoid", "Relu", "Tanh", "Exp", "Neg", "Add", "Sub", "Mul", "Div"}
_MOST_OF_THE_MAP = 0.5  # a window covering more than this share of the map is not worth the crop and scatter


@dataclass(frozen=True)
class LocalRegion:
    source: str  # the 4-D tensor the region reads (the class head's input at one level)
    output: str  # the 4-D tensor it produces (that level's logits), one seeded pixel per row
    nodes: tuple[NodeProto, ...]  # the region's nodes, in topological order
    radius: tuple[int, int]  # how far (rows, columns) the output's pixel reaches back into the source


def _conv_reach(node: NodeProto, b: Builder) -> tuple[int, int] | None:
    """(rows, columns) half-width of a stride-1 2-D convolution whose output has its input's size and whose
    window is centred (symmetric pads of half the dilated kernel); None for any other convolution."""
    weight = b.constant(node.input[1]) if len(node.input) > 1 else None
    if weight is None or weight.ndim != 4:
        return None
    # the Conv rule's own reading of strides, dilations and pads (auto_pad resolved)
    strides, pads, dil = conv_geometry(RuleContext(node=node, b=b, out_cots=[], needs=[], batch=1), node.input[0],
                                       weight.shape, node.output[0])
    half = [dil[i] * (weight.shape[2 + i] - 1) for i in range(2)]
    if any(s != 1 for s in strides) or any(h % 2 for h in half):
        return None  # strided, or an even dilated kernel: not centred
    half = [h // 2 for h in half]
    return (half[0], half[1]) if list(pads) == half * 2 else None


def _reach(node: NodeProto, b: Builder) -> tuple[int, int] | None:
    if node.op_type == "Conv":
        return _conv_reach(node, b)
    return (0, 0) if node.op_type in _ELEMENTWISE else None


def local_regions(b: Builder, seeds, targets, on_path: set[str]) -> list[LocalRegion]:
    """The local regions of the backward from `seeds` (each row one-hot) to `targets` (module docstring)."""
    graph = b.graph
    nodes = [n for n in graph.node if any(o in on_path for o in n.output)]
    producer = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list[NodeProto]] = {}
    for n in nodes:
        for i in n.input:
            if i in on_path:
                consumers.setdefault(i, []).append(n)
    targets = set(targets)

    # the tail: tensors whose cotangent comes only through element-moving ops from the seeded outputs
    tail, movers = set(seeds), set()
    ends = []
    for node in reversed(nodes):
        if not all(o in tail or o not in on_path for o in node.output):
            continue
        if node.op_type in _MOVERS:
            movers.add(id(node))
        for t in node.input:
            if t not in on_path or t in targets or t in tail:
                continue
            users = consumers.get(t, [])
            if len(users) == 1 and id(users[0]) in movers:  # one consumer: the row's one element stays one
                tail.add(t)
                maker = producer.get(t)
                # the tail goes on through element-moving ops (a Sigmoid or Mul there is one too); a region ends
                # where it meets a convolution (or BatchNormalization)
                if maker is not None and maker.op_type not in _MOVERS and _reach(maker, b) is not None:
                    ends.append(t)
    regions = []
    for end in ends:
        region = _grow(b, end, producer, consumers, on_path, targets)
        if region is not None:
            regions.append(region)
    return regions


def _spatial(b: Builder, tensor: str) -> tuple[int, ...] | None:
    s = b.shape(tensor)
    return s[2:] if len(s) == 4 else None


def _grow(b: Builder, end: str, producer, consumers, on_path, targets) -> LocalRegion | None:
    hw = _spatial(b, end)
    if hw is None:
        return None
    members = {id(producer[end]): producer[end]}
    changed = True
    while changed:  # to a fixed point: a tensor joins once every consumer of it is inside
        changed = False
        for node in list(members.values()):
            for t in node.input:
                maker = producer.get(t)
                if t not in on_path or t in targets or maker is None or id(maker) in members:
                    continue
                if _reach(maker, b) is None or _spatial(b, t) != hw:
                    continue
                if all(id(c) in members for c in consumers.get(t, [])):
                    members[id(maker)] = maker
                    changed = True
    inside = {o for n in members.values() for o in n.output}
    sources = {t for n in members.values() for t in n.input if t in on_path and t not in inside}
    if len(sources) != 1:
        return None
    (source,) = sources
    if _spatial(b, source) != hw:
        return None
    for n in members.values():  # every other input: a constant, or nothing spatial (a per-channel or scalar factor)
        for t in n.input:
            if t and t not in inside and t != source and b.constant(t) is None:
                s = b.shape(t)
                if len(s) >= 3 and any(d != 1 for d in s[2:]):
                    return None
    ordered = tuple(n for n in b.graph.node if id(n) in members)
    radius = {end: (0, 0)}
    for n in reversed(ordered):
        ry, rx = _reach(n, b)
        reached = [radius[o] for o in n.output if o in radius]
        if not reached:
            continue
        out = (max(r[0] for r in reached), max(r[1] for r in reached))
        for t in n.input:
            if t in inside or t == source:
                prev = radius.get(t, (0, 0))
                radius[t] = (max(prev[0], out[0] + ry), max(prev[1], out[1] + rx))
    r = radius.get(source)
    if r is None or 2 * r[0] + 1 > hw[0] or 2 * r[1] + 1 > hw[1] or hw[0] * hw[1] >= 2 ** 24 or \
            (2 * r[0] + 1) * (2 * r[1] + 1) > _MOST_OF_THE_MAP * hw[0] * hw[1]:
        return None  # no smaller than the map, or pixel ids past float32's exact integers (see _windows)
    return LocalRegion(source=source, output=end, nodes=ordered, radius=r)


@dataclass(frozen=True)
class _Windows:
    """Each row's window: flat indices into the map ((K, nh * nw) int64, y * W + x), and the geometry; the row's
    pixel (row, col) and the window's first row and column (top, left), (K, 1) int64 each."""

    index: str
    hw: tuple[int, int]
    size: tuple[int, int]
    rows: int
    row: str
    col: str
    top: str
    left: str


def _pixel(b: Builder, cot: str | OneHot, hw: tuple[int, int], rows: int) -> str:
    """(K, 1) int64: y * W + x of the one pixel where each row's cotangent is (the tail's guarantee)."""
    h, w = hw
    if isinstance(cot, OneHot):  # (channel, y, x) of a (K, C, H, W) map: the position within its channel's plane
        return b.op("Mod", [cot.index, b.const(h * w, "window_plane", np.int64)], "window_pixel")
    # the sum of the indices of the non-zero pixels (0 for a row with none): an ArgMax took 3.5 ms on OpenVINO's CPU
    # plugin for 10 x 64 x 80
    weight = b.reduce("ReduceSum", b.op("Abs", [cot], "window_abs"), [1], 0, "window_weight")  # (K, H, W)
    hit = b.op("Cast", [b.op("Greater", [b.op("Reshape", [weight, b.ints([rows, h * w])], "window_flat"),
                                         b.const(0.0, "zero")], "window_nonzero")], "window_hit", to=1)
    at = b.op("Mul", [hit, b.const(np.arange(h * w, dtype=np.float32).reshape(1, h * w), "window_pixel_ids")],
              "window_at")  # pixel ids below 2^24: exact in float32
    return b.op("Cast", [b.reduce("ReduceSum", at, [1], 1, "window_sum")], "window_pixel", to=7)  # (K, 1) int64


def _windows(b: Builder, cot: str | OneHot, hw: tuple[int, int], radius: tuple[int, int], rows: int) -> _Windows:
    """Each row's window around the pixel where its cotangent is: centred on it, or moved inwards to lie inside
    the map where the pixel is nearer to the border than the radius. The window then still holds the pixel's whole
    receptive field, and its own border, where the copied convolutions pad with zeros, is either beyond that field
    or the image's border, where the network pads with zeros too."""
    (h, w), (ry, rx) = hw, radius
    nh, nw = 2 * ry + 1, 2 * rx + 1
    pixel = _pixel(b, cot, hw, rows)
    width = b.const(w, "window_w", np.int64)
    row = b.op("Div", [pixel, width], "window_row")
    col = b.op("Sub", [pixel, b.op("Mul", [row, width], "window_row_start")], "window_col")

    def corner(at: str, half: int, length: int, n: int) -> str:  # clamp(at - half, 0, length - n)
        lo = b.op("Max", [b.op("Sub", [at, b.const(half, "window_half", np.int64)], "window_start"),
                          b.const(0, "window_first", np.int64)], "window_inside_lo")
        return b.op("Min", [lo, b.const(length - n, "window_last", np.int64)], "window_inside")

    top, left = corner(row, ry, h, nh), corner(col, rx, w, nw)
    offsets = (np.arange(nh)[:, None] * w + np.arange(nw)[None, :]).reshape(1, nh * nw)
    index = b.op("Add", [b.op("Add", [b.op("Mul", [top, width], "window_top"), left], "window_corner"),
                         b.const(offsets, "window_offsets", np.int64)], "window_index")  # (K, nh * nw)
    return _Windows(index, hw, (nh, nw), rows, row, col, top, left)


def _crop_forward(b: Builder, x: str, win: _Windows, channels: int) -> str:
    """(1, C, H, W) forward tensor -> (K, C, nh, nw): each row's window of it.

    Gathered from the tensor channels-last, a pixel's C values at a time: gathering single floats along the pixel
    axis of (C, H x W) took ONNX Runtime 0.26 ms per level of the bundled detector; a Transpose to channels-last
    is one pass over the map (on ONNX Runtime's blocked-layout CPU path a reorder it makes anyway)."""
    h, w = win.hw
    pixels = b.op("Reshape", [b.op("Transpose", [x], "window_nhwc", perm=[0, 2, 3, 1]), b.ints([h * w, channels])],
                  "window_src")
    picked = b.op("Gather", [pixels, win.index], "window_gather", axis=0)  # (K, n, C)
    return b.op("Reshape", [b.op("Transpose", [picked], "window_rows", perm=[0, 2, 1]),
                            b.ints([win.rows, channels, *win.size])], "window_crop")


def _crop_rows(b: Builder, g: str | OneHot, win: _Windows, channels: int) -> str:
    """(K, C, H, W) cotangent -> (K, C, nh, nw): row k's own window of row k."""
    h, w = win.hw
    nh, nw = win.size
    if isinstance(g, OneHot):  # its one element, at (channel, the pixel's place in the window) of the crop
        channel = b.op("Div", [g.index, b.const(h * w, "window_plane", np.int64)], "window_channel")
        at = b.op("Add", [b.op("Mul", [channel, b.const(nh * nw, "window_area", np.int64)], "window_channel_start"),
                          b.op("Add", [b.op("Mul", [b.op("Sub", [win.row, win.top], "window_dy"),
                                                    b.const(nw, "window_nw", np.int64)], "window_row_start"),
                                       b.op("Sub", [win.col, win.left], "window_dx")], "window_in_plane")],
                  "window_element")
        return dense(b, OneHot(at, g.value), (1, channels, nh, nw), win.rows)
    flat = b.op("Reshape", [g, b.ints([win.rows, channels, h * w])], "window_cot")
    return b.op("Reshape", [b.op("GatherElements", [flat, _per_channel(b, win, channels)], "window_pick", axis=2),
                            b.ints([win.rows, channels, *win.size])], "window_seed")


def _per_channel(b: Builder, win: _Windows, channels: int) -> str:
    return b.op("Expand", [b.op("Unsqueeze", [win.index, b.ints([1])], "window_index3"),
                           b.ints([win.rows, channels, win.size[0] * win.size[1]])], "window_index_c")


@dataclass(frozen=True)
class Placed:
    """A cotangent that is zero outside each row's window: (K, C, nh, nw) values and where they lie."""

    values: str
    windows: _Windows
    channels: int


def add_window(b: Builder, full: str | None, placed: Placed) -> str:
    """`full` (K, C, H, W) plus `placed`, or `placed` on zeros when `full` is None: the window's values added to what
    `full` holds there (GatherElements, Add) and written back (ScatterElements), so the rest of `full` is copied once
    and not added to a map of zeros (a row's window positions are distinct: the scatter has no collisions)."""
    win, channels = placed.windows, placed.channels
    h, w = win.hw
    index = _per_channel(b, win, channels)
    values = b.op("Reshape", [placed.values, b.ints([win.rows, channels, win.size[0] * win.size[1]])],
                  "window_grad_flat")
    if full is None:
        flat = b.op("Expand", [b.const(0.0, "zero"), b.ints([win.rows, channels, h * w])], "window_zeros")
    else:
        flat = b.op("Reshape", [full, b.ints([win.rows, channels, h * w])], "window_under")
        values = b.op("Add", [b.op("GatherElements", [flat, index], "window_there", axis=2), values], "window_sum")
    placed_flat = b.op("ScatterElements", [flat, index, values], "window_place", axis=2)
    return b.op("Reshape", [placed_flat, b.ints([win.rows, channels, h, w])], "window_full")


def windowed_copy(b: Builder, region: LocalRegion, cot: str | OneHot, rows: int) -> tuple[str, str, str, _Windows]:
    """Append the region run on each row's window; returns (crop of the source, the copy's output, the seed's
    crop, the windows): differentiate the copy's output, seeded with the crop, with respect to the source's
    crop, and place the result (`Placed`, `add_window`)."""
    hw = b.shape(region.source)[2:]
    win = _windows(b, cot, hw, region.radius, rows)
    nh, nw = win.size
    channels_in = b.shape(region.source)[1]
    crop = _crop_forward(b, region.source, win, channels_in)
    b.declare(crop, (1, channels_in, nh, nw))
    mapping = {region.source: crop}
    for node in region.nodes:  # each output the channels of the tensor it copies, on the window
        b.copy_node(node, mapping, "window", lambda o, new: b.declare(new, (1, b.shape(o)[1], nh, nw)))
    seed = _crop_rows(b, cot, win, b.shape(region.output)[1])
    return crop, mapping[region.output], seed, win


