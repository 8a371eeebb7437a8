"""The CAM family in the graph against its formulas, computed independently in float64 from PyTorch autograd.

Every method, every class at once, at the layer before the final 1x1 conv (closed forms, no backward)
and at earlier layers (one reverse-mode pass); EigenCAM against numpy's SVD with the same sign rule;
Score-CAM against a loop of masked float64 forwards; per-box methods and camera attributions of a
detector against autograd. The reference formulas are written here from the papers (and pytorch-grad-cam
where the papers leave a choice), not taken from the code under test.
"""

import numpy as np
import pytest

from hsi_xai_node.explain import SegmentationExplainConfig, assert_tensorrt_compatible, build_segmentation_explainer
from hsi_xai_node.explain._cams import EIGEN_ITERATIONS, EPS_GRADCAM_PP, EPS_XGRADCAM
from test.explain.harness import relative_error, torch
from test.explain.test_segmentation_explain import LAYERS, reference, run, tiny  # noqa: F401  (fixture)

NEW = ("gradcam_pp", "xgradcam", "layercam", "seg_xres", "eigencam")


def ref_gradcam_pp(g, a):
    """g (C, h, w) dS/dA, a (C, h, w): Chattopadhyay 2018's closed form from first-order gradients."""
    s = a.sum(axis=(1, 2), keepdims=True)
    alpha = np.where(g != 0, g ** 2 / (2 * g ** 2 + s * g ** 3 + EPS_GRADCAM_PP), 0.0)
    w = (np.maximum(g, 0) * alpha).sum(axis=(1, 2), keepdims=True)
    return np.maximum((w * a).sum(0), 0)


def ref_xgradcam(g, a):
    w = (g * a).sum(axis=(1, 2), keepdims=True) / (a.sum(axis=(1, 2), keepdims=True) + EPS_XGRADCAM)
    return np.maximum((w * a).sum(0), 0)


def ref_layercam(g, a):
    return np.maximum((np.maximum(g, 0) * a).sum(0), 0)


def ref_xres(g, a, window=2):
    """Gradients max-pooled over window x window blocks (partial blocks at the edges use what they hold),
    each block's maximum spread back over the block."""
    c, h, w = g.shape
    pooled = np.empty_like(g)
    for y in range(0, h, window):
        for x in range(0, w, window):
            block = g[:, y:y + window, x:x + window]
            pooled[:, y:y + window, x:x + window] = block.max(axis=(1, 2), keepdims=True)
    return np.maximum((pooled * a).sum(0), 0)


def ref_eigencam(a):
    """ReLU of the projection on the first right singular vector of the centred (pixels x channels) matrix,
    its sign chosen so that the projection correlates positively with sum_k A_k."""
    c, h, w = a.shape
    x = a.reshape(c, -1).T
    xc = x - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    p = xc @ vt[0]
    if (p * x.sum(1)).sum() < 0:
        p = -p
    return np.maximum(p.reshape(h, w), 0), s


def ours(eg, out, method, layer):
    return next(v for k, v in out.items() if k in eg.outputs and eg.outputs[k].method == method
                and eg.outputs[k].layer == layer)


def test_every_method_every_class_matches_its_formula(tiny):  # noqa: F811 (the fixture)
    model, m, x = tiny
    cfg = SegmentationExplainConfig(methods=NEW, layers=("penultimate", "bottleneck", "dec2"), upsample=False,
                                    uint8=False)
    eg = build_segmentation_explainer(m, "input", "logits", LAYERS, cfg)
    assert_tensorrt_compatible(eg.model, "CAM family explain graph")
    out = run(eg, {"input": x})
    logits = out["logits"]
    region = (logits.argmax(1)[None] == np.arange(3).reshape(3, 1, 1, 1)).astype(np.float64)
    grads, acts, _, _ = reference(model, x, region, ["dec1", "bottleneck", "dec2"])
    formulas = {"gradcam_pp": ref_gradcam_pp, "xgradcam": ref_xgradcam, "layercam": ref_layercam,
                "seg_xres": ref_xres}
    for layer in ("dec1", "bottleneck", "dec2"):  # dec1: closed form; the others through the backward pass
        a = acts[layer][0]
        for method, formula in formulas.items():
            got = ours(eg, out, method, layer)
            for c in range(3):
                want = formula(grads[layer][c], a)
                assert relative_error(got[c, 0], want) < 1e-5, (method, layer, c)
        eigen, s = ref_eigencam(a)
        got = ours(eg, out, "eigencam", layer)
        assert np.array_equal(got[0], got[-1])  # gradient-free: one map for every class
        err = relative_error(got[0, 0], eigen)
        assert err < 1e-4, (layer, err, s[:3])


def ref_fem(a, k, slack=0.0):
    """Paper 003 eq. 26 (Fuad 2020): sum_k mean(A_k) * [A_k >= mean(A_k) + K std(A_k)], population std; the
    threshold moved by `slack` (in units of each channel's spread) to bound what float32 rounding may flip."""
    mean = a.mean(axis=(1, 2), keepdims=True)
    std = a.std(axis=(1, 2), keepdims=True)
    strong = a >= mean + k * std + slack * (np.abs(mean) + std)
    return (mean * strong).sum(0)


@pytest.mark.parametrize("k", [2.0, 1.0, 0.0])
def test_fem_every_layer_matches_the_k_sigma_formula(tiny, k):  # noqa: F811 (the fixture)
    """FEM at each layer for K = 2 (the default), 1 (the review's) and 0 (above the mean): one map for every
    class. A pixel within float32 rounding of a channel's threshold may fall either side, so the map is checked
    between the formula with the threshold raised and lowered by 1e-5 of the channel's spread (the weights are
    ReLU means, >= 0: the map only grows as the threshold falls)."""
    model, m, x = tiny
    layers = ("penultimate", "bottleneck", "dec2")
    eg = build_segmentation_explainer(m, "input", "logits", LAYERS,
                                      SegmentationExplainConfig(methods=("fem",), layers=layers, upsample=False,
                                                                uint8=False, fem_k=k))
    assert_tensorrt_compatible(eg.model, "FEM explain graph")
    out = run(eg, {"input": x})
    _, acts, _, _ = reference(model, x, np.ones((3, 1) + x.shape[2:]), ["dec1", "bottleneck", "dec2"])
    for layer in ("dec1", "bottleneck", "dec2"):
        a = acts[layer][0]
        got = ours(eg, out, "fem", layer)
        assert np.array_equal(got[0], got[-1])  # class-agnostic
        low, high = ref_fem(a, k, 1e-5), ref_fem(a, k, -1e-5)
        tol = 1e-6 * np.abs(a.mean(axis=(1, 2))).sum()
        assert (got[0, 0] >= low - tol).all() and (got[0, 0] <= high + tol).all(), layer
        assert (low > 0).any() and (low < low.max()).any(), layer  # some pixels strong, some not


def test_eigencam_power_iteration_against_svd_on_a_hard_spectrum():
    """How close EIGEN_ITERATIONS power iterations come to the SVD when the two largest singular values are
    close (gap 5%): the error shrinks like (s2/s1)^(2n)."""
    from hsi_xai_node.explain._cams import CamContext, eigencam
    from hsi_xai_node.explain._graph import Builder
    from test.explain.harness import session

    from onnx import TensorProto, helper

    rng = np.random.default_rng(3)
    c, h, w = 16, 12, 20
    u, _ = np.linalg.qr(rng.standard_normal((h * w, c)))
    v, _ = np.linalg.qr(rng.standard_normal((c, c)))
    spectrum = np.array([10.0, 9.5] + [1.0] * (c - 2))
    a = (u * spectrum @ v.T).T.reshape(1, c, h, w).astype(np.float32) + 0.5
    g = helper.make_graph([helper.make_node("Identity", ["a"], ["layer"])], "g",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, c, h, w])],
                          [helper.make_tensor_value_info("layer", TensorProto.FLOAT, [1, c, h, w])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    b = Builder(model)
    out = eigencam(CamContext(b, 2, "layer"))
    b.add_output(out, (2, 1, h, w))
    got = session(model).run([out], {"a": a})[0]
    want, s = ref_eigencam(a[0].astype(np.float64))
    ratio = (s[1] / s[0]) ** (2 * EIGEN_ITERATIONS)
    err = relative_error(got[0, 0], want)
    assert err < 5 * ratio + 1e-5, (err, ratio)


def test_scorecam_matches_a_loop_of_masked_forwards(tiny):  # noqa: F811 (the fixture)
    """Wang 2020 for every class: each channel of A, upsampled and scaled to [0, 1], masks the input; the class's
    region score of each masked input, softmaxed over the channels, weights A."""
    model, m, x = tiny
    eg = build_segmentation_explainer(m, "input", "logits", LAYERS,
                                      SegmentationExplainConfig(methods=("scorecam",), layers=("bottleneck", "dec1"),
                                                                upsample=False, uint8=False))
    assert_tensorrt_compatible(eg.model, "Score-CAM explain graph")
    out = run(eg, {"input": x})
    logits = out["logits"]
    region = logits.argmax(1)[0]
    F = torch.nn.functional
    for layer in ("bottleneck", "dec1"):
        acts = {}
        hook = getattr(model, layer).register_forward_hook(lambda mod, i, o: acts.__setitem__("a", o))
        x64 = torch.tensor(x, dtype=torch.float64)
        with torch.no_grad():
            model(x64)
        hook.remove()
        a = acts["a"]
        up = F.interpolate(a, size=x.shape[2:], mode="bilinear", align_corners=False)[0]
        lo, hi = up.amin(dim=(1, 2), keepdim=True), up.amax(dim=(1, 2), keepdim=True)
        masks = (up - lo) / (hi - lo + 1e-8)
        with torch.no_grad():
            masked_logits = torch.cat([model(x64 * masks[k][None, None]) for k in range(masks.shape[0])])
        a = a[0].numpy()
        got = ours(eg, out, "scorecam", layer)
        for c in range(3):
            scores = (masked_logits[:, c].numpy() * (region == c)).sum(axis=(1, 2))
            weights = np.exp(scores - scores.max())
            weights /= weights.sum()
            want = np.maximum((weights[:, None, None] * a).sum(0), 0)
            assert relative_error(got[c, 0], want) < 1e-5, (layer, c)


def test_a_method_that_cannot_be_built_says_so_by_name():
    from hsi_xai_node.explain import DetectionExplainConfig, ExplainError

    with pytest.raises(ExplainError, match=r"unknown per-box method\(s\) \['box_scorecam'\].*box_scorecam is not built"):
        DetectionExplainConfig(layers=("x",), methods=("box_scorecam",)).validated()
    with pytest.raises(ExplainError, match="unknown explanation method"):
        SegmentationExplainConfig(methods=("fullgrad",)).validated()


@pytest.mark.parametrize("n_in, n_out", [(64, 256), (80, 320), (7, 20), (20, 7), (5, 5), (1, 4)])
def test_the_maps_resize_matrix_is_onnx_resize_linear_half_pixel(n_in, n_out):
    """The full-size maps are two matrix products (explain/_maps.py): against ONNX Runtime's own Resize on the same
    maps, up and down, at ratios that are not whole numbers, and against PyTorch's bilinear resize."""
    from onnx import TensorProto, helper

    from hsi_xai_node.explain._maps import linear_resize_matrix
    from test.explain.harness import make_model, session

    maps = np.random.default_rng(n_in * 31 + n_out).standard_normal((3, 1, n_in, n_in + 2)).astype(np.float32)
    out_hw = [n_out, n_out + 3]
    graph = helper.make_graph(
        [helper.make_node("Resize", ["m", "", "", "sizes"], ["y"], mode="linear",
                          coordinate_transformation_mode="half_pixel")], "resize",
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, list(maps.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("sizes", TensorProto.INT64, [4], [3, 1, *out_hw])])
    engine = session(make_model(graph)).run(None, {"m": maps})[0]
    ours = linear_resize_matrix(n_in, out_hw[0]) @ maps @ linear_resize_matrix(n_in + 2, out_hw[1]).T
    # the engine computes each output's source coordinate in float32: up to about n_out * 2^-24 off, a weight error
    # of that size on the difference of two neighbours (at most 2 max|m|)
    np.testing.assert_allclose(ours, engine, rtol=0, atol=2 * max(out_hw) * 2.0 ** -23 * np.abs(maps).max())
    torch_ref = torch.nn.functional.interpolate(torch.from_numpy(maps).double(), size=out_hw, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(ours, torch_ref.numpy(), rtol=0, atol=2e-6 * np.abs(maps).max())
