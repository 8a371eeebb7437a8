"""Static TensorRT 10 compatibility check of an ONNX graph, for machines without TensorRT.

The facts are those of the TensorRT 10 ONNX parser: its operator table, and where the table
is silent, the parser's own importers and static checkers at the same commit; every message
ends with its source: "(table)", "(parser importer)" or "(parser static check)". The check is
conservative where a limit can only be verified at run time (TopK's K must be a constant), and
where the importer goes beyond the table (it has a cubic Resize path the table does not list).

Policy on DOUBLE: the parser accepts it but computes it as FLOAT (weights clamped to
+-FLT_MAX, bindings become float32), so what ONNX Runtime verified in float64 is not what the
engine runs. The check therefore reports every DOUBLE tensor at its source; export in FLOAT.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as TP
from onnx import helper, numpy_helper, shape_inference

from ._graph import ExplainError

# onnx-tensorrt docs/operators.md, tag release/10.1-GA (commit 96e7811); its table is headed TensorRT 10.0.
OPSET_RANGE = (9, 20)

_F = frozenset({TP.FLOAT, TP.FLOAT16, TP.BFLOAT16})
_N = _F | {TP.INT32, TP.INT64}
_A = _N | {TP.BOOL}
_CAST = _A | {TP.UINT8}
_QUANTIZED = frozenset({TP.INT8, TP.INT4, TP.FLOAT8E4M3FN})  # only as Q/DQ weights


def _ops(types, names: str) -> dict[str, frozenset[int]]:
    return dict.fromkeys(names.split(), frozenset(types))


# Every op the table marks Y, with the types its "Supported Types" column lists for the op's data input.
SUPPORTED_OPS: dict[str, frozenset[int]] = {
    **_ops(_F, "Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv "
               "ConvTranspose Cos Cosh CumSum Dropout Einsum Elu Erf Exp Floor GRU Gemm GlobalAveragePool "
               "GlobalLpPool GlobalMaxPool GroupNormalization HardSigmoid HardSwish Hardmax ImageScaler "
               "InstanceNormalization IsInf LRN LSTM LayerNormalization LeakyRelu Log LogSoftmax "
               "LpNormalization LpPool MatMul MaxPool MeanVarianceNormalization PRelu ParametricSoftplus Pow "
               "QuantizeLinear RNN RandomNormal RandomNormalLike RandomUniform RandomUniformLike Reciprocal "
               "Resize Round ScaledTanh Scan Selu Sigmoid Sin Sinh Softmax Softplus Softsign Sqrt Tan Tanh "
               "ThresholdedRelu Upsample"),
    **_ops({TP.FLOAT, TP.FLOAT16}, "DeformConv GridSample Mish NonMaxSuppression NonZero RoiAlign"),
    **_ops(_N, "Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less LessOrEqual "
               "Max Min Mod Mul Neg Pad Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax "
               "ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Scatter ScatterElements "
               "ScatterND Shrink Sign SpaceToDepth Sub Sum TopK"),
    **_ops(_N | {TP.INT8}, "Gelu"),
    **_ops(_N | {TP.FLOAT8E4M3FN}, "Mean"),
    **_ops(_A, "Concat Constant ConstantOfShape Expand EyeLike Flatten Gather GatherElements GatherND "
               "Identity If Loop OneHot Reshape ReverseSequence Shape Size Slice Split Squeeze Tile Transpose "
               "Trilu Unsqueeze Where"),
    **_ops(_CAST, "Cast CastLike"),
    **_ops({TP.BOOL}, "And Not Or Xor"),
    **_ops(_QUANTIZED, "DequantizeLinear"),
}
_DATA_INPUT = {"Where": 1}  # which input carries the listed type (default 0)
_NO_TYPE_CHECK = {"Constant", "ConstantOfShape", "If", "Loop", "Scan"}  # types live in attributes/bodies

_IO_TYPES = _CAST | {TP.INT8}
_WEIGHT_TYPES = _A | _QUANTIZED
_DOUBLE = ("DOUBLE is computed as FLOAT by TensorRT (clamped to +-FLT_MAX, float32 bindings), so ONNX "
           "Runtime's float64 result is not what the engine runs: use FLOAT")
_UINT8 = "UINT8 tensors are supported only as network inputs/outputs, converted by Cast at the boundary"
_RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
_TOPK_MAX_K = 3840


def _type_name(t: int) -> str:
    return TP.DataType.Name(t) if t in TP.DataType.values() else str(t)


def _attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _default_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _dims(t: onnx.TypeProto.Tensor | None) -> tuple | None:
    """Static dims (None for an unknown dim), or None when not even the rank is known."""
    if t is None or not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)


class _Checker:
    def __init__(self, model: onnx.ModelProto, where: str):
        self.where, self.problems = where, []
        self.opset = _default_opset(model) or 0
        try:  # types of intermediate tensors; custom ops simply stay untyped
            inferred = shape_inference.infer_shapes(model, strict_mode=False)
        except Exception:  # a broken graph still gets every other check
            inferred = model
        self.types: dict[str, onnx.TypeProto.Tensor] = {}
        self.values: dict[str, onnx.TensorProto] = {}
        self._collect_types(inferred.graph)
        g = model.graph
        self.io = {v.name for v in g.input} | {v.name for v in g.output}

    def _collect_types(self, graph: onnx.GraphProto) -> None:
        for v in [*graph.input, *graph.value_info, *graph.output]:
            if v.type.HasField("tensor_type"):
                self.types[v.name] = v.type.tensor_type
        for t in graph.initializer:
            self.values[t.name] = t
            self.types[t.name] = onnx.TypeProto.Tensor(elem_type=t.data_type, shape=onnx.TensorShapeProto(
                dim=[onnx.TensorShapeProto.Dimension(dim_value=d) for d in t.dims]))
        for n in graph.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.values[n.output[0]] = n.attribute[0].t
            for a in n.attribute:
                for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs:
                    self._collect_types(sub)

    def tensor_value(self, name: str) -> np.ndarray | None:
        t = self.values.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def elem(self, name: str) -> int:
        t = self.types.get(name)
        return t.elem_type if t is not None else TP.UNDEFINED

    def add(self, where: str, what: str, reason: str) -> None:
        self.problems.append(f"{where}: {what}: {reason}")

    # --- whole model ---------------------------------------------------------------------------
    def run(self, model: onnx.ModelProto) -> list[str]:
        lo, hi = OPSET_RANGE
        if not lo <= self.opset <= hi:
            self.add(self.where, "model", f"default-domain opset {self.opset or 'missing'} is outside the "
                     f"parser's range {lo}..{hi}")
        g = model.graph
        for kind, values in (("graph input", g.input), ("graph output", g.output)):
            for v in values:  # dynamic dims are fine: TensorRT takes them through optimisation profiles
                t = v.type.tensor_type.elem_type if v.type.HasField("tensor_type") else TP.UNDEFINED
                if t == TP.DOUBLE:
                    self.add(self.where, f"{kind} {v.name!r}", _DOUBLE)
                elif t not in _IO_TYPES:
                    self.add(self.where, f"{kind} {v.name!r}",
                             "not a tensor" if t == TP.UNDEFINED else f"type {_type_name(t)} is not a TensorRT type")
        self.graph(g, self.where, set())
        return self.problems

    def graph(self, g: onnx.GraphProto, where: str, outer_consts: set[str]) -> None:
        consts = outer_consts | {t.name for t in g.initializer}
        consts |= {n.output[0] for n in g.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx")}
        for t in g.initializer:
            reason = _weight_problem(t.data_type)
            if reason:
                self.add(where, f"initializer {t.name!r}", reason)
        for i, node in enumerate(g.node):
            self.node(node, f"{node.op_type} node {node.name or f'#{i} (unnamed)'!r}", where, consts)

    # --- one node --------------------------------------------------------------------------------
    def node(self, node: onnx.NodeProto, what: str, where: str, consts: set[str]) -> None:
        if node.domain not in ("", "ai.onnx"):
            self.add(where, what, f"custom domain {node.domain!r} would need a TensorRT plugin")
            return
        if node.op_type not in SUPPORTED_OPS:
            self.add(where, what, "not supported by the TensorRT 10 ONNX parser")
            return
        reasons: list[str] = []
        a = _attrs(node)
        self.tensor_types(node, reasons)
        rule = _RULES.get(node.op_type)
        if rule is not None:
            reasons += rule(self, node, a, consts)
        for r in reasons:
            self.add(where, what, r)
        for attr in node.attribute:  # If/Loop/Scan bodies: the same rules, with outer constants visible
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                self.graph(sub, f"{where}/{node.op_type}[{node.name}].{attr.name}", consts)

    def tensor_types(self, node: onnx.NodeProto, reasons: list[str]) -> None:
        # UINT8 may only cross the network boundary through Cast (the table's UINT8 note).
        if node.op_type == "Constant":  # its value attribute is judged as a weight instead
            return
        boundary_ok = node.op_type in ("Cast", "CastLike")
        for name in [*node.input, *node.output]:
            if name in self.values:  # initializers are reported once, where they are declared
                continue
            if name and self.elem(name) == TP.UINT8 and not (boundary_ok and name in self.io):
                reasons.append(f"tensor {name!r}: {_UINT8}")
        if node.op_type in _NO_TYPE_CHECK:
            return
        idx = _DATA_INPUT.get(node.op_type, 0)
        t = self.elem(node.input[idx]) if len(node.input) > idx and node.input[idx] else TP.UNDEFINED
        # DOUBLE and UINT8 are reported where they arise; unknown types cannot be judged
        if t not in (TP.UNDEFINED, TP.DOUBLE, TP.UINT8) and t not in SUPPORTED_OPS[node.op_type]:
            reasons.append(f"input type {_type_name(t)} is not supported for this op")


def _weight_problem(t: int) -> str | None:
    """Initializers and Constant values become TensorRT weights: TensorRT types only, no UINT8."""
    if t == TP.DOUBLE:
        return _DOUBLE
    if t == TP.UINT8:
        return _UINT8
    return None if t in _WEIGHT_TYPES else f"type {_type_name(t)} is not a TensorRT type"


def _const_input(node, i: int, consts: set[str]) -> str | None:
    """The input's name when it is present and not an initializer/Constant (i.e. a problem)."""
    return node.input[i] if len(node.input) > i and node.input[i] and node.input[i] not in consts else None


def _must_be_const(i: int, what: str):
    def rule(c, node, a, consts):
        name = _const_input(node, i, consts)
        return [f"{what} ({name!r}) must be an initializer or Constant (table)"] if name else []
    return rule


def _pool(c, node, a, consts):
    out = []
    if any(d != 1 for d in a.get("dilations", [])):
        out.append("dilations must be all ones (table)")
    if len(a.get("kernel_shape", [0, 0])) > 3:  # table says 2-D/3-D; the parser expands 1-D to 2-D itself
        out.append("only 2-D or 3-D pooling (table)")
    if node.op_type == "MaxPool" and len(node.output) > 1:
        out.append("the Indices output is unsupported (table): drop the second output")
    return out


def _batchnorm(c, node, a, consts):
    return ["training_mode must be 0 (parser static check)"] if a.get("training_mode", 0) else []


def _cast(c, node, a, consts):
    to = a.get("to", TP.UNDEFINED)
    if to == TP.DOUBLE:
        return [f"cast to {_DOUBLE}"]
    # a UINT8 result that is not a graph output is reported by the UINT8 tensor rule
    return [] if to in _CAST else [f"cast to {_type_name(to)} is unsupported (table: Cast types)"]


def _constant(c, node, a, consts):
    out = [f"attribute {k} is unsupported (table)" for k in ("sparse_value", "value_string", "value_strings") if k in a]
    reason = _weight_problem(a["value"].data_type) if isinstance(a.get("value"), onnx.TensorProto) else None
    return out + ([f"value: {reason}"] if reason else [])


def _constant_of_shape(c, node, a, consts):
    t = a["value"].data_type if "value" in a else TP.FLOAT
    if t == TP.DOUBLE:
        return [f"value: {_DOUBLE}"]
    return [] if t in _A else [f"value type {_type_name(t)} is unsupported (table; the parser rejects UINT8)"]


def _resize(c, node, a, consts):
    out = []
    mode = a.get("mode", "nearest")
    if mode not in ("nearest", "linear"):  # the 10.1 importer has an undocumented 2-D cubic path; not relied on
        out.append(f"mode {mode!r} is unsupported: only nearest and linear (table)")
    coord = a.get("coordinate_transformation_mode", "half_pixel")
    if c.opset >= 11 and coord not in _RESIZE_COORDS:
        out.append(f"coordinate_transformation_mode {coord!r} is unsupported (table)")
    nearest = a.get("nearest_mode", "round_prefer_floor")
    if nearest not in _RESIZE_NEAREST:
        out.append(f"nearest_mode {nearest!r} is unsupported (table)")
    if coord == "tf_half_pixel_for_nn" and nearest != "round_prefer_floor":
        out.append("tf_half_pixel_for_nn needs nearest_mode round_prefer_floor (parser static check)")
    if a.get("antialias", 0):
        out.append("antialias is unsupported (table)")
    if a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        out.append("keep_aspect_ratio_policy must be stretch (table)")
    axes = list(a.get("axes", []))
    if len(set(axes)) != len(axes):
        out.append("axes must be unique (parser static check)")
    scales = node.input[2] if len(node.input) > 2 and node.input[2] else None
    rank = _dims(c.types.get(node.input[0]))
    if scales and scales not in consts and axes:
        if axes != list(range(len(axes))) or (rank is not None and len(axes) != len(rank)):
            out.append("with a non-constant scales input, axes must be 0..rank-1 in order (table)")
    if scales in consts and mode == "linear" and c.tensor_value(scales) is not None:
        s = c.tensor_value(scales).ravel()
        if (s[:-3] != 1).any():  # parser's importer: only the innermost 3 dims may resize linearly
            out.append("linear resize only on the innermost 3 dimensions (parser importer)")
    return out


def _pad(c, node, a, consts):
    out = _must_be_const(3, "axes")(c, node, a, consts)
    mode = a.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        out.append(f"mode {mode!r} is unsupported (parser importer)")
    return out


def _argminmax(c, node, a, consts):
    if a.get("select_last_index", 0) and c.opset < 12:
        return ["select_last_index needs opset >= 12 (parser static check)"]
    return []


def _topk(c, node, a, consts):
    out = [] if a.get("sorted", 1) == 1 else ["sorted must be 1 (table)"]
    if c.opset < 10:
        return out if "k" in a else out + ["attribute k is missing"]
    k = node.input[1] if len(node.input) > 1 else ""
    if k not in consts:  # the table's K limit can only be verified statically on a constant
        out.append(f"K ({k!r}) must be an initializer or Constant so that K < {_TOPK_MAX_K} can be checked")
    elif c.tensor_value(k) is not None and int(c.tensor_value(k).ravel()[0]) >= _TOPK_MAX_K:
        out.append(f"K must be less than {_TOPK_MAX_K} (table)")
    return out


def _scatter_nd(c, node, a, consts):
    # the 10.1 importer refuses the attribute's mere presence, so even reduction="none" fails
    return [f"reduction attribute ({a['reduction']!r}) is unsupported (table)"] if "reduction" in a else []


def _scatter_elements(c, node, a, consts):
    red = a.get("reduction", "none")
    return [] if red == "none" else [f"reduction {red!r} is not a TensorRT layer: the parser maps it to the "
                                     "ScatterElements plugin (parser importer)"]


def _slice(c, node, a, consts):
    out = _must_be_const(3, "axes")(c, node, a, consts)
    if c.opset >= 10 and not 3 <= len(node.input) <= 5:
        out.append("needs 3 to 5 inputs (parser static check)")
    return out


def _dropout(c, node, a, consts):
    if c.opset <= 6:
        return [] if a.get("is_test", 1) else ["is_test must be 1 (parser static check)"]
    name = _const_input(node, 2, consts)
    if name:
        return [f"training_mode ({name!r}) must be an initializer evaluating to False (table)"]
    value = c.tensor_value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    return ["training_mode must be False (table)"] if value is not None and value.any() else []


def _zero_point(i: int, what: str):
    def rule(c, node, a, consts):
        if len(node.input) <= i or not node.input[i]:
            return []
        value = c.tensor_value(node.input[i])
        return [] if value is not None and not value.any() else [f"{what} must be a constant zero (table)"]
    return rule


def _first_output_only(what: str):
    def rule(c, node, a, consts):
        return [f"only the first output is supported ({what}) (table)"] if any(node.output[1:]) else []
    return rule


def _lstm(c, node, a, consts):
    return [f"{k} must be 0 (table)" for k in ("input_forget", "layout") if a.get(k, 0)]


def _lp(c, node, a, consts):
    out = [] if a.get("p", 2) in (1, 2) else ["p must be 1 or 2 (parser static check)"]
    return out + (_pool(c, node, a, consts) if node.op_type == "LpPool" else [])


def _upsample(c, node, a, consts):
    mode = a.get("mode", "nearest")
    return [] if mode in ("nearest", "linear", "bilinear") else [f"mode {mode!r} is unsupported (parser static check)"]


def _if(c, node, a, consts):
    then, other = a["then_branch"], a["else_branch"]
    if len(then.output) != len(other.output):
        return ["then/else branches must have the same number of outputs (parser static check)"]
    out = []
    for t, e in zip(then.output, other.output):
        if t.name == e.name:
            out.append(f"branch outputs must have different names, both are {t.name!r} (table)")
        rt, re_ = _dims(t.type.tensor_type), _dims(e.type.tensor_type)
        rt, re_ = rt or _dims(c.types.get(t.name)), re_ or _dims(c.types.get(e.name))
        if rt is not None and re_ is not None and len(rt) != len(re_):
            out.append(f"branch outputs {t.name!r}/{e.name!r} must have the same rank (table)")
    return out


def _loop(c, node, a, consts):
    body, out = a["body"], []
    carried = len(node.input) - 2
    trip = node.input[0] if node.input else ""
    if len(body.output) > 1 + carried and (not trip or trip not in consts):
        out.append(f"scan outputs need a constant trip count M (got {trip or 'none'!r}): their length cannot be "
                   "dynamic (table)")
    for i in range(carried):
        before = _dims(c.types.get(body.input[2 + i].name))
        after = _dims(c.types.get(body.output[1 + i].name))
        if before is not None and after is not None and (len(before) != len(after) or any(
                x is not None and y is not None and x != y for x, y in zip(before, after))):
            out.append(f"carried value {body.input[2 + i].name!r} changes shape {before} -> {after} (table)")
    return out


_REDUCE_AXES = _must_be_const(1, "axes")
_RULES = {
    "MaxPool": _pool, "AveragePool": _pool, "BatchNormalization": _batchnorm, "Cast": _cast,
    "Constant": _constant, "ConstantOfShape": _constant_of_shape, "Resize": _resize, "Pad": _pad,
    "ArgMax": _argminmax, "ArgMin": _argminmax, "TopK": _topk, "ScatterND": _scatter_nd,
    "ScatterElements": _scatter_elements, "Scatter": _scatter_elements, "Slice": _slice,
    "Squeeze": _must_be_const(1, "axes"), "Unsqueeze": _must_be_const(1, "axes"),
    "CumSum": _must_be_const(1, "axis"), "OneHot": _must_be_const(1, "depth"), "Dropout": _dropout,
    "QuantizeLinear": _zero_point(2, "y_zero_point"), "DequantizeLinear": _zero_point(2, "x_zero_point"),
    "LayerNormalization": _first_output_only("Y"), "LSTM": _lstm, "LpNormalization": _lp, "LpPool": _lp,
    "Upsample": _upsample, "If": _if, "Loop": _loop,
    **{op: _REDUCE_AXES for op in SUPPORTED_OPS if op.startswith("Reduce")},
}


def check_tensorrt(model: onnx.ModelProto, where: str = "model") -> list[str]:
    """Every reason the TensorRT 10 ONNX parser would reject `model`; an empty list means none found."""
    return _Checker(model, where).run(model)


def assert_tensorrt_compatible(model: onnx.ModelProto, where: str = "model") -> None:
    """Raise ExplainError listing every problem `check_tensorrt` finds."""
    problems = check_tensorrt(model, where)
    if problems:
        raise ExplainError(f"{where} is not TensorRT 10 compatible ({len(problems)} problem"
                           f"{'s' if len(problems) > 1 else ''}):\n  - " + "\n  - ".join(problems))
