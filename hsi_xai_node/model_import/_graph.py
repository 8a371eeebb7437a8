"""A user's segmentation ONNX brought to the shape the runtime and the explain compiler need.

What exporters hand over and what the engines here take differ in four ways, each fixed here and
reported as a change:

* dynamic dimensions (mmsegmentation and torch exports with `dynamic_axes`): batch fixed to 1, height
  and width to the size given, since ONNX Runtime's and TensorRT's engines and the explain graph are
  built for static shapes;
* opsets older than 13 (mmsegmentation's deploy configs export opset 11): converted with ONNX's own
  version converter;
* the shape arithmetic that dynamic exports compute at run time (Shape -> Gather -> Concat feeding a
  Resize) folded to constants, with ONNX Runtime's basic graph optimisations (standard ONNX ops only:
  constant folding, BatchNormalization folded into the conv before it, redundant nodes removed);
* channels-last (NHWC) inputs and logits, as Keras and HSI-Drive's own pipeline export them: a Transpose
  in front of the input and behind the logits, so the graph reads and writes (1, C, H, W).

The model's arithmetic is not otherwise touched: the import's self-check runs the result beside the
original on the same input.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, shape_inference, version_converter

from ..model_card import ModelError

TARGET_OPSET = 17  # what the bundled models use; >= 13 is what the explain compiler needs
_FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)
_INT_TYPES = (TensorProto.INT64, TensorProto.INT32, TensorProto.UINT8, TensorProto.INT8)


@dataclass
class PreparedGraph:
    model: onnx.ModelProto
    input: str  # (1, bands, H, W) after preparation
    logits: str  # (1, classes, H, W) after preparation
    source_input_shape: tuple  # as the file declared it (ints, or dimension names)
    layout: str  # the source's input layout: "nchw" or "nhwc"
    logits_layout: str
    source_input: str  # the names in the file as given
    source_logits: str
    changes: list[str] = field(default_factory=list)
    shapes: dict[str, tuple] = field(default_factory=dict)  # every tensor's static shape in `model`

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _dims(value_info) -> tuple:
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in value_info.type.tensor_type.shape.dim)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def graph_inputs(model: onnx.ModelProto) -> list:
    initialisers = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in initialisers]


def choose_layout(shape: tuple, bands: int, layout: str | None, name: str) -> str:
    """"nchw" or "nhwc" for a rank-4 input of `shape`, from which axis holds `bands` (or the user's word)."""
    if len(shape) != 4:
        raise ModelError(f"input {name!r} has shape {shape}: an image model's input has 4 axes")
    if layout is not None:
        axis = 1 if layout == "nchw" else 3
        if shape[axis] != bands:
            raise ModelError(f"input {name!r} has shape {shape}: with --layout {layout} its axis {axis} should be "
                             f"the {bands} bands")
        return layout
    fits = [lay for lay, axis in (("nchw", 1), ("nhwc", 3)) if shape[axis] == bands]
    if not fits:
        raise ModelError(f"input {name!r} has shape {shape}: neither axis 1 (NCHW) nor axis 3 (NHWC) is the "
                         f"{bands} bands --bands gives")
    if len(fits) == 2:
        raise ModelError(f"input {name!r} has shape {shape}: both axis 1 and axis 3 could be the {bands} bands; "
                         "say which with --layout nchw or --layout nhwc")
    return fits[0]


def _fix_input(model: onnx.ModelProto, name: str, layout: str, size: tuple[int, int] | None) -> list[str]:
    """Batch 1 and the given height and width on the input; the other value shapes cleared for re-inference."""
    dims = [d for d in next(v for v in model.graph.input if v.name == name).type.tensor_type.shape.dim]
    h_axis, w_axis = (2, 3) if layout == "nchw" else (1, 2)
    declared = _dims(next(v for v in model.graph.input if v.name == name))
    dynamic = [declared[a] for a in (h_axis, w_axis) if not isinstance(declared[a], int) or declared[a] <= 0]
    if dynamic and size is None:
        raise ModelError(f"input {name!r} has a dynamic height/width {declared}: give the size the node will run "
                         "it at with --input-size HxW (the engines here need static shapes)")
    if size is not None and not dynamic and (declared[h_axis], declared[w_axis]) != tuple(size):
        raise ModelError(f"input {name!r} is fixed at {declared[h_axis]}x{declared[w_axis]} by the file; "
                         f"--input-size {size[0]}x{size[1]} cannot change it (drop --input-size)")
    changes = []
    for axis, value in ((0, 1), (h_axis, size[0] if size else None), (w_axis, size[1] if size else None)):
        if value is None:
            continue
        if not dims[axis].HasField("dim_value") or dims[axis].dim_value != value:
            what = "batch" if axis == 0 else ("height" if axis == h_axis else "width")
            changes.append(f"{what} {declared[axis]!r} -> {value}")
            dims[axis].ClearField("dim_param")
            dims[axis].dim_value = value
    # shapes the exporter wrote for a dynamic graph would contradict the fixed ones: inferred again below
    if changes:
        del model.graph.value_info[:]
        for out in model.graph.output:
            out.type.tensor_type.ClearField("shape")
    return [f"input fixed to batch 1 and {', '.join(changes)}"] if changes else []


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX Runtime's basic (standard-op) optimisations, written back as a model; opset entries it adds for its
    own domains are dropped again when no node uses them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "folded.onnx")
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises its own exception types for a graph it cannot run
            raise ModelError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from None
        folded = onnx.load(options.optimized_model_filepath)
    used = {n.domain for n in folded.graph.node}
    kept = [o for o in folded.opset_import if o.domain in ("", "ai.onnx") or o.domain in used]
    del folded.opset_import[:]
    folded.opset_import.extend(kept)
    foreign = sorted(used - {"", "ai.onnx"})
    if foreign:
        raise ModelError(f"the model uses operators outside standard ONNX (domains {foreign}); export it with "
                         "standard operators only")
    return folded


def static_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and others
        raise ModelError(f"shape inference fails on the prepared graph: {str(exc).splitlines()[0]}") from None
    shapes = {}
    for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        if v.type.tensor_type.HasField("shape"):
            shapes[v.name] = _dims(v)
    return shapes


def find_logits(model: onnx.ModelProto, hw: tuple[int, int], wanted: str | None) -> tuple[str, str]:
    """(output name, "nchw" | "nhwc") of the per-pixel class scores at the input's size.

    Refused with the reason: an output that is already the class index (mmdeploy's default with_argmax),
    logits at another size, several candidates (the user names one with --logits), none at all."""
    shapes = static_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.output}
    h, w = hw
    candidates, argmax_like, described = [], [], []
    for out in model.graph.output:
        s = shapes.get(out.name, ())
        described.append(f"{out.name} {s}")
        if types[out.name] in _INT_TYPES:
            argmax_like.append(out.name)
            continue
        if types[out.name] not in _FLOAT_TYPES or len(s) != 4 or s[0] != 1:
            continue
        if tuple(s[2:]) == (h, w) and s[1] > 1:
            candidates.append((out.name, "nchw"))
        elif tuple(s[1:3]) == (h, w) and s[3] > 1:
            candidates.append((out.name, "nhwc"))
    if wanted is not None:
        found = [c for c in candidates if c[0] == wanted]
        if not found:
            raise ModelError(f"--logits {wanted!r} is not a float (1, classes, {h}, {w}) or (1, {h}, {w}, classes) "
                             f"output; the outputs are: {'; '.join(described)}")
        return found[0]
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        raise ModelError(f"several outputs could be the logits ({', '.join(c[0] for c in candidates)}); name one "
                         "with --logits NAME")
    if argmax_like:
        raise ModelError(f"the model outputs only class indices ({', '.join(argmax_like)}), not per-class scores: "
                         "explanations need the logits. Export them (mmdeploy: codebase_config with_argmax=False; "
                         "torch: return the head's output before argmax)")
    raise ModelError(f"no output holds per-pixel class scores at the input's {h}x{w} (outputs: "
                     f"{'; '.join(described)}); export the logits resized to the input, as mmsegmentation's decode "
                     "head does at inference")


def _transpose_input(model: onnx.ModelProto, name: str) -> str:
    """A new (1, C, H, W) graph input, transposed into the old NHWC one; returns the new input's name."""
    old = next(v for v in model.graph.input if v.name == name)
    n, h, w, c = _dims(old)
    taken = {v.name for v in model.graph.input} | {o for nd in model.graph.node for o in nd.output}
    new = next(s for s in ("input", f"{name}_nchw", f"{name}_nchw_") if s not in taken)
    model.graph.node.insert(0, helper.make_node("Transpose", [new], [name], name=f"{new}_to_nhwc", perm=[0, 2, 3, 1]))
    model.graph.input.remove(old)
    model.graph.input.insert(0, helper.make_tensor_value_info(new, old.type.tensor_type.elem_type, [n, c, h, w]))
    return new


def _transpose_logits(model: onnx.ModelProto, name: str) -> str:
    """The NHWC logits output replaced by its (1, K, H, W) transpose; returns the new output's name."""
    taken = {o for nd in model.graph.node for o in nd.output} | {v.name for v in model.graph.input}
    new = next(s for s in ("logits", f"{name}_nchw", f"{name}_nchw_") if s not in taken)
    model.graph.node.append(helper.make_node("Transpose", [name], [new], name=f"{new}_to_nchw", perm=[0, 3, 1, 2]))
    old = next(v for v in model.graph.output if v.name == name)
    model.graph.output.remove(old)
    model.graph.output.append(helper.make_tensor_value_info(new, old.type.tensor_type.elem_type, None))
    return new


@dataclass
class StaticGraph:
    """A copy of a user's graph with one float input fixed to batch 1 and a static size, at opset >= 13, folded."""

    model: onnx.ModelProto
    input: str
    declared: tuple  # the input's shape as the file declared it
    layout: str  # "nchw" or "nhwc"
    changes: list[str]
    nodes_before: int  # before folding: note_folding reports what the optimisations removed

    def note_folding(self) -> None:
        if len(self.model.graph.node) != self.nodes_before:
            self.changes.append(f"{self.nodes_before} -> {len(self.model.graph.node)} nodes (ONNX Runtime's basic "
                                "optimisations: constants and shape arithmetic folded, batch norms folded into "
                                "their convs)")


def static_graph(model: onnx.ModelProto, channels: int, size: tuple[int, int] | None, layout: str | None,
                 takes: str) -> StaticGraph:
    """What both importers need first: the graph checked, its one input (`channels` on axis 1 or 3) fixed to
    batch 1 and `size`, an old opset converted, and ONNX Runtime's basic optimisations applied."""
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises several unrelated types for a damaged file
        raise ModelError(f"not a valid ONNX model ({str(exc).splitlines()[0]})") from None
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise ModelError(f"the model has {len(inputs)} inputs ({', '.join(v.name for v in inputs)}); {takes}")
    name = inputs[0].name
    if inputs[0].type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ModelError(f"input {name!r} is not float32: export the model with a float32 input")
    declared = _dims(inputs[0])
    layout = choose_layout(declared, channels, layout, name)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    changes = _fix_input(out, name, layout, size)
    if _opset(out) < 13:
        before = _opset(out)
        try:
            out = version_converter.convert_version(out, TARGET_OPSET)
        except Exception as exc:  # the converter raises RuntimeError and others
            raise ModelError(f"opset {before} cannot be converted to {TARGET_OPSET}: {str(exc).splitlines()[0]}; "
                             "re-export with opset >= 13") from None
        changes.append(f"opset {before} -> {TARGET_OPSET} (ONNX version converter)")
    nodes_before = len(out.graph.node)
    return StaticGraph(fold_constants(out), name, declared, layout, changes, nodes_before)


def checked_static_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    """Every tensor's shape, all static (a shape the values decide is refused, naming the tensors)."""
    shapes = static_shapes(model)
    dynamic = [t for t, s in shapes.items() if any(not isinstance(d, int) for d in s)]
    if dynamic:
        raise ModelError(f"tensors keep dynamic shapes after fixing the input ({', '.join(dynamic[:3])}): the model "
                         "computes shapes from values; export it at a fixed size")
    return shapes


def prepare_graph(model: onnx.ModelProto, bands: int, size: tuple[int, int] | None = None,
                  layout: str | None = None, logits: str | None = None) -> PreparedGraph:
    """The static, NCHW, folded graph of a segmentation `model` whose input has `bands` channels."""
    g = static_graph(model, bands, size, layout, "a segmentation model here takes one image")
    out, name, declared, layout, changes = g.model, g.input, g.declared, g.layout, g.changes
    hw = tuple(declared[2:]) if layout == "nchw" else tuple(declared[1:3])
    hw = tuple(size) if size is not None else hw
    logits_name, logits_layout = find_logits(out, hw, logits)
    new_input, new_logits = name, logits_name
    if layout == "nhwc":
        new_input = _transpose_input(out, name)
        changes.append(f"NHWC input {name!r} read from a new NCHW input {new_input!r} through a Transpose")
    if logits_layout == "nhwc":
        new_logits = _transpose_logits(out, logits_name)
        changes.append(f"NHWC logits {logits_name!r} given as NCHW output {new_logits!r} through a Transpose")
    if layout == "nhwc" or logits_layout == "nhwc":
        out = g.model = fold_constants(out)
    g.note_folding()
    return PreparedGraph(out, new_input, new_logits, declared, layout, logits_layout, name, logits_name, changes,
                         checked_static_shapes(out))


def same_outputs(source: onnx.ModelProto, prepared: PreparedGraph, x_nchw: np.ndarray) -> float:
    """Largest |difference| between the source model's logits and the prepared graph's on one input."""
    import onnxruntime as ort

    x_src = x_nchw if prepared.layout == "nchw" else np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
    a = ort.InferenceSession(source.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        [prepared.source_logits], {prepared.source_input: x_src})[0]
    if prepared.logits_layout == "nhwc":
        a = a.transpose(0, 3, 1, 2)
    b = ort.InferenceSession(prepared.model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        [prepared.logits], {prepared.input: x_nchw})[0]
    return float(np.max(np.abs(a - b)))
