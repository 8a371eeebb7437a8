"""Backward rules of element-wise activations. Masks are built from the input x only."""

from __future__ import annotations

from . import RuleContext, rule


@rule("Relu")
def relu(c: RuleContext):
    # PyTorch's tie rule: the gradient at x == 0 is 0
    zero = c.b.const(0.0, "zero")
    return [c.b.op("Where", [c.b.op("Greater", [c.x(), zero], "relu_mask"), c.g, zero], "relu_grad")]
