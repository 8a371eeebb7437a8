"""Backward rules of arithmetic ops (broadcasting inputs are summed back to their shapes)."""

from __future__ import annotations

from . import RuleContext, rule


@rule("Add", "Sub")
def add_sub(c: RuleContext):
    out = [None, None]
    for i in (0, 1):
        if c.needs[i]:
            g = c.unbroadcast(c.g, c.y(), c.x(i))
            out[i] = c.b.op("Neg", [g], "sub_grad") if (i == 1 and c.node.op_type == "Sub") else g
    return out


def swish_input(c: RuleContext) -> int | None:
    """Which input of the Mul is x where the other is Sigmoid(x) (SiLU, Swish with beta 1), else None."""
    for i in (0, 1):
        maker = c.b.producer(c.x(1 - i))
        if maker is not None and maker.op_type == "Sigmoid" and maker.input[0] == c.x(i):
            return i
    return None


@rule("Mul")
def mul(c: RuleContext):
    i = swish_input(c)
    if i is not None:
        # SiLU y = x * s, s = sigmoid(x): dy/dx = s + x s (1 - s) = s + y (1 - s), taken at the forward's batch, and
        # one product per row; through the product rule each row paid four passes (g * s, g * x, that times the
        # sigmoid's slope, the sum). No cotangent goes to s from here: its path back to x is in the slope.
        b, s = c.b, c.x(1 - i)
        slope = b.op("Add", [s, b.op("Mul", [c.y(), b.op("Sub", [b.const(1.0, "one"), s], "silu_1ms")],
                                     "silu_y1ms")], "silu_slope")
        return [b.op("Mul", [c.g, slope], "silu_grad") if k == i else None for k in (0, 1)]
    # product rule: each input's cotangent is g times the other input; both may be on the path
    # (squeeze-excitation x * sigmoid(pooled) broadcast over H, W)
    out = [None, None]
    for i in (0, 1):
        if c.needs[i]:
            out[i] = c.unbroadcast(c.b.op("Mul", [c.g, c.x(1 - i)], "mul_grad"), c.y(), c.x(i))
    return out


@rule("Div")
def div(c: RuleContext):
    # the divisor is constant with respect to the targets (an initializer, or a tensor off the path)
    if c.needs[1]:
        raise c.fail(f"the divisor {c.x(1)!r} depends on the target; only division by a constant is supported")
    return [c.unbroadcast(c.b.op("Div", [c.g, c.x(1)], "div_grad"), c.y(), c.x(0)), None]
