"""How far two float32 engines may disagree on a graph, derived from the graph's own arithmetic.

Two engines that both compute in float32 but fuse and order their sums differently (ONNX Runtime's
MLAS, OpenVINO's oneDNN kernels, on AVX2 or AVX-512) agree only up to rounding, and rounding scales
with the *terms* of a sum, not with its result: a map made of cancelling terms (sum_k alpha_k A_k with
alpha of both signs) can be small where its terms are large. A yardstick relative to an output's largest
value is therefore wrong for such maps (it failed on an AVX-512 machine at 2.19e-4 against 2e-4). This
module derives the yardstick from the computation instead:

* T, per output element, the sum of the absolute values of the terms that make it: the same graph
  evaluated on magnitudes (`term_magnitudes`): every sum (Add, Sub, Sum, MatMul, Conv, ConvTranspose,
  Gemm, ReduceSum, ReduceMean) on the magnitudes of its inputs and the absolute values of its weights,
  products on magnitudes, copies, resizes, pools and maxima passed through; a division, square root or
  anything else is taken as the magnitude of its own value (one rounding of a result that is not itself a
  sum). The expansion stops at the model's own forward tensors one linear layer deep and at the backward
  pass's outputs (the explain graph's inputs: gradients and activations), whose own rounding is that of a
  single float32 value relative to its terms.
* n, the longest reduction in the graph (elements summed into one value: a Conv's C_in / group x kh x kw,
  a MatMul's inner dimension, the product of the reduced axes of chained Reduce ops, which an engine is free
  to fuse into one sum).
* The bound |a - b| <= LAMBDA * sqrt(n) * u * T with u = 2^-24: the probabilistic rounding-error bound of a
  sum of n terms (Higham and Mary, SIAM J. Sci. Comput. 2019: lambda sqrt(n) u sum|terms| with probability
  at least 1 - 2 exp(-lambda^2 / 2)); LAMBDA = 8, for both engines' errors with a margin. Measured on the
  bundled U-Net (OpenVINO 2026.4.1 against ONNX Runtime 1.32, AVX-512 Xeon): |a - b| / (sqrt(n) u T) at most
  2.1 (Seg-Grad-CAM's mean over 83,200 pixels), 0.5 for most maps. An engine that computes the wrong thing is
  off by about T itself, 10^5 times the bound.

The gradient of a ReLU network is piecewise: where a ReLU input or two max-pool candidates are within
rounding of each other, the two engines may take different pieces, and the elements that depend on it
differ by more than rounding. `BRANCH_SHARE` of an output's elements may do that (none did in the runs above).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

U = 2.0 ** -24  # float32 unit roundoff
LAMBDA = 8.0
BRANCH_SHARE = 1e-3
UINT8_SHARE = 5e-3
LABEL_SHARE = 1e-4  # predicted classes may differ where two logits are within rounding of each other  # grey levels at most 1 apart (a float within rounding of a .5 boundary), at this share

_PASS = {"Relu", "Reshape", "Transpose", "Expand", "Slice", "Squeeze", "Unsqueeze", "Flatten", "Resize", "MaxPool",
         "ReduceMax", "Gather", "Tile"}
_SUMS = {"Add", "Sub", "Sum"}
_LINEAR = {"MatMul", "Gemm", "Conv", "ConvTranspose", "ReduceSum", "ReduceMean"}


def _magnitude_graph(model: onnx.ModelProto, outputs: list[str]) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy of `model` that also outputs T for each of `outputs` (name -> its magnitude output)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    producer = {o: n for n in g.node for o in n.output}
    forward = {o for n in g.node if not n.name.startswith("xai/") for o in n.output}
    consts = {t.name for t in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant"}
    added, memo, count = [], {}, iter(range(10 ** 9))

    def emit(op: str, inputs, **attrs) -> str:
        out = f"magnitude/{op}_{next(count)}"
        added.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def of(t: str, depth: int) -> str:
        if (t, depth) in memo:
            return memo[t, depth]
        n = producer.get(t)
        if n is None or t in consts or n.name.startswith("xai/backward/"):
            r = emit("Abs", [t])
        elif t in forward and n.op_type in _LINEAR and depth <= 0:
            r = emit("Abs", [t])
        else:
            d = depth - 1 if t in forward and n.op_type in _LINEAR else depth
            op, attrs = n.op_type, {a.name: helper.get_attribute_value(a) for a in n.attribute}
            if op in ("Identity", "Neg", "Abs"):
                r = of(n.input[0], d)
            elif op in _PASS:
                r = emit(op, [of(n.input[0], d), *n.input[1:]], **attrs)
            elif op == "Concat":
                r = emit(op, [of(i, d) for i in n.input], **attrs)
            elif op in ("Max", "Min"):
                r = emit("Max", [of(i, d) for i in n.input])
            elif op in _SUMS:
                r = of(n.input[0], d)
                for i in n.input[1:]:
                    r = emit("Add", [r, of(i, d)])
            elif op == "Mul":
                r = emit("Mul", [of(n.input[0], d), of(n.input[1], d)])
            elif op in _LINEAR:
                rest = [i if (not i or op in ("ReduceSum", "ReduceMean")) else of(i, d) for i in n.input[1:]]
                r = emit(op, [of(n.input[0], d), *rest], **attrs)
            elif op == "Where":
                r = emit("Where", [n.input[0], of(n.input[1], d), of(n.input[2], d)])
            else:  # Div, Sqrt, Exp, Sigmoid, ...: one rounding of its own value
                r = emit("Abs", [t])
        memo[t, depth] = r
        return r

    names = {o: of(o, 1) for o in outputs}
    g.node.extend(added)
    for o in names.values():
        g.output.append(helper.make_empty_tensor_value_info(o))
    return m, names


def longest_reduction(model: onnx.ModelProto) -> int:
    """The most elements any single value of the graph sums (chained Reduce ops multiplied)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    for t in model.graph.initializer:
        shapes[t.name] = list(t.dims)
    chained: dict[str, int] = {}  # outputs of Reduce ops: how many elements they sum
    longest = 1
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        op, n = node.op_type, 1
        if op in ("Conv", "ConvTranspose") and node.input[1] in shapes:
            w = shapes[node.input[1]]
            # weights (C_out, C_in / group, kh, kw) for Conv, (C_in, C_out / group, kh, kw) for ConvTranspose
            n = (w[0] // attrs.get("group", 1) if op == "ConvTranspose" else w[1]) * int(np.prod(w[2:]))
        elif op in ("MatMul", "Gemm") and shapes.get(node.input[0]):
            n = shapes[node.input[0]][-1]
        elif op in ("ReduceSum", "ReduceMean") and shapes.get(node.input[0]) and shapes.get(node.output[0]):
            n = max(1, int(np.prod(shapes[node.input[0]])) // max(1, int(np.prod(shapes[node.output[0]]))))
            n *= chained.get(node.input[0], 1)  # a sum of sums: an engine may fuse them into one
            chained[node.output[0]] = n
        elif op == "Sum":
            n = len(node.input)
        longest = max(longest, n)
    return longest


def bounds(model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Per float output in `names`: the largest |a - b| two float32 engines may show at each element."""
    import onnxruntime as ort

    floats = [n for n in names if _elem_type(model, n) == onnx.TensorProto.FLOAT]
    twin, mags = _magnitude_graph(model, floats)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    session = ort.InferenceSession(twin.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    t = dict(zip(floats, session.run([mags[n] for n in floats], feeds)))
    scale = LAMBDA * math.sqrt(longest_reduction(model)) * U
    return {n: scale * v for n, v in t.items()}


def _elem_type(model: onnx.ModelProto, name: str) -> int:
    return next(o.type.tensor_type.elem_type for o in model.graph.output if o.name == name)


def assert_within(x: np.ndarray, y: np.ndarray, bound: np.ndarray, name: str = "") -> None:
    """|x - y| <= bound at all but BRANCH_SHARE of the elements."""
    diff = np.abs(x.astype(np.float64) - y)
    over = diff > bound
    worst = float((diff / np.maximum(bound, 1e-45)).max())
    assert over.mean() <= BRANCH_SHARE, (name, f"{over.mean():.2e} of the elements beyond the bound; worst "
                                               f"{worst:.1f}x the bound")


def assert_agree(a: dict, b: dict, bound: dict[str, np.ndarray], argmax_of: str | None = None,
                 labels=()) -> None:
    """`a` and `b` (output name -> array, from two engines) agree: float outputs within `bound` at all but
    BRANCH_SHARE of their elements, uint8 maps at most 1 grey level apart at UINT8_SHARE of their pixels,
    integer outputs and `labels` (class indices) equal at all but LABEL_SHARE of their elements, and so the
    argmax of `argmax_of` over axis 1."""
    for name, x in a.items():
        y = b[name]
        assert x.shape == y.shape and x.dtype == y.dtype, name
        if x.dtype == np.uint8 and name not in labels:
            diff = np.abs(x.astype(int) - y.astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() <= UINT8_SHARE, (name, diff.max(), (diff > 0).mean())
        elif x.dtype.kind == "f":
            assert_within(x, y, bound[name], name)
        else:  # class indices (the predicted class per pixel): the same but at near ties
            assert (x != y).mean() <= LABEL_SHARE, (name, (x != y).mean())
    if argmax_of:
        same = (a[argmax_of].argmax(1) == b[argmax_of].argmax(1)).mean()
        assert same >= 1 - LABEL_SHARE, same
