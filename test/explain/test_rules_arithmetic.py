"""Mul and Div rules against torch autograd (float64), including both factors on the path."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from hsi_xai_node.explain import ExplainError, gradients
from test.explain.harness import check_backward, make_model, node_model, random, torch


def graph_model(nodes, inputs: dict, consts: dict | None = None):
    """A model from `nodes` (op, inputs, output, attrs) with graph output 'y'."""
    return make_model(helper.make_graph(
        [helper.make_node(op, ins, [out], name=out, **attrs) for op, ins, out, attrs in nodes], "t",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in (consts or {}).items()]))


@pytest.mark.parametrize("b_shape", [(1, 3, 4, 5), (1, 3, 1, 1), (1, 1, 4, 1), (1, 1, 1, 5)])
def test_mul_both_factors_on_the_path_with_broadcasting(b_shape):
    a, b = random((1, 3, 4, 5), 1), random(b_shape, 2)
    check_backward(node_model("Mul", {"a": a, "b": b}), lambda a, b: a * b, {"a": a, "b": b}, ["a", "b"])


def test_mul_by_a_constant_of_lower_rank_and_by_itself():
    x, w = random((1, 3, 4, 5), 1), random((5,), 2)
    check_backward(node_model("Mul", {"x": x}, {"w": w}), lambda x: x * torch.tensor(w, dtype=torch.float64),
                   {"x": x}, ["x"])
    check_backward(node_model("Mul", {"x": x}, input_order=["x", "x"]), lambda x: x * x, {"x": x}, ["x"])


@pytest.mark.parametrize("order", [["x", "s"], ["s", "x"]])
def test_silu_as_sigmoid_times_x(order):
    x = random((1, 4, 5, 6), 3, 3.0)
    m = graph_model([("Sigmoid", ["x"], "s", {}), ("Mul", order, "y", {})], {"x": x})
    check_backward(m, lambda x: torch.nn.functional.silu(x), {"x": x}, ["x"])
    # SiLU's derivative at the forward's batch and one product with the cotangent, not the product rule's four
    m.graph.input.append(helper.make_tensor_value_info("seed", TensorProto.FLOAT, [3, 4, 5, 6]))
    backward, _ = gradients(m, {"y": "seed"}, ["x"], batch=3)
    products = [n for n in backward.graph.node if n.op_type == "Mul" and "seed" in n.input]
    assert [n.name.split("/")[-1].rsplit("_node", 1)[0] for n in products] == ["silu_grad"], products
    assert not any("sigmoid_grad" in n.name for n in backward.graph.node)


def test_silu_whose_sigmoid_is_read_again():
    """y = x * sigmoid(x) + 2 sigmoid(x): the sigmoid's other consumer still sends its gradient back through it."""
    x, two = random((1, 4, 5, 6), 7, 3.0), np.array([2.0], np.float32)
    m = graph_model([("Sigmoid", ["x"], "s", {}), ("Mul", ["x", "s"], "silu", {}), ("Mul", ["s", "two"], "s2", {}),
                     ("Add", ["silu", "s2"], "y", {})], {"x": x}, {"two": two})
    check_backward(m, lambda x: torch.nn.functional.silu(x) + 2 * torch.sigmoid(x), {"x": x}, ["x"])


def test_squeeze_excitation_broadcast_product():
    """y = x * sigmoid(relu(mean_hw(x) * w1) * w2): the gate is (1, C, 1, 1), broadcast over H, W."""
    x, w1, w2 = random((1, 4, 5, 6), 4), random((1, 4, 1, 1), 5), random((1, 4, 1, 1), 6)
    m = graph_model([("GlobalAveragePool", ["x"], "p", {}), ("Mul", ["p", "w1"], "h", {}), ("Relu", ["h"], "r", {}),
                     ("Mul", ["r", "w2"], "z", {}), ("Sigmoid", ["z"], "s", {}), ("Mul", ["x", "s"], "y", {})],
                    {"x": x}, {"w1": w1, "w2": w2})
    t1, t2 = (torch.tensor(w, dtype=torch.float64) for w in (w1, w2))
    check_backward(m, lambda x: x * torch.sigmoid(torch.relu(x.mean((2, 3), keepdim=True) * t1) * t2), {"x": x}, ["x"])
    # the pool's backward (rows, C, 1, 1) is broadcast into x's other cotangent by the Add, never expanded to full size
    m.graph.input.append(helper.make_tensor_value_info("seed", TensorProto.FLOAT, [3, 4, 5, 6]))
    backward, _ = gradients(m, {"y": "seed"}, ["x"], batch=3)
    expanded = {o for n in backward.graph.node if n.op_type == "Expand" for o in n.output}
    assert not [n.name for n in backward.graph.node if expanded & set(n.input)]  # (the Expand itself goes unread)


@pytest.mark.parametrize("d_shape", [(1, 3, 4, 5), (1, 3, 1, 1), (5,)])
def test_div_by_a_constant(d_shape):
    x, d = random((1, 3, 4, 5), 1), random(d_shape, 2) + 3.0
    check_backward(node_model("Div", {"x": x}, {"d": d}), lambda x: x / torch.tensor(d, dtype=torch.float64),
                   {"x": x}, ["x"])


def test_div_by_a_tensor_off_the_path_is_a_constant_and_on_the_path_fails():
    x, d = random((1, 3, 4), 1), random((1, 3, 1), 2) + 3.0
    check_backward(node_model("Div", {"x": x, "d": d}), lambda x, d: x / d, {"x": x, "d": d}, ["x"])
    m = node_model("Div", {"x": x, "d": d})
    m.graph.input.append(helper.make_tensor_value_info("seed", TensorProto.FLOAT, [2, 3, 4]))
    with pytest.raises(ExplainError, match=r"Div node 'div_under_test': the divisor 'd' depends on the target"):
        gradients(m, {"y": "seed"}, ["d"], batch=2)
