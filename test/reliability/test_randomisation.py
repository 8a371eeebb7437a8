"""Model-parameter randomisation (Adebayo et al. 2018) on ONNX graphs: a hand-built conv net and the bundled U-Net."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("onnxruntime")
pytest.importorskip("skimage", reason="the similarity measures need the `reliability` extra (scikit-image)")

from hsi_xai_node.explain import SegmentationExplainConfig, build_segmentation_explainer  # noqa: E402
from hsi_xai_node.reliability import (cascading, compare_maps, independent, layer_labels,  # noqa: E402
                                      parameter_layers, randomise)
from test.reliability.conftest import run_all  # noqa: E402

WEIGHTS = ["w1", "w2", "w3", "w4", "w5"]
BIASES = {"w1": "b1", "w2": "b2", "w4": "b4", "w5": "b5"}  # w3: a conv without bias
NODES = ["conv1", "up2", "conv3", "gemm4", "matmul5"]


def conv_net() -> onnx.ModelProto:
    """x (1,3,16,16) -> Conv 3x3 -> Relu -> ConvTranspose 2x2/2 (zero bias) -> Relu -> Conv 1x1 (no bias)
    -> GlobalAveragePool -> Flatten -> Gemm -> MatMul + Add -> y (1, 3)."""
    rng = np.random.default_rng(0)
    w = {"w1": rng.normal(0.1, 0.3, (32, 3, 3, 3)), "b1": rng.normal(0, 0.05, 32),
         "w2": rng.normal(0, 0.2, (32, 8, 2, 2)), "b2": np.zeros(8),
         "w3": rng.normal(0, 0.5, (4, 8, 1, 1)), "w4": rng.normal(0, 1, (4, 6)), "b4": rng.normal(0, 1, 6),
         "w5": rng.normal(0, 1, (6, 3)), "b5": np.full(3, 0.25)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("ConvTranspose", ["r1", "w2", "b2"], ["c2"], name="up2", strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["c3"], name="conv3"),
             helper.make_node("GlobalAveragePool", ["c3"], ["p3"]),
             helper.make_node("Flatten", ["p3"], ["f3"]),
             helper.make_node("Gemm", ["f3", "w4", "b4"], ["g4"], name="gemm4"),
             helper.make_node("MatMul", ["g4", "w5"], ["m5"], name="matmul5"),
             helper.make_node("Add", ["m5", "b5"], ["y"])]
    graph = helper.make_graph(nodes, "conv_net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def inits(model):
    return {t.name: t for t in model.graph.initializer}


def changed(a, b) -> set[str]:
    ia, ib = inits(a), inits(b)
    return {k for k in ia if ia[k].SerializeToString() != ib[k].SerializeToString()}


def test_parameter_layers_graph_order_and_labels():
    m = conv_net()
    assert parameter_layers(m) == WEIGHTS
    assert layer_labels(m) == dict(zip(WEIGHTS, NODES))


def test_cascading_top_first_one_more_layer_each_step():
    m = conv_net()
    x = np.random.default_rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32)
    y0 = run_all(m, {"x": x})["y"]
    steps = list(cascading(m, seed=3))
    assert [label for label, _ in steps] == NODES[::-1]
    orig = inits(m)
    for k, (_, r) in enumerate(steps, start=1):
        top = WEIGHTS[::-1][:k]
        expect = set(top) | {BIASES[w] for w in top if w in BIASES} - {"b2"}  # b2 is all zero: stays zero
        assert changed(m, r) == expect, k
        onnx.checker.check_model(r)
        assert not np.allclose(run_all(r, {"x": x})["y"], y0)
        if k > 1:  # the layers already randomised keep their values: the cascade only adds layers
            prev = inits(steps[k - 2][1])
            for w in WEIGHTS[::-1][:k - 1]:
                assert inits(r)[w].SerializeToString() == prev[w].SerializeToString()
    full = inits(steps[-1][1])
    for name in ("w1", "w2"):  # enough elements for a sample std within 10%
        a, b = numpy_helper.to_array(orig[name]), numpy_helper.to_array(full[name])
        assert b.shape == a.shape and b.dtype == a.dtype
        assert b.std() == pytest.approx(a.std(), rel=0.10)
        assert abs(b.mean()) < 0.15 * a.std()  # zero-mean: w1's original mean of 0.1 is not kept
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.15
    np.testing.assert_array_equal(numpy_helper.to_array(full["b2"]), 0.0)
    b5 = numpy_helper.to_array(full["b5"])  # a constant bias is drawn with its RMS (0.25)
    assert not np.allclose(b5, 0.25) and np.abs(b5).max() < 0.25 * 5


def test_independent_one_layer_at_a_time_and_same_draw_as_the_cascade():
    m = conv_net()
    cascade = inits(list(cascading(m, seed=3))[-1][1])
    steps = list(independent(m, seed=3))
    assert [label for label, _ in steps] == NODES[::-1]
    for (_, r), w in zip(steps, WEIGHTS[::-1]):
        assert changed(m, r) == {w} | ({BIASES[w]} if w in BIASES and w != "w2" else set())
        assert inits(r)[w].SerializeToString() == cascade[w].SerializeToString()
    assert changed(randomise(m, ["w3"], seed=3), randomise(m, ["w3"], seed=4)) == {"w3"}
    assert not changed(randomise(m, ["w3"], seed=3), randomise(m, ["w3"], seed=3))
    with pytest.raises(ValueError, match="not parameter layers"):
        randomise(m, ["b1"])


def test_bundled_unet_layers_and_weight_statistics(bundled_frame):
    loaded, _ = bundled_frame
    m = onnx.load_model_from_string(loaded.onnx_bytes)
    layers = parameter_layers(m)
    assert len(layers) == 23 and layers[-1] == "head.weight" and layers[0] == "onnx::Conv_187"
    labels = layer_labels(m)
    first = next(cascading(m, seed=0))
    assert first[0] == labels["head.weight"] == "/head/Conv"
    assert changed(m, first[1]) == {"head.weight", "head.bias"}
    r = randomise(m, layers, seed=0)
    orig, new = inits(m), inits(r)
    for w in layers:
        a, b = numpy_helper.to_array(orig[w]), numpy_helper.to_array(new[w])
        if a.size >= 1000:
            assert b.std() == pytest.approx(a.std(), rel=0.10), w


def test_randomised_unet_maps_decorrelate(bundled_frame):
    """Seg-Grad-CAM of the trained bundled U-Net vs the fully cascaded randomised one: |Spearman| < 0.3
    (averaged over the classes present); the trained model against itself: exactly 1."""
    loaded, x = bundled_frame
    card = loaded.card
    m = onnx.load_model_from_string(loaded.onnx_bytes)
    cfg = SegmentationExplainConfig(methods=("activation", "seg_gradcam"), upsample=False, uint8=False,
                                    top_k=0, second_block=False)

    def maps(model):
        eg = build_segmentation_explainer(model, card.input.tensor, card.logits, card.layers, cfg)
        out = run_all(eg.model, {card.input.tensor: x})
        return {eg.outputs[n].method: out[n] for n in eg.outputs}

    trained = maps(m)
    fully = randomise(m, parameter_layers(m), seed=0)  # the last step of cascading(m, 0)
    randomised = maps(fully)
    same = compare_maps(trained, trained)
    assert same["seg_gradcam"]["spearman"] == 1.0 and same["seg_gradcam"]["ssim"] == pytest.approx(1.0)
    assert same["seg_gradcam"]["rows"] >= 4  # most classes present in the frame
    diff = compare_maps(trained, randomised)
    assert abs(diff["seg_gradcam"]["spearman"]) < 0.3, diff["seg_gradcam"]["per_row"]
    assert abs(diff["activation"]["spearman"]) < 0.3, diff["activation"]["per_row"]
