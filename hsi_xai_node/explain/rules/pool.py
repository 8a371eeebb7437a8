"""Backward rules of pooling and reductions.

Windowed pools route the cotangent back through one grouped ConvTranspose whose kernel
places each output's share on its window (TensorRT has no Scatter and no MaxPool Indices).
"""

from __future__ import annotations

import itertools

import numpy as np

from . import RuleContext, rule
from .activation import mask_of
from .conv import conv_geometry


def pool_geometry(c: RuleContext):
    """(kernel, strides, begin pads, end pads, x spatial shape, y spatial shape) of a pooling node."""
    kernel = list(c.attr("kernel_shape"))
    if any(d != 1 for d in c.attr("dilations", [1] * len(kernel))):
        raise c.fail("dilated pooling is not supported")
    strides, pads, _ = conv_geometry(c, c.x(), (0, 0, *kernel), c.y())
    n = len(kernel)
    return kernel, strides, pads[:n], pads[n:], c.shape(c.x())[2:], c.shape(c.y())[2:]


def scatter_windows(c: RuleContext, g: str, weight: np.ndarray, group: int, geometry) -> str:
    """ConvTranspose of `g` back onto the input grid: output o adds weight * g[o] to its window.

    The windows span `(ys - 1) * s + k` padded positions; begin pads are cropped by the
    ConvTranspose pads, and input rows past the last window (floor mode) get output_padding
    (< stride, so always valid). In ceil mode the last windows may reach past the end pad.
    """
    kernel, strides, begin, _, xs, ys = geometry
    n = len(kernel)
    tail = [(ys[i] - 1) * strides[i] + kernel[i] - begin[i] - xs[i] for i in range(n)]
    return c.b.op("ConvTranspose", [g, c.b.const(weight, "pool_scatter_w")], "pool_grad", group=group,
                  strides=strides, pads=begin + [max(t, 0) for t in tail], output_padding=[max(-t, 0) for t in tail])


@rule("MaxPool")
def max_pool(c: RuleContext):
    if len([o for o in c.node.output if o]) > 1:
        raise c.fail("the Indices output is not supported (TensorRT cannot build it): use MaxPool's values only")
    if int(c.attr("storage_order", 0)):
        raise c.fail("storage_order=1 (column-major Indices) is not supported")
    geometry = kernel, strides, begin, _, xs, ys = pool_geometry(c)
    n, b = len(kernel), c.b
    channels = c.shape(c.x())[1]
    # pad with -inf so padding never wins, and far enough that every window (ceil mode too) is in range
    tail = [max(0, (ys[i] - 1) * strides[i] + kernel[i] - begin[i] - xs[i]) for i in range(n)]
    x = c.x()
    if any(begin) or any(tail):
        x = b.op("Pad", [x, b.ints([0, 0, *begin, 0, 0, *tail]), b.const(-np.inf, "neg_inf")], "maxpool_pad")
    # one strided slice per kernel offset, in row-major window order; then the running argmax keeps
    # the FIRST maximum (strict Greater), PyTorch's tie rule, from x alone (never Equal(x, y))
    offsets = list(itertools.product(*[range(k) for k in kernel]))
    axes, steps = b.ints(list(range(2, 2 + n))), b.ints(strides)
    slices = [b.op("Slice", [x, b.ints(o), b.ints([o[i] + (ys[i] - 1) * strides[i] + 1 for i in range(n)]), axes,
                             steps], "maxpool_window") for o in offsets]
    g = c.g
    if len(offsets) > 1:
        best, idx = slices[0], b.const(0.0, "argmax0")
        for k, s in enumerate(slices[1:], 1):
            better = b.op("Greater", [s, best], "maxpool_better")
            idx = b.op("Where", [better, b.const(float(k), "argmax_k"), idx], "maxpool_argmax")
            if k < len(slices) - 1:
                best = b.op("Max", [s, best], "maxpool_best")
        # one-hot over offsets: (1, C, K, *ys) mask; g rides along axis 2, then (B, C*K, *ys) for the scatter
        hit = b.op("Equal", [b.op("Unsqueeze", [idx, b.ints([2])]),
                             b.const(np.arange(len(offsets)).reshape((1, 1, -1) + (1,) * n), "offsets")], "maxpool_hit")
        g = b.op("Mul", [b.op("Unsqueeze", [g, b.ints([2])]), mask_of(c, hit)],
                 "maxpool_route")  # a product, not a Where (activation.mask_of says why)
        g = b.op("Reshape", [g, b.ints([c.batch, channels * len(offsets), *ys])], "maxpool_stack")
    onehot = np.zeros((len(offsets), 1, *kernel), np.float32)
    for k, o in enumerate(offsets):
        onehot[(k, 0, *o)] = 1.0
    return [scatter_windows(c, g, np.tile(onehot, (channels,) + (1,) * (n + 1)), channels, geometry)]


@rule("AveragePool")
def average_pool(c: RuleContext):
    geometry = kernel, strides, begin, end, xs, ys = pool_geometry(c)
    n = len(kernel)
    include_pad = int(c.attr("count_include_pad", 0))
    # divisor of each output: the window's count of real inputs (or of padded ones with
    # count_include_pad, never past the end pad in ceil mode); separable, so per axis then outer product
    count = np.ones((1, 1), np.float64)
    for i in range(n):
        lo, hi = (-begin[i], xs[i] + end[i]) if include_pad else (0, xs[i])
        starts = np.arange(ys[i]) * strides[i] - begin[i]
        axis = np.minimum(starts + kernel[i], hi) - np.maximum(starts, lo)
        count = np.multiply.outer(count, axis)
    inv = (1.0 / count).reshape((1, 1, *ys))
    g = c.b.op("Mul", [c.g, c.b.const(inv, "avgpool_inv_count")], "avgpool_scale")
    channels = c.shape(c.x())[1]
    return [scatter_windows(c, g, np.ones((channels, 1, *kernel), np.float32), channels, geometry)]


@rule("GlobalAveragePool")
def global_average_pool(c: RuleContext):
    spatial = c.shape(c.x())[2:]
    g = c.b.op("Mul", [c.g, c.b.const(1.0 / float(np.prod(spatial)), "inv_count")], "gap_scale")
    return [c.b.op("Expand", [g, c.b.ints(c.cot_shape(c.x()))], "gap_grad")]


@rule("ReduceMean")
def reduce_mean(c: RuleContext):
    xs = c.shape(c.x())
    rank = len(xs)
    axes = c.attr("axes")
    if len(c.node.input) > 1 and c.x(1):  # opset >= 18: axes is an input
        axes = c.b.require_constant(c.x(1), c.node, "axes").tolist()
    axes = sorted({int(a) % rank for a in axes or []})
    out = [None] * len(c.node.input)
    if not axes:
        if int(c.attr("noop_with_empty_axes", 0)):
            out[0] = c.g
            return out
        axes = list(range(rank))  # the default reduces every axis, the batch axis included
    if 0 in axes:
        raise c.fail(f"reducing over the batch axis (axes {axes}) is not supported: "
                     "each seed row needs its own batch entry")
    g = c.g
    if not int(c.attr("keepdims", 1)):
        g = c.b.op("Reshape", [g, c.b.ints([1 if i in axes else d for i, d in enumerate(c.cot_shape(c.x()))])],
                   "reducemean_keep")
    g = c.b.op("Mul", [g, c.b.const(1.0 / float(np.prod([xs[a] for a in axes])), "inv_count")], "reducemean_scale")
    out[0] = c.b.op("Expand", [g, c.b.ints(c.cot_shape(c.x()))], "reducemean_grad")
    return out
