"""An independent reference: run an ONNX graph with PyTorch functional ops in float64.

Autograd through it gives the gradients our reverse-mode pass must reproduce, for
models we only have as ONNX (the bundled U-Nets). Covers the ops those graphs use.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pads(a, n=2):
    p = list(a.get("pads", [0] * 2 * n))
    if p[:n] != p[n:]:
        raise NotImplementedError(f"asymmetric pads {p}")
    return p[:n]


def run(model: onnx.ModelProto, feeds: dict[str, torch.Tensor], keep: list[str]) -> dict[str, torch.Tensor]:
    """Evaluate the graph; return the tensors named in `keep` (graph outputs or intermediates)."""
    env = {t.name: torch.tensor(numpy_helper.to_array(t).astype(np.float64)) for t in model.graph.initializer}
    env.update(feeds)
    for node in model.graph.node:
        a, x = _attrs(node), [env[i] if i else None for i in node.input]
        op = node.op_type
        if op == "Conv":
            y = F.conv2d(x[0], x[1], x[2] if len(x) > 2 else None, a.get("strides", [1, 1]), _pads(a),
                         a.get("dilations", [1, 1]), a.get("group", 1))
        elif op == "ConvTranspose":
            y = F.conv_transpose2d(x[0], x[1], x[2] if len(x) > 2 else None, a.get("strides", [1, 1]), _pads(a),
                                   a.get("output_padding", [0, 0]), a.get("group", 1), a.get("dilations", [1, 1]))
        elif op == "Relu":
            y = torch.relu(x[0])
        elif op == "MaxPool":
            y = F.max_pool2d(x[0], a["kernel_shape"], a.get("strides", a["kernel_shape"]), _pads(a),
                             ceil_mode=bool(a.get("ceil_mode", 0)))
        elif op == "Concat":
            y = torch.cat(x, a["axis"])
        else:
            raise NotImplementedError(op)
        env[node.output[0]] = y
    return {k: env[k] for k in keep}
