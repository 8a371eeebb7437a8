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
room. Shapes come from ONNX shape inference (the graphs here are static).
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


def _tensor_bytes(value) -> int:
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return 0
    dims = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]
    return int(np.prod(dims, dtype=np.float64)) * _BYTES.get(t.elem_type, 4)


def graph_memory(model: onnx.ModelProto) -> GraphMemory:
    """Weights, inputs and the peak of live intermediate tensors of a static-shape graph."""
    g = model.graph
    weights = sum(int(np.prod(t.dims, dtype=np.float64)) * _BYTES.get(t.data_type, 4) for t in g.initializer)
    initialisers = {t.name for t in g.initializer}
    inputs = sum(_tensor_bytes(v) for v in g.input if v.name not in initialisers)
    try:
        inferred = shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - a graph shape inference cannot follow: count what is declared
        inferred = g
    sizes = {v.name: _tensor_bytes(v) for v in [*inferred.value_info, *inferred.output]}
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
