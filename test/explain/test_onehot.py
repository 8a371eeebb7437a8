"""One-hot cotangents (_onehot.py): each row's seed carried as one element through Transpose, Reshape, Concat,
Flatten, Identity and the element-wise Relu and Sigmoid, then into windows around convolutions
(_windows.py) and a dense backward, against float64 autograd of each row's seeded element."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch", reason="torch is the reference here: pip install -e '.[test]'")

from hsi_xai_node.explain import assert_tensorrt_compatible  # noqa: E402
from hsi_xai_node.explain._graph import Builder  # noqa: E402
from hsi_xai_node.explain._onehot import OneHot  # noqa: E402
from hsi_xai_node.explain._reverse import append_backward  # noqa: E402
from test.explain.harness import session  # noqa: E402

H, W = 16, 20


def tail_model(rng) -> tuple[onnx.ModelProto, dict]:
    """x (1, 3, H, W) -> two 3x3 convolutions -> NHWC -> pairs -> Concat -> Relu, Sigmoid ->
    Flatten -> Identity: y (1, 2 * (6 + 2) * H * W / 2) as a detector's scores are made from its heads."""
    w1 = rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.4
    w2 = rng.standard_normal((2, 3, 3, 3)).astype(np.float32) * 0.4
    n1, n2 = 6 * H * W // 2, 2 * H * W // 2
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w2"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["a"], ["at"], perm=[0, 2, 3, 1]),
             helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["at", "s1"], ["ar"]),
             helper.make_node("Reshape", ["ct", "s2"], ["cr"]),
             helper.make_node("Concat", ["ar", "cr"], ["cat"], axis=1),
             helper.make_node("Relu", ["cat"], ["relu"]),
             helper.make_node("Sigmoid", ["relu"], ["sig"]),
             helper.make_node("Flatten", ["sig"], ["flat"], axis=1),
             helper.make_node("Identity", ["flat"], ["y"])]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.array([1, n1, 2], np.int64), "s1"),
             numpy_helper.from_array(np.array([1, n2, 2], np.int64), "s2")]
    graph = helper.make_graph(nodes, "tail", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, H, W])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2 * (n1 + n2)])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model), {"w1": w1, "w2": w2}


def torch_tail(x, w):
    f = torch.nn.functional
    a = f.conv2d(x, torch.tensor(w["w1"], dtype=torch.float64), padding=1).permute(0, 2, 3, 1).reshape(1, -1, 2)
    c = f.conv2d(x, torch.tensor(w["w2"], dtype=torch.float64), padding=1).permute(0, 2, 3, 1).reshape(1, -1, 2)
    return torch.sigmoid(torch.relu(torch.cat([a, c], 1))).flatten(1)


@pytest.mark.parametrize("windows", [True, False])
def test_one_hot_seeds_through_the_tail_match_autograd(windows):
    rng = np.random.default_rng(5)
    model, weights = tail_model(rng)
    x = rng.standard_normal((1, 3, H, W)).astype(np.float32)
    x64 = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y64 = torch_tail(x64, weights)[0]
    size = y64.shape[0]
    n1 = 6 * H * W
    # elements of both Concat inputs, at the maps' corners and inside, where the Relu passes; and an empty row
    live = np.flatnonzero(y64.detach().numpy() > 0.5)
    picks = [0, 7, n1 - 1, n1, n1 + 3, size - 1]
    picks = [int(live[np.argmin(np.abs(live - p))]) for p in picks]
    assert any(p < n1 for p in picks) and any(p >= n1 for p in picks)
    values = rng.uniform(0.5, 2.0, len(picks)).tolist() + [0.0]
    index = np.array(picks + [picks[0]], np.int64).reshape(-1, 1)
    k = len(index)

    b = Builder(model)
    seed = OneHot(b.const(index, "rows_index", np.int64), b.const(np.array(values, np.float32).reshape(-1, 1),
                                                                  "rows_value"))
    grads = append_backward(b, {"y": seed}, ["x"], k, one_hot_rows=windows)
    b.add_output(grads["x"], (k, 3, H, W))
    assert_tensorrt_compatible(model, "one-hot tail graph")
    # the Concat moved one element per row: its dense rule slices the K x size cotangent (as it does for a dense seed)
    assert "Slice" not in {n.op_type for n in model.graph.node if n.name.startswith("xai/backward")}
    dense_model, _ = tail_model(np.random.default_rng(5))
    bd = Builder(dense_model)
    append_backward(bd, {"y": bd.const(np.ones((k, size), np.float32), "dense_seed")}, ["x"], k)
    assert "Slice" in {n.op_type for n in dense_model.graph.node if n.name.startswith("xai/backward")}
    got = session(model).run([grads["x"]], {"x": x})[0]
    for row in range(k):
        want = torch.autograd.grad(values[row] * y64[int(index[row, 0])], x64, retain_graph=True)[0].numpy()[0]
        scale = np.abs(want).max()
        if values[row] == 0.0:
            assert not got[row].any()
            continue
        assert scale > 0
        np.testing.assert_allclose(got[row], want, rtol=0, atol=1e-5 * scale, err_msg=f"row {row}")
