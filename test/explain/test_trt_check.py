"""The static TensorRT 10 checker on small hand-built graphs, and on every committed model."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from hsi_xai_node.explain import ExplainError
from hsi_xai_node.explain._trt_check import SUPPORTED_OPS, assert_tensorrt_compatible, check_tensorrt

REPO = Path(__file__).resolve().parents[2]


def vi(name, elem=TP.FLOAT, shape=(1, 4, 8, 8)):
    return helper.make_tensor_value_info(name, elem, shape)


def const(name, value, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def make(nodes, inputs, outputs, inits=(), opset=17, extra_domains=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in extra_domains]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def one_node(op, inputs, outputs, inits=(), opset=17, **attrs):
    node = helper.make_node(op, [i.name for i in inputs] + attrs.pop("extra_inputs", []),
                            attrs.pop("outs", ["y"]), name="n0", **attrs)
    return make([node], inputs, outputs, inits, opset)


def explain_like_graph():
    """Forward + backward-pass style ops the explain compiler emits, with a uint8 overlay output."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        n("BatchNormalization", ["c", "s", "bb", "m", "v"], ["bn"], name="bn"),
        n("Relu", ["bn"], ["r"], name="relu"),
        n("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        n("ConvTranspose", ["p", "wt"], ["up"], name="up", strides=[2, 2]),
        n("Concat", ["up", "r"], ["cat"], name="cat", axis=1),
        n("Slice", ["cat", "starts", "ends", "axes"], ["sl"], name="slice"),
        n("Greater", ["sl", "zero"], ["gt"], name="gt"),
        n("Where", ["gt", "sl", "zero"], ["g"], name="where"),
        n("ReduceMean", ["g"], ["gm"], name="gap", axes=[2, 3], keepdims=1),
        n("Mul", ["g", "gm"], ["cam"], name="mul"),
        n("ReduceSum", ["cam", "ax1"], ["cs"], name="sum", keepdims=1),
        n("Resize", ["cs", "", "scales"], ["big"], name="resize", mode="linear"),
        n("Clip", ["big", "zero", "one"], ["cl"], name="clip"),
        n("Mul", ["cl", "c255"], ["sc"], name="scale"),
        n("Cast", ["sc"], ["overlay"], name="to_u8", to=TP.UINT8),
        n("Flatten", ["gm"], ["fl"], name="flat"),
        n("TopK", ["fl", "k"], ["vals", "idx"], name="topk"),
        n("ArgMax", ["c"], ["labels"], name="argmax", axis=1, keepdims=0),
    ]
    inits = [numpy_helper.from_array(a.astype(np.float32), name) for name, a in [
        ("w", rng.normal(size=(4, 3, 3, 3))), ("b", np.zeros(4)), ("s", np.ones(4)), ("bb", np.zeros(4)),
        ("m", np.zeros(4)), ("v", np.ones(4)), ("wt", rng.normal(size=(4, 4, 2, 2))), ("zero", np.array(0.0)),
        ("one", np.array(1.0)), ("c255", np.array(255.0)), ("scales", np.array([1, 1, 2, 2]))]]
    inits += [const("starts", [0]), const("ends", [4]), const("axes", [1]), const("ax1", [1]), const("k", [2])]
    return make(nodes, [vi("x", shape=("N", 3, 8, 8))],  # a dynamic batch is fine for TensorRT
                [vi("overlay", TP.UINT8, ("N", 1, 16, 16)), vi("vals", shape=("N", 2)),
                 vi("idx", TP.INT64, ("N", 2)), vi("labels", TP.INT64, ("N", 8, 8))], inits)


def test_supported_graph_passes_and_runs():
    model = explain_like_graph()
    onnx.checker.check_model(model, full_check=True)
    overlay, *_ = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)})
    assert overlay.dtype == np.uint8 and overlay.shape == (2, 1, 16, 16)
    assert check_tensorrt(model) == []
    assert_tensorrt_compatible(model)


def test_ops_the_project_relies_on_are_supported():
    common = ("Conv ConvTranspose BatchNormalization Relu LeakyRelu Clip Sigmoid HardSigmoid HardSwish Mul Add Sub "
              "Div Concat Split Slice MaxPool AveragePool GlobalAveragePool ReduceMean ReduceSum ReduceMax Resize "
              "Pad Reshape Transpose Identity Flatten Gemm MatMul Softmax Where Greater GreaterOrEqual Less Equal "
              "And Or Not Cast Expand Unsqueeze Squeeze Gather TopK ArgMax Sum Neg Max Min Abs Sqrt Exp Constant "
              "ConstantOfShape Shape Tile")
    assert set(common.split()) <= set(SUPPORTED_OPS)
    assert not {"Det", "Unique", "MaxUnpool", "BitShift", "Col2Im"} & set(SUPPORTED_OPS)  # table marks them N


def test_maxpool_indices_output_fails_naming_the_node():
    model = one_node("MaxPool", [vi("x")], [vi("y", shape=None), vi("i", TP.INT64, None)],
                     kernel_shape=[2, 2], strides=[2, 2], outs=["y", "i"])
    model.graph.node[0].name = "down1/pool"
    (problem,) = check_tensorrt(model)
    assert "MaxPool node 'down1/pool'" in problem and "Indices" in problem


@pytest.mark.parametrize("op,reduction", [("ScatterND", "add"), ("ScatterND", "none"),
                                          ("ScatterElements", "max"), ("ScatterElements", None)])
def test_scatter_reductions(op, reduction):
    idx = const("idx", [[0], [2]]) if op == "ScatterND" else const("idx", [[0, 1]])
    upd = numpy_helper.from_array(np.ones((2, 3) if op == "ScatterND" else (1, 2), np.float32), "upd")
    attrs = {} if reduction is None else {"reduction": reduction}
    model = one_node(op, [vi("x", shape=(4, 3))], [vi("y", shape=(4, 3))], [idx, upd],
                     extra_inputs=["idx", "upd"], **attrs)
    problems = check_tensorrt(model)
    if reduction is None:
        assert problems == []
    else:  # ScatterND rejects the attribute itself; ScatterElements reductions need a plugin
        assert len(problems) == 1 and "reduction" in problems[0] and f"{op} node 'n0'" in problems[0]


def test_custom_domain_op_fails():
    node = helper.make_node("FancyCam", ["x"], ["y"], name="cam", domain="com.example")
    problems = check_tensorrt(make([node], [vi("x")], [vi("y")], extra_domains=["com.example"]))
    assert len(problems) == 1 and "FancyCam node 'cam'" in problems[0] and "com.example" in problems[0]


def test_op_marked_unsupported_fails():
    model = one_node("Det", [vi("x", shape=(2, 3, 3))], [vi("y", shape=(2,))])
    (problem,) = check_tensorrt(model)
    assert "Det node 'n0'" in problem and "not supported" in problem


def test_argmax_select_last_index_follows_the_parser():
    # The 10.x parser implements select_last_index=1 (reversed Slice + TopK) from opset 12 on.
    assert check_tensorrt(one_node("ArgMax", [vi("x")], [vi("y", TP.INT64, None)], axis=1,
                                   select_last_index=1)) == []
    (problem,) = check_tensorrt(one_node("ArgMax", [vi("x")], [vi("y", TP.INT64, None)], opset=11, axis=1,
                                         select_last_index=1))
    assert "select_last_index" in problem and "ArgMax node 'n0'" in problem


def test_topk_k_must_be_a_small_constant_and_sorted():
    outs = [vi("y", shape=None), vi("i", TP.INT64, None)]
    dynamic = one_node("TopK", [vi("x", shape=(1, 5000)), vi("k", TP.INT64, (1,))], outs, outs=["y", "i"])
    (problem,) = check_tensorrt(dynamic)
    assert "TopK node 'n0'" in problem and "'k'" in problem and "Constant" in problem

    def constant_k(k, **attrs):
        return one_node("TopK", [vi("x", shape=(1, 5000))], outs, [const("k", [k])], outs=["y", "i"],
                        extra_inputs=["k"], **attrs)
    assert check_tensorrt(constant_k(3)) == []
    assert "less than 3840" in check_tensorrt(constant_k(4000))[0]
    assert "sorted" in check_tensorrt(constant_k(3, sorted=0))[0]


def test_double_is_flagged_everywhere_it_enters():
    model = one_node("Add", [vi("x", TP.DOUBLE), vi("b", TP.DOUBLE, (1,))], [vi("y", TP.DOUBLE)])
    problems = check_tensorrt(model)
    assert len(problems) == 3 and all("DOUBLE" in p and "FLOAT" in p for p in problems)  # x, b, y
    init = one_node("Add", [vi("x")], [vi("y")], [numpy_helper.from_array(np.ones(1), "b")], extra_inputs=["b"])
    assert any("initializer 'b'" in p and "DOUBLE" in p for p in check_tensorrt(init))
    cast = one_node("Cast", [vi("x")], [vi("y", TP.DOUBLE)], to=TP.DOUBLE)
    assert any("Cast node 'n0'" in p and "DOUBLE" in p for p in check_tensorrt(cast))


def test_uint8_only_at_the_boundary_through_cast():
    u8_in = make([helper.make_node("Cast", ["x"], ["f"], name="in", to=TP.FLOAT),
                  helper.make_node("Relu", ["f"], ["y"], name="relu")], [vi("x", TP.UINT8)], [vi("y")])
    assert check_tensorrt(u8_in) == []
    inside = make([helper.make_node("Cast", ["x"], ["u"], name="to_u8", to=TP.UINT8),
                   helper.make_node("Cast", ["u"], ["y"], name="back", to=TP.FLOAT)], [vi("x")], [vi("y")])
    problems = check_tensorrt(inside)
    assert problems and all("UINT8" in p for p in problems) and any("to_u8" in p for p in problems)
    direct = one_node("Relu", [vi("x", TP.UINT8)], [vi("y", TP.UINT8)])
    assert any("Relu node 'n0'" in p and "UINT8" in p for p in check_tensorrt(direct))


def test_resize_pad_squeeze_restrictions():
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")
    cubic = one_node("Resize", [vi("x")], [vi("y", shape=None)], [scales], extra_inputs=["", "s"], mode="cubic")
    assert "cubic" in check_tensorrt(cubic)[0]
    crop = one_node("Resize", [vi("x")], [vi("y", shape=None)], [scales], extra_inputs=["", "s"],
                    coordinate_transformation_mode="tf_crop_and_resize")
    assert "tf_crop_and_resize" in check_tensorrt(crop)[0]
    pad = one_node("Pad", [vi("x"), vi("pads", TP.INT64, (4,)), vi("v", shape=()), vi("axes", TP.INT64, (2,))],
                   [vi("y", shape=None)], mode="reflect")
    (problem,) = check_tensorrt(pad)
    assert "axes ('axes')" in problem
    squeeze = one_node("Squeeze", [vi("x", shape=(1, 4)), vi("axes", TP.INT64, (1,))], [vi("y", shape=(4,))])
    assert "axes" in check_tensorrt(squeeze)[0]


def test_if_branches_are_checked_recursively():
    def branch(op, src, out):
        return helper.make_graph([helper.make_node(op, [src], [out], name=f"{op}_in_branch")], op, [],
                                 [vi(out, shape=None)])

    def if_model(then_src):
        node = helper.make_node("If", ["c"], ["y"], name="choose", then_branch=branch("Relu", then_src, "a"),
                                else_branch=branch("Det", "x", "b"))
        return make([node], [vi("c", TP.BOOL, ()), vi("x", shape=(2, 3, 3)), vi("z", shape=(2,))],
                    [vi("y", shape=(2,))])
    (problem,) = check_tensorrt(if_model("z"))
    assert "If[choose].else_branch" in problem and "Det node 'Det_in_branch'" in problem
    rank = [p for p in check_tensorrt(if_model("x")) if "If node 'choose'" in p]  # rank 3 vs rank 1
    assert len(rank) == 1 and "same rank" in rank[0]


def test_opset_outside_the_parser_range_fails():
    (problem,) = check_tensorrt(one_node("Relu", [vi("x")], [vi("y")], opset=21))
    assert "opset 21" in problem


def test_error_lists_every_problem():
    n = helper.make_node
    nodes = [n("MaxPool", ["x"], ["p", "i"], name="pool_with_indices", kernel_shape=[2, 2]),
             n("FancyCam", ["p"], ["c"], name="custom_cam", domain="com.example"),
             n("Unique", ["c"], ["y"], name="unique_op")]
    model = make(nodes, [vi("x")], [vi("y", shape=None), vi("i", TP.INT64, None)], extra_domains=["com.example"])
    with pytest.raises(ExplainError) as err:
        assert_tensorrt_compatible(model, "explain graph")
    message = str(err.value)
    assert "explain graph is not TensorRT 10 compatible (3 problems)" in message
    for part in ("MaxPool node 'pool_with_indices'", "FancyCam node 'custom_cam'", "Unique node 'unique_op'"):
        assert part in message


MODELS = sorted((REPO / "models").glob("*.onnx"))


@pytest.mark.parametrize("path", MODELS or [pytest.param(None, marks=pytest.mark.skip(
    reason="no models/*.onnx committed yet"))], ids=lambda p: p.name if p else "none")
def test_committed_models_are_tensorrt_compatible(path):
    assert_tensorrt_compatible(onnx.load(path), str(path.relative_to(REPO)))
