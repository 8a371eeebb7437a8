"""Backward rules of element-wise activations. Masks are built from the input x only.

At the kinks each rule follows PyTorch's autograd (checked against torch 2.13):
relu 0 at 0, leaky_relu the negative slope at 0, hardtanh/relu6 0 at both bounds,
hardsigmoid 0 at both bounds, hardswish 0 at -3 and 1 at 3.
"""

from __future__ import annotations

from . import RuleContext, rule


@rule("Relu")
def relu(c: RuleContext):
    # PyTorch's tie rule: the gradient at x == 0 is 0. The mask reads the output: y > 0 exactly
    # when x > 0, and leaving x unread lets runtimes keep Conv+Relu fused in the forward pass.
    return [c.b.op("Mul", [c.g, mask_of(c, c.b.op("Greater", [c.y(), c.b.const(0.0, "zero")], "relu_mask"))],
                   "relu_grad")]


def mask_of(c: RuleContext, condition: str) -> str:
    """A boolean mask as 0/1 floats, to multiply a cotangent by. A product, not a Where: ONNX Runtime's CPU Where
    takes about 10x a broadcast Mul over the same rows (35 vs 3.5 ms for 5 x 12 x 208 x 400, bench in the commit);
    the mask itself is built once at the forward's batch of 1."""
    return c.b.op("Cast", [condition], "mask_f", to=1)


@rule("LeakyRelu")
def leaky_relu(c: RuleContext):
    # slope 1 where x > 0, alpha elsewhere (PyTorch: alpha at x == 0); built at forward batch 1
    b = c.b
    slope = b.op("Where", [b.op("Greater", [c.x(), b.const(0.0, "zero")], "leaky_mask"), b.const(1.0, "one"),
                           b.const(float(c.attr("alpha", 0.01)), "alpha")], "leaky_slope")
    return [b.op("Mul", [c.g, slope], "leaky_grad")]


@rule("Clip")
def clip(c: RuleContext):
    # Follows hardtanh, not clamp: zero gradient AT a bound. Exported nn.ReLU6 and nn.Hardtanh
    # become Clip, and Clip(min=0) must agree with Relu; torch.clamp (gradient 1 at a bound)
    # exports to the same op and differs only on exact ties.
    b, mask = c.b, None
    for i, cmp in ((1, "Greater"), (2, "Less")):
        if len(c.node.input) > i and c.x(i):
            if c.needs[i]:
                raise c.fail(f"the clip bound {c.x(i)!r} depends on the target; only fixed bounds are supported")
            inside = b.op(cmp, [c.x(), c.x(i)], "clip_mask")
            mask = inside if mask is None else b.op("And", [mask, inside], "clip_mask")
    if mask is None:  # no bounds: identity
        return [c.g]
    return [b.op("Mul", [c.g, mask_of(c, mask)], "clip_grad")] + [None] * (len(c.node.input) - 1)


@rule("Sigmoid")
def sigmoid(c: RuleContext):
    # y * (1 - y) from the forward output, at batch 1, then one multiply by the cotangent
    b, y = c.b, c.y()
    slope = b.op("Mul", [y, b.op("Sub", [b.const(1.0, "one"), y], "sigmoid_1my")], "sigmoid_slope")
    return [b.op("Mul", [c.g, slope], "sigmoid_grad")]


@rule("HardSigmoid")
def hard_sigmoid(c: RuleContext):
    # y = clip(alpha * x + beta, 0, 1): slope alpha strictly inside, 0 at and beyond the bounds
    # (PyTorch's hardsigmoid: 0 at x = -3 and 3). Bounds are compared on x, computed in float64,
    # so the exported alpha = float32(1/6) puts them exactly on -3 and 3.
    b, alpha, beta = c.b, float(c.attr("alpha", 0.2)), float(c.attr("beta", 0.5))
    if alpha == 0.0:  # constant output
        return [c.zeros_cot(c.x())]
    lo, hi = sorted((-beta / alpha, (1.0 - beta) / alpha))
    mask = b.op("And", [b.op("Greater", [c.x(), b.const(lo, "hsig_lo")], "hsig_mask"),
                        b.op("Less", [c.x(), b.const(hi, "hsig_hi")], "hsig_mask")], "hsig_mask")
    slope = b.op("Where", [mask, b.const(alpha, "alpha"), b.const(0.0, "zero")], "hsig_slope")
    return [b.op("Mul", [c.g, slope], "hsig_grad")]


@rule("HardSwish")
def hard_swish(c: RuleContext):
    # y = x * clip(x / 6 + 1/2, 0, 1): slope x / 3 + 1/2 strictly inside (-3, 3); PyTorch gives
    # 0 at x = -3 and 1 at x = 3 (the outer pieces own the ties)
    b, x = c.b, c.x()
    inner = b.op("Add", [b.op("Div", [x, b.const(3.0, "three")], "hswish_x3"), b.const(0.5, "half")], "hswish_inner")
    low = b.op("Where", [b.op("Greater", [x, b.const(-3.0, "minus3")], "hswish_gt"), inner, b.const(0.0, "zero")],
               "hswish_low")
    slope = b.op("Where", [b.op("Less", [x, b.const(3.0, "three")], "hswish_lt"), low, b.const(1.0, "one")],
                 "hswish_slope")
    return [b.op("Mul", [c.g, slope], "hswish_grad")]
