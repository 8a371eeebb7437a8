"""Backward rules of ops that move values without arithmetic, and of linear layers."""

from __future__ import annotations

from . import RuleContext, rule


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
    out, start = [], 0
    for i, x in enumerate(c.node.input):
        size = c.shape(x)[axis]
        if c.needs[i]:
            out.append(c.b.op("Slice", [c.g, c.b.ints([start]), c.b.ints([start + size]), c.b.ints([axis])],
                              "concat_grad"))
        else:
            out.append(None)
        start += size
    return out
