"""DeepLIFT's rescale rule (Shrikumar 2017), as Captum defines it: what flows back are multipliers m = dS/d(delta)
against a reference input x0 whose forward runs in the same graph (`reference`: forward tensor -> the reference
copy's tensor, from _copies.forward_copy). Linear ops and shape ops keep their gradient rule (a linear map's
multiplier is its gradient; `LINEAR` lists them); the attribution is (x - x0) * m at the input, and it sums to
S(x) - S(x0). Any other op (Softmax, Exp, a division by an input-dependent tensor) has no rule here.

    element-wise nonlinearity   m_in = m_out * (y - y0) / (x - x0), the gradient where |x - x0| < eps
    a product a * b             m_a = m_out * (b + b0) / 2, m_b = m_out * (a + a0) / 2 (exact: `product`); for SiLU
                                x * sigmoid(x) x's two multipliers (directly, and through the sigmoid's rescale
                                slope) are summed in one slope at the forward's batch, the same values
    MaxPool                     Captum's rule: m_out * (max(y, y0) - y0) routed to x's window maxima, plus
                                m_out * (y - max(y, y0)) routed to x0's, divided by (x - x0) (the gradient where
                                |x - x0| < eps). Summation-to-delta then holds through the pool. The original
                                implementation propagated max pooling by its gradient, which breaks it wherever the
                                winner of a window differs between x and x0. Where overlapping windows (3x3/2) share
                                a winner, their shares add up there, as in the gradient; Captum's max_unpool2d keeps
                                one of them, and its attributions then miss S(x) - S(x0).

eps = 1e-10 (Captum's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from onnx import helper

from . import RULES, RuleContext
from .activation import mask_of
from .arithmetic import swish_input
from .pool import check_values_only, pool_geometry, route_windows, window_maxima, window_slices

EPS = 1e-10
ELEMENTWISE = ("Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Clip")
# ops linear in their on-path inputs (Div: by a constant, its rule refuses anything else), and the shape ops
LINEAR = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Sum", "Div", "BatchNormalization",
                    "AveragePool", "GlobalAveragePool", "ReduceMean", "ReduceSum", "Resize", "Pad", "Identity",
                    "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Concat", "Split", "Cast"})


def _reference_of(c: RuleContext, reference: Mapping[str, str], tensor: str) -> str:
    if tensor not in reference:
        raise c.fail(f"DeepLIFT has no reference value for {tensor!r} (the reference forward does not reach it)")
    return reference[tensor]


def _inverse_delta(c: RuleContext, x: str, x0: str) -> tuple[str, str]:
    """(1 / (x - x0) where |x - x0| >= eps and 0 elsewhere, 1 where |x - x0| < eps and 0 elsewhere), floats at the
    forward's batch of 1."""
    b = c.b
    dx = b.op("Sub", [x, x0], "dl_delta_in")
    still = b.op("Less", [b.op("Abs", [dx]), b.const(EPS, "dl_eps")], "dl_still")
    # 1 / dx where it moved, 0 where it did not: 1 / (dx + still) * (1 - still) (no 1/0 to mask; dx + 0 is dx), the
    # values of a Where without ONNX Runtime's CPU Where (about 2 ms for a 12 x 208 x 400 tensor)
    still_f = mask_of(c, still)
    moved = b.op("Sub", [b.const(1.0, "one"), still_f], "dl_moved")
    inverse = b.op("Mul", [b.op("Reciprocal", [b.op("Add", [dx, still_f], "dl_delta_safe")], "dl_inverse"), moved],
                   "dl_inverse_moved")
    return inverse, still_f


def _rescaled(c: RuleContext, numerator: str, x: str, x0: str, gradient: str) -> str:
    """numerator / (x - x0) where |x - x0| >= eps, else `gradient`: as products with masks built at the forward's
    batch of 1 (a Where over the rows is ~10x a Mul on ONNX Runtime's CPU, activation.mask_of)."""
    b = c.b
    inverse, still_f = _inverse_delta(c, x, x0)
    return b.op("Add", [b.op("Mul", [numerator, inverse], "dl_rescaled"),
                        b.op("Mul", [gradient, still_f], "dl_gradient_kept")], "dl_multiplier")


def _slope(c: RuleContext, reference: Mapping[str, str]) -> str:
    """An element-wise node's rescale slope (y - y0) / (x - x0), or its derivative where x barely moved, at the
    forward's batch of 1 (the gradient rule applied to ones gives the derivative)."""
    b = c.b
    ones = b.op("Expand", [b.const(1.0, "one"), b.ints(list(c.shape(c.y())))], "dl_ones")
    derivative = RULES[c.node.op_type](RuleContext(node=c.node, b=b, out_cots=[ones], needs=c.needs, batch=1))[0]
    dy = b.op("Sub", [c.y(), _reference_of(c, reference, c.y())], "dl_delta_out")
    return _rescaled(c, dy, c.x(), _reference_of(c, reference, c.x()), derivative)


def rescale(reference: Mapping[str, str]) -> Callable:
    """The rescale rule of an element-wise op. Its slope is the same for every row: built once at the forward's batch
    of 1 (`_slope`), and each row's multiplier is one product with it."""
    def rule(c: RuleContext):
        return [c.b.op("Mul", [c.g, _slope(c, reference)], "dl_multiplier_rows")] + [None] * (len(c.node.input) - 1)
    return rule


def linear(c: RuleContext):
    """A linear layer's multiplier is its gradient, while only its data input depends on the input explained (a
    MatMul of two such tensors is a product: no rule)."""
    if sum(c.needs) > 1:
        raise c.fail("DeepLIFT has no rule for a product of two input-dependent tensors here")
    return RULES[c.node.op_type](c)


def product(reference: Mapping[str, str]) -> Callable:
    """Mul. A factor that does not depend on the input is the same in the reference: linear, its gradient. Two that
    do (SiLU x * sigmoid(x), a squeeze-excitation gate): a b - a0 b0 = (b + b0)/2 (a - a0) + (a + a0)/2 (b - b0)
    exactly, so the multipliers m_a = m (b + b0)/2 and m_b = m (a + a0)/2 keep summation-to-delta."""
    def rule(c: RuleContext):
        if not all(c.needs):
            return RULES["Mul"](c)
        b = c.b
        i = swish_input(c)
        if i is not None:  # SiLU x * s, s = sigmoid(x): x's two multipliers, m (s + s0)/2 and m (x + x0)/2 times the
            # sigmoid's rescale slope, summed in one slope at the forward's batch: one product per row, not four
            x, s = c.x(i), c.x(1 - i)
            sigmoid = b.producer(s)
            slope = b.op("Add", [_pair_mean(c, reference, s), b.op("Mul", [
                _pair_mean(c, reference, x),
                _slope(RuleContext(node=sigmoid, b=b, out_cots=[None], needs=[True], batch=1), reference)],
                "dl_silu_through_sigmoid")], "dl_silu_slope")
            return [b.op("Mul", [c.g, slope], "dl_silu_rows") if k == i else None for k in (0, 1)]
        out = []
        for i in (0, 1):
            out.append(c.unbroadcast(b.op("Mul", [c.g, _pair_mean(c, reference, c.x(1 - i))], "dl_product"), c.y(),
                                     c.x(i)))
        return out
    return rule


def _pair_mean(c: RuleContext, reference: Mapping[str, str], tensor: str) -> str:
    """(a + a0) / 2 of a forward tensor and its reference."""
    b = c.b
    return b.op("Mul", [b.op("Add", [tensor, _reference_of(c, reference, tensor)], "dl_pair"), b.const(0.5, "half")],
                "dl_pair_mean")


def maxpool(reference: Mapping[str, str]) -> Callable:
    """Captum's DeepLIFT rule of max pooling (module docstring), with one routing of the rows' cotangent: position p
    reached from window o at offset d takes m_out[o] times

        A_d[o] = hit_x(d) ((max(y, y0) - y0) / dx(p), or 1 where x barely moved) + hit_x0(d) (y - max(y, y0)) / dx(p)

    (hit_x(d): d holds the first maximum of x's window; hit_x0(d): of x0's), summed over the windows that reach p.
    A_d depends on the frame and the reference alone: it is built at the forward's batch of 1 and is the offsets'
    mask of one routing, where routing the gradient and the two deltas of all rows, then rescaling them at the
    input's size, took three (bundled U-Net: 466 -> 418 ms for the five classes)."""
    def rule(c: RuleContext):
        check_values_only(c)
        b = c.b
        x0, y0 = _reference_of(c, reference, c.x()), _reference_of(c, reference, c.y())
        top = b.op("Max", [c.y(), y0], "dl_pool_top")
        up, down = b.op("Sub", [top, y0], "dl_pool_up"), b.op("Sub", [c.y(), top], "dl_pool_down")
        inverse, still = _inverse_delta(c, c.x(), x0)
        at_reference = helper.make_node("MaxPool", [x0], [y0], name=f"{c.node.name}_reference")
        at_reference.attribute.extend(c.node.attribute)
        reference_context = RuleContext(node=at_reference, b=b, out_cots=[None], needs=c.needs, batch=1)
        hits_x, hits_x0 = window_maxima(c, c.x()), window_maxima(reference_context, x0)
        inverse_at, still_at = window_slices(c, inverse, 0.0), window_slices(c, still, 0.0)
        rates = {}
        for d in hits_x:
            to_x = b.op("Add", [b.op("Mul", [up, inverse_at[d]], "dl_pool_up_rate"), still_at[d]], "dl_pool_to_x")
            to_x0 = b.op("Mul", [down, inverse_at[d]], "dl_pool_to_x0")
            if hits_x[d] is not None:
                to_x = b.op("Mul", [to_x, mask_of(c, hits_x[d])], "dl_pool_x_hit")
                to_x0 = b.op("Mul", [to_x0, mask_of(c, hits_x0[d])], "dl_pool_x0_hit")
            rates[d] = b.op("Add", [to_x, to_x0], "dl_pool_rate")
        return [route_windows(c, c.g, rates, pool_geometry(c))]
    return rule
