"""Model-parameter randomisation (Adebayo et al. 2018) on an ONNX graph, without torch.

The explain graph is built from the forward model, so randomise the forward model and
then build the explainer on the result (`build_segmentation_explainer(randomised, ...)`).

* `parameter_layers(model)`: the weight initializers of Conv / ConvTranspose / Gemm /
  MatMul nodes in graph order (input side first, output side last).
* `randomise(model, layers, seed)`: a copy with those weights (and each layer's bias:
  the node's third input for Conv / ConvTranspose / Gemm, the constant addend of an Add
  that is the only consumer of a MatMul) replaced by zero-mean normal values of the same
  shape and dtype with the original's standard deviation (population std over all
  elements; a constant tensor uses its RMS instead, so an all-zero bias stays zero).
  Layer i of `parameter_layers` always draws from `default_rng([seed, i])`: a layer gets
  the same random values whichever other layers are randomised with it, so the cascade
  only ever adds layers. Everything else is left bit-identical.
* `cascading(model, seed)`: (label, model) from the top (output) layer down, each step
  randomising one more layer (Adebayo's cascading randomisation).
* `independent(model, seed)`: (label, model) one layer at a time, top down.

Labels are node names (the output tensor's name where a node has none). Only weights
held as graph initializers are found; weights made by Constant nodes are not.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _initialisers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _layers(model: onnx.ModelProto) -> list[tuple[str, str | None, str]]:
    """(weight, bias or None, label) per parameter layer, graph order, each weight once."""
    inits = _initialisers(model)
    nodes = list(model.graph.node)
    out, seen = [], set()
    for node in nodes:
        if node.op_type not in LAYER_OPS:
            continue
        if node.op_type == "MatMul":
            weight = next((i for i in node.input if i in inits), None)
            adds = [n for n in nodes if node.output[0] in n.input]
            bias = None
            if len(adds) == 1 and adds[0].op_type == "Add":
                bias = next((i for i in adds[0].input if i in inits), None)
        else:
            weight = node.input[1] if node.input[1] in inits else None
            bias = node.input[2] if len(node.input) > 2 and node.input[2] in inits else None
        if weight is None or weight in seen:
            continue
        seen.add(weight)
        out.append((weight, bias, node.name or node.output[0]))
    return out


def parameter_layers(model: onnx.ModelProto) -> list[str]:
    """Weight initializer names of the Conv/ConvTranspose/Gemm/MatMul nodes, output side last."""
    return [w for w, _, _ in _layers(model)]


def layer_labels(model: onnx.ModelProto) -> dict[str, str]:
    """Weight initializer name -> the label of its layer (node name, or its output tensor)."""
    return {w: label for w, _, label in _layers(model)}


def _random_like(t: onnx.TensorProto, rng: np.random.Generator) -> onnx.TensorProto | None:
    a = numpy_helper.to_array(t)
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{t.name}: only float weights can be randomised (got {a.dtype}, a quantised model?)")
    v = a.astype(np.float64)
    scale = v.std() if v.std() > 0 else float(np.sqrt(np.mean(v ** 2))) if v.size else 0.0
    noise = rng.standard_normal(a.shape)  # drawn even when unused: the stream stays the same
    if scale == 0:
        return None  # all zeros: left bit-identical
    new = (noise * scale).astype(a.dtype)
    return numpy_helper.from_array(new, t.name)


def randomise(model: onnx.ModelProto, layers, seed: int = 0) -> onnx.ModelProto:
    """A copy of `model` with the named weight initializers (and their biases) randomised."""
    table = _layers(model)
    index = {w: i for i, (w, _, _) in enumerate(table)}
    unknown = [w for w in layers if w not in index]
    if unknown:
        raise ValueError(f"not parameter layers of the model: {unknown}; known: {list(index)}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    for w in dict.fromkeys(layers):
        i = index[w]
        rng = np.random.default_rng([seed, i])
        _, bias, _ = table[i]
        for name in (w, bias):
            new = _random_like(inits[name], rng) if name is not None else None
            if new is not None:
                inits[name].CopyFrom(new)
    return out


def cascading(model: onnx.ModelProto, seed: int = 0) -> Iterator[tuple[str, onnx.ModelProto]]:
    """Top layer first; step k has the k top layers randomised. Yields (label of the layer added, model)."""
    table = _layers(model)[::-1]
    for k in range(1, len(table) + 1):
        yield table[k - 1][2], randomise(model, [w for w, _, _ in table[:k]], seed)


def independent(model: onnx.ModelProto, seed: int = 0) -> Iterator[tuple[str, onnx.ModelProto]]:
    """One layer randomised at a time, top layer first. Yields (label, model)."""
    for w, _, label in _layers(model)[::-1]:
        yield label, randomise(model, [w], seed)
