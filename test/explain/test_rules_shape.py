"""Data-movement and linear-layer rules against torch autograd (float64), and their clear failures."""

import numpy as np
import pytest
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from hsi_xai_node.explain import ExplainError, gradients
from test.explain.harness import check_backward, make_model, node_model, random, torch

INT_MAX, INT_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


def graph_model(nodes, inputs: dict, consts: dict | None = None, opset: int = 17):
    """A model from `nodes` (op, inputs, output name or names, attrs) with graph output 'y'."""
    return make_model(helper.make_graph(
        [helper.make_node(op, ins, [out] if isinstance(out, str) else out, name=f"n{i}", **attrs)
         for i, (op, ins, out, attrs) in enumerate(nodes)], "t",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()]), opset)


def fails(model, targets, match, seed_shape):
    model.graph.input.append(helper.make_tensor_value_info("seed", TensorProto.FLOAT, list(seed_shape)))
    with pytest.raises(ExplainError, match=match):
        gradients(model, {"y": "seed"}, targets, batch=seed_shape[0])


def t64(a):
    return torch.tensor(a, dtype=torch.float64)


# --- Split ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("opset,split,attrs,dim,seeded,sizes", [
    (17, [1, 3, 2], {"axis": 1}, 1, "y1", [1, 3, 2]),  # sizes as input; y0, y2 get zero cotangents
    (13, None, {"axis": -1}, 3, "y2", [2, 2, 2]),  # equal split
    (18, None, {"axis": 2, "num_outputs": 3}, 2, "y0", [2, 2, 2])])
def test_split_outputs_without_cotangent_contribute_zeros(opset, split, attrs, dim, seeded, sizes):
    x = random((1, 6, 6, 6))
    consts = {"s": np.array(split, np.int64)} if split else {}
    m = node_model("Split", {"x": x}, consts, n_outputs=3, opset=opset, **attrs)
    k = int(seeded[1])
    check_backward(m, lambda x: torch.split(x, sizes, dim)[k], {"x": x}, ["x"], output=seeded)


def test_split_uneven_num_outputs_and_both_halves_used():
    x = random((1, 7, 3))
    m = node_model("Split", {"x": x}, n_outputs=3, opset=18, axis=1, num_outputs=3)  # 3, 3, 1
    check_backward(m, lambda x: torch.split(x, [3, 3, 1], 1)[2], {"x": x}, ["x"], output="y2")
    m = graph_model([("Split", ["x", "s"], ["a", "b"], {"axis": 1}), ("Concat", ["b", "a"], "y", {"axis": 1})],
                    {"x": x}, {"s": np.array([3, 4], np.int64)})
    check_backward(m, lambda x: torch.cat(torch.split(x, [3, 4], 1)[::-1], 1), {"x": x}, ["x"])


def test_split_along_the_batch_axis_fails():
    fails(node_model("Split", {"x": random((1, 4))}, n_outputs=1, axis=0), ["x"], "along the batch axis", (2, 4))


# --- Concat --------------------------------------------------------------------------------------
@pytest.mark.parametrize("sizes, sliced", [((3, 5), True), ((16, 16), True), ((24, 24), False)])
def test_concat_parts_come_from_their_own_channels_of_the_backward_convolution(sizes, sliced):
    """x through two 1x1 convolutions, concatenated, then a 3x3 convolution (a U-Net decoder's skip and up-sampled
    input): the concatenation's cotangent is that convolution's backward, so each part's is the backward convolution
    for the part's own output channels, not a Slice of the whole; except where a part would lose the blocked layout
    the whole has in ONNX Runtime (24 + 24 output channels read from 16). Against torch autograd."""
    from hsi_xai_node.explain._graph import drop_unread

    ca, cb = sizes
    x = random((1, 16, 6, 6))
    # scaled by 1 / sqrt(fan-in): outputs of order 1, where float32 rounding stays within the forward check
    wa, wb = random((ca, 16, 1, 1), seed=1, scale=0.25), random((cb, 16, 1, 1), seed=2, scale=0.25)
    wc = random((16, ca + cb, 3, 3), seed=3, scale=1 / np.sqrt(9 * (ca + cb)))
    m = graph_model([("Conv", ["x", "wa"], "a", {}), ("Conv", ["x", "wb"], "b", {}),
                     ("Concat", ["a", "b"], "k", {"axis": 1}), ("Conv", ["k", "wc"], "y", {"pads": [1, 1, 1, 1]})],
                    {"x": x}, {"wa": wa, "wb": wb, "wc": wc})
    check_backward(m, lambda x: F.conv2d(torch.cat([F.conv2d(x, t64(wa)), F.conv2d(x, t64(wb))], 1), t64(wc),
                                         padding=1), {"x": x}, ["x"])
    m.graph.input.append(helper.make_tensor_value_info("seed", TensorProto.FLOAT, [3, 16, 6, 6]))
    m, grads = gradients(m, {"y": "seed"}, ["x"], batch=3)
    m.graph.output.append(helper.make_tensor_value_info(grads["x"], TensorProto.FLOAT, None))
    drop_unread(m.graph)
    slices = [n for n in m.graph.node if n.op_type == "Slice"]
    convs = [n for n in m.graph.node if n.op_type == "Conv" and "concat_grad" in n.output[0]]
    assert (len(slices), len(convs)) == ((0, 2) if sliced else (2, 0))


# --- Slice ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([1], [5], [1], None),
    ([-5, -3], [-1, 100], [2, -1], None),  # negative starts/ends, ends past the dim, negative axis
    ([0, 1, 2, 3], [1, 4, 6, INT_MAX], None, None),  # no axes: all, batch axis kept whole
    ([1], [7], [2], [2]),
    ([0], [8], [3], [3]),  # rows 0, 3, 6: the spread overshoots the end and is trimmed
    ([-1], [INT_MIN], [1], [-1]),  # reversal
    ([5], [0], [2], [-2]),
    ([4, 1, 0], [-100, 8, 1], [1, 3, 0], [-3, 2, 1])])
def test_slice(starts, ends, axes, steps):
    x = random((1, 6, 7, 8))
    consts = {"starts": np.array(starts), "ends": np.array(ends)}
    if axes is not None:
        consts["axes"] = np.array(axes)
    if steps is not None:
        consts["steps"] = np.array(steps)
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps

    def ref(x):  # index_select: torch slicing has no negative steps
        for s, e, a, st in zip(starts, ends, axes, steps):
            rows = range(*slice(s, e, st).indices(x.shape[a]))
            x = torch.index_select(x, a, torch.tensor(list(rows)))
        return x
    check_backward(node_model("Slice", {"x": x}, consts), ref, {"x": x}, ["x"])


def test_empty_slice_gives_a_zero_gradient():
    x = random((1, 4, 5))
    m = graph_model([("Slice", ["x", "s", "e", "a"], "z", {}), ("Concat", ["z", "x"], "y", {"axis": 1})], {"x": x},
                    {"s": np.array([3]), "e": np.array([1]), "a": np.array([1])})
    check_backward(m, lambda x: torch.cat([x[:, 4:], x], 1), {"x": x}, ["x"])


def test_slice_failures():
    x = random((1, 4, 5))
    m = node_model("Slice", {"x": x}, {"s": np.array([0]), "e": np.array([0]), "a": np.array([0])})
    fails(m, ["x"], "slicing the batch axis", (2, 0, 4, 5))
    m = node_model("Slice", {"x": x, "s": np.array([1], np.float32)}, {"e": np.array([3])})
    m.graph.input[1].type.tensor_type.elem_type = TensorProto.INT64
    m.graph.output[0].type.tensor_type.ClearField("shape")
    fails(m, ["x"], r"starts \('s'\) must be a constant", (2, 4, 5))


# --- Reshape, Flatten, Transpose -----------------------------------------------------------------
def test_reshape_flatten_transpose_round_trip():
    x, w = random((1, 3, 4, 5)), random((1, 60), 1)
    m = graph_model([("Transpose", ["x"], "t", {"perm": [0, 2, 3, 1]}), ("Reshape", ["t", "s"], "r", {}),
                     ("Transpose", ["r"], "u", {"perm": [0, 2, 1]}), ("Flatten", ["u"], "f", {}),
                     ("Mul", ["f", "w"], "v", {}), ("Reshape", ["v", "back"], "y", {})],
                    {"x": x}, {"s": np.array([1, 20, -1]), "w": w, "back": np.array([1, 3, 4, 5])})
    check_backward(m, lambda x: (x.permute(0, 2, 3, 1).reshape(1, 20, 3).permute(0, 2, 1).reshape(1, 60) * t64(w))
                   .reshape(1, 3, 4, 5), {"x": x}, ["x"])
    check_backward(node_model("Flatten", {"x": x}, axis=0), lambda x: x.reshape(1, 60), {"x": x}, ["x"])


def test_reshape_flatten_transpose_moving_the_batch_axis_fail():
    x = random((1, 3, 4, 5))
    fails(node_model("Reshape", {"x": x}, {"s": np.array([3, 20])}), ["x"], r"reshaping \(1, 3, 4, 5\) to \(3, 20\) "
          "moves the batch axis", (2, 20))
    fails(node_model("Flatten", {"x": x}, axis=2), ["x"], "moves the batch axis", (2, 20))
    fails(node_model("Transpose", {"x": x}), ["x"], r"perm \[3, 2, 1, 0\] moves the batch axis", (2, 4, 3, 1))


# --- Gemm, MatMul --------------------------------------------------------------------------------
@pytest.mark.parametrize("trans_b", [1, 0])
def test_gemm_linear_layer_after_flatten(trans_b):
    x, w, bias = random((1, 3, 4, 4)), random((10, 48), 1, 0.2), random((10,), 2)
    wb = w if trans_b else w.T.copy()
    m = graph_model([("Flatten", ["x"], "f", {}),
                     ("Gemm", ["f", "w", "c"], "y", {"transB": trans_b, "alpha": 0.7, "beta": 0.3})],
                    {"x": x}, {"w": wb, "c": bias})
    check_backward(m, lambda x: 0.7 * F.linear(x.flatten(1), t64(w)) + 0.3 * t64(bias), {"x": x}, ["x"])


def test_gemm_failures():
    a, w = random((1, 6)), random((6, 4), 1)
    fails(node_model("Gemm", {"a": a, "w": w}), ["w"], "B and C must not depend on the target", (2, 4))
    fails(node_model("Gemm", {"a": random((6, 1))}, {"w": w}, transA=1), ["a"], r"A must be \(1, K\)", (2, 4))


@pytest.mark.parametrize("x_shape,w_shape", [((1, 6), (6, 4)), ((1, 5, 6), (6, 4)), ((1, 3, 5, 6), (6, 4)),
                                             ((1, 1, 3, 6), (2, 6, 4))])  # x broadcast over w's leading axis
def test_matmul_left_operand_on_the_path(x_shape, w_shape):
    x, w = random(x_shape), random(w_shape, 1)
    check_backward(node_model("MatMul", {"x": x}, {"w": w}), lambda x: x @ t64(w), {"x": x}, ["x"])


def test_matmul_right_operand_on_the_path():
    x, w = random((1, 5, 6)), random((4, 5), 1)
    check_backward(node_model("MatMul", {"x": x}, {"w": w}, input_order=["w", "x"]), lambda x: t64(w) @ x,
                   {"x": x}, ["x"])


@pytest.mark.parametrize("a_shape,b_shape", [((1, 1, 3, 4), (1, 2, 4, 5)), ((1, 3, 1), (1, 1, 4))])  # K = 1
def test_matmul_both_operands_on_the_path(a_shape, b_shape):
    a, b = random(a_shape, 1), random(b_shape, 2)
    check_backward(node_model("MatMul", {"a": a, "b": b}), lambda a, b: a @ b, {"a": a, "b": b}, ["a", "b"])


def test_matmul_failures():
    fails(node_model("MatMul", {"x": random((1, 4))}, {"w": random((3, 1))}, input_order=["w", "x"]), ["x"],
          r"operand 'x' of shape \(1, 4\) on the path must keep batch 1 on axis 0 .* \(>= 3 on the right\)", (2, 4))
    fails(node_model("MatMul", {"x": random((1, 4))}, {"v": random((4,))}), ["x"], "1-D operands", (2,))


# --- Softmax -------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [1, -1, 2])
def test_softmax(axis):
    x = random((1, 4, 3, 5), 0, 2.0)
    check_backward(node_model("Softmax", {"x": x}, axis=axis), lambda x: torch.softmax(x, axis), {"x": x}, ["x"])


def test_softmax_over_the_batch_axis_fails():
    fails(node_model("Softmax", {"x": random((1, 4))}, axis=0), ["x"], "over the batch axis", (2, 4))
