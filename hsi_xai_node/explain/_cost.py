"""What a graph costs in arithmetic: the multiply-adds of its Conv, ConvTranspose, MatMul and Gemm nodes.

The lower bound of an explain graph's run time over its forward's is the ratio of their multiply-adds
(the benches report each graph against that bound; the tests check that the default pipeline's graph
adds none to the forward).
"""

from __future__ import annotations

import numpy as np
import onnx

from ._graph import Builder


def multiply_adds(model: onnx.ModelProto) -> int:
    """Multiply-adds of the Conv, ConvTranspose, MatMul and Gemm nodes, at the graph's static shapes."""
    b = Builder(model)
    total = 0
    for n in model.graph.node:
        if n.op_type == "Conv":
            w, y = b.shape(n.input[1]), b.shape(n.output[0])
            total += int(np.prod(y)) * int(np.prod(w[1:]))
        elif n.op_type == "ConvTranspose":
            w, x = b.shape(n.input[1]), b.shape(n.input[0])
            total += int(np.prod(x)) * int(np.prod(w[1:]))
        elif n.op_type in ("MatMul", "Gemm"):
            a, c = b.shape(n.input[0]), b.shape(n.output[0])
            total += int(np.prod(c)) * a[-1]
    return total
