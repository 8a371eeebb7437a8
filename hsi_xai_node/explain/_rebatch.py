"""A model exported with a fixed batch of 1, re-batched to n (Score-CAM's masked forwards, the
reliability toolkit's perturbed inputs).

`rebatch(model, n)` returns a copy whose batch-1 inputs and outputs have batch n, or None
when the graph cannot simply be re-batched. It refuses (None) when

* a Reshape node's target shape is a constant whose first entry is neither 0 (copy the
  input's batch) nor -1 (infer it): the batch of 1 is hard-coded there (the usual
  `Reshape(x, [1, -1, C])` of a detector head, or the explain graphs' class-in-batch
  reshapes);
* a graph input or output does not start with a batch dimension of 1;

A Resize given its output `sizes` as a constant whose batch entry is 1 (a dynamic export whose shape
arithmetic was folded at a fixed size, as `hsi-xai import-model` does) is given a copy with batch n;
* strict ONNX shape inference of the re-batched graph fails, or leaves an output, or a
  tensor computed from an input, at batch 1 (the net for what the Reshape rule cannot
  see: Concat or Split along axis 0, Expand to a constant shape, ...).

The intermediate shapes (value_info) are dropped and inferred again for batch n.
`reliability.BatchedModel` wraps either outcome for running rows on an engine.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def _dims(v: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in v.type.tensor_type.shape.dim]


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    return consts


def hard_coded_batch(model: onnx.ModelProto) -> list[str]:
    """Reshape nodes whose constant target shape fixes the batch (first entry not 0 or -1)."""
    consts = _constants(model)
    bad = []
    for n in model.graph.node:
        if n.op_type == "Reshape" and n.input[1] in consts:
            shape = consts[n.input[1]].ravel()
            if shape.size and int(shape[0]) not in (0, -1):
                bad.append(n.name or n.output[0])
    return bad


def rebatch(model: onnx.ModelProto, n: int) -> onnx.ModelProto | None:
    """A copy of `model` with batch n, or None when the batch is hard-coded (module docstring)."""
    if n < 1:
        raise ValueError(f"batch must be >= 1, got {n}")
    if hard_coded_batch(model):
        return None
    inits = {t.name for t in model.graph.initializer}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for v in [i for i in g.input if i.name not in inits] + list(g.output):
        dims = v.type.tensor_type.shape.dim
        if not dims or not (dims[0].HasField("dim_value") and dims[0].dim_value == 1):
            return None
        dims[0].dim_value = n
    _rebatch_resize_sizes(out, n)
    del g.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=True)
    except Exception:  # noqa: BLE001  (onnx raises InferenceError, ValidationError and others)
        return None
    # inference must agree with batch n: every output, and every tensor computed from an input
    if any(not _dims(v) or _dims(v)[0] != n for v in inferred.graph.output):
        return None
    live = _input_dependent(inferred)
    if n != 1 and any(v.name in live and _dims(v)[:1] == [1] for v in inferred.graph.value_info):
        return None
    return out


def _rebatch_resize_sizes(model: onnx.ModelProto, n: int) -> None:
    """Resize nodes whose constant `sizes` (all axes) fix the batch at 1 read a copy with batch n instead."""
    consts = _constants(model)
    for k, node in enumerate(model.graph.node):
        if node.op_type != "Resize" or len(node.input) < 4 or node.input[3] not in consts:
            continue
        if any(a.name == "axes" for a in node.attribute):
            continue  # sizes of the listed axes only: no batch entry
        sizes = consts[node.input[3]].astype(np.int64).ravel()
        if sizes.size and int(sizes[0]) == 1 and n != 1:
            name = f"{node.input[3]}_batch{n}"
            if name not in consts:
                model.graph.initializer.append(numpy_helper.from_array(np.concatenate([[n], sizes[1:]]), name))
                consts[name] = sizes
            replaced = node.input[3]
            node.input[3] = name
            if not any(replaced in other.input for other in model.graph.node):  # no reader left: drop it
                kept = [t for t in model.graph.initializer if t.name != replaced]
                del model.graph.initializer[:]
                model.graph.initializer.extend(kept)


def _input_dependent(model: onnx.ModelProto) -> set[str]:
    """Tensors computed from a graph input (constants folded to batch 1 do not count)."""
    inits = {t.name for t in model.graph.initializer}
    live = {i.name for i in model.graph.input if i.name not in inits}
    for node in model.graph.node:
        if any(i in live for i in node.input):
            live.update(node.output)
    return live
