"""MaxPool, AveragePool and ReduceMean rules against torch autograd (float64)."""

import numpy as np
import pytest
import torch.nn.functional as F
from onnx import TensorProto, helper, shape_inference

from hsi_xai_node.explain import ExplainError
from test.explain.harness import check_backward, make_model, node_model, random, seeded_gradients


def pool_model(op, x, k, s, p, ceil, **attrs):
    return node_model(op, {"x": x}, kernel_shape=list(k), strides=list(s), pads=list(p) * 2, ceil_mode=int(ceil),
                      **attrs)


@pytest.mark.parametrize("k,s,p,ceil", [
    ((2, 2), (2, 2), (0, 0), 0), ((3, 3), (2, 2), (1, 1), 0),  # overlapping windows
    ((3, 3), (1, 1), (1, 1), 0), ((5, 5), (1, 1), (2, 2), 0),  # stride-1 'same' (BiFPN, SPP)
    ((3, 3), (2, 2), (1, 1), 1), ((2, 2), (2, 2), (0, 0), 1), ((3, 2), (3, 2), (1, 0), 1),  # ceil mode
    ((1, 1), (2, 2), (0, 0), 0), ((2, 3), (1, 2), (0, 1), 0)])
def test_max_pool(k, s, p, ceil):
    x = random((1, 3, 9, 10), 1)
    check_backward(pool_model("MaxPool", x, k, s, p, ceil), lambda x: F.max_pool2d(x, k, s, p, ceil_mode=bool(ceil)),
                   {"x": x}, ["x"])


@pytest.mark.parametrize("k,s,p", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((3, 3), (1, 1), (1, 1))])
def test_max_pool_exact_ties_take_the_first_maximum(k, s, p):
    """After ReLU of rounded values most windows tie (zeros, equal integers); a constant block ties everywhere."""
    x = np.maximum(np.round(random((1, 2, 8, 9), 2) * 1.5), 0)
    x[0, 1, 2:7, 3:8] = 2.0
    assert (x == 0).mean() > 0.4
    # seed values are O(1): a single cotangent routed to another tied position would be an O(1) error
    ours = check_backward(pool_model("MaxPool", x, k, s, p, 0), lambda x: F.max_pool2d(x, k, s, p), {"x": x}, ["x"])
    assert np.count_nonzero(ours["x"][0]) <= np.prod(ours["x"].shape[1:]) // 2


def _backward_ops(model, batch=3) -> dict[str, int]:
    """op type -> the largest output (elements) among the backward's nodes of that type."""
    m, _ = seeded_gradients(model, batch=batch)
    m = shape_inference.infer_shapes(m, strict_mode=True)
    size = {v.name: int(np.prod([d.dim_value for d in v.type.tensor_type.shape.dim]))
            for v in [*m.graph.value_info, *m.graph.output]}
    out = {}
    for n in m.graph.node:
        if n.name.startswith("xai/"):
            out[n.op_type] = max(out.get(n.op_type, 0), size.get(n.output[0], 0))
    return out


@pytest.mark.parametrize("op,k,shape", [("MaxPool", (2, 2), (1, 3, 8, 10)), ("MaxPool", (3, 2), (1, 2, 9, 8)),
                                        ("AveragePool", (2, 2), (1, 3, 8, 10)), ("MaxPool", (2,), (1, 3, 12))])
def test_pools_whose_windows_tile_the_input_upsample_the_rows_once(op, k, shape):
    """kernel = stride, no padding, the input a whole number of windows (the U-Net's 2x2/2): each input position is
    reached from one window, so the rows' cotangent is upsampled and multiplied by the offsets' masks interleaved at
    batch 1 (route_windows); the same values as torch, ties included, and none of the row-sized interleave's
    Transposes."""
    x = np.maximum(np.round(random(shape, 8) * 1.5), 0)  # most windows tie (zeros, equal integers)
    attrs = {"kernel_shape": list(k), "strides": list(k)}
    m = node_model(op, {"x": x}, **attrs)
    torch_fn = {("MaxPool", 2): lambda x: F.max_pool2d(x, k, k), ("AveragePool", 2): lambda x: F.avg_pool2d(x, k, k),
                ("MaxPool", 1): lambda x: F.max_pool1d(x, k, k)}[(op, len(k))]
    check_backward(m, torch_fn, {"x": x}, ["x"])
    ops = _backward_ops(m, batch=3)  # the rows' cotangent upsampled once; every interleave at the size of one input
    assert ops["Resize"] == 3 * x.size and ops.get("Transpose", 0) <= x.size and ops.get("Concat", 0) <= x.size, ops
    # a pool whose windows do not tile the input still interleaves the rows
    odd = node_model(op, {"x": random((1, 2, 9, 9) if len(k) == 2 else (1, 2, 13), 9)}, **attrs)
    assert "Resize" not in _backward_ops(odd)


def test_max_pool_padding_is_minus_infinity_and_same_upper():
    x = -np.abs(random((1, 2, 8, 8), 3)) - 1  # all negative: a zero pad would win at the borders
    check_backward(pool_model("MaxPool", x, (3, 3), (1, 1), (1, 1), 0), lambda x: F.max_pool2d(x, 3, 1, 1),
                   {"x": x}, ["x"])
    m = node_model("MaxPool", {"x": x}, kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")
    # 8 -> 4 outputs: (4-1)*2+3-8 = 1 pad, at the end (SAME_UPPER)
    check_backward(m, lambda x: F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=-np.inf), 3, 2), {"x": x}, ["x"])


def test_max_pool_1d():
    x = random((1, 3, 11), 4)
    m = node_model("MaxPool", {"x": x}, kernel_shape=[3], strides=[2], pads=[1, 1])
    check_backward(m, lambda x: F.max_pool1d(x, 3, 2, 1), {"x": x}, ["x"])


@pytest.mark.parametrize("k,s,p,ceil,include_pad", [
    ((2, 2), (2, 2), (0, 0), 0, 0), ((3, 3), (2, 2), (1, 1), 0, 0), ((3, 3), (2, 2), (1, 1), 0, 1),
    ((3, 3), (1, 1), (1, 1), 0, 1), ((3, 3), (2, 2), (1, 1), 1, 0), ((3, 3), (2, 2), (1, 1), 1, 1),
    ((2, 3), (2, 3), (0, 1), 1, 1), ((3, 2), (3, 2), (0, 1), 1, 0)])
def test_average_pool(k, s, p, ceil, include_pad):
    x = random((1, 3, 9, 10), 5)
    check_backward(pool_model("AveragePool", x, k, s, p, ceil, count_include_pad=include_pad),
                   lambda x: F.avg_pool2d(x, k, s, p, bool(ceil), bool(include_pad)), {"x": x}, ["x"])


@pytest.mark.parametrize("axes,keepdims,opset", [([2, 3], 1, 17), ([-1], 0, 17), ([1, 3], 0, 18), ([2], 1, 18)])
def test_reduce_mean(axes, keepdims, opset):
    x = random((1, 3, 4, 5), 6)
    if opset >= 18:
        m = node_model("ReduceMean", {"x": x}, {"axes": np.array(axes, np.int64)}, opset=opset, keepdims=keepdims)
    else:
        m = node_model("ReduceMean", {"x": x}, axes=axes, keepdims=keepdims)
    check_backward(m, lambda x: x.mean(dim=axes, keepdim=bool(keepdims)), {"x": x}, ["x"])


def test_reduce_mean_no_axes_noop():
    x = random((1, 3, 4), 7)
    m = node_model("ReduceMean", {"x": x}, opset=18, noop_with_empty_axes=1)
    check_backward(m, lambda x: x * 1, {"x": x}, ["x"])


def test_clear_failures():
    x = random((1, 2, 6, 6))
    with pytest.raises(ExplainError, match="the Indices output is not supported"):
        node = helper.make_node("MaxPool", ["x"], ["y", "i"], name="mp", kernel_shape=[2, 2], strides=[2, 2])
        seeded_gradients(make_model(helper.make_graph(
            [node], "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
             helper.make_tensor_value_info("i", TensorProto.INT64, None)])))
    with pytest.raises(ExplainError, match="storage_order=1"):
        seeded_gradients(node_model("MaxPool", {"x": x}, kernel_shape=[2, 2], storage_order=1))
    with pytest.raises(ExplainError, match="dilated pooling is not supported"):
        seeded_gradients(node_model("MaxPool", {"x": x}, kernel_shape=[2, 2], dilations=[2, 2]))
    with pytest.raises(ExplainError, match=r"reducing over the batch axis \(axes \[0, 2\]\)"):
        seeded_gradients(node_model("ReduceMean", {"x": x}, axes=[0, 2]))
    with pytest.raises(ExplainError, match="reducing over the batch axis"):
        seeded_gradients(node_model("ReduceMean", {"x": x}))  # no axes: every axis


def test_backward_graphs_pass_the_tensorrt_check():
    """No MaxPool Indices, no Scatter: slices, comparisons, Where and one grouped ConvTranspose."""
    from hsi_xai_node.explain._trt_check import check_tensorrt
    x = random((1, 3, 9, 10))
    for op in ("MaxPool", "AveragePool"):
        m, _ = seeded_gradients(pool_model(op, x, (3, 3), (2, 2), (1, 1), 1))
        assert check_tensorrt(m) == []
        assert not {"Scatter", "ScatterND", "ScatterElements", "GatherND"} & {n.op_type for n in m.graph.node}
    assert check_tensorrt(seeded_gradients(node_model("ReduceMean", {"x": x}, axes=[2, 3], keepdims=0))[0]) == []
