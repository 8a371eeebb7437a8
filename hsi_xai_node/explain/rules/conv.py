"""Backward rules of convolutions and normalisation, with respect to the data input only.

Weights must be constants (they are, in an exported inference graph).
"""

from __future__ import annotations

import numpy as np

from . import RuleContext, rule


def conv_geometry(c: RuleContext, x: str, w_shape, y: str):
    """(strides, pads, dilations) of a Conv, with auto_pad resolved to explicit pads."""
    spatial = len(w_shape) - 2
    strides = list(c.attr("strides", [1] * spatial))
    dilations = list(c.attr("dilations", [1] * spatial))
    pads = list(c.attr("pads", [0] * (2 * spatial)))
    auto = c.attr("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        xs, ys = c.shape(x)[2:], c.shape(y)[2:]
        for i in range(spatial):
            total = max(0, (ys[i] - 1) * strides[i] + dilations[i] * (w_shape[2 + i] - 1) + 1 - xs[i])
            small, big = total // 2, total - total // 2
            pads[i], pads[i + spatial] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0] * (2 * spatial)
    return strides, pads, dilations


@rule("Conv")
def conv(c: RuleContext):
    out = [None] * len(c.node.input)
    out[0] = conv_input_vjp(c, c.b.require_constant(c.x(1), c.node, "the weight"), c.g)
    return out


def _input_vjp_plan(c: RuleContext, w: np.ndarray) -> tuple[str, np.ndarray, int, dict]:
    """How W^T g is computed for the Conv node of `c` with weight `w`: (op, its weight, the axis of that weight along
    the forward's input channels, the op's attributes)."""
    group = int(c.attr("group", 1))
    strides, pads, dil = conv_geometry(c, c.x(), w.shape, c.y())
    spatial = w.shape[2:]
    n = len(spatial)
    xs, ys = c.shape(c.x())[2:], c.shape(c.y())[2:]
    if all(s == 1 for s in strides):
        # stride 1: a Conv of the cotangent with the flipped, transposed kernel (faster than ConvTranspose)
        cout, cin_g = w.shape[:2]
        wg = w.reshape(group, cout // group, cin_g, *spatial)
        wt = np.flip(wg.transpose(0, 2, 1, *range(3, 3 + n)), axis=tuple(range(3, 3 + n)))
        wt = np.ascontiguousarray(wt).reshape(group * cin_g, cout // group, *spatial)
        back_pads = [dil[i] * (spatial[i] - 1) - pads[i] for i in range(n)]
        back_pads += [xs[i] - ys[i] + dil[i] * (spatial[i] - 1) - back_pads[i] for i in range(n)]
        if min(back_pads) < 0:  # padding larger than the kernel reach: crop after a valid conv
            raise c.fail(f"padding {pads} larger than the kernel reach is not supported")
        return "Conv", wt, 0, {"pads": back_pads, "dilations": dil, "group": group}
    # strided: the adjoint is the transposed convolution with the same kernel
    reach = [(ys[i] - 1) * strides[i] - pads[i] - pads[i + n] + dil[i] * (spatial[i] - 1) + 1 for i in range(n)]
    output_padding = [xs[i] - reach[i] for i in range(n)]
    return "ConvTranspose", w, 1, {"strides": strides, "pads": pads, "dilations": dil, "group": group,
                                   "output_padding": output_padding}


def conv_input_vjp(c: RuleContext, w: np.ndarray, g: str) -> str:
    """W^T g for the Conv node of `c` with weight `w` (its own, or a modified one: the LRP rules), rows of g."""
    op, weight, _, attrs = _input_vjp_plan(c, w)
    return c.b.op(op, [g, c.b.const(weight, "conv_wt" if op == "Conv" else "conv_w")], "conv_grad", **attrs)


def channel_scaled_weight(c: RuleContext, parts: list[tuple[np.ndarray, str]], axis: int) -> str:
    """sum_i W_i s_i: constant weights W_i, each scaled along `axis` by s_i, a tensor of that axis's length (shaped
    (1, C, 1, ..) or not) known only at run time. A convolution's weight made per frame (a few thousand values)."""
    b, weight = c.b, None
    for w, scale in parts:
        shape = [1] * w.ndim
        shape[axis] = w.shape[axis]
        term = b.op("Mul", [b.const(w.astype(np.float32), "conv_wt"),
                            b.op("Reshape", [scale, b.ints(shape)], "channel_scale")], "conv_wt_scaled")
        weight = term if weight is None else b.op("Add", [weight, term], "conv_wt_sum")
    return weight


def conv_input_vjp_scaled(c: RuleContext, parts: list[tuple[np.ndarray, str]], g: str) -> str:
    """(sum_i W_i diag(s_i))^T g for the ungrouped Conv node of `c`: constant weights W_i, each with its input
    channels scaled by s_i, a tensor of the forward's input channels known only at run time (z-box's bounds of the
    frame). One backward where each W_i took its own."""
    if int(c.attr("group", 1)) != 1:
        raise c.fail("input channels scaled at run time need an ungrouped convolution")
    plans = [_input_vjp_plan(c, w) for w, _ in parts]
    op, _, axis, attrs = plans[0]
    weight = channel_scaled_weight(c, [(plan[1], scale) for plan, (_, scale) in zip(plans, parts)], axis)
    return c.b.op(op, [g, weight], "conv_grad", **attrs)


@rule("ConvTranspose")
def conv_transpose(c: RuleContext):
    c.b.require_constant(c.x(1), c.node, "the weight")
    out = [None] * len(c.node.input)
    out[0] = conv_transpose_input_vjp(c, c.x(1), c.g)
    return out


def conv_transpose_input_vjp(c: RuleContext, w: str, g: str) -> str:
    """W^T g for the ConvTranspose node of `c` with the weight tensor `w` (its own, or a modified constant)."""
    group = int(c.attr("group", 1))
    auto = c.attr("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER") or c.attr("output_shape") is not None:
        # the head/tail split of implicit padding differs between the spec and runtimes: refuse to guess
        raise c.fail(f"implicit padding (auto_pad={auto}, output_shape) is not supported: export with explicit "
                     "pads and output_padding (PyTorch does)")
    n = len(c.shape(c.x(1))) - 2
    strides = list(c.attr("strides", [1] * n))
    dil = list(c.attr("dilations", [1] * n))
    pads = [0] * (2 * n) if auto == "VALID" else list(c.attr("pads", [0] * (2 * n)))
    opad = list(c.attr("output_padding", [0] * n))
    # ConvTranspose is defined as the adjoint of the Conv with the same weight (Cin, Cout/group, k..)
    # and geometry, so its adjoint is that Conv, weight unchanged and unflipped.
    # output_padding appended rows at the end of y: the conv pads g's end by pads[end] - output_padding, and
    # where that is negative crops those trailing rows instead (no input reached them).
    tail = [pads[n + i] - opad[i] for i in range(n)]
    if min(tail) < 0:
        ys = c.shape(c.y())[2:]
        g = c.b.op("Slice", [g, c.b.ints([0] * n), c.b.ints([ys[i] + min(tail[i], 0) for i in range(n)]),
                             c.b.ints(list(range(2, 2 + n)))], "convt_crop")
    back_pads = pads[:n] + [max(t, 0) for t in tail]
    return c.b.op("Conv", [g, w], "convt_grad", strides=strides, pads=back_pads, dilations=dil, group=group)


@rule("BatchNormalization")
def batch_normalization(c: RuleContext):
    if int(c.attr("training_mode", 0)) or len([o for o in c.node.output if o]) > 1:
        raise c.fail("training-mode BatchNormalization is not supported: export the model in eval mode")
    scale = c.b.require_constant(c.x(1), c.node, "the scale")
    var = c.b.require_constant(c.x(4), c.node, "the running variance")
    eps = float(c.attr("epsilon", 1e-5))
    # inference mode is a per-channel affine map with constant statistics: dy/dx = scale / sqrt(var + eps)
    factor = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    rank = len(c.shape(c.x()))
    factor = factor.reshape((1, -1) + (1,) * (rank - 2))
    out = [None] * len(c.node.input)
    out[0] = c.b.op("Mul", [c.g, c.b.const(factor, "bn_factor")], "bn_grad")
    return out
