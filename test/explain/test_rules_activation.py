"""Activation rules against torch autograd (float64), with inputs placed exactly on the kinks."""

import numpy as np
import pytest
import torch.nn.functional as F
from onnx import TensorProto, helper

from hsi_xai_node.explain import ExplainError, gradients
from test.explain.harness import check_backward, node_model, random, torch


def with_values(values, shape=(1, 3, 4, 5), seed=0, scale=4.0):
    """Random x whose first entries are exactly `values` (the kinks under test)."""
    x = random(shape, seed, scale)
    x.reshape(-1)[:len(values)] = values
    return x


@pytest.mark.parametrize("alpha", [None, 0.1, 1.7])
def test_leaky_relu_slope_alpha_at_zero(alpha):
    x = with_values([0.0, 0.0])
    attrs = {} if alpha is None else {"alpha": alpha}
    slope = 0.01 if alpha is None else alpha
    g = check_backward(node_model("LeakyRelu", {"x": x}, **attrs), lambda x: F.leaky_relu(x, slope), {"x": x}, ["x"])
    seed = np.random.default_rng(0).standard_normal((3, 3, 4, 5)).astype(np.float32)  # the harness's seed
    # PyTorch: slope alpha at x == 0
    np.testing.assert_allclose(g["x"][:, 0, 0, 0], np.float32(slope) * seed[:, 0, 0, 0], rtol=1e-6)


@pytest.mark.parametrize("bounds,fn", [
    ((0.0, 6.0), lambda x: F.relu6(x)),  # exported nn.ReLU6
    ((-1.0, 1.0), lambda x: F.hardtanh(x)),
    ((0.0, None), lambda x: torch.relu(x)),  # Clip(min=0) agrees with Relu
    ((None, 1.0), lambda x: 1 - torch.relu(1 - x)),  # min(x, 1) with a zero gradient at 1
    ((None, None), lambda x: x * 1)])
def test_clip_follows_hardtanh_zero_gradient_at_the_bounds(bounds, fn):
    lo, hi = bounds
    x = with_values([v for v in bounds if v is not None] * 2)
    consts = {k: np.float32(v) for k, v in zip(("lo", "hi"), bounds) if v is not None}
    order = ["x", "lo" if lo is not None else "", "hi" if hi is not None else ""]
    while order[-1] == "":
        order.pop()
    g = check_backward(node_model("Clip", {"x": x}, consts, input_order=order), fn, {"x": x}, ["x"])
    ties = len(consts) * 2
    assert np.all(g["x"].reshape(3, -1)[:, :ties] == 0.0)  # torch.clamp would pass g through here


def test_clip_bound_on_the_path_fails():
    x = random((1, 2, 3))
    m = node_model("Clip", {"x": x, "lo": np.zeros((), np.float32)})
    m.graph.input.append(helper.make_tensor_value_info("seed", TensorProto.FLOAT, [2, 2, 3]))
    with pytest.raises(ExplainError, match="clip bound 'lo' depends on the target"):
        gradients(m, {"y": "seed"}, ["x", "lo"], batch=2)


def test_sigmoid():
    x = random((1, 4, 3, 5), 1, 3.0)
    check_backward(node_model("Sigmoid", {"x": x}), torch.sigmoid, {"x": x}, ["x"])


def f32(v):  # ONNX stores float attributes in float32
    return float(np.float32(v))


@pytest.mark.parametrize("attrs,bounds,fn", [
    ({"alpha": 1 / 6, "beta": 0.5}, (-3.0, 3.0), lambda x: F.hardsigmoid(x)),  # exported nn.Hardsigmoid
    ({}, (-2.5, 2.5), lambda x: F.hardtanh(f32(0.2) * x + 0.5, 0, 1)),  # ONNX defaults 0.2, 0.5
    ({"alpha": -0.25, "beta": 0.5}, (-2.0, 2.0), lambda x: F.hardtanh(-0.25 * x + 0.5, 0, 1))])  # bounds swap
def test_hard_sigmoid_zero_gradient_at_the_bounds(attrs, bounds, fn):
    # hardtanh has PyTorch's hardsigmoid tie rule: zero gradient at both bounds
    x = with_values(list(bounds) * 2)
    g = check_backward(node_model("HardSigmoid", {"x": x}, **attrs), fn, {"x": x}, ["x"])
    assert np.all(g["x"].reshape(3, -1)[:, :4] == 0.0)


def test_hard_swish_ties_zero_at_minus3_and_one_at_3():
    x = with_values([-3.0, 3.0, 0.0])
    g = check_backward(node_model("HardSwish", {"x": x}, opset=14), lambda x: F.hardswish(x), {"x": x}, ["x"])
    seed = np.random.default_rng(0).standard_normal((3, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(g["x"][:, 0, 0, 0], 0.0)
    np.testing.assert_allclose(g["x"][:, 0, 0, 1], seed[:, 0, 0, 1], rtol=1e-6)
