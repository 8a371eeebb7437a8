"""ConvTranspose and BatchNormalization rules against torch autograd (float64)."""

import numpy as np
import pytest
import torch.nn.functional as F

from hsi_xai_node.explain import ExplainError
from test.explain.harness import check_backward, node_model, random, torch, seeded_gradients


def t64(a):
    return torch.tensor(a, dtype=torch.float64)


@pytest.mark.parametrize("stride,pad,opad,dil,groups,k", [
    (1, 0, 0, 1, 1, 3), (1, 1, 0, 1, 1, 3), (2, 0, 0, 1, 1, 2), (2, 1, 1, 1, 1, 3), (2, 1, 1, 1, 2, 4),
    (3, 1, 2, 1, 1, 3), (2, 1, 1, 2, 1, 3), (2, 2, 1, 2, 1, 3),
    (2, 1, 1, 1, 6, 3), (2, 0, 0, 1, 6, 1)])  # depthwise
def test_conv_transpose(stride, pad, opad, dil, groups, k):
    x = random((1, 6, 5, 7), 1)
    w = random((6, 12 // groups, k, k), 2, 0.3)
    bias = random((12,), 3)
    m = node_model("ConvTranspose", {"x": x}, {"w": w, "b": bias}, strides=[stride] * 2, pads=[pad] * 4,
                   output_padding=[opad] * 2, dilations=[dil] * 2, group=groups)
    check_backward(m, lambda x: F.conv_transpose2d(x, t64(w), t64(bias), stride, pad, opad, groups, dil),
                   {"x": x}, ["x"])


def test_conv_transpose_asymmetric_pads_and_1d():
    x = random((1, 4, 6, 5), 4)
    w = random((4, 3, 3, 2), 5, 0.3)
    m = node_model("ConvTranspose", {"x": x}, {"w": w}, strides=[2, 3], pads=[1, 0, 0, 1], output_padding=[1, 2])
    # full transposed output 13x17 (+1, +2 output_padding at the end), crop 1 row at the top, 1 column at the end
    check_backward(m, lambda x: F.conv_transpose2d(x, t64(w), stride=(2, 3), output_padding=(1, 2))[:, :, 1:, :-1],
                   {"x": x}, ["x"])
    x1, w1 = random((1, 3, 9), 6), random((3, 2, 4), 7, 0.3)
    m = node_model("ConvTranspose", {"x": x1}, {"w": w1}, strides=[2], pads=[2, 1], auto_pad="NOTSET")
    check_backward(m, lambda x: F.conv_transpose1d(x, t64(w1), stride=2)[:, :, 2:-1], {"x": x1}, ["x"])


@pytest.mark.parametrize("shape", [(1, 5, 4, 6), (1, 5)])
def test_batch_normalization_inference(shape):
    x = random(shape, 1)
    scale, bias, mean = random((5,), 2), random((5,), 3), random((5,), 4)
    var = np.abs(random((5,), 5)) + 0.1
    m = node_model("BatchNormalization", {"x": x}, {"s": scale, "b": bias, "m": mean, "v": var}, epsilon=1e-3)
    check_backward(m, lambda x: F.batch_norm(x, t64(mean), t64(var), t64(scale), t64(bias), False, 0.0, 1e-3),
                   {"x": x}, ["x"])


def test_clear_failures():
    x = random((1, 2, 4, 4))
    w = random((2, 2, 3, 3), 1)
    with pytest.raises(ExplainError, match=r"implicit padding \(auto_pad=SAME_UPPER, output_shape\) is not supported"):
        seeded_gradients(node_model("ConvTranspose", {"x": x}, {"w": w}, strides=[2, 2], auto_pad="SAME_UPPER"))
    with pytest.raises(ExplainError, match=r"the weight \('w'\) must be a constant"):
        seeded_gradients(node_model("ConvTranspose", {"x": x, "w": w}))
    ones = np.ones(2, np.float32)
    with pytest.raises(ExplainError, match="training-mode BatchNormalization is not supported"):
        seeded_gradients(node_model("BatchNormalization", {"x": x}, {"s": ones, "b": ones, "m": ones, "v": ones},
                         n_outputs=3, training_mode=1))


def test_backward_graphs_pass_the_tensorrt_check():
    from hsi_xai_node.explain._trt_check import check_tensorrt
    x = random((1, 6, 5, 7))
    m = node_model("ConvTranspose", {"x": x}, {"w": random((6, 2, 3, 3), 1)}, strides=[2, 2], pads=[1, 0, 0, 1],
                   output_padding=[1, 1], group=3)
    assert check_tensorrt(seeded_gradients(m)[0]) == []
    ones = np.ones(6, np.float32)
    assert check_tensorrt(seeded_gradients(node_model("BatchNormalization", {"x": x}, {k: ones for k in "sbmv"}))[0]) == []
