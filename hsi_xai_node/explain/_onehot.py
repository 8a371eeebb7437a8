"""Cotangents that are one element per row, carried through element-moving ops as (index, value) pairs.

A detector explains K boxes: row k's seed is one at one (anchor, class) score and zero elsewhere. Between the scores
and each pyramid level's class-head logits there are only ops that move elements or act on each one alone (Sigmoid,
Concat, Reshape, Transpose), so all the way there a row's cotangent is still one element. As dense tensors each of
those steps is a pass over K x anchors x classes values, nearly all zeros (on the bundled detector 10 x 40,800 x 5:
the seed's scatter, the Sigmoid's product, the Concat's split and each level's Transpose, about 4 ms a frame on two
cores); here each is a few integer ops on K numbers:

    OneHot(index, value): row k's cotangent is value[k] at flat position index[k] of the tensor (its forward shape,
    batch 1), zero elsewhere; both (K, 1).

`ONE_HOT_RULES` maps an op type to the rule that moves such a cotangent from the op's output to its inputs: the
element's coordinates are unravelled, moved as the op moves them, and ravelled in the input's shape; an input the
element does not come from gets a zero value (its index clamped to stay valid); an op acting on each element scales
the value by its derivative there (a Gather of the forward tensor at the index). An op without a rule, or a
cotangent summed with others, is made dense (`dense`) and goes on through the ordinary rules. The windows of
_windows.py read a OneHot directly: its pixel is the window's centre, its value the seed of the window's crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import NodeProto

from ._graph import Builder
from .rules import node_attr


@dataclass(frozen=True)
class OneHot:
    index: str  # (K, 1) int64: the element's flat position in one row of the tensor
    value: str  # (K, 1) float: its cotangent (0 for a row whose element is elsewhere)


def dense(b: Builder, cot: OneHot, shape: tuple[int, ...], rows: int) -> str:
    """The (rows, *shape[1:]) tensor holding each row's value at its index."""
    size = int(np.prod(shape[1:]))
    zeros = b.op("Expand", [b.const(0.0, "zero"), b.ints([rows, size])], "onehot_zeros")
    flat = b.op("ScatterElements", [zeros, cot.index, cot.value], "onehot_dense", axis=1)
    return b.op("Reshape", [flat, b.ints([rows, *shape[1:]])], "onehot_full")


def _strides(shape) -> np.ndarray:
    return np.array([int(np.prod(shape[i + 1:])) for i in range(len(shape))], np.int64)


def per_column(b: Builder, values, hint: str, shape=None) -> str:
    """An int64 constant of one column per tensor (a Concat's inputs, a head's levels): values (L, ...) as
    (1, L, ...), or `shape`, to meet (K, L, ...) integers row by row."""
    values = np.asarray(values, np.int64)
    return b.const(values.reshape(shape or (1, *values.shape)), hint, np.int64)


def coordinates(b: Builder, index: str, shape) -> str:
    """(K, rank) int64 coordinates of flat positions (K, 1) in `shape`."""
    strides = b.const(_strides(shape).reshape(1, -1), "onehot_strides", np.int64)
    dims = b.const(np.array(shape, np.int64).reshape(1, -1), "onehot_dims", np.int64)
    return b.op("Mod", [b.op("Div", [index, strides], "onehot_div"), dims], "onehot_coords")


def ravel(b: Builder, coords: str, shape) -> str:
    """(K, 1) int64 flat positions of (K, rank) coordinates in `shape`."""
    strides = b.const(_strides(shape).reshape(1, -1), "onehot_strides", np.int64)
    return b.reduce("ReduceSum", b.op("Mul", [coords, strides], "onehot_terms"), [1], 1, "onehot_index")


@dataclass
class OneHotContext:
    node: NodeProto
    b: Builder
    cot: OneHot  # the output's
    needs: list[bool]

    def shape(self, tensor: str) -> tuple[int, ...]:
        return tuple(self.b.shape(tensor))

    def forward_at(self, tensor: str) -> str:
        """(K, 1) the forward tensor's value at each row's element."""
        b = self.b
        return b.op("Gather", [b.op("Reshape", [tensor, b.ints([-1])], "onehot_forward_flat"), self.cot.index],
                    "onehot_forward_at")


ONE_HOT_RULES = {}


def rule(*ops: str):
    def register(fn):
        for op in ops:
            ONE_HOT_RULES[op] = fn
        return fn
    return register


# (the ops a detector's tail is made of, each with a dense rule in rules/: a OneHot made dense goes on through it)
@rule("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")
def _same_order(c: OneHotContext):
    # row-major order is kept: the element's flat position does not change (the shape input needs nothing)
    return [c.cot] + [None] * (len(c.node.input) - 1)


@rule("Transpose")
def _transpose(c: OneHotContext):
    b, x = c.b, c.node.input[0]
    out_shape = c.shape(c.node.output[0])
    perm = node_attr(c.node, "perm", list(range(len(out_shape)))[::-1])
    # output axis i is input axis perm[i]: the input's coordinates are the output's in the inverse order
    inverse = np.argsort(perm).astype(np.int64)
    coords = b.op("Gather", [coordinates(b, c.cot.index, out_shape), b.const(inverse, "onehot_perm", np.int64)],
                  "onehot_moved", axis=1)
    return [OneHot(ravel(b, coords, c.shape(x)), c.cot.value)]


@rule("Concat")
def _concat(c: OneHotContext):
    """Each input's element, all inputs at once (one column each, their offsets and lengths as (1, L) constants):
    the coordinate along the axis made local to the input, clamped into it (a zero value where it lies outside)."""
    b, node = c.b, c.node
    out_shape = c.shape(node.output[0])
    rank = len(out_shape)
    axis = node_attr(node, "axis") % rank
    shapes = [c.shape(t) for t in node.input]
    lengths = [s[axis] for s in shapes]

    coords = coordinates(b, c.cot.index, out_shape)  # (K, rank)
    along = b.op("Gather", [coords, b.const(np.array([axis], np.int64), "onehot_axis", np.int64)], "onehot_along",
                 axis=1)  # (K, 1)
    local = b.op("Sub", [along, per_column(b, np.cumsum([0] + lengths)[:-1], "onehot_start")], "onehot_local")  # (K, L)
    inside = b.op("And", [b.op("GreaterOrEqual", [local, b.const(0, "onehot_zero", np.int64)]),
                          b.op("Less", [local, per_column(b, lengths, "onehot_length")])], "onehot_inside")
    # outside an input: a zero value at a valid index (the local coordinate clamped into the input)
    clamped = b.op("Min", [b.op("Max", [local, b.const(0, "onehot_zero", np.int64)]),
                           per_column(b, [n - 1 for n in lengths], "onehot_last")], "onehot_clamped")
    values = b.op("Mul", [c.cot.value, b.op("Cast", [inside], "onehot_mask", to=1)], "onehot_value")  # (K, L)
    # the flat position in input i: the other coordinates by its strides (the axis' left out: 0), plus the clamped
    # one by its stride there
    strides = np.stack([_strides(s) for s in shapes])  # (L, rank)
    others = strides.copy()
    others[:, axis] = 0
    terms = b.op("Mul", [b.op("Unsqueeze", [coords, b.ints([1])], "onehot_coords_3d"),
                         per_column(b, others, "onehot_strides")], "onehot_terms")  # (K, L, rank)
    rest = b.reduce("ReduceSum", terms, [2], 0, "onehot_rest_index")  # (K, L)
    index = b.op("Add", [rest, b.op("Mul", [clamped, per_column(b, strides[:, axis], "onehot_axis_stride")],
                                    "onehot_along_index")], "onehot_index")
    result = []
    for i, need in enumerate(c.needs):
        if not need:
            result.append(None)
            continue
        column = b.ints([i], "onehot_input")
        result.append(OneHot(b.op("Gather", [index, column], "onehot_input_index", axis=1),
                             b.op("Gather", [values, column], "onehot_input_value", axis=1)))
    return result


def _scaled(c: OneHotContext, factor: str):
    return [OneHot(c.cot.index, c.b.op("Mul", [c.cot.value, factor], "onehot_scaled"))]


@rule("Sigmoid")
def _sigmoid(c: OneHotContext):  # y (1 - y) at the element
    b = c.b
    y = c.forward_at(c.node.output[0])
    return _scaled(c, b.op("Mul", [y, b.op("Sub", [b.const(1.0, "one"), y])], "onehot_sigmoid_slope"))


@rule("Relu")
def _relu(c: OneHotContext):  # 1 where the input is positive (PyTorch's: 0 at 0)
    b = c.b
    return _scaled(c, b.op("Cast", [b.op("Greater", [c.forward_at(c.node.input[0]), b.const(0.0, "zero")])],
                           "onehot_relu_slope", to=1))
