"""Backward rules of spatial resampling: Resize (nearest, linear) and constant Pad."""

from __future__ import annotations

import numpy as np

from . import RuleContext, rule


def _str(value, default: str) -> str:
    value = default if value is None else value
    return value.decode() if isinstance(value, bytes) else value


def resize_matrix(mode: str, transform: str, nearest: str, n_in: int, n_out: int, scale: float) -> np.ndarray:
    """The (n_out, n_in) matrix of one axis of an ONNX Resize (nearest or linear), per the spec.

    Source coordinates are computed in float32 from the float32 scale, as ONNX Runtime does
    (3 / 0.6f is 5 in float32 but 4.99.. in float64, which would flip a floor), with the
    integer output length; out-of-range coordinates clamp to the edge.
    """
    i, s, half = np.arange(n_out, dtype=np.float32), np.float32(scale), np.float32(0.5)
    if transform == "align_corners":
        x = i * np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else 0 * i
    elif transform == "asymmetric":
        x = i / s
    elif transform == "half_pixel" or (transform == "pytorch_half_pixel" and n_out > 1):
        x = (i + half) / s - half
    else:  # pytorch_half_pixel with one output: the first input
        x = 0 * i
    x = x.astype(np.float64)
    a = np.zeros((n_out, n_in))
    if mode == "nearest":
        idx = {"round_prefer_floor": np.ceil(x - 0.5), "round_prefer_ceil": np.floor(x + 0.5),
               "floor": np.floor(x), "ceil": np.ceil(x)}[nearest]
        a[np.arange(n_out), np.clip(idx, 0, n_in - 1).astype(np.int64)] = 1.0
    else:
        x = np.clip(x, 0, n_in - 1)
        lo = np.floor(x).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        np.add.at(a, (np.arange(n_out), lo), 1.0 - (x - lo))
        np.add.at(a, (np.arange(n_out), hi), x - lo)
    return a


@rule("Resize")
def resize(c: RuleContext):
    mode = _str(c.attr("mode"), "nearest")
    transform = _str(c.attr("coordinate_transformation_mode"), "half_pixel")
    nearest = _str(c.attr("nearest_mode"), "round_prefer_floor")
    if mode not in ("nearest", "linear"):
        raise c.fail(f"mode {mode!r} is not supported (nearest and linear are)")
    if transform not in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"):
        raise c.fail(f"coordinate_transformation_mode {transform!r} is not supported")
    if int(c.attr("antialias", 0)) or _str(c.attr("keep_aspect_ratio_policy"), "stretch") != "stretch":
        raise c.fail("antialias and keep_aspect_ratio_policy are not supported")
    xs, ys = c.shape(c.x()), c.shape(c.y())
    rank = len(xs)
    if rank not in (3, 4):
        raise c.fail(f"only 3-D and 4-D inputs are supported, got rank {rank}")
    axes = [int(a) % rank for a in c.attr("axes", range(rank))]
    inputs = list(c.node.input) + [""] * (4 - len(c.node.input))
    scales = np.ones(rank)
    if inputs[2] and c.b.require_constant(inputs[2], c.node, "scales").size:
        scales[axes] = c.b.require_constant(inputs[2], c.node, "scales")
    else:  # sizes given: the scale is output / input (in float32, as runtimes compute it)
        scales = np.asarray(ys, np.float32) / np.asarray(xs, np.float32)
    if xs[:2] != ys[:2] or any(scales[:2] != 1):
        raise c.fail(f"resizing the batch or channel axis is not supported ({xs} -> {ys})")
    # separable: y = A_h x A_w^T per (N, C); the adjoint is A_h^T g A_w
    mats = [resize_matrix(mode, transform, nearest, xs[a], ys[a], scales[a]) for a in range(2, rank)]
    factors = [ys[a] // xs[a] for a in range(2, rank)]
    out = [None] * len(c.node.input)
    if all(f * xs[a] == ys[a] and np.array_equal(m, np.repeat(np.eye(xs[a]), f, axis=0))
           for a, f, m in zip(range(2, rank), factors, mats)):
        # integer nearest upsampling repeats each input f times: sum those blocks (no dense MatMul)
        split = [d for a in range(2, rank) for d in (xs[a], factors[a - 2])]
        g = c.b.op("Reshape", [c.g, c.b.ints([c.batch, xs[1], *split])], "resize_blocks")
        out[0] = c.b.reduce("ReduceSum", g, list(range(3, 2 * rank - 2, 2)), keepdims=0, hint="resize_grad")
        return out
    g = c.g
    if not np.array_equal(mats[-1], np.eye(xs[-1])):
        g = c.b.op("MatMul", [g, c.b.const(mats[-1], "resize_w")], "resize_grad_w")
    if rank == 4 and not np.array_equal(mats[0], np.eye(xs[2])):
        g = c.b.op("MatMul", [c.b.const(mats[0].T, "resize_ht"), g], "resize_grad_h")
    out[0] = g
    return out


@rule("Pad")
def pad(c: RuleContext):
    mode = _str(c.attr("mode"), "constant")
    if mode != "constant":
        raise c.fail(f"mode {mode!r} is not supported (only constant padding is)")
    rank = len(c.shape(c.x()))
    pads = c.b.require_constant(c.x(1), c.node, "pads").astype(np.int64).tolist()
    axes = list(range(rank))
    if len(c.node.input) > 3 and c.x(3):  # opset >= 18: pads cover only these axes
        axes = [int(a) % rank for a in c.b.require_constant(c.x(3), c.node, "axes")]
    begin, end = [0] * rank, [0] * rank
    for k, a in enumerate(axes):
        begin[a], end[a] = pads[k], pads[len(axes) + k]
    if begin[0] or end[0]:
        raise c.fail("padding the batch axis is not supported")
    # the adjoint crops what was padded (Slice) and zero-fills what was cropped (Pad)
    g, ys = c.g, c.shape(c.y())
    grow = [a for a in range(1, rank) if begin[a] > 0 or end[a] > 0]
    if grow:
        g = c.b.op("Slice", [g, c.b.ints([max(begin[a], 0) for a in grow]),
                             c.b.ints([ys[a] - max(end[a], 0) for a in grow]), c.b.ints(grow)], "pad_grad_crop")
    if min(begin + end) < 0:
        g = c.b.op("Pad", [g, c.b.ints([max(-p, 0) for p in begin + end])], "pad_grad_fill")
    out = [None] * len(c.node.input)
    out[0] = g
    return out
