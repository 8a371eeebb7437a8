"""Memory a pipeline will need, estimated when a model is loaded, and refused above a stated limit.

A model file, a card or a rig can ask for any tensor size (a detector card of 1x4x25600x32000
loads fine and its first frame then needs ~18 GB): the pipelines estimate what one frame will
need before they build an engine, and refuse with the estimate and the limit in the message
(`memory_limit_mb`, default DEFAULT_LIMIT_MB) rather than be killed by the kernel mid-drive.

    estimate = graph_memory(model)           # weights, inputs, peak live intermediate tensors
    check_memory({"model": estimate.total, "camera warps": warps}, limit_mb, "detector 'x'")

The activation estimate walks the graph in its (topological) node order and keeps every tensor
alive from the node that makes it to the last node that reads it: the peak of that sum is what
an engine with perfect buffer reuse needs; real engines add workspace, so the limit should leave
room. Shapes come from ONNX shape inference, with data propagation. A shape that depends on the
input's values is either bounded by the graph itself (the rows NonMaxSuppression keeps are at most
boxes x classes, or its own max_output_boxes_per_class x classes; TopK keeps at most its axis; NonZero
at most every element: the estimate then takes the bound, and the shapes downstream follow it) or
refused at load, naming the tensor and the op (a Tile whose repeats are computed from the input could
otherwise ask for any size on the first frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import shape_inference

from ..errors import InputError

DEFAULT_LIMIT_MB = 4096
MB = 1 << 20
_BYTES = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.DOUBLE: 8,
          onnx.TensorProto.INT64: 8, onnx.TensorProto.INT32: 4, onnx.TensorProto.INT16: 2, onnx.TensorProto.UINT16: 2,
          onnx.TensorProto.INT8: 1, onnx.TensorProto.UINT8: 1, onnx.TensorProto.BOOL: 1}


@dataclass(frozen=True)
class GraphMemory:
    weights: int      # bytes of the initializers
    inputs: int       # bytes of the graph inputs
    activations: int  # peak bytes of the live intermediate tensors (outputs included)

    @property
    def total(self) -> int:
        return self.weights + self.inputs + self.activations


def _static(value) -> bool:
    t = value.type.tensor_type
    return t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim)


def _dims(value) -> list[int]:
    return [d.dim_value for d in value.type.tensor_type.shape.dim]


def _bound(node, shapes: dict, consts: dict) -> list[int] | None:
    """The largest shape an op with a value-dependent output can give, from its inputs' static shapes."""
    op = node.op_type
    if op == "NonMaxSuppression" and node.input[0] in shapes and node.input[1] in shapes:
        batch, boxes, _ = shapes[node.input[0]]
        classes = shapes[node.input[1]][1]
        per_class = boxes
        if len(node.input) > 2 and node.input[2] in consts:
            per_class = min(boxes, max(int(np.asarray(consts[node.input[2]]).reshape(-1)[0]), 0))
        return [batch * classes * per_class, 3]
    if op == "NonZero" and node.input[0] in shapes:
        x = shapes[node.input[0]]
        return [len(x), int(np.prod(x))]
    if op == "TopK" and node.input[0] in shapes:
        x = list(shapes[node.input[0]])
        return x  # k elements along the axis, never more than the axis holds
    return None


def bounded_shapes(model: onnx.ModelProto, what: str = "model") -> dict[str, list[int]]:
    """Static shape of every tensor, value-dependent ones replaced by their graph's bound; InputError naming the
    tensor and op when a shape depends on the input's values without a bound."""
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    consts = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    for _ in range(8):  # each round fixes the bounded origins whose inputs became static
        try:
            inferred = shape_inference.infer_shapes(m, data_prop=True).graph
        except Exception as exc:  # noqa: BLE001 - onnx raises several types for graphs it cannot follow
            raise InputError(f"{what}: its shapes cannot be inferred ({str(exc).splitlines()[0][:200]})") from None
        values = {v.name: v for v in [*inferred.input, *inferred.value_info, *inferred.output]}
        shapes = {n: _dims(v) for n, v in values.items() if _static(v)}
        shapes.update({t.name: list(t.dims) for t in m.graph.initializer})
        fixed = False
        for node in m.graph.node:
            for i, out in enumerate(node.output):
                if out and out not in shapes:
                    bound = _bound(node, shapes, consts)
                    if bound is not None and (i == 0 or node.op_type == "TopK"):
                        elem = values[out].type.tensor_type.elem_type if out in values else onnx.TensorProto.INT64
                        m.graph.value_info.append(onnx.helper.make_tensor_value_info(out, elem, bound))
                        fixed = True
        if not fixed:
            break
    for node in m.graph.node:
        for out in node.output:
            if out and out not in shapes:
                raise InputError(f"{what}: tensor {out!r} (node {node.name or '(unnamed)'}, op {node.op_type}) has a "
                                 "shape decided at run time by the input's values, with no bound in the graph: "
                                 "refused (engines here need static shapes; export the model at a fixed shape)")
    return shapes


def _tensor_bytes(value) -> int:
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return 0
    dims = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]
    return int(np.prod(dims, dtype=np.float64)) * _BYTES.get(t.elem_type, 4)


def graph_memory(model: onnx.ModelProto, what: str = "model") -> GraphMemory:
    """Weights, inputs and the peak of live intermediate tensors (value-dependent shapes at their bound; an
    unbounded one is an InputError)."""
    g = model.graph
    weights = sum(int(np.prod(t.dims, dtype=np.float64)) * _BYTES.get(t.data_type, 4) for t in g.initializer)
    initialisers = {t.name for t in g.initializer}
    inputs = sum(_tensor_bytes(v) for v in g.input if v.name not in initialisers)
    shapes = bounded_shapes(model, what)
    inferred = shape_inference.infer_shapes(model).graph
    elem = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.output, *g.input]}
    sizes = {name: int(np.prod(dims, dtype=np.float64)) * _BYTES.get(elem.get(name), 4) for name, dims in shapes.items()
             if name not in initialisers}
    last_use = {}
    for i, node in enumerate(g.node):
        for name in node.input:
            last_use[name] = i
    outputs = {o.name for o in g.output}
    live, peak, alive = 0, 0, {}
    for i, node in enumerate(g.node):
        for name in node.output:
            if name and name not in alive:
                alive[name] = sizes.get(name, 0)
                live += alive[name]
        peak = max(peak, live)
        for name in set(node.input):
            if last_use.get(name) == i and name in alive and name not in outputs:
                live -= alive.pop(name)
    return GraphMemory(int(weights), int(inputs), int(peak))


def image_bytes(width: int, height: int, channels: int = 1, itemsize: int = 1) -> int:
    return int(width) * int(height) * int(channels) * int(itemsize)


def check_memory(parts: dict[str, int], limit_mb: float, what: str) -> int:
    """Raise InputError when the parts' sum exceeds `limit_mb`; returns the sum in bytes."""
    if not (isinstance(limit_mb, (int, float)) and np.isfinite(limit_mb) and limit_mb > 0):
        raise InputError(f"memory_limit_mb must be a positive number, got {limit_mb!r}")
    total = int(sum(parts.values()))
    if total > limit_mb * MB:
        detail = ", ".join(f"{k} {v / MB:,.0f} MB" for k, v in parts.items() if v)
        raise InputError(f"{what} would need about {total / MB:,.0f} MB per frame ({detail}), above the memory limit "
                         f"of {limit_mb:,.0f} MB (parameter memory_limit_mb): refused before it runs")
    return total
