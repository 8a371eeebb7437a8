"""Core rules and the pass itself: each rule against torch autograd (float64) on small graphs."""

import pytest
import torch.nn.functional as F

from hsi_xai_node.explain import ExplainError, gradients
from test.explain.harness import check_backward, make_model, node_model, random, torch


def test_relu_including_exact_zeros():
    x = random((1, 3, 5, 6))
    x[0, 0, :2] = 0.0  # PyTorch: zero gradient at 0
    check_backward(node_model("Relu", {"x": x}), lambda x: torch.relu(x), {"x": x}, ["x"])


@pytest.mark.parametrize("op", ["Add", "Sub"])
@pytest.mark.parametrize("b_shape", [(1, 3, 4, 5), (1, 3, 1, 1), (1, 1, 4, 1)])
def test_add_sub_with_broadcasting(op, b_shape):
    a, b = random((1, 3, 4, 5), 1), random(b_shape, 2)
    fn = (lambda a, b: a + b) if op == "Add" else (lambda a, b: a - b)
    check_backward(node_model(op, {"a": a, "b": b}), fn, {"a": a, "b": b}, ["a", "b"])


@pytest.mark.parametrize("stride,pad,dil,groups,k", [
    (1, 1, 1, 1, 3), (1, 0, 1, 1, 3), (1, 2, 2, 1, 3), (1, 1, 1, 4, 3), (1, 1, 1, 8, 3),  # depthwise
    (2, 1, 1, 1, 3), (2, 0, 1, 1, 2), (3, 1, 1, 2, 3), (2, 2, 2, 1, 3), (1, 0, 1, 1, 1), (2, 0, 1, 8, 3)])
def test_conv(stride, pad, dil, groups, k):
    x = random((1, 8, 11, 13), 3)
    w = random((8, 8 // groups, k, k), 4, 0.3)
    bias = random((8,), 5)
    m = node_model("Conv", {"x": x}, {"w": w, "b": bias}, strides=[stride] * 2, pads=[pad] * 4,
                   dilations=[dil] * 2, group=groups)
    check_backward(m, lambda x: F.conv2d(x, torch.tensor(w, dtype=torch.float64), torch.tensor(bias, dtype=torch.float64),
                                         stride, pad, dil, groups), {"x": x}, ["x"])


def test_conv_asymmetric_padding_and_same_upper():
    x = random((1, 4, 9, 10), 6)
    w = random((6, 4, 3, 2), 7, 0.3)
    m = node_model("Conv", {"x": x}, {"w": w}, pads=[1, 0, 0, 1])
    check_backward(m, lambda x: F.conv2d(F.pad(x, (0, 1, 1, 0)), torch.tensor(w, dtype=torch.float64)), {"x": x}, ["x"])
    m = node_model("Conv", {"x": x}, {"w": w}, strides=[2, 2], auto_pad="SAME_UPPER")
    # SAME_UPPER, stride 2, 9x10 input, 3x2 kernel: 5x5 output; rows need (5-1)*2+3-9 = 2 pads (1 + 1), cols 0
    check_backward(m, lambda x: F.conv2d(F.pad(x, (0, 0, 1, 1)), torch.tensor(w, dtype=torch.float64), stride=2),
                   {"x": x}, ["x"])


def test_global_average_pool():
    x = random((1, 4, 6, 7))
    check_backward(node_model("GlobalAveragePool", {"x": x}), lambda x: x.mean(dim=(2, 3), keepdim=True), {"x": x}, ["x"])


def test_concat_and_identity():
    a, b = random((1, 2, 4, 4), 1), random((1, 3, 4, 4), 2)
    check_backward(node_model("Concat", {"a": a, "b": b}, axis=1), lambda a, b: torch.cat([a, b], 1),
                   {"a": a, "b": b}, ["a", "b"])
    check_backward(node_model("Identity", {"a": a}), lambda a: a * 1, {"a": a}, ["a"])


def test_two_paths_accumulate_and_only_the_path_is_differentiated():
    """y = relu(conv(x)) + x: the gradient of x sums both paths; a side branch adds no nodes."""
    from onnx import TensorProto, helper, numpy_helper
    x = random((1, 3, 6, 6))
    w = random((3, 3, 3, 3), 1, 0.3)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "x"], ["y"], name="add"),
             helper.make_node("Sigmoid", ["x"], ["side"], name="side_branch")]  # no rule needed: off the path
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("side", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w")])
    m = make_model(g)
    wt = torch.tensor(w, dtype=torch.float64)
    check_backward(m, lambda x: torch.relu(F.conv2d(x, wt, padding=1)) + x, {"x": x}, ["x"])


def test_unsupported_op_on_the_path_names_op_node_target_and_supported_list():
    x = random((1, 2, 3, 3))
    m = node_model("Erf", {"x": x})
    from onnx import TensorProto, helper
    m.graph.input.append(helper.make_tensor_value_info("seed", TensorProto.FLOAT, [2, 2, 3, 3]))
    with pytest.raises(ExplainError, match=r"no backward rule for op 'Erf' \(node 'erf_under_test'\) on the path "
                                           r"to target 'x' \(gradient\); supported ops: .*Conv.*Relu"):
        gradients(m, {"y": "seed"}, ["x"], batch=2)


def test_unknown_and_unreachable_targets():
    x = random((1, 2, 3, 3))
    m = node_model("Relu", {"x": x})
    from onnx import TensorProto, helper
    m.graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2, 3, 3]))  # reaches nothing
    with pytest.raises(ExplainError, match="tensor 'nope' is not in the graph"):
        gradients(m, {"y": "y"}, ["nope"], batch=1)
    with pytest.raises(ExplainError, match="target 'z' does not influence the seeded outputs"):
        gradients(m, {"y": "y"}, ["z"], batch=1)


def test_drop_unread_removes_what_no_output_reads_and_the_constants_only_it_read():
    """A node no output depends on goes, with the constant only it read; a constant a kept node also reads stays, and
    so does one no node read before (not this pass's to judge)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from hsi_xai_node.explain._graph import drop_unread

    inits = [numpy_helper.from_array(np.ones(3, np.float32), n) for n in ("shared", "dead_only", "never_read")]
    nodes = [helper.make_node("Mul", ["x", "shared"], ["kept"], name="kept"),
             helper.make_node("Add", ["x", "dead_only"], ["dead1"], name="dead1"),
             helper.make_node("Mul", ["dead1", "shared"], ["dead2"], name="dead2"),
             helper.make_node("Relu", ["kept"], ["y"], name="out")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], inits)
    drop_unread(graph)
    assert [n.name for n in graph.node] == ["kept", "out"]
    assert sorted(t.name for t in graph.initializer) == ["never_read", "shared"]
