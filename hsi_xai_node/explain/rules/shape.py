"""Backward rules of ops that move values without arithmetic, and of linear layers."""

from __future__ import annotations

import numpy as np
from onnx import NodeProto

from . import RuleContext, node_attr, node_attrs, rule


@rule("Identity")
def identity(c: RuleContext):
    return [c.g]


@rule("Concat")
def concat(c: RuleContext):
    axis = int(c.attr("axis"))
    rank = len(c.shape(c.y()))
    axis = axis % rank
    if axis == 0:
        raise c.fail("concatenation along the batch axis is not supported")
    sizes = [c.shape(x)[axis] for x in c.node.input]
    made = c.b.producer(c.g)
    if made is not None and made.op_type == "Concat" and node_attr(made, "axis") % rank == axis and \
            [(c.b.known_shape(t) or (None,) * rank)[axis] for t in made.input] == sizes:
        # the cotangent a concatenation of the parts' own (LRP's relevance per part, declared with their shapes):
        # those parts, not copies of them
        return [t if need else None for t, need in zip(made.input, c.needs)]
    conv = _channel_producer(c, sizes) if axis == 1 else None
    out, start = [], 0
    for i, size in enumerate(sizes):
        if not c.needs[i]:
            out.append(None)
        elif conv is not None:  # the convolution's own output channels for this part
            node, weight = conv
            out.append(c.b.op("Conv", [node.input[0], c.b.const(weight[start:start + size], "conv_wt_part")],
                              "concat_grad", **node_attrs(node)))
        else:
            out.append(c.b.op("Slice", [c.g, c.b.ints([start]), c.b.ints([start + size]), c.b.ints([axis])],
                              "concat_grad"))
        start += size
    return out


# ONNX Runtime's CPU provider runs a convolution in its blocked layout only with a multiple of 16 output channels
_BLOCK = 16


def _channel_producer(c: RuleContext, sizes: list[int]) -> tuple[NodeProto, np.ndarray] | None:
    """The convolution (ungrouped, constant weight, no bias) whose output the cotangent is, and its weight, where each
    part of the concatenation can be that convolution run for its own output channels: a U-Net's decoder concatenates
    a skip and an up-sampled tensor, and the backward of the convolution reading them makes their cotangent, which a
    Slice per part would then copy out (at the bundled U-Net's full resolution 1.9 ms of a 220 ms gradient graph). The whole
    convolution, left unread, goes with the graph's other unread nodes (_graph.drop_unread). None where that does not
    apply, or where a part would lose the blocked layout the whole has."""
    conv = c.b.producer(c.g)
    weight = c.b.constant(conv.input[1]) if conv is not None and conv.op_type == "Conv" and len(conv.input) == 2 \
        else None
    if weight is None or node_attr(conv, "group", 1) != 1:
        return None
    cin = weight.shape[1]
    blocked = sum(sizes) % _BLOCK == 0 and (cin < 8 or cin % _BLOCK == 0)  # (ONNX Runtime's own condition)
    if blocked and any(size % _BLOCK for size in sizes):
        return None
    return conv, weight


@rule("Split")
def split(c: RuleContext):
    # the outputs' static shapes already hold the sizes (split input, attribute or equal split)
    axis = int(c.attr("axis", 0)) % len(c.shape(c.x()))
    if axis == 0:
        raise c.fail("splitting along the batch axis is not supported")
    parts = [g if g is not None else c.zeros_cot(y) for g, y in zip(c.out_cots, c.node.output)]
    return [c.b.op("Concat", parts, "split_grad", axis=axis), None]


@rule("Slice")
def slice_(c: RuleContext):
    # Scatter-free: reverse negative steps, spread strided rows apart by interleaving zeros
    # (Unsqueeze, Pad, Reshape), then one Pad puts the window back at its offset.
    b, shape = c.b, c.shape(c.x())
    rank, n_in = len(shape), len(c.node.input)
    starts, ends = (b.require_constant(c.x(i), c.node, what) for i, what in ((1, "starts"), (2, "ends")))
    axes = b.require_constant(c.x(3), c.node, "axes") if n_in > 3 and c.x(3) else range(len(starts))
    steps = b.require_constant(c.x(4), c.node, "steps") if n_in > 4 and c.x(4) else [1] * len(starts)
    if 0 in c.shape(c.y())[1:]:  # empty window: nothing flows back
        return [c.zeros_cot(c.x())] + [None] * (n_in - 1)
    g, cur, pads = c.g, list(c.cot_shape(c.y())), [0] * (2 * rank)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis, step = int(axis) % rank, int(step)
        rows = range(*slice(int(start), int(end), step).indices(shape[axis]))  # ONNX clamps like Python
        if axis == 0:
            if list(rows) != [0]:
                raise c.fail("slicing the batch axis is not supported")
            continue
        if step < 0:  # flip so the cotangent's rows ascend in x
            g = b.op("Slice", [g, b.ints([-1]), b.ints([np.iinfo(np.int64).min]), b.ints([axis]), b.ints([-1])],
                     "slice_flip")
        lo, stride = min(rows), abs(step)
        if stride > 1:  # rows lo, lo + stride, ...: follow each cotangent row by stride - 1 zero rows
            g = b.op("Unsqueeze", [g, b.ints([axis + 1])], "slice_spread")
            spread = [0] * (2 * (rank + 1))
            spread[rank + 1 + axis + 1] = stride - 1
            g = b.op("Pad", [g, b.ints(spread)], "slice_spread")
            cur[axis] *= stride
            g = b.op("Reshape", [g, b.ints(cur)], "slice_spread")
            if cur[axis] > shape[axis] - lo:  # drop trailing zeros past the end of x
                cur[axis] = shape[axis] - lo
                g = b.op("Slice", [g, b.ints([0]), b.ints([cur[axis]]), b.ints([axis])], "slice_trim")
        pads[axis], pads[rank + axis] = lo, shape[axis] - lo - cur[axis]
    if any(pads):
        g = b.op("Pad", [g, b.ints(pads)], "slice_grad")
    return [g] + [None] * (n_in - 1)


@rule("Reshape", "Flatten")
def reshape(c: RuleContext):
    # Batch 1 on axis 0 of both sides: every seed row is then reshaped on its own. Anything
    # else (e.g. (1, C, H, W) -> (C, H * W)) folds the batch axis into another.
    x_shape, y_shape = c.shape(c.x()), c.shape(c.y())
    if x_shape[:1] != (1,) or y_shape[:1] != (1,):
        raise c.fail(f"reshaping {x_shape} to {y_shape} moves the batch axis: axis 0 must stay first with size 1")
    return [c.b.op("Reshape", [c.g, c.b.ints(c.cot_shape(c.x()))], "reshape_grad"), None]


@rule("Transpose")
def transpose(c: RuleContext):
    perm = [int(p) for p in c.attr("perm", range(len(c.shape(c.x())))[::-1])]
    if perm[0] != 0:
        raise c.fail(f"perm {perm} moves the batch axis: axis 0 must stay first")
    return [c.b.op("Transpose", [c.g], "transpose_grad", perm=[int(p) for p in np.argsort(perm)])]


@rule("Gemm")
def gemm(c: RuleContext):
    # dA = alpha * g @ op(B)^T: one Gemm on the forward's own B with transB flipped (no weight copy)
    if any(c.needs[1:]):
        raise c.fail("B and C must not depend on the target; only the gradient of A is supported")
    if c.attr("transA", 0) or c.shape(c.x())[0] != 1:
        raise c.fail("A must be (1, K) with the batch on axis 0 (transA=0)")
    return [c.b.op("Gemm", [c.g, c.x(1)], "gemm_grad", alpha=float(c.attr("alpha", 1.0)),
                   transB=1 - int(c.attr("transB", 0)))] + [None] * (len(c.node.input) - 1)


@rule("MatMul")
def matmul(c: RuleContext):
    # dA = g @ B^T, dB = A^T @ g (both may be on the path), summed over broadcast batch dims.
    # The operand on the path must have the output's rank and batch 1 on axis 0; on the right
    # that needs rank >= 3, since axis 0 of a 2-D right operand is contracted.
    b, y_shape = c.b, c.shape(c.y())

    def swap_last(t):
        r = len(c.shape(t))
        return b.op("Transpose", [t], "matmul_t", perm=list(range(r - 2)) + [r - 1, r - 2])

    if min(len(c.shape(c.x(0))), len(c.shape(c.x(1)))) < 2:
        raise c.fail("1-D operands are not supported")
    out = [None, None]
    for i in (0, 1):
        if not c.needs[i]:
            continue
        s = c.shape(c.x(i))
        if len(s) != len(y_shape) or s[0] != 1 or (i == 1 and len(s) < 3):
            raise c.fail(f"operand {c.x(i)!r} of shape {s} on the path must keep batch 1 on axis 0 and the "
                         f"output's rank {len(y_shape)}" + (" (>= 3 on the right)" if i else ""))
        g = b.op("MatMul", [c.g, swap_last(c.x(1))] if i == 0 else [swap_last(c.x(0)), c.g], "matmul_grad")
        axes = [a for a in range(1, len(s) - 2) if s[a] == 1 and y_shape[a] != 1]
        out[i] = b.reduce("ReduceSum", g, axes, keepdims=1, hint="matmul_unbroadcast") if axes else g
    return out


@rule("Softmax")
def softmax(c: RuleContext):
    # opset >= 13 semantics (one axis): dx = y * (g - sum(g * y, axis))
    b, y = c.b, c.y()
    axis = int(c.attr("axis", -1)) % len(c.shape(y))
    if axis == 0:
        raise c.fail("softmax over the batch axis is not supported")
    dot = b.reduce("ReduceSum", b.op("Mul", [c.g, y], "softmax_gy"), [axis], keepdims=1, hint="softmax_dot")
    return [b.op("Mul", [y, b.op("Sub", [c.g, dot], "softmax_centered")], "softmax_grad")]
