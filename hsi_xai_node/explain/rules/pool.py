"""Backward rules of pooling and reductions."""

from __future__ import annotations

import numpy as np

from . import RuleContext, rule


@rule("GlobalAveragePool")
def global_average_pool(c: RuleContext):
    spatial = c.shape(c.x())[2:]
    g = c.b.op("Mul", [c.g, c.b.const(1.0 / float(np.prod(spatial)), "inv_count")], "gap_scale")
    return [c.b.op("Expand", [g, c.b.ints(c.cot_shape(c.x()))], "gap_grad")]
