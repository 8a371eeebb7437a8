"""A head shared by two pyramid levels, differentiated once on K rows (_windows.same_heads): each row on a window of
its own level, through its own level's pointwise weights (EfficientDet's BatchNormalization folded per level), against
float64 autograd of each row's seeded score; and heads that are not one (another spatial kernel) kept apart."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch", reason="torch is the reference here: pip install -e '.[test]'")

from hsi_xai_node.explain import assert_tensorrt_compatible  # noqa: E402
from hsi_xai_node.explain._graph import Builder  # noqa: E402
from hsi_xai_node.explain._onehot import OneHot  # noqa: E402
from hsi_xai_node.explain._reverse import append_backward  # noqa: E402
from hsi_xai_node.explain._windows import local_regions, same_heads  # noqa: E402
from test.explain.harness import session  # noqa: E402

H, W = 12, 16  # level 1; level 2 is 6 x 8, where a 5 x 5 window covers half the map (not windowed on its own)
C, OUT = 4, 2


def weights(rng, spatial_differs: bool) -> dict[str, np.ndarray]:
    w = {"stem1": rng.standard_normal((C, 3, 3, 3)) * 0.5, "stem2": rng.standard_normal((C, C, 3, 3)) * 0.4,
         "dw1": rng.standard_normal((C, 1, 3, 3)) * 0.6, "dw2": rng.standard_normal((C, 1, 3, 3)) * 0.6,
         "pw_a": rng.standard_normal((C, C, 1, 1)) * 0.7, "pb_a": rng.standard_normal(C) * 0.2,
         "pw_b": rng.standard_normal((C, C, 1, 1)) * 0.7, "pb_b": rng.standard_normal(C) * 0.2,
         "head": rng.standard_normal((OUT, C, 1, 1)) * 0.8, "head_b": rng.standard_normal(OUT) * 0.1}
    # the second level's first depthwise kernel: the same as the first level's (one head), or another (two heads)
    w["dw1_b"] = rng.standard_normal((C, 1, 3, 3)) * 0.6 if spatial_differs else w["dw1"].copy()
    return {k: v.astype(np.float32) for k, v in w.items()}


def levels_model(w: dict[str, np.ndarray]) -> onnx.ModelProto:
    """x (1, 3, 2H, 2W) -> level 1 (stride 2), level 2 (stride 2 again) -> at each level depthwise 3x3, pointwise
    (the level's own), SiLU, depthwise 3x3, pointwise (shared) -> NHWC pairs -> Concat -> Sigmoid: y (1, N, 2)."""
    nodes = [helper.make_node("Conv", ["x", "stem1"], ["m1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Conv", ["m1", "stem2"], ["m2"], pads=[1, 1, 1, 1], strides=[2, 2])]
    flats = []
    for level, (dw1, pw, pb) in {"1": ("dw1", "pw_a", "pb_a"), "2": ("dw1_b", "pw_b", "pb_b")}.items():
        m = f"m{level}"
        nodes += [helper.make_node("Conv", [m, dw1], [f"d{level}"], pads=[1, 1, 1, 1], group=C),
                  helper.make_node("Conv", [f"d{level}", pw, pb], [f"p{level}"]),
                  helper.make_node("Sigmoid", [f"p{level}"], [f"s{level}"]),
                  helper.make_node("Mul", [f"p{level}", f"s{level}"], [f"a{level}"]),
                  helper.make_node("Conv", [f"a{level}", "dw2"], [f"e{level}"], pads=[1, 1, 1, 1], group=C),
                  helper.make_node("Conv", [f"e{level}", "head", "head_b"], [f"h{level}"]),
                  helper.make_node("Transpose", [f"h{level}"], [f"t{level}"], perm=[0, 2, 3, 1]),
                  helper.make_node("Reshape", [f"t{level}", "pairs"], [f"r{level}"])]
        flats.append(f"r{level}")
    n = (H * W + H * W // 4) * OUT // 2
    nodes += [helper.make_node("Concat", flats, ["cat"], axis=1), helper.make_node("Sigmoid", ["cat"], ["y"])]
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    inits.append(numpy_helper.from_array(np.array([1, -1, 2], np.int64), "pairs"))
    graph = helper.make_graph(nodes, "levels",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2 * H, 2 * W])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n, 2])], inits)
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def torch_levels(x, w):
    f = torch.nn.functional
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in w.items()}
    m1 = f.conv2d(x, t["stem1"], padding=1, stride=2)
    m2 = f.conv2d(m1, t["stem2"], padding=1, stride=2)
    outs = []
    for m, dw1, pw, pb in ((m1, "dw1", "pw_a", "pb_a"), (m2, "dw1_b", "pw_b", "pb_b")):
        a = f.silu(f.conv2d(f.conv2d(m, t[dw1], padding=1, groups=C), t[pw], t[pb]))
        h = f.conv2d(f.conv2d(a, t["dw2"], padding=1, groups=C), t["head"], t["head_b"])
        outs.append(h.permute(0, 2, 3, 1).reshape(1, -1, 2))
    return torch.sigmoid(torch.cat(outs, 1)).flatten()


@pytest.mark.parametrize("spatial_differs", [False, True], ids=["one head", "two heads"])
def test_a_head_shared_by_levels_runs_once_each_row_at_its_own_level(spatial_differs):
    rng = np.random.default_rng(11)
    w = weights(rng, spatial_differs)
    model = levels_model(w)
    x = rng.standard_normal((1, 3, 2 * H, 2 * W)).astype(np.float32)
    x64 = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y64 = torch_levels(x64, w)
    n1 = H * W * OUT
    # each level's corners (the window moved inwards) and inside, rows not in level order; and an empty row. Each
    # the nearest score of its level away from saturation: the Sigmoid's slope y (1 - y) from a float32 y near 1
    # loses digits to the cancellation (1e-4 at y = 0.999), in either implementation
    wanted = [n1 + 3, 0, OUT * (W - 1) + 1, n1 - 1, OUT * (W * 5 + 7), y64.shape[0] - 1, n1 + OUT * 8 * 5 + 1]
    y = y64.detach().numpy()
    picks = []
    for p in wanted:
        same = np.arange(n1, len(y)) if p >= n1 else np.arange(n1)
        moderate = same[np.abs(y[same] - 0.5) < 0.4]
        picks.append(int(moderate[np.argmin(np.abs(moderate - p))]))
    values = rng.uniform(0.5, 2.0, len(picks)).tolist() + [0.0]
    index = np.array(picks + [picks[0]], np.int64).reshape(-1, 1)
    k = len(index)

    b = Builder(model)
    found = local_regions(b, ["y"], ["x"], {o for n in model.graph.node for o in n.output} | {"x"})
    groups = same_heads(b, found.regions)
    # each level's cotangent complete once the tail (Transpose, Reshape, Concat, Sigmoid) is differentiated
    assert {r.output for r in found.regions} == {"h1", "h2"} <= found.ready
    assert [len(g.regions) for g in groups] == ([1, 1] if spatial_differs else [2])
    if not spatial_differs:  # the first pointwise convolution is each level's own; the predict's is shared
        (group,) = groups
        assert {r.nodes[j].input[1] for r in group.regions for j in group.per_level} == {"pw_a", "pw_b"}
    seed = OneHot(b.const(index, "rows_index", np.int64), b.const(np.array(values, np.float32).reshape(-1, 1),
                                                                  "rows_value"))
    grads = append_backward(b, {"y": seed}, ["x"], k, one_hot_rows=True)
    b.add_output(grads["x"], (k, 3, 2 * H, 2 * W))
    assert_tensorrt_compatible(model, "shared head graph")
    made = [n for n in model.graph.node if n.name.startswith("xai/backward")]
    pointwise_per_row = [n for n in made if n.op_type == "MatMul" and "window_pointwise" in n.name]
    copies = [n for n in made if n.op_type == "Conv" and "/window/" in n.name]
    if spatial_differs:  # level 1 on its own windows; level 2's window would be half its map: differentiated whole
        assert not pointwise_per_row and len(copies) == 4
    else:  # one copy on K rows: the head's two depthwise and one shared pointwise Conv, the per-level one a MatMul
        assert len(pointwise_per_row) == 1 and len(copies) == 3
    got = session(model).run([grads["x"]], {"x": x})[0]
    for row in range(k):
        if values[row] == 0.0:
            assert not got[row].any()
            continue
        want = torch.autograd.grad(values[row] * y64[int(index[row, 0])], x64, retain_graph=True)[0].numpy()[0]
        scale = np.abs(want).max()
        assert scale > 0
        # float32 sums of at most 3 x 3 x 4 x 3 terms per element on the way back: 1e-5 of the row's peak
        np.testing.assert_allclose(got[row], want, rtol=0, atol=1e-5 * scale, err_msg=f"row {row}")
