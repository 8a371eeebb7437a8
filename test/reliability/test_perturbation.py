"""Insertion and deletion (Petsiuk et al. 2018) on models whose class score is a known linear function of the pixels."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("onnxruntime")

from hsi_xai_node.reliability import (BatchedModel, PerturbationConfig, auc, baseline_image, deletion,  # noqa: E402
                                      hard_coded_batch, insertion, perturbed_batch, rebatch,
                                      segmentation_insertion_deletion, segmentation_score)
from test.reliability.conftest import run_all  # noqa: E402

ZEROS = PerturbationConfig(steps=4, deletion_baseline="zeros", insertion_baseline="zeros", normalise=True)


def linear_segmenter(w: np.ndarray, b: np.ndarray, hw, reshape_shape=None) -> onnx.ModelProto:
    """logits = 1x1 conv of x (1, C, H, W): logit_k(p) = w_k . x_p + b_k, no mixing between pixels.
    With `reshape_shape`, the logits pass through Reshape(reshape_shape) and back (a hard-coded batch when
    its first entry is 1)."""
    k, c = w.shape
    h, wd = hw
    inits = [numpy_helper.from_array(w.reshape(k, c, 1, 1).astype(np.float32), "w"),
             numpy_helper.from_array(b.astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["z" if reshape_shape is None else "z0"], name="conv")]
    if reshape_shape is not None:
        inits += [numpy_helper.from_array(np.array(reshape_shape, np.int64), "flat_shape"),
                  numpy_helper.from_array(np.array([reshape_shape[0], k, h, wd], np.int64), "back_shape")]
        nodes += [helper.make_node("Reshape", ["z0", "flat_shape"], ["zf"], name="flatten"),
                  helper.make_node("Reshape", ["zf", "back_shape"], ["z"], name="unflatten")]
    graph = helper.make_graph(nodes, "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, wd])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, k, h, wd])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def test_hand_four_pixels_four_steps():
    """x = [[4, 3], [2, 1]], logit_0 = x, logit_1 = -1: class 0 everywhere, score = mean logit_0 = 2.5.
    Perfect order (4, 3, 2, 1), zero baseline:
      deletion  scores 10, 6, 3, 1, 0 (/4) -> /2.5: 1, .6, .3, .1, 0 -> AUC .25 (.5 + .6 + .3 + .1 + 0) = .375
      insertion scores 0, 4, 7, 9, 10 (/4)        -> 0, .4, .7, .9, 1 -> AUC .25 (0 + .4 + .7 + .9 + .5) = .625
    Reversed order: deletion 1, .9, .7, .4, 0 -> .625; insertion 0, .1, .3, .6, 1 -> .375."""
    model = linear_segmenter(np.array([[1.0], [0.0]]), np.array([0.0, -1.0]), (2, 2))
    x = np.array([[[[4.0, 3.0], [2.0, 1.0]]]], np.float32)
    score = segmentation_score("z", 0, np.ones((2, 2), bool), kind="logit")
    runner = BatchedModel(model, 5, threads=1)
    assert runner.batched
    d = deletion(runner, x, x[0, 0], score, ZEROS)
    np.testing.assert_allclose(d.fractions, [0, .25, .5, .75, 1])
    np.testing.assert_allclose(d.scores, [2.5, 1.5, .75, .25, 0], rtol=1e-6)
    assert d.reference == pytest.approx(2.5) and d.auc == pytest.approx(0.375, abs=1e-6)
    i = insertion(runner, x, x[0, 0], score, ZEROS)
    np.testing.assert_allclose(i.scores, [0, 1, 1.75, 2.25, 2.5], rtol=1e-6)
    assert i.auc == pytest.approx(0.625, abs=1e-6)
    assert deletion(runner, x, -x[0, 0], score, ZEROS).auc == pytest.approx(0.625, abs=1e-6)
    assert insertion(runner, x, -x[0, 0], score, ZEROS).auc == pytest.approx(0.375, abs=1e-6)
    raw = PerturbationConfig(steps=4, deletion_baseline="zeros", normalise=False)
    assert deletion(runner, x, x[0, 0], score, raw).auc == pytest.approx(0.375 * 2.5, abs=1e-6)
    assert runner.calls == 5  # one engine call per curve


def test_auc_trapezoid():
    assert auc([0, 0.5, 1], [1, 1, 1]) == pytest.approx(1.0)
    assert auc([0, 0.5, 1], [2, 1, 0], reference=2.0) == pytest.approx(0.5)
    assert np.isnan(auc([0, 1], [0, 0], reference=0.0))


@pytest.fixture(scope="module")
def linear_case():
    """16x16 pixels, 3 bands: class 0's logit is w . x_p, class 1's a constant 1.5; R = pixels where class 0 wins."""
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, (1, 3, 16, 16)).astype(np.float32)
    w0 = np.array([1.0, 0.5, 0.8])
    model = linear_segmenter(np.stack([w0, np.zeros(3)]), np.array([0.0, 1.5]), (16, 16))
    z0 = np.einsum("c,chw->hw", w0, x[0].astype(np.float64))
    region = z0 > 1.5
    assert 0.15 < region.mean() < 0.25
    contribution = np.where(region, z0, 0.0) / region.sum()  # each pixel's exact share of the score
    return model, x, region, contribution


def reference_curve(contribution, order_map, steps, kind):
    """The numpy curve of the linear score with a zero baseline: the score minus (or plus) removed shares."""
    order = np.argsort(-order_map.ravel(), kind="stable")
    c = contribution.ravel()[order]
    counts = np.arange(steps + 1) * c.size // steps
    removed = np.array([c[:k].sum() for k in counts])
    total = contribution.sum()
    return (total - removed if kind == "deletion" else removed), counts / c.size


def test_perfect_ranking_deletion_near_zero_insertion_high(linear_case):
    model, x, region, contribution = linear_case
    cfg = PerturbationConfig(steps=16, deletion_baseline="zeros", insertion_baseline="zeros")
    runner = BatchedModel(model, 17, threads=1)
    score = segmentation_score("z", 0, region, kind="logit")
    random_rank = np.random.default_rng(0).permutation(contribution.size).reshape(contribution.shape)
    curves = {}
    for name, ranking in (("perfect", contribution), ("random", random_rank)):
        for kind, fn in (("deletion", deletion), ("insertion", insertion)):
            curve = fn(runner, x, ranking, score, cfg)
            ref, fractions = reference_curve(contribution, ranking, 16, kind)
            np.testing.assert_allclose(curve.fractions, fractions)
            np.testing.assert_allclose(curve.scores, ref, rtol=1e-5, atol=1e-6)
            assert curve.auc == pytest.approx(np.trapezoid(ref / contribution.sum(), fractions), abs=1e-5)
            curves[name, kind] = curve.auc
    # the perfect ranking has removed the whole score once the region's pixels are gone
    assert curves["perfect", "deletion"] < region.mean() / 2 + 0.05
    assert curves["perfect", "deletion"] < 0.25 * curves["random", "deletion"]
    assert curves["random", "deletion"] == pytest.approx(0.5, abs=0.1)
    assert curves["perfect", "insertion"] > 1 - region.mean() / 2 - 0.05
    assert curves["perfect", "insertion"] > curves["random", "insertion"] + 0.25
    assert runner.batched and runner.calls == 4


def test_prob_score_and_blur_baseline(linear_case):
    model, x, region, contribution = linear_case
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    blurred = baseline_image(x, "blur", sigma=2.0)
    ref = np.stack([scipy_ndimage.gaussian_filter(x[0, c].astype(np.float64), 2.0, mode="reflect", truncate=4.0)
                    for c in range(3)])[None]
    np.testing.assert_allclose(blurred, ref, atol=1e-5)
    np.testing.assert_array_equal(baseline_image(x, 0.5), np.full_like(x, 0.5))
    cfg = PerturbationConfig(steps=8, blur_sigma=2.0)  # defaults: zeros for deletion, blur for insertion
    runner = BatchedModel(model, 9, threads=1)
    score = segmentation_score("z", 0, region)  # softmax probability
    z = np.einsum("c,nchw->nhw", np.array([1.0, 0.5, 0.8]), perturbed_batch(x, contribution, blurred, 8, "insertion")[0])
    p0 = 1 / (1 + np.exp(1.5 - z))  # two classes: softmax = logistic of the logit difference
    curve = insertion(runner, x, contribution, score, cfg)
    np.testing.assert_allclose(curve.scores, p0[:, region].mean(1), rtol=1e-5)
    assert curve.reference == pytest.approx(p0[-1][region].mean(), rel=1e-5)
    d = deletion(runner, x, contribution, score, cfg)
    zd = np.einsum("c,nchw->nhw", np.array([1.0, 0.5, 0.8]),
                   perturbed_batch(x, contribution, np.zeros_like(x), 8, "deletion")[0])
    np.testing.assert_allclose(d.scores, (1 / (1 + np.exp(1.5 - zd)))[:, region].mean(1), rtol=1e-5)


def test_perturbed_batch_rows():
    x = np.arange(2 * 2 * 3, dtype=np.float32).reshape(1, 2, 2, 3) + 1
    s = np.array([[5.0, 1.0, 3.0], [2.0, 4.0, 0.0]])  # order: (0,0), (1,1), (0,2), (1,0), (0,1), (1,2)
    base = np.full_like(x, -1.0)
    rows, fractions = perturbed_batch(x, s, base, 3, "deletion")
    np.testing.assert_allclose(fractions, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_array_equal(rows[0], x[0])
    gone = rows[1] == -1.0
    np.testing.assert_array_equal(gone[0], [[True, False, False], [False, True, False]])
    np.testing.assert_array_equal(gone[1], gone[0])  # all channels of a pixel together
    np.testing.assert_array_equal(rows[3], base[0])
    ins, _ = perturbed_batch(x, s, base, 3, "insertion")
    np.testing.assert_array_equal(ins[1] != -1.0, gone)
    nhwc, _ = perturbed_batch(np.moveaxis(x, 1, 3), s, np.moveaxis(base, 1, 3), 3, "deletion", layout="NHWC")
    np.testing.assert_array_equal(nhwc, np.moveaxis(rows, 1, 3))
    with pytest.raises(ValueError, match="saliency map"):
        perturbed_batch(x, s[:, :2], base, 3, "deletion")


def test_rebatch_or_loop_same_curves(linear_case):
    model, x, region, contribution = linear_case
    w, b = np.stack([np.array([1.0, 0.5, 0.8]), np.zeros(3)]), np.array([0.0, 1.5])
    hard = linear_segmenter(w, b, (16, 16), reshape_shape=[1, 2, -1])
    assert hard_coded_batch(hard) == ["flatten", "unflatten"] and rebatch(hard, 5) is None
    for free in ([0, 2, -1], [-1, 2, 256]):  # batch copied (0) or inferred (-1): re-batched
        soft = linear_segmenter(w, b, (16, 16), reshape_shape=free)
        assert hard_coded_batch(soft) == [] and rebatch(soft, 5) is not None
    # what the Reshape rule cannot see, shape inference does: a sum over the batch axis stays at batch 1
    xs = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    summed = helper.make_model(helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axis0"], ["s"], keepdims=1), helper.make_node("Add", ["x", "s"], ["y"])],
        "batch_sum", [xs], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        [numpy_helper.from_array(np.array([0], np.int64), "axis0")]), opset_imports=[helper.make_opsetid("", 17)],
        ir_version=8)
    assert hard_coded_batch(summed) == [] and rebatch(summed, 5) is None
    wide = rebatch(model, 5)
    assert [d.dim_value for d in wide.graph.input[0].type.tensor_type.shape.dim] == [5, 3, 16, 16]
    assert [d.dim_value for d in wide.graph.output[0].type.tensor_type.shape.dim] == [5, 2, 16, 16]
    cfg = PerturbationConfig(steps=4, deletion_baseline="zeros")
    score = segmentation_score("z", 0, region, kind="logit")
    looped, batched = BatchedModel(hard, 5, threads=1), BatchedModel(model, 5, threads=1)
    assert not looped.batched and batched.batched
    a, c = deletion(looped, x, contribution, score, cfg), deletion(batched, x, contribution, score, cfg)
    np.testing.assert_allclose(a.scores, c.scores, rtol=1e-6)
    assert looped.calls == 5 and batched.calls == 1
    # each looped row is the batch-1 model's own output
    rows, _ = perturbed_batch(x, contribution, np.zeros_like(x), 4, "deletion")
    np.testing.assert_allclose(a.scores, [score(run_all(model, {"x": r[None]}))[0] for r in rows], rtol=1e-6)


def test_segmentation_insertion_deletion_table(linear_case):
    model, x, _, contribution = linear_case
    maps = {"perfect": np.stack([contribution, np.zeros_like(contribution)]),
            "inverse": np.stack([-contribution, np.zeros_like(contribution)])[:, None]}
    cfg = PerturbationConfig(steps=8, deletion_baseline="zeros", insertion_baseline="zeros")
    table = segmentation_insertion_deletion(model, x, maps, logits="z", classes=[0], score_kind="logit",
                                            config=cfg, threads=1)
    assert set(table["perfect"]["classes"]) == {0}
    assert table["perfect"]["deletion"] < table["inverse"]["deletion"]
    assert table["perfect"]["insertion"] > table["inverse"]["insertion"]
    ref, fractions = reference_curve(contribution, contribution, 8, "deletion")
    assert table["perfect"]["deletion"] == pytest.approx(np.trapezoid(ref / ref[0], fractions), abs=1e-5)
    both = segmentation_insertion_deletion(model, x, maps, logits="z", config=cfg, threads=1)
    assert set(both["perfect"]["classes"]) == {0, 1}  # both classes are predicted somewhere
