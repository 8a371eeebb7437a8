"""An independent reference: run an ONNX graph with PyTorch functional ops in float64.

Autograd through it gives the gradients our reverse-mode pass must reproduce, for
models we only have as ONNX (the bundled U-Nets). Covers the ops those graphs use.

The gradient is piecewise: where two max-pool candidates (or a ReLU input and zero) are
closer than float32 rounding, the float32 engine and a float64 forward can take different
branches (measured on the bundled U-Net: 1-2 pool windows per layer). `branches` gives the
float32 forward values of the MaxPool/Relu inputs; the float64 evaluation then follows the
branches the engine took, and autograd differentiates that same piece.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper


def node_attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def symmetric_pads(a, n=2):
    p = list(a.get("pads", [0] * 2 * n))
    if p[:n] != p[n:]:
        raise NotImplementedError(f"asymmetric pads {p}")
    return p[:n]


def branch_inputs(model: onnx.ModelProto) -> list[str]:
    """Tensors whose float32 values decide the branches (inputs of MaxPool and Relu)."""
    return [n.input[0] for n in model.graph.node if n.op_type in ("MaxPool", "Relu")]


def run(model: onnx.ModelProto, feeds: dict[str, torch.Tensor], keep: list[str],
        branches: dict[str, np.ndarray] | None = None) -> dict[str, torch.Tensor]:
    """Evaluate the graph; return the tensors named in `keep` (graph outputs or intermediates)."""
    branches = branches or {}
    env = {t.name: torch.tensor(numpy_helper.to_array(t).astype(np.float64)) for t in model.graph.initializer}
    env.update(feeds)
    for node in model.graph.node:
        a, x = node_attrs(node), [env[i] if i else None for i in node.input]
        op = node.op_type
        if op == "Conv":
            y = F.conv2d(x[0], x[1], x[2] if len(x) > 2 else None, a.get("strides", [1, 1]), symmetric_pads(a),
                         a.get("dilations", [1, 1]), a.get("group", 1))
        elif op == "ConvTranspose":
            y = F.conv_transpose2d(x[0], x[1], x[2] if len(x) > 2 else None, a.get("strides", [1, 1]), symmetric_pads(a),
                                   a.get("output_padding", [0, 0]), a.get("group", 1), a.get("dilations", [1, 1]))
        elif op == "Relu":
            decide = branches.get(node.input[0])
            y = torch.relu(x[0]) if decide is None else x[0] * torch.tensor(decide > 0, dtype=x[0].dtype)
        elif op == "MaxPool":
            args = (a["kernel_shape"], a.get("strides", a["kernel_shape"]), symmetric_pads(a))
            decide = branches.get(node.input[0])
            if decide is None:
                y = F.max_pool2d(x[0], *args, ceil_mode=bool(a.get("ceil_mode", 0)))
            else:  # the window winners of the float32 forward (first maximum, as PyTorch and our rule)
                _, idx = F.max_pool2d(torch.tensor(decide), *args, ceil_mode=bool(a.get("ceil_mode", 0)),
                                      return_indices=True)
                y = x[0].flatten(2).gather(2, idx.flatten(2)).view(idx.shape)
        elif op == "Concat":
            y = torch.cat(x, a["axis"])
        else:
            raise NotImplementedError(op)
        env[node.output[0]] = y
    return {k: env[k] for k in keep}
