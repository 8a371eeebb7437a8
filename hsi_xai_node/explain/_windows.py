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
it stops at targets (their full gradient is wanted). A region whose window would cover most of its map is not
worth windowing on its own (`alone`), but still joins a group: `same_heads` groups the regions that are one head
run at several pyramid levels (the same wiring and weights, but for pointwise convolutions that differ per level),
and `windowed_group_copy` runs the group as one copy on K rows, each row on a window of the level its element is
at: a row's element lies at one level only, so where each level ran its copy for all K rows, one copy does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import NodeProto

from ._graph import Builder
from ._onehot import OneHot, dense, per_column
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
    alone: bool = True  # worth a window on its own: the window covers at most _MOST_OF_THE_MAP of the map


@dataclass(frozen=True)
class Regions:
    regions: list[LocalRegion]
    # the tail's element-moving nodes whose every consumer on the path is one of them too, by their first output:
    # differentiated first, they leave every region's output with its whole cotangent before any region is
    # (a group of same_heads needs them all at once)
    early: frozenset[str]
    ready: frozenset[str]  # the regions' outputs whose every consumer is one of those: complete once they are done


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


def local_regions(b: Builder, seeds, targets, on_path: set[str]) -> Regions:
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
    early: set[str] = set()  # (not by id(): a protobuf node's Python wrapper is made anew once let go)
    for node in reversed(nodes):
        if id(node) in movers and all(c.output[0] in early for o in node.output for c in consumers.get(o, [])):
            early.add(node.output[0])
    ready = {r.output for r in regions if all(c.output[0] in early for c in consumers.get(r.output, []))}
    return Regions(regions, frozenset(early), frozenset(ready))


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
    if r is None or 2 * r[0] + 1 > hw[0] or 2 * r[1] + 1 > hw[1] or hw[0] * hw[1] >= 2 ** 24:
        return None  # no smaller than the map, or pixel ids past float32's exact integers (see _windows)
    alone = (2 * r[0] + 1) * (2 * r[1] + 1) <= _MOST_OF_THE_MAP * hw[0] * hw[1]
    return LocalRegion(source=source, output=end, nodes=ordered, radius=r, alone=alone)


@dataclass(frozen=True)
class _Windows:
    """Each row's window: flat indices into the map ((K, nh * nw) int64, y * W + x), and the geometry."""

    index: str
    hw: tuple[int, int]
    size: tuple[int, int]
    rows: int


@dataclass(frozen=True)
class _Places:
    """Where each row's window lies in each of L maps, (K, L) int64 each: the row's pixel (row, col), the window's
    first row and column (top, left), and its first pixel's flat index (corner = top * W + left)."""

    row: str
    col: str
    top: str
    left: str
    corner: str


def _window_places(b: Builder, pixel: str, hws: list[tuple[int, int]], radius: tuple[int, int]) -> _Places:
    """Each row's window around its pixel (K, L: y * W + x in map i of size hws[i]): centred on it, or moved inwards
    to lie inside the map where the pixel is nearer to the border than the radius. The window then still holds the
    pixel's whole receptive field, and its own border, where the copied convolutions pad with zeros, is either beyond
    that field or the image's border, where the network pads with zeros too."""
    (ry, rx), (nh, nw) = radius, (2 * radius[0] + 1, 2 * radius[1] + 1)
    width = per_column(b, [w for _, w in hws], "window_w")
    row = b.op("Div", [pixel, width], "window_row")
    col = b.op("Sub", [pixel, b.op("Mul", [row, width], "window_row_start")], "window_col")

    def first(at: str, half: int, lasts: list[int]) -> str:  # clamp(at - half, 0, length - n): inside the map
        lo = b.op("Max", [b.op("Sub", [at, b.const(half, "window_half", np.int64)], "window_start"),
                          b.const(0, "window_first", np.int64)], "window_inside_lo")
        return b.op("Min", [lo, per_column(b, lasts, "window_last")], "window_inside")

    top, left = first(row, ry, [h - nh for h, _ in hws]), first(col, rx, [w - nw for _, w in hws])
    corner = b.op("Add", [b.op("Mul", [top, width], "window_top"), left], "window_corner")
    return _Places(row, col, top, left, corner)


def _window_offsets(hws: list[tuple[int, int]], size: tuple[int, int]) -> np.ndarray:
    """(L, nh * nw): each window pixel's flat index in map i less the window's first pixel's."""
    nh, nw = size
    return np.stack([(np.arange(nh)[:, None] * w + np.arange(nw)[None, :]).ravel() for _, w in hws])


def _element_in_window(b: Builder, index: str, hws: list[tuple[int, int]], places: _Places, size) -> str:
    """(K, L) int64: where each row's element (index, (K, L), into map i's (C, H, W)) lies in its crop (C, nh, nw)."""
    nh, nw = size
    channel = b.op("Div", [index, per_column(b, [h * w for h, w in hws], "window_plane")], "window_channel")
    return b.op("Add", [b.op("Mul", [channel, b.const(nh * nw, "window_area", np.int64)], "window_channel_start"),
                        b.op("Add", [b.op("Mul", [b.op("Sub", [places.row, places.top], "window_dy"),
                                                  b.const(nw, "window_nw", np.int64)], "window_dy_start"),
                                     b.op("Sub", [places.col, places.left], "window_dx")], "window_in_plane")],
                "window_element")


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


def _crop_forward(b: Builder, sources: list[str], index: str, rows: int, channels: int, size) -> str:
    """(1, C, H_i, W_i) forward tensors -> (K, C, nh, nw): each row's window, `index` (K, nh * nw) counting the
    pixels of the sources one after another.

    Gathered from the tensors channels-last, a pixel's C values at a time: gathering single floats along the pixel
    axis of (C, H x W) took ONNX Runtime 0.26 ms per level of the bundled detector; a Transpose to channels-last
    is one pass over the map (on ONNX Runtime's blocked-layout CPU path a reorder it makes anyway)."""
    flat = [b.pixels(x) for x in sources]
    pixels = b.op("Concat", flat, "window_sources", axis=0) if len(flat) > 1 else flat[0]
    picked = b.op("Gather", [pixels, index], "window_gather", axis=0)  # (K, n, C)
    return b.op("Reshape", [b.op("Transpose", [picked], "window_rows", perm=[0, 2, 1]),
                            b.ints([rows, channels, *size])], "window_crop")


def _crop_rows(b: Builder, g: str | OneHot, win: _Windows, channels: int, places: _Places) -> str:
    """(K, C, H, W) cotangent -> (K, C, nh, nw): row k's own window of row k."""
    h, w = win.hw
    if isinstance(g, OneHot):  # its one element, at (channel, the pixel's place in the window) of the crop
        at = _element_in_window(b, g.index, [win.hw], places, win.size)
        return dense(b, OneHot(at, g.value), (1, channels, *win.size), win.rows)
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
    # (K, 1, 1, 1) float 0/1 where `values` is a head shared by several levels (same_heads): its gradient in every
    # row, this level's share only in these rows (the others' elements are at other levels)
    rows: str | None = None

    def own(self, b: Builder, values: str | None = None) -> str:
        """`values` (these windows' values, or a reduction of them over the window) zero in the other levels' rows."""
        values = self.values if values is None else values
        return values if self.rows is None else b.op("Mul", [values, self.rows], "window_share")


def add_window(b: Builder, full: str | None, placed: Placed) -> str:
    """`full` (K, C, H, W) plus `placed`, or `placed` on zeros when `full` is None: the window's values added to what
    `full` holds there (GatherElements, Add) and written back (ScatterElements), so the rest of `full` is copied once
    and not added to a map of zeros (a row's window positions are distinct: the scatter has no collisions)."""
    win, channels = placed.windows, placed.channels
    h, w = win.hw
    index = _per_channel(b, win, channels)
    values = b.op("Reshape", [placed.own(b), b.ints([win.rows, channels, win.size[0] * win.size[1]])],
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
    hw = tuple(b.shape(region.source)[2:])
    size = (2 * region.radius[0] + 1, 2 * region.radius[1] + 1)
    places = _window_places(b, _pixel(b, cot, hw, rows), [hw], region.radius)
    index = b.op("Add", [places.corner, per_column(b, _window_offsets([hw], size)[0], "window_offsets")],
                 "window_index")  # (K, nh * nw)
    win = _Windows(index, hw, size, rows)
    crop = _crop_forward(b, [region.source], index, rows, b.shape(region.source)[1], size)
    output = _copy_region(b, [region], crop, set(), None, rows, size)
    seed = _crop_rows(b, cot, win, b.shape(region.output)[1], places)
    return crop, output, seed, win


def _copy_region(b: Builder, regions: list[LocalRegion], crop: str, per_level: set[int], level: str | None,
                 rows: int, size) -> str:
    """The nodes of regions[0] run on the crop (1, C, nh, nw) as declared, K rows at run time; at the positions
    `per_level`, each row through the weights of the region `level` (K,) names (`_per_row_pointwise`). Returns
    the copy's output."""
    first = regions[0]
    b.declare(crop, (1, b.shape(first.source)[1], *size))
    mapping = {first.source: crop}
    for j, node in enumerate(first.nodes):  # each output the channels of the tensor it copies, on the window
        if j in per_level:
            _per_row_pointwise(b, [r.nodes[j] for r in regions], mapping, level, rows, size)
        else:
            b.copy_node(node, mapping, "window", lambda o, new: b.declare(new, (1, b.shape(o)[1], *size)))
    return mapping[first.output]


# Heads shared across pyramid levels. A detector's class head runs at every level with the same convolutions,
# except where each level has its own BatchNormalization folded into the pointwise ones (EfficientDet), so
# differentiating it level by level runs all K rows through every level's copy, although each row's element lies at
# one level only (the tail moves it, never copies it: `_MOVERS`, one consumer each). Such heads are one *group*:
# one windowed copy on K rows, each row's window cropped from its own level, and where the levels' weights differ
# each row multiplied by its own level's (a batched MatMul of per-row weights gathered once a frame).

PER_ROW_WEIGHT_OPS = ("MatMul", "Add", "Reshape")  # what a per-row 1x1 convolution is made of (their rules are used)


def _is_pointwise(node: NodeProto, b: Builder) -> bool:
    """A 1x1 convolution of stride 1 and no padding, not grouped: a matrix product at every pixel."""
    w = b.constant(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
    attrs = {a.name: a for a in node.attribute}
    return (w is not None and w.ndim == 4 and w.shape[2:] == (1, 1)
            and all(int(v) == 1 for v in getattr(attrs.get("strides"), "ints", [1]))
            and not any(getattr(attrs.get("pads"), "ints", [0]))
            and getattr(attrs.get("group"), "i", 1) == 1
            and getattr(attrs.get("auto_pad"), "s", b"NOTSET") in (b"NOTSET", b"VALID"))


def _layout(region: LocalRegion) -> list:
    """How a region is wired, by position: per node its op type, attributes and inputs (the source, an output of an
    earlier node of the region, or another tensor by name)."""
    made = {o: (j, k) for j, n in enumerate(region.nodes) for k, o in enumerate(n.output)}
    nodes = []
    for n in region.nodes:
        inputs = [("source",) if t == region.source else ("inside", *made[t]) if t in made else ("tensor", t)
                  for t in n.input]
        nodes.append((n.op_type, tuple(a.SerializeToString() for a in n.attribute), tuple(inputs)))
    return nodes


def _same_head(b: Builder, first: LocalRegion, other: LocalRegion) -> set[int] | None:
    """The positions of `first`'s nodes that `other` runs with other weights (each a pointwise convolution), or None
    where the two are not one head: another wiring, another radius, another number of channels, or another constant
    than a pointwise convolution's weight and bias."""
    if first.radius != other.radius or b.shape(first.source)[1] != b.shape(other.source)[1] or \
            len(first.nodes) != len(other.nodes):
        return None
    mine, theirs = _layout(first), _layout(other)
    differ = set()
    for j, ((op, attrs, ins), (op2, attrs2, ins2)) in enumerate(zip(mine, theirs)):
        if op != op2 or attrs != attrs2 or len(ins) != len(ins2):
            return None
        for k, (a, c) in enumerate(zip(ins, ins2)):
            if a == c:
                continue
            if a[0] != "tensor" or c[0] != "tensor":
                return None
            x, y = b.constant(a[1]), b.constant(c[1])
            if x is None or y is None or x.shape != y.shape:
                return None
            if np.array_equal(x, y):
                continue
            if not (_is_pointwise(first.nodes[j], b) and k in (1, 2)):
                return None
            differ.add(j)
    return differ


@dataclass(frozen=True)
class HeadGroup:
    """Regions that are one head (`_same_head`), and the positions of its nodes that run with each level's own
    weights (pointwise convolutions); a region no other matches is a group of its own."""

    regions: tuple[LocalRegion, ...]
    per_level: frozenset[int] = frozenset()


def same_heads(b: Builder, regions: list[LocalRegion]) -> list[HeadGroup]:
    """The regions grouped into heads shared across levels (module notes above), each region in one group."""
    groups: list[tuple[list[LocalRegion], set[int]]] = []
    for r in regions:
        for members, per_level in groups:
            differ = _same_head(b, members[0], r)
            if differ is not None:
                members.append(r)
                per_level |= differ
                break
        else:
            groups.append(([r], set()))
    return [HeadGroup(tuple(members), frozenset(per_level)) for members, per_level in groups]


def windowed_group_copy(b: Builder, group: HeadGroup, cots: list[OneHot], rows: int):
    """One windowed copy of a head shared by the regions of `group`, each row on the window of the region its
    element is at (the others' values are zero there). Returns (crop, the copy's output, the seed's crop,
    per region its windows and a (K, 1, 1, 1) float mask of the rows at it): differentiate as `windowed_copy`'s,
    then each region's share is the gradient times its mask, placed in its windows.

    The windows of all regions are found at once, one column per region ((K, L) integers, the regions' sizes as
    (1, L) constants): a dozen small ops where region by region they were some 30 each."""
    regions = group.regions
    first, n_regions = regions[0], len(regions)
    hws = [tuple(b.shape(r.source)[2:]) for r in regions]
    size = (2 * first.radius[0] + 1, 2 * first.radius[1] + 1)
    index = b.op("Concat", [cot.index for cot in cots], "window_region_index", axis=1)  # (K, L)
    value = b.op("Concat", [cot.value for cot in cots], "window_region_value", axis=1)
    pixel = b.op("Mod", [index, per_column(b, [h * w for h, w in hws], "window_plane")], "window_pixel")
    places = _window_places(b, pixel, hws, first.radius)
    local = b.op("Add", [b.op("Unsqueeze", [places.corner, b.ints([2])], "window_corner_3d"),
                         per_column(b, _window_offsets(hws, size), "window_offsets")],
                 "window_index")  # (K, L, n)
    # the region each row's element is at: where its value is not zero (none for an empty slot: its seed is zero,
    # and any window does)
    seeded = b.op("Not", [b.op("Equal", [value, b.const(0.0, "zero")], "window_unseeded")], "window_seeded")
    at_int, at_f = b.op("Cast", [seeded], "window_at", to=7), b.op("Cast", [seeded], "window_at_f", to=1)
    starts = np.cumsum([0] + [h * w for h, w in hws])[:-1]
    in_sources = b.op("Add", [local, per_column(b, starts, "window_source_start", (1, n_regions, 1))],
                      "window_in_sources")
    crop_index = b.reduce("ReduceSum", b.op("Mul", [b.op("Unsqueeze", [at_int, b.ints([2])], "window_at_3d"),
                                                    in_sources], "window_index_terms"), [1], 0, "window_index_rows")
    crop = _crop_forward(b, [r.source for r in regions], crop_index, rows, b.shape(first.source)[1], size)
    level = b.op("ArgMax", [at_f], "window_level", axis=1, keepdims=0)  # (K,)
    output = _copy_region(b, list(regions), crop, set(group.per_level), level, rows, size)
    # the seed: each row's element at (channel, the pixel's place in the window) of the crop
    element = _element_in_window(b, index, hws, places, size)
    seed_at = b.reduce("ReduceSum", b.op("Mul", [at_int, element], "window_element_terms"), [1], 1,
                       "window_element_rows")
    seed_value = b.reduce("ReduceSum", value, [1], 1, "window_value_rows")  # one of them is not zero
    seed = dense(b, OneHot(seed_at, seed_value), (1, b.shape(first.output)[1], *size), rows)
    placing = []
    for i, hw in enumerate(hws):
        at_region = b.const(np.int64(i), "window_region", np.int64)
        windows = _Windows(b.op("Gather", [local, at_region], "window_region_windows", axis=1), hw, size, rows)
        mask = b.op("Reshape", [b.op("Gather", [at_f, at_region], "window_region_rows", axis=1),
                                b.ints([rows, 1, 1, 1])], "window_mask")
        placing.append((windows, mask))
    return crop, output, seed, placing


def _per_row_pointwise(b: Builder, nodes: list[NodeProto], mapping: dict[str, str], level: str, rows: int,
                       size) -> None:
    """Each row through its own level's 1x1 convolution: (K, Cin, n) -> W[level] (K, Cout, Cin) @ x + bias[level],
    the weights gathered once per frame (K x Cout x Cin numbers)."""
    weights = np.stack([b.constant(n.input[1])[:, :, 0, 0] for n in nodes]).astype(np.float32)  # (L, Cout, Cin)
    cout, cin = weights.shape[1:]
    n = int(np.prod(size))
    x = mapping[nodes[0].input[0]]
    flat = b.op("Reshape", [x, b.ints([rows, cin, n])], "window_pointwise_in")
    b.declare(flat, (1, cin, n))
    w = b.op("Gather", [b.const(weights, "window_level_weights"), level], "window_row_weights", axis=0)
    b.declare(w, (1, cout, cin))
    y = b.op("MatMul", [w, flat], "window_pointwise")
    b.declare(y, (1, cout, n))
    if len(nodes[0].input) > 2 and nodes[0].input[2]:
        bias = np.stack([b.constant(nd.input[2]) for nd in nodes]).astype(np.float32).reshape(len(nodes), cout, 1)
        per_row = b.op("Gather", [b.const(bias, "window_level_bias"), level], "window_row_bias", axis=0)
        b.declare(per_row, (1, cout, 1))
        y = b.op("Add", [y, per_row], "window_pointwise_bias")
        b.declare(y, (1, cout, n))
    out = b.op("Reshape", [y, b.ints([rows, cout, *size])], "window_pointwise_out")
    b.declare(out, (1, cout, *size))
    mapping[nodes[0].output[0]] = out
