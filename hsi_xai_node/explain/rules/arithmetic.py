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


@rule("Mul")
def mul(c: RuleContext):
    # product rule: each input's cotangent is g times the other input; both may be on the path
    # (SiLU = x * Sigmoid(x); squeeze-excitation x * sigmoid(pooled) broadcast over H, W)
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
