"""RISE and SIDU (offline baselines of paper 001) on models whose scores are known linear functions of the pixels."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("onnxruntime")

from hsi_xai_node.reliability import BatchedModel, rebatch  # noqa: E402
from hsi_xai_node.reliability._baselines import (BaselineModel, RiseMasks, bilinear_matrix,  # noqa: E402
                                                 detection_scores, rise, segmentation_scores, sidu, sidu_masks,
                                                 sidu_weights, upsample, with_outputs)


def _model(nodes, inits, c, hw, k, name="m") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, *hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, k])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def linear_scorer(a: np.ndarray, b: np.ndarray, hw, hard_coded_batch: bool = False) -> onnx.ModelProto:
    """y_k = mean over pixels of (sum_c a_kc x_c) + b_k: a 1x1 conv, a global mean, a flatten.
    Pixel u's share of y_k is r_k(u) = sum_c a_kc x_c(u) / (H W), so y_k(M x) = sum_u M(u) r_k(u) + b_k.
    `hard_coded_batch`: Flatten is a Reshape to [1, K] (the batch of 1 fixed; BatchedModel loops)."""
    k, c = a.shape
    inits = [numpy_helper.from_array(a.reshape(k, c, 1, 1).astype(np.float32), "a"),
             numpy_helper.from_array(b.astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "a", "b"], ["z"]), helper.make_node("GlobalAveragePool", ["z"], ["g"])]
    if hard_coded_batch:
        inits.append(numpy_helper.from_array(np.array([1, k], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["g", "shape"], ["y"]))
    else:
        nodes.append(helper.make_node("Flatten", ["g"], ["y"], axis=1))
    return _model(nodes, inits, c, hw, k)


def pooled_scorer(a: np.ndarray) -> onnx.ModelProto:
    """x (1, 2, 8, 8) -> feat = 2x2 average pool (1, 2, 4, 4) -> y_k = sum(a_k * feat) (a full-size conv)."""
    k = a.shape[0]
    nodes = [helper.make_node("AveragePool", ["x"], ["feat"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["feat", "a"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"], axis=1)]
    return _model(nodes, [numpy_helper.from_array(a.astype(np.float32), "a")], 2, (8, 8), k)


def pooled_reference(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The pooled scorer in numpy: (N, 2, 8, 8) -> (N, K)."""
    pooled = x.reshape(x.shape[0], 2, 4, 2, 4, 2).mean((3, 5))
    return np.einsum("kchw,nchw->nk", a, pooled)


def y(outputs):
    return outputs["y"]


def interp_matrix(n_in: int, n_out: int, mirror: bool = False) -> np.ndarray:
    """Linear upsampling weights built independently: np.interp of each unit vector at half-pixel positions
    (np.interp holds the end values outside [0, n_in - 1], i.e. clamps the edges; `mirror` first reflects the
    positions about the outer sample centres, as skimage's mode="reflect" does)."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    if mirror:
        pos = np.where(pos < 0, -pos, pos)
        pos = np.where(pos > n_in - 1, 2 * (n_in - 1) - pos, pos)
    return np.stack([np.interp(pos, np.arange(n_in), np.eye(n_in)[g]) for g in range(n_in)], 1)


# --- resampling and masks ----------------------------------------------------------------

def test_upsample_matches_opencv_and_interp():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 5, 7)).astype(np.float32)
    up = upsample(maps, (23, 31))
    ref = np.stack([cv2.resize(m, (31, 23), interpolation=cv2.INTER_LINEAR) for m in maps])
    np.testing.assert_allclose(up, ref, atol=1e-5)
    np.testing.assert_allclose(bilinear_matrix(5, 23), interp_matrix(5, 23), atol=1e-12)
    np.testing.assert_allclose(bilinear_matrix(5, 23, "mirror"), interp_matrix(5, 23, mirror=True), atol=1e-12)
    np.testing.assert_allclose(bilinear_matrix(4, 8, "mirror")[:, 1], [.25, .25, .75, .75, .25, 0, 0, 0])


def test_rise_masks_are_petsiucks():
    """Each mask = the s x s grid resized bilinearly to (s + 1) * cell (skimage order 1, mode reflect: Petsiuk's
    call), cropped at its shift; values in [0, 1], mean p, and the same masks whatever the chunking."""
    masks = RiseMasks(64, (24, 30), grid=4, p=0.3, seed=5)
    assert masks.cell == (6, 8) and masks.shifts[:, 0].max() < 6 and masks.shifts[:, 1].max() < 8
    all_at_once = masks[0:64]
    np.testing.assert_array_equal(np.concatenate([masks[0:10], masks[10:64]]), all_at_once)
    uy, ux = interp_matrix(4, 30, mirror=True), interp_matrix(4, 40, mirror=True)
    try:
        from skimage.transform import resize
    except ImportError:
        resize = None
    for i in (0, 17, 63):
        dy, dx = masks.shifts[i]
        full = uy @ masks.grids[i] @ ux.T
        np.testing.assert_allclose(all_at_once[i], full[dy:dy + 24, dx:dx + 30], atol=1e-6)
        if resize is not None:
            sk = resize(masks.grids[i].astype(np.float64), (30, 40), order=1, mode="reflect", anti_aliasing=False)
            np.testing.assert_allclose(all_at_once[i], sk[dy:dy + 24, dx:dx + 30], atol=1e-6)
    assert all_at_once.min() >= 0 and all_at_once.max() <= 1
    assert abs(all_at_once.mean() - 0.3) < 0.05


# --- RISE on a linear model ----------------------------------------------------------------

@pytest.fixture(scope="module")
def linear_case():
    """24 x 32 pixels, 2 bands, 2 targets. The bands are smooth blobs, so each target's pixel weights r_k are smooth
    at the scale of RISE's cells (6 x 8 px with a 4 x 4 grid)."""
    h, w = 24, 32
    yy, xx = np.mgrid[0:h, 0:w]
    x0 = np.exp(-((yy - 8) ** 2 + (xx - 10) ** 2) / (2 * 4.0 ** 2))
    x1 = np.exp(-((yy - 15) ** 2 + (xx - 23) ** 2) / (2 * 5.0 ** 2))
    x = np.stack([x0, x1])[None].astype(np.float32)
    a = np.array([[1.0, -0.5], [0.2, 1.0]])
    b = np.array([0.1, -0.2])
    r = np.einsum("kc,chw->khw", a, x[0].astype(np.float64)) / (h * w)
    return x, a, b, r


def test_rise_is_the_mask_weighted_score_sum(linear_case):
    """For a linear model the estimate is exact with the same masks: S_k = sum_i (M_i . r_k + b_k) M_i / (N p)."""
    x, a, b, r = linear_case
    model = linear_scorer(a, b, x.shape[2:])
    s = rise(model, x, y, n_masks=50, grid=4, p=0.5, batch=16, seed=3, threads=1)
    m = RiseMasks(50, x.shape[2:], 4, 0.5, 3)[0:50].astype(np.float64)
    scores = np.einsum("nhw,khw->nk", m, r) + b
    np.testing.assert_allclose(s, np.einsum("nk,nhw->khw", scores, m) / (50 * 0.5), rtol=1e-4, atol=1e-6)


def test_rise_converges_to_its_expectation_on_a_linear_model(linear_case):
    """Expectation of RISE for y_k(M x) = sum_u M(u) r_k(u) + b_k.

    A mask is M(v) = sum_g B_g phi_g(v): B_g ~ Bernoulli(p) iid over the s x s cells, phi_g(v) the bilinear weights
    of the crop at the mask's shift (summing to 1 over g). Given the shift, E[M(v)] = p and
    E[M(u) M(v)] = p^2 + p (1 - p) sum_g phi_g(u) phi_g(v). Hence
        E[S_k(v)] = E[y_k(M x) M(v)] / p = p sum_u r_k(u) + b_k + (1 - p) (Phi r_k)(v),
    Phi(u, v) = E_shift[sum_g phi_g(u) phi_g(v)]: a constant plus r_k smoothed by the masks' autocorrelation.
    phi is separable (rows x columns) and the two shifts are independent, so Phi r = E[Py Py^T] r E[Px Px^T] with
    Py the cropped rows of the row-upsampling matrix (mirrored edges, as the masks). RISE's map converges to that,
    and ranks the pixels as r does."""
    from scipy.stats import pearsonr, spearmanr

    x, a, b, r = linear_case
    h, w = x.shape[2:]
    p, grid = 0.5, 4
    model = linear_scorer(a, b, (h, w))
    s = rise(model, x, y, n_masks=4000, grid=grid, p=p, batch=500, seed=11, threads=1)
    cy, cx = -(-h // grid), -(-w // grid)
    uy, ux = interp_matrix(grid, (grid + 1) * cy, True), interp_matrix(grid, (grid + 1) * cx, True)
    ay = np.mean([uy[d:d + h] @ uy[d:d + h].T for d in range(cy)], 0)
    ax = np.mean([ux[d:d + w] @ ux[d:d + w].T for d in range(cx)], 0)
    for k in range(2):
        expected = p * r[k].sum() + b[k] + (1 - p) * ay @ r[k] @ ax.T
        assert pearsonr(s[k].ravel(), expected.ravel())[0] > 0.95
        assert abs(s[k].mean() - expected.mean()) < 0.1 * np.abs(expected - expected.mean()).max()
        assert spearmanr(s[k].ravel(), r[k].ravel())[0] > 0.8


def test_rise_batched_equals_looped(linear_case):
    x, a, b, _ = linear_case
    x = x[:, :, :12, :16]
    model = linear_scorer(a, b, (12, 16))
    one = BaselineModel(model, 1, threads=1)
    wide = BaselineModel(model, 7, threads=1)
    looped = BaselineModel(model, 7, threads=1, allow_rebatch=False)
    assert wide.batched and not looped.batched
    kw = dict(n_masks=20, grid=3, p=0.5, seed=2)
    ref = rise(one, x, y, **kw)
    np.testing.assert_allclose(rise(wide, x, y, **kw), ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rise(looped, x, y, **kw), ref, rtol=1e-5, atol=1e-7)
    assert (one.calls, wide.calls, looped.calls) == (20, 3, 20)  # 7 + 7 + 6 (padded) rows when re-batched
    # a short tail (1 row <= 7 / 2) runs on the batch-1 engine; a wrapped BatchedModel (no batch-1 engine) pads it
    short = dict(kw, n_masks=15)
    ref15, details = rise(one, x, y, **short), {}
    np.testing.assert_allclose(rise(wide, x, y, details=details, **short), ref15, rtol=1e-5, atol=1e-7)
    assert details["calls"] == 3 and details["scores"].shape == (15, 2)
    wrapped = BatchedModel(model, 7, threads=1)
    np.testing.assert_allclose(rise(wrapped, x, y, details=details, **short), ref15, rtol=1e-5, atol=1e-7)
    assert details["calls"] == 3 and wrapped.batched
    hard = linear_scorer(a, b, (12, 16), hard_coded_batch=True)
    assert rebatch(hard, 7) is None
    bm = BatchedModel(hard, 7, threads=1)
    assert not bm.batched
    np.testing.assert_allclose(rise(bm, x, y, **kw), ref, rtol=1e-5, atol=1e-7)
    blurred = rise(one, x, y, baseline="blur", **kw)
    assert not np.allclose(blurred, ref)  # the baseline is used


def test_a_resize_with_constant_sizes_is_rebatched():
    """A folded dynamic export resizes to constant sizes [1, C, H, W] (mmsegmentation's decode head after
    `hsi-xai import-model`): re-batched with the batch entry n, the rows equal the batch-1 runs."""
    import onnxruntime as ort

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((2, 3, 1, 1)).astype(np.float32), "w")
    sizes = numpy_helper.from_array(np.array([1, 2, 12, 20], np.int64), "sizes")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Resize", ["c", "", "", "sizes"], ["y"], mode="linear")]
    graph = helper.make_graph(nodes, "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 12, 20])], [w, sizes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    wide = rebatch(model, 4)
    assert wide is not None and [t.name for t in wide.graph.initializer] == ["w", "sizes_batch4"]
    x = np.random.default_rng(1).standard_normal((4, 3, 6, 10)).astype(np.float32)
    got = ort.InferenceSession(wide.SerializeToString()).run(None, {"x": x})[0]
    one = ort.InferenceSession(model.SerializeToString())
    for k in range(4):
        np.testing.assert_array_equal(got[k], one.run(None, {"x": x[k:k + 1]})[0][0])


# --- SIDU ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sidu_case():
    """Band 0 is ~1 on the left half, band 1 ~1 on the top half, so the 2x2-pooled features ("feat", 4 x 4) are > 0.5
    exactly there: SIDU's two masks are the left and the top half, bilinearly upsampled to 8 x 8, i.e. a step
    across the middle becomes 1, 1, 1, .75, .25, 0, 0, 0 (half-pixel centres: output 3 samples input 1.25)."""
    rng = np.random.default_rng(1)
    x = np.zeros((1, 2, 8, 8), np.float32)
    x[0, 0, :, :4] = rng.uniform(0.8, 1.2, (8, 4))
    x[0, 1, :4, :] = rng.uniform(0.8, 1.2, (4, 8))
    a = rng.normal(size=(2, 2, 4, 4))
    ramp = np.array([1, 1, 1, .75, .25, 0, 0, 0])
    masks = np.stack([np.tile(ramp, (8, 1)), np.tile(ramp[:, None], (1, 8))])  # left half, top half
    return x, a, masks


def test_sidu_masks_of_hand_set_features(sidu_case):
    x, a, masks = sidu_case
    pooled = x.reshape(1, 2, 4, 2, 4, 2).mean((3, 5))
    low = sidu_masks(pooled)
    np.testing.assert_array_equal(low[0], np.tile([1, 1, 0, 0], (4, 1)))
    np.testing.assert_array_equal(low[1], np.tile([1, 1, 0, 0], (4, 1)).T)
    np.testing.assert_allclose(upsample(low, (8, 8)), masks, atol=1e-7)
    # relative rule: > 0.5 of each channel's max (here the same halves); a channel <= 0 gives an empty mask
    np.testing.assert_array_equal(sidu_masks(pooled, 0.5, "relative"), low)
    assert sidu_masks(-np.ones((1, 4, 4)), 0.5, "relative").sum() == 0


@pytest.mark.parametrize("uniqueness", ["target", "vector"])
def test_sidu_two_masks_by_hand(sidu_case, uniqueness):
    """p_i = y(x * M_i), p_o = y(x): SD_ik = exp(-(p_ik - p_ok)^2 / (2 sigma^2)); with two masks both uniquenesses
    are the distance between them: |p_1k - p_2k| per target, or ||p_1 - p_2|| over the targets;
    S_k = (SD_1k U_1k M_1 + SD_2k U_2k M_2) / 2."""
    x, a, masks = sidu_case
    model = pooled_scorer(a)
    sigma = 1.5
    po = pooled_reference(a, x)[0]
    p = pooled_reference(a, x * masks[:, None])
    sd = np.exp(-(p - po) ** 2 / (2 * sigma ** 2))
    u = np.abs(p[0] - p[1]) if uniqueness == "target" else np.full(2, np.linalg.norm(p[0] - p[1]))
    expected = np.stack([(sd[0, k] * u[k] * masks[0] + sd[1, k] * u[k] * masks[1]) / 2 for k in range(2)])
    assert np.all(u > 0.05) and np.all(sd > 0.05)  # the case is not degenerate
    details = {}
    runner = BaselineModel(model, 2, layers=["feat"], threads=1)
    s = sidu(runner, x, y, "feat", sigma=sigma, uniqueness=uniqueness, details=details)
    np.testing.assert_allclose(s, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(details["reference"], po, rtol=1e-5)
    np.testing.assert_allclose(details["scores"], p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(details["mask_fraction"], [0.5, 0.5])
    assert runner.calls == 2  # the reference run, then both masks in one call


def test_sidu_batched_equals_looped(sidu_case):
    x, a, _ = sidu_case
    model = pooled_scorer(a)
    ref = sidu(BaselineModel(model, 1, ["feat"], threads=1), x, y, "feat", sigma=1.0)
    for runner in (BaselineModel(model, 3, ["feat"], threads=1),
                   BaselineModel(model, 3, ["feat"], threads=1, allow_rebatch=False),
                   BatchedModel(with_outputs(model, ["feat"]), 3, threads=1)):
        np.testing.assert_allclose(sidu(runner, x, y, "feat", sigma=1.0), ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sidu(model, x, y, "feat", sigma=1.0, batch=2, threads=1), ref, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="no output"):
        sidu(BatchedModel(model, 3, threads=1), x, y, "feat")


def test_sidu_weights_by_hand():
    """p = 0, 1, 3 against p_o = 1, sigma 1: SD = e^-1/2, 1, e^-2; U = 0+1+3, 1+0+2, 3+2+0 = 4, 3, 5
    (min-max rescaled: .5, 0, 1)."""
    w = sidu_weights([1.0], [[0.0], [1.0], [3.0]], sigma=1.0)
    np.testing.assert_allclose(w[:, 0], [4 * np.exp(-0.5), 3.0, 5 * np.exp(-2.0)])
    w = sidu_weights([1.0], [[0.0], [1.0], [3.0]], sigma=1.0, normalise_uniqueness=True)
    np.testing.assert_allclose(w[:, 0], [0.5 * np.exp(-0.5), 0.0, np.exp(-2.0)], atol=1e-12)
    # vector: Euclidean distances between rows (0, 0), (3, 4), (0, 4): 5 + 4, 5 + 3, 4 + 3
    w = sidu_weights([0.0, 0.0], [[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]], sigma=1e6, uniqueness="vector")
    np.testing.assert_allclose(w, [[9, 9], [8, 8], [7, 7]], rtol=1e-9)


# --- score functions and the graph helper ------------------------------------------------------

def test_segmentation_scores_hand_case():
    z = np.arange(24, dtype=np.float64).reshape(2, 3, 2, 2) % 5 - 2.0
    pred = np.array([[0, 2], [2, 2]])  # class 1 absent
    logit = segmentation_scores([2, 0, 1], pred, "z", kind="logit")({"z": z})
    np.testing.assert_allclose(logit[:, 0], [(z[n, 2, 0, 1] + z[n, 2, 1, 0] + z[n, 2, 1, 1]) / 3 for n in range(2)])
    np.testing.assert_allclose(logit[:, 1], z[:, 0, 0, 0])
    np.testing.assert_array_equal(logit[:, 2], 0.0)
    prob = segmentation_scores([2, 0], pred, "z")({"z": z})
    e = np.exp(z)
    soft = e / e.sum(1, keepdims=True)
    np.testing.assert_allclose(prob[:, 0], soft[:, 2][:, pred == 2].mean(1))
    np.testing.assert_allclose(prob[:, 1], soft[:, 0, 0, 0])
    with pytest.raises(ValueError, match="do not match"):
        segmentation_scores([0], np.zeros((3, 3), int), "z")({"z": z})


def test_detection_scores_hand_case():
    s = np.arange(24, dtype=np.float32).reshape(2, 4, 3) / 100  # (N, anchors, classes)
    got = detection_scores([5, 0, 11])({"scores": s})
    np.testing.assert_allclose(got, np.stack([s[:, 1, 2], s[:, 0, 0], s[:, 3, 2]], 1))  # 5 = 1*3+2, 11 = 3*3+2
    with pytest.raises(ValueError, match="empty detection slot"):
        detection_scores([3, -1])
    with pytest.raises(ValueError, match="outside"):
        detection_scores([12])({"scores": s})


def test_with_outputs_exposes_a_layer_and_stays_rebatchable(sidu_case):
    _, a, _ = sidu_case
    model = pooled_scorer(a)
    m = with_outputs(model, ["feat", "y"])
    assert [o.name for o in m.graph.output] == ["y", "feat"]
    assert [d.dim_value for d in m.graph.output[1].type.tensor_type.shape.dim] == [1, 2, 4, 4]
    assert [o.name for o in model.graph.output] == ["y"]  # the original is untouched
    assert rebatch(m, 3) is not None
    with pytest.raises(ValueError, match="not computed"):
        with_outputs(model, ["nope"])
