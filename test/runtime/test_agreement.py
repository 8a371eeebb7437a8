"""The engine-agreement yardstick (agreement.py) passes two legitimate float32 evaluations of a graph and
fails a computation that is off by 0.1% in one layer, on the bundled U-Net's explain graph."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hsi_xai_node.explain import SegmentationExplainConfig, build_segmentation_explainer
from test.conftest import bundled_unet_input
from test.runtime.agreement import assert_agree, bounds, longest_reduction

ort = pytest.importorskip("onnxruntime")


def _run(model: onnx.ModelProto, feeds, level) -> dict:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    return dict(zip(names, s.run(names, feeds)))


def test_longest_reduction_counts_what_one_value_sums():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 208, 400])
    w = numpy_helper.from_array(np.ones((8, 4, 3, 3), np.float32), "w")
    m = numpy_helper.from_array(np.ones((8, 32), np.float32), "m")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),  # 4 x 3 x 3 = 36
             helper.make_node("ReduceSum", ["c", "ax3"], ["cols"], keepdims=1),  # 400
             helper.make_node("ReduceSum", ["cols", "ax2"], ["hw"], keepdims=1),  # x 208 = 83,200 in all
             helper.make_node("Reshape", ["hw", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "m"], ["y"])]  # 8
    inits = [w, m, numpy_helper.from_array(np.array([3], np.int64), "ax3"),
             numpy_helper.from_array(np.array([2], np.int64), "ax2"),
             numpy_helper.from_array(np.array([1, 8], np.int64), "shape")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                              [1, 32])], inits),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert longest_reduction(model) == 83_200


def test_the_bound_passes_rounding_and_fails_a_wrong_layer(hsi_drive):
    loaded, x = bundled_unet_input(hsi_drive)
    card = loaded.card
    eg = build_segmentation_explainer(onnx.load_model_from_string(loaded.onnx_bytes), card.input.tensor, card.logits,
                                      card.layers, SegmentationExplainConfig(
                                          methods=("activation", "seg_gradcam_signed", "hires", "spectral"),
                                          layers=("penultimate", "bottleneck"), uint8=False))
    feeds = {card.input.tensor: x}
    allowed = bounds(eg.model, feeds, [o.name for o in eg.model.graph.output])
    reference = _run(eg.model, feeds, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    # another legitimate float32 evaluation (no fusions, other kernels): within the bound
    labels = {n for n, o in eg.outputs.items() if o.method == "argmax"}
    assert_agree(reference, _run(eg.model, feeds, ort.GraphOptimizationLevel.ORT_DISABLE_ALL), allowed, card.logits,
                 labels)
    # the yardstick is tight: far below the maps' own magnitudes
    for name, b in allowed.items():
        assert b.max() < 1e-3 * np.abs(reference[name]).max(), name
    # one decoder layer's weights 0.1% off: caught
    wrong = onnx.ModelProto()
    wrong.CopyFrom(eg.model)
    conv = next(n for n in wrong.graph.node if n.op_type == "Conv" and n.output[0] != card.logits
                and not n.name.startswith("xai/"))
    init = next(t for t in wrong.graph.initializer if t.name == conv.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1.001), init.name))
    with pytest.raises(AssertionError):
        assert_agree(reference, _run(wrong, feeds, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED), allowed,
                     labels=labels)
