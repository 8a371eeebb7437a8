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
