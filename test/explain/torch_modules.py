"""An ONNX graph as a PyTorch module made of real layers (nn.Conv2d, nn.ConvTranspose2d, nn.ReLU, nn.MaxPool2d),
so that hook-based attribution libraries (Zennit's composites, Captum's GuidedBackprop, Deconvolution, LRP) can
explain exactly the graph the engine runs, in float64, as their authors' code does. Covers the ops of the
U-Nets here (their BatchNorm already folded into the convolutions by the export).

    net = OnnxModule(onnx.load("u.onnx")).double().eval()
    logits = net(x)          # the graph's first output
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from test.explain.torch_onnx import node_attrs as _attrs
from test.explain.torch_onnx import symmetric_pads


def _pads(a, n=2):
    return tuple(symmetric_pads(a, n))


class OnnxModule(nn.Module):
    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        self.graph = model.graph
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        for node in model.graph.node:  # exporters put some weights in Constant nodes, or alias them by Identity
            if node.op_type == "Constant":
                inits[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
            elif node.op_type == "Identity" and node.input[0] in inits:
                inits[node.output[0]] = inits[node.input[0]]
        self.consts = {k: torch.tensor(v) for k, v in inits.items()}
        self.layers = nn.ModuleDict()
        for i, node in enumerate(model.graph.node):
            a, key = _attrs(node), f"n{i}"
            if node.op_type == "Conv":
                w = inits[node.input[1]]
                conv = nn.Conv2d(w.shape[1] * a.get("group", 1), w.shape[0], w.shape[2:], a.get("strides", [1, 1]),
                                 _pads(a), a.get("dilations", [1, 1]), a.get("group", 1), bias=len(node.input) > 2)
                conv.weight.data = torch.tensor(w)
                if len(node.input) > 2:
                    conv.bias.data = torch.tensor(inits[node.input[2]])
                self.layers[key] = conv
            elif node.op_type == "ConvTranspose":
                w = inits[node.input[1]]
                g = a.get("group", 1)
                conv = nn.ConvTranspose2d(w.shape[0], w.shape[1] * g, w.shape[2:], a.get("strides", [1, 1]), _pads(a),
                                          a.get("output_padding", [0, 0]), g, bias=len(node.input) > 2,
                                          dilation=a.get("dilations", [1, 1]))
                conv.weight.data = torch.tensor(w)
                if len(node.input) > 2:
                    conv.bias.data = torch.tensor(inits[node.input[2]])
                self.layers[key] = conv
            elif node.op_type == "Relu":
                self.layers[key] = nn.ReLU()
            elif node.op_type == "MaxPool":
                self.layers[key] = nn.MaxPool2d(a["kernel_shape"], a.get("strides", a["kernel_shape"]), _pads(a),
                                                ceil_mode=bool(a.get("ceil_mode", 0)))
            elif node.op_type not in ("Concat", "Identity", "Constant"):
                raise NotImplementedError(node.op_type)
        self.keys = [f"n{i}" for i in range(len(model.graph.node))]
        self.input_name = model.graph.input[0].name
        self.output_name = model.graph.output[0].name
        self.kept: dict[str, torch.Tensor] = {}

    def forward(self, x):
        env = {self.input_name: x}
        for key, node in zip(self.keys, self.graph.node):
            ins = [env[i] for i in node.input if i in env]
            if node.op_type == "Constant" or node.output[0] in self.consts:
                continue
            if node.op_type == "Concat":
                y = torch.cat(ins, _attrs(node)["axis"])
            elif node.op_type == "Identity":
                y = ins[0]
            else:
                y = self.layers[key](ins[0])
            env[node.output[0]] = y
        self.kept = env
        return env[self.output_name]


def region_target(logits_shape, region: np.ndarray, values: torch.Tensor | None = None) -> torch.Tensor:
    """The output gradient (or relevance) of one class's region score: `region` (rows, 1, H, W) 0/1 per row; with
    `values` (the logits), the region's logit values (LRP's starting relevance)."""
    k = logits_shape[1]
    rows = []
    for c in range(region.shape[0]):
        t = torch.zeros(logits_shape, dtype=torch.float64)
        t[0, c] = torch.tensor(region[c, 0], dtype=torch.float64)
        rows.append(t if values is None else t * values.detach())
    del k
    return torch.cat(rows)
