"""Paper 003's white-box input attributions in the graph, against independent references in float64: PyTorch
autograd, Captum (InputXGradient, GuidedBackprop, Deconvolution) and Zennit (its rules and composites) on the same
graph rebuilt from real torch layers (torch_modules.OnnxModule); each LRP rule also against the layer's dense
matrix read off its Jacobian (Zennit's own test pattern), with numpy formulas of the rule."""


import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hsi_xai_node.explain import (ExplainError, SegmentationExplainConfig, assert_tensorrt_compatible,
                                  build_segmentation_explainer)
from hsi_xai_node.explain._attributions import INPUT_METHODS, PathOptions, conservation_residual
from hsi_xai_node.explain._baselines import blur_reference, noise_from_tiles, noise_tiles
from hsi_xai_node.explain._composites import LrpOptions
from test.explain.harness import relative_error, session, torch
from test.explain.torch_modules import OnnxModule
from test.references import zennit

captum_attr = pytest.importorskip("captum.attr", reason="Captum is a test reference: pip install -e '.[test]'")


def _zennit():
    return zennit()


LAYERS = {"penultimate": "dec1", "second_conv_block": "enc1", "bottleneck": "bottleneck"}
SHAPE = (1, 4, 16, 24)
OPTIONS = LrpOptions(epsilon=0.01, gamma=0.25, stabilizer=1e-6)
PATHS = PathOptions(smoothgrad_samples=4, smoothgrad_noise=0.15, smoothgrad_seed=7, ig_steps=6)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A small U-Net (4 bands, 3 classes) as ONNX, and a frame for it."""
    from hsi_xai_node.training.segmentation import export_onnx
    from hsi_xai_node.training.unet import UNet, UNetConfig

    torch.manual_seed(0)
    model = UNet(UNetConfig(in_channels=4, num_classes=3, depth=2, base_filters=4)).eval()
    x = np.random.default_rng(2).uniform(0.0, 1.0, SHAPE).astype(np.float32)  # reflectance-like, non-negative
    x[0, 0, :3, :4] = -0.05  # a few negative values, as dark-frame noise gives: the rules' negative branches run
    with torch.no_grad():  # even out the class means so that every class wins somewhere
        model.head.bias -= model(torch.from_numpy(x)).mean(dim=(0, 2, 3))
    path = tmp_path_factory.mktemp("tiny") / "u.onnx"
    export_onnx(model, path, SHAPE)
    return onnx.load(str(path)), x


@pytest.fixture(scope="module")
def tiny(tiny_model):
    """Every input method on the tiny U-Net, its outputs, the frame, each class's predicted region and the graph
    rebuilt as torch layers in float64."""
    m, x = tiny_model
    eg = build_segmentation_explainer(m, "input", "logits", LAYERS,
                                      SegmentationExplainConfig(methods=tuple(INPUT_METHODS), upsample=False,
                                                                uint8=False, lrp=OPTIONS, paths=PATHS))
    assert_tensorrt_compatible(eg.model, "every input attribution method")
    names = eg.output_names()
    out = dict(zip(names, session(eg.model).run(names, {"input": x})))
    region = (out["logits"].argmax(1)[None] == np.arange(3).reshape(3, 1, 1, 1)).astype(np.float64)
    assert region.reshape(3, -1).any(1).all()
    net = OnnxModule(m).double().eval()
    return eg, out, x, region, net


def ours(eg, out, method):
    """(per-pixel map, per-band sums over the region, total) of `method` from the graph's outputs."""
    by = {o.method: out[n] for n, o in eg.outputs.items()}
    return by[method][:, 0], by[f"{method}_bands"], by[f"{method}_total"][:, 0]


def target_of(eg, out, method):
    return next(out[n] for n, o in eg.outputs.items() if o.method == f"{method}_target")[:, 0]


def check(eg, out, method, attribution, region, rtol=1e-5, magnitude=False):
    """Our three outputs of `method` against the reference attribution (rows, bands, H, W) in float64."""
    per_pixel, bands, total = ours(eg, out, method)
    want_map = (np.abs(attribution) if magnitude else attribution).sum(1)
    assert relative_error(per_pixel, want_map) < rtol, (method, relative_error(per_pixel, want_map))
    want_bands = (attribution * region).sum((2, 3))
    assert relative_error(bands, want_bands) < rtol, (method, relative_error(bands, want_bands))
    assert relative_error(total, attribution.sum((1, 2, 3))) < rtol, method


class Scores(torch.nn.Module):
    """The graph's logits reduced to each class's region score: what Captum's targets index."""

    def __init__(self, net, region):
        super().__init__()
        self.net, self.region = net, torch.tensor(region[:, 0], dtype=torch.float64)

    def forward(self, x):
        logits = self.net(x)
        return torch.stack([(logits[:, c] * self.region[c]).sum((1, 2)) for c in range(len(self.region))], 1)


def _x64(x):
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


def test_gradient_and_input_x_gradient_match_autograd_and_captum(tiny):
    eg, out, x, region, net = tiny
    scores = Scores(net, region)
    grads = []
    for c in range(3):
        xt = _x64(x)
        grads.append(torch.autograd.grad(scores(xt)[0, c], xt)[0][0].numpy())
    g = np.stack(grads)
    check(eg, out, "gradient", g, region, magnitude=True)
    ixg = np.stack([captum_attr.InputXGradient(scores).attribute(_x64(x), target=c)[0].detach().numpy()
                    for c in range(3)])
    np.testing.assert_allclose(ixg, g * x[0].astype(np.float64), rtol=1e-10)  # Captum's is x * autograd
    check(eg, out, "input_x_gradient", ixg, region)


@pytest.mark.parametrize("method, reference", [("guided_backprop", "GuidedBackprop"), ("deconvnet", "Deconvolution")])
def test_guided_backprop_and_deconvnet_match_captum(tiny, method, reference):
    eg, out, x, region, net = tiny
    scores = Scores(net, region)
    ref = np.stack([getattr(captum_attr, reference)(scores).attribute(_x64(x), target=c)[0].detach().numpy()
                    for c in range(3)])
    check(eg, out, method, ref, region)
    assert not np.allclose(ours(eg, out, method)[0], ours(eg, out, "input_x_gradient")[0])  # really another rule


def _scores_at(net, region, x):
    with torch.no_grad():
        return Scores(net, region)(torch.tensor(x, dtype=torch.float64))[0].numpy()


def test_smoothgrad_matches_captums_noise_tunnel_on_the_same_noise(tiny, monkeypatch):
    """Captum's NoiseTunnel over Saliency(abs=False) (the mean of the signed gradients, every sample noisy), its
    normal draws replaced by our fixed-seed noise at our sigma (a share of the frame's range), and autograd."""
    eg, out, x, region, net = tiny
    from captum.attr._core import noise_tunnel

    n, (_, bands, h, w) = PATHS.smoothgrad_samples, x.shape
    unit = np.stack([noise_from_tiles(t, h, w) for t in noise_tiles(n, bands, PATHS.smoothgrad_seed)])
    sigma = PATHS.smoothgrad_noise * float(x.max() - x.min())
    assert abs(unit.std() - 1.0) < 0.05 and abs(unit.mean()) < 0.05  # standard normal elements
    draws = torch.tensor(unit.astype(np.float64))

    def normal(mean, std):
        assert float(std.flatten()[0]) == pytest.approx(sigma, rel=1e-6) and tuple(std.shape) == tuple(draws.shape)
        return mean + draws * std
    monkeypatch.setattr(noise_tunnel.torch, "normal", normal)
    scores = Scores(net, region)
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(scores))
    ref = np.stack([tunnel.attribute(_x64(x), nt_type="smoothgrad", nt_samples=n, stdevs=sigma, target=c,
                                     abs=False)[0].detach().numpy() for c in range(3)])
    by_hand = np.zeros_like(ref)
    for k in range(n):
        for c in range(3):
            xt = torch.tensor(x.astype(np.float64) + sigma * unit[k][None], requires_grad=True)
            by_hand[c] += torch.autograd.grad(scores(xt)[0, c], xt)[0][0].numpy() / n
    assert relative_error(ref, by_hand) < 1e-10
    check(eg, out, "smoothgrad", ref, region, magnitude=True)


def _baseline(x, kind):
    if kind == "zeros":
        return np.zeros_like(x, np.float64)
    if kind == "spectral_mean":
        return np.broadcast_to(x.astype(np.float64).mean(1, keepdims=True), x.shape).copy()
    return blur_reference(x, PATHS.blur_sigma_px)


def _run(model, x, methods, paths):
    eg = build_segmentation_explainer(model, "input", "logits", LAYERS,
                                      SegmentationExplainConfig(methods=methods, upsample=False, uint8=False,
                                                                lrp=OPTIONS, paths=paths))
    names = eg.output_names()
    return eg, dict(zip(names, session(eg.model).run(names, {"input": x})))


@pytest.mark.parametrize("baseline", ["zeros", "blur", "spectral_mean"])
@pytest.mark.parametrize("quadrature", ["riemann_right", "trapezoid"])
def test_integrated_gradients_match_captum_and_zennit(tiny_model, tiny, baseline, quadrature):
    """Every baseline and both quadratures against Captum's IntegratedGradients (riemann_right; riemann_trapezoid
    rescaled by m / (m - 1) for its weights that sum to 1 - 1/n, module docstring) and, for riemann_right, Zennit's
    IntegratedGradients; the completeness target S(x) - S(x0) against the float64 forward."""
    _, _, x, region, net = tiny
    paths = PathOptions(ig_steps=PATHS.ig_steps, ig_quadrature=quadrature, baseline=baseline)
    eg, out = _run(tiny_model[0], x, ("integrated_gradients",), paths)
    x0 = _baseline(x, baseline)
    scores = Scores(net, region)
    m = paths.ig_steps
    ig = captum_attr.IntegratedGradients(scores)
    method, steps, factor = ("riemann_right", m, 1.0) if quadrature == "riemann_right" else \
        ("riemann_trapezoid", m + 1, (m + 1) / m)
    ref = np.stack([ig.attribute(_x64(x), baselines=torch.tensor(x0), target=c, n_steps=steps,
                                 method=method)[0].detach().numpy() * factor for c in range(3)])
    check(eg, out, "integrated_gradients", ref, region)
    if quadrature == "riemann_right":
        _zennit()
        from zennit.attribution import IntegratedGradients

        rows = []
        with IntegratedGradients(model=net, n_iter=m, baseline_fn=lambda t: torch.tensor(x0)) as attributor:
            for c in range(3):
                start = torch.zeros((1, 3) + x.shape[2:], dtype=torch.float64)
                start[0, c] = torch.tensor(region[c, 0])
                rows.append(attributor(torch.tensor(x, dtype=torch.float64), start)[1][0].detach().numpy())
        check(eg, out, "integrated_gradients", np.stack(rows), region)
    delta = _scores_at(net, region, x) - _scores_at(net, region, x0.astype(np.float64))
    assert relative_error(target_of(eg, out, "integrated_gradients"), delta) < 1e-5


class _FunctionalMaxPool(torch.nn.Module):
    """max_pool2d without an nn.MaxPool2d module: Captum's DeepLift then passes it by its gradient."""

    def __init__(self, pool):
        super().__init__()
        self.args = (pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)

    def forward(self, v):
        return torch.nn.functional.max_pool2d(v, *self.args)


@pytest.mark.parametrize("baseline", ["zeros", "blur", "spectral_mean"])
def test_deeplift_rescale_matches_captum_with_pooling_by_gradient(tiny_model, tiny, baseline):
    """The rescale rule through the ReLUs, linear layers by their gradient, max pooling by its gradient (the
    original implementation's, `deeplift_maxpool="gradient"`) against Captum's DeepLift (eps 1e-10) on the same
    graph and baseline, its pools made functional so that its hooks pass them by their gradient too."""
    _, _, x, region, net = tiny
    eg, out = _run(tiny_model[0], x, ("deeplift",), PathOptions(baseline=baseline, deeplift_maxpool="gradient"))
    pooled = OnnxModule(tiny_model[0]).double().eval()
    for key, layer in list(pooled.layers.items()):
        if isinstance(layer, torch.nn.MaxPool2d):
            pooled.layers[key] = _FunctionalMaxPool(layer)
    x0 = _baseline(x, baseline)
    dl = captum_attr.DeepLift(Scores(pooled, region), eps=1e-10)
    ref = np.stack([dl.attribute(_x64(x), baselines=torch.tensor(x0), target=c)[0].detach().numpy()
                    for c in range(3)])
    check(eg, out, "deeplift", ref, region)
    delta = _scores_at(net, region, x) - _scores_at(net, region, x0)
    assert relative_error(target_of(eg, out, "deeplift"), delta) < 1e-5


@pytest.mark.parametrize("baseline", ["zeros", "blur", "spectral_mean"])
def test_deeplift_sums_to_delta_through_max_pooling(tiny_model, tiny, baseline):
    """With Captum's max-pool rule (the default) the attributions sum to S(x) - S(x0) of the float64 forward, to
    float32 rounding over the terms; with pooling by its gradient they do not where a window's winner moves (blur
    and spectral-mean baselines)."""
    _, _, x, region, net = tiny
    delta = _scores_at(net, region, x) - _scores_at(net, region, _baseline(x, baseline))
    eg, out = _run(tiny_model[0], x, ("deeplift",), PathOptions(baseline=baseline))
    per_pixel, _, total = ours(eg, out, "deeplift")
    assert relative_error(target_of(eg, out, "deeplift"), delta) < 1e-5
    terms = np.abs(per_pixel).sum((1, 2))  # a lower bound of the sum of |terms| the total adds
    assert (np.abs(total - delta) <= 1e-5 * np.maximum(terms, np.abs(delta))).all(), (total, delta)
    kept = conservation_residual(total, delta)
    eg, out = _run(tiny_model[0], x, ("deeplift",), PathOptions(baseline=baseline, deeplift_maxpool="gradient"))
    per_pixel_by_gradient, _, total_by_gradient = ours(eg, out, "deeplift")
    off = conservation_residual(total_by_gradient, delta)
    if baseline == "zeros":  # the reference's pooled windows are constant there (ReLU of the biases): the winner's
        # delta is the window's, both treatments conserve (to float32 rounding, summed in different orders)
        terms = np.abs(per_pixel_by_gradient).sum((1, 2))
        assert (np.abs(total_by_gradient - delta) <= 1e-5 * np.maximum(terms, np.abs(delta))).all()
    else:
        assert off.max() > 1e-5 and off.max() > 20 * kept.max(), (off, kept)  # the original's does not


def test_deeplift_max_pool_rule_on_a_window_worked_by_hand():
    """One 2x2 window, then a 1x1 conv of weight 2: x = [1 3; 2 0] (max 3 at (0,1)), x0 = [4 0; 0 1] (max 4 at (0,0)).
    S(x) - S(x0) = 2 (3 - 4) = -2. Captum's rule: max(y, y0) - y0 = 0 goes to x's winner, y - max(y, y0) = -1 (times
    the multiplier 2) to x0's winner (0,0), divided by its delta -3: m = 2/3 there, attribution (-3)(2/3) = -2 at
    (0,0), 0 elsewhere. By the gradient: x's winner (0,1) takes m = 2, attribution (3 - 0) 2 = 6."""
    x = np.array([[[[1.0, 3.0], [2.0, 0.0]]]], np.float32)
    x0 = np.array([[[[4.0, 0.0], [0.0, 1.0]]]], np.float32)
    two = np.concatenate([x, 2 * x0 - x], axis=1)  # two bands whose mean is x0: the spectral-mean baseline
    # the pooled value spread back over the window (a ConvTranspose of ones), so the logits have the input's size
    nodes = [helper.make_node("MaxPool", ["input"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["pooled", "w"], ["head"]),
             helper.make_node("ConvTranspose", ["head", "spread"], ["logits"], strides=[2, 2])]
    inits = [numpy_helper.from_array(np.array([2.0, 0.0], np.float32).reshape(1, 2, 1, 1), "w"),
             numpy_helper.from_array(np.ones((1, 1, 2, 2), np.float32), "spread")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 2, 2])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 2, 2])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    want = {"rescale": np.array([[-2.0, 0.0], [0.0, 0.0]]), "gradient": np.array([[0.0, 6.0], [0.0, 0.0]])}
    for treatment, expected in want.items():
        eg = build_segmentation_explainer(m, "input", "logits", {"penultimate": "head"}, SegmentationExplainConfig(
            methods=("deeplift",), upsample=False, uint8=False, seed="roi",
            paths=PathOptions(baseline="spectral_mean", deeplift_maxpool=treatment)))
        names = eg.output_names()
        roi = np.array([[[[1.0, 0.0], [0.0, 0.0]]]], np.float32)  # S = one pixel's logit = 2 y
        out = dict(zip(names, session(eg.model).run(names, {"input": two, "roi": roi})))
        by = {o.method: out[n] for n, o in eg.outputs.items()}
        # band 0 carries x; band 1 (weight 0 in the head) only shapes the baseline
        np.testing.assert_allclose(by["deeplift"][0, 0], expected, atol=1e-6)
        np.testing.assert_allclose(by["deeplift_target"][0, 0], -2.0, atol=1e-6)


@pytest.mark.parametrize("kernel,stride,pad", [(2, 2, 0), (3, 2, 1)])
def test_deeplift_max_pool_rule_matches_captum_on_many_windows(kernel, stride, pad):
    """The max-pool rule on random values, for the U-Net's disjoint 2x2/2 windows and the detector's overlapping,
    padded 3x3/2 ones, against the rule worked in float64 torch (max_pool2d's winners, shares scatter-added) and,
    on disjoint windows, Captum's own (its DeepLift on an nn.MaxPool2d). Windows where x's and the reference's
    winners differ, and a channel the spectral-mean reference does not move (the sum of the two bands: there the
    rule takes the gradient, which reaches the bands through the 1x1 conv before the pool). The graph is a 1x1
    conv, the pool, a 1x1 conv and the pooled value spread back over each window; the score, a sum over a region.
    Where overlapping windows share a winner, Captum's unpooling keeps one window's share, so its attributions miss
    S(x) - S(x0); ours add them, as the gradient does, and sum to it."""
    rng = np.random.default_rng(5)
    x = rng.uniform(0.0, 1.0, (1, 2, 6, 8)).astype(np.float32)
    mix = np.array([[1.0, 1.0], [1.0, -2.0]], np.float32).reshape(2, 2, 1, 1)  # channel 0: b0 + b1, unmoved
    w = np.array([2.0, -0.5], np.float32).reshape(1, 2, 1, 1)
    nodes = [helper.make_node("Conv", ["input", "mix"], ["mixed"]),
             helper.make_node("MaxPool", ["mixed"], ["pooled"], kernel_shape=[kernel, kernel], strides=[stride, stride],
                              pads=[pad] * 4),
             helper.make_node("Conv", ["pooled", "w"], ["head"]),
             helper.make_node("ConvTranspose", ["head", "spread"], ["logits"], strides=[2, 2])]
    inits = [numpy_helper.from_array(mix, "mix"), numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.ones((1, 1, 2, 2), np.float32), "spread")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 6, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 6, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    roi = (rng.uniform(size=(1, 1, 6, 8)) < 0.6).astype(np.float32)
    eg = build_segmentation_explainer(m, "input", "logits", {"penultimate": "head"}, SegmentationExplainConfig(
        methods=("deeplift",), upsample=False, uint8=False, seed="roi", paths=PathOptions(baseline="spectral_mean")))
    names = eg.output_names()
    out = dict(zip(names, session(eg.model).run(names, {"input": x, "roi": roi})))
    by = {o.method: out[n] for n, o in eg.outputs.items()}

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mix = torch.nn.Conv2d(2, 2, 1, bias=False)
            self.pool = torch.nn.MaxPool2d(kernel, stride, pad)
            self.head = torch.nn.Conv2d(2, 1, 1, bias=False)
            self.spread = torch.nn.ConvTranspose2d(1, 1, 2, stride=2, bias=False)
            self.mix.weight.data = torch.tensor(mix, dtype=torch.float64)
            self.head.weight.data = torch.tensor(w, dtype=torch.float64)
            self.spread.weight.data = torch.ones((1, 1, 2, 2), dtype=torch.float64)

        def forward(self, v):
            return (self.spread(self.head(self.pool(self.mix(v)))) * torch.tensor(roi, dtype=torch.float64)).sum((2, 3))

    x64 = torch.tensor(x, dtype=torch.float64)
    x0 = x64.mean(1, keepdim=True).expand_as(x64).clone()
    net = Net().double().eval()
    ref = captum_attr.DeepLift(net, eps=1e-10).attribute(x64.clone().requires_grad_(True), baselines=x0, target=0)
    ref = ref[0].detach().numpy()
    mixed, mixed0 = net.mix(x64), net.mix(x0)
    assert not (mixed - mixed0)[0, 0].any() and (mixed - mixed0)[0, 1].abs().min() > 1e-3  # unmoved, moved
    winners, winners0 = (torch.nn.functional.max_pool2d(v, kernel, stride, pad, return_indices=True)[1]
                         for v in (mixed, mixed0))
    assert (winners[0, 1] != winners0[0, 1]).any()  # windows whose winner the reference moves
    # the rule by hand in float64 torch: m_out (autograd of the linear tail) routed to x's and x0's window winners
    # (scatter-add: windows sharing a winner both count), divided by the input's delta, the gradient where it did
    # not move; then the 1x1 conv before the pool, linear: its adjoint
    v, v0 = mixed.detach().requires_grad_(True), mixed0.detach()
    y, at = torch.nn.functional.max_pool2d(v, kernel, stride, pad, return_indices=True)
    y0, at0 = torch.nn.functional.max_pool2d(v0, kernel, stride, pad, return_indices=True)
    tail = (net.spread(net.head(y)) * torch.tensor(roi, dtype=torch.float64)).sum()
    m_out = torch.autograd.grad(tail, y)[0]
    top = torch.maximum(y, y0)

    def unpooled(values, where):
        return torch.zeros_like(v).flatten(2).scatter_add(2, where.flatten(2), values.flatten(2)).view_as(v)

    dv = (v - v0).detach()
    rate = unpooled(m_out * (top - y0), at) + unpooled(m_out * (y - top), at0)
    m_mixed = torch.where(dv.abs() < 1e-10, unpooled(m_out, at), rate / torch.where(dv == 0, 1.0, dv))
    m_x = torch.nn.functional.conv_transpose2d(m_mixed, net.mix.weight)  # the 1x1 conv's adjoint
    by_hand = ((x64 - x0) * m_x)[0].detach().numpy()
    delta = float((net(x64) - net(x0)).detach())
    assert by_hand.sum() == pytest.approx(delta, rel=1e-9)  # summation-to-delta of the rule itself
    assert relative_error(by["deeplift"][0, 0], by_hand.sum(0)) < 1e-5
    np.testing.assert_allclose(by["deeplift_bands"][0], (by_hand * roi[0]).sum((1, 2)), rtol=1e-5, atol=1e-6)
    assert by["deeplift_total"][0, 0] == pytest.approx(delta, rel=1e-5)
    if kernel == stride:  # disjoint windows: Captum's DeepLift is the same rule
        assert relative_error(by["deeplift"][0, 0], ref.sum(0)) < 1e-5
    else:  # overlapping: its unpooling keeps one share where two windows share a winner, and misses the delta
        assert abs(ref.sum() - delta) > 0.1 * abs(delta)
    eg2 = build_segmentation_explainer(m, "input", "logits", {"penultimate": "head"}, SegmentationExplainConfig(
        methods=("deeplift",), upsample=False, uint8=False, seed="roi",
        paths=PathOptions(baseline="spectral_mean", deeplift_maxpool="gradient")))
    names2 = eg2.output_names()
    out2 = dict(zip(names2, session(eg2.model).run(names2, {"input": x, "roi": roi})))
    by_gradient = {o.method: out2[n] for n, o in eg2.outputs.items()}
    assert relative_error(by_gradient["deeplift"][0, 0], by_hand.sum(0)) > 1e-2  # the rule is what is seen


def test_deeplift_refuses_a_max_pool_with_indices():
    """DeepLIFT's max-pool rule has the gradient rule's precondition: a MaxPool that also outputs Indices (which
    TensorRT cannot build) fails the build, naming it."""
    nodes = [helper.make_node("MaxPool", ["input"], ["pooled", "where"], name="pool", kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("Conv", ["pooled", "w"], ["head"]),
             helper.make_node("ConvTranspose", ["head", "spread"], ["logits"], strides=[2, 2])]
    inits = [numpy_helper.from_array(np.ones((1, 2, 1, 1), np.float32), "w"),
             numpy_helper.from_array(np.ones((1, 1, 2, 2), np.float32), "spread")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 4, 4]),
                           helper.make_tensor_value_info("where", TensorProto.INT64, [1, 2, 2, 2])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(ExplainError, match="the Indices output is not supported"):
        build_segmentation_explainer(m, "input", "logits", {"penultimate": "head"}, SegmentationExplainConfig(
            methods=("deeplift",), upsample=False, uint8=False, seed="roi"))


def _zennit_relevance(net, x, region, comp):
    """Zennit's relevance at the input, starting from each class's logits on its region."""
    _zennit()
    from zennit.attribution import Gradient

    rows = []
    with Gradient(model=net, composite=comp) as attributor:
        for c in range(3):
            xt = torch.tensor(x, dtype=torch.float64)
            logits = net(xt).detach()
            start = torch.zeros_like(logits)
            start[0, c] = logits[0, c] * torch.tensor(region[c, 0], dtype=torch.float64)  # the region's logits
            _, relevance = attributor(xt, start)
            rows.append(relevance[0].detach().numpy())
    return np.stack(rows)


def _layer_map(rule):
    from zennit.composites import LayerMapComposite, layer_map_base
    from zennit.types import Convolution

    return LayerMapComposite(layer_map=layer_map_base(OPTIONS.stabilizer) + [(Convolution, rule)])


@pytest.mark.parametrize("method", ["lrp_epsilon", "lrp_epsilon_nobias", "lrp_zplus", "lrp_alpha2_beta1", "lrp_gamma",
                                    "lrp_epsilon_plus_flat", "lrp_epsilon_gamma_box", "lrp_deep_taylor"])
def test_lrp_matches_zennit(tiny, method):
    eg, out, x, region, net = tiny
    _zennit()
    from zennit import composites, rules
    from zennit.types import Convolution

    s = OPTIONS.stabilizer
    low = torch.tensor(x.min(axis=(0, 2, 3)), dtype=torch.float64).reshape(1, -1, 1, 1)
    high = torch.tensor(x.max(axis=(0, 2, 3)), dtype=torch.float64).reshape(1, -1, 1, 1)
    comp = {"lrp_epsilon": lambda: _layer_map(rules.Epsilon(OPTIONS.epsilon)),
            "lrp_epsilon_nobias": lambda: _layer_map(rules.Epsilon(OPTIONS.epsilon, zero_params=["bias"])),
            "lrp_zplus": lambda: _layer_map(rules.ZPlus(stabilizer=s)),
            "lrp_alpha2_beta1": lambda: _layer_map(rules.AlphaBeta(2.0, 1.0, stabilizer=s)),
            "lrp_gamma": lambda: _layer_map(rules.Gamma(OPTIONS.gamma, stabilizer=s)),
            "lrp_epsilon_plus_flat": lambda: composites.EpsilonPlusFlat(epsilon=OPTIONS.epsilon, stabilizer=s),
            "lrp_epsilon_gamma_box": lambda: composites.EpsilonGammaBox(
                low=low, high=high, epsilon=OPTIONS.epsilon, gamma=OPTIONS.gamma, stabilizer=s),
            "lrp_deep_taylor": lambda: composites.SpecialFirstLayerMapComposite(
                layer_map=composites.layer_map_base(s) + [(Convolution, rules.ZPlus(stabilizer=s))],
                first_map=[(Convolution, rules.ZBox(low=low, high=high, stabilizer=s))])}[method]()
    ref = _zennit_relevance(net, x, region, comp)
    check(eg, out, method, ref, region, rtol=1e-4)


def test_lrp_zero_conserves_the_score_and_a_bias_takes_its_share():
    """A two-layer net whose first layer's outputs are all positive (positive input and weights): LRP-0 (epsilon
    -> 0) hands each class's score to the input whole, to float rounding; a bias in the head takes exactly its
    share, bias * |region|, which the published total lacks."""
    rng = np.random.default_rng(5)
    x = rng.uniform(0.1, 1.0, (1, 2, 6, 6)).astype(np.float32)
    w1 = rng.uniform(0.1, 1.0, (4, 2, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((2, 4, 1, 1)).astype(np.float32)
    for head_bias in (0.0, 0.7):
        nodes = [helper.make_node("Conv", ["input", "w1"], ["h"], pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", ["h"], ["dec1"]), helper.make_node("Conv", ["dec1", "w2", "b2"], ["logits"])]
        inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                 numpy_helper.from_array(np.full(2, head_bias, np.float32), "b2")]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 6, 6])], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        eg = build_segmentation_explainer(m, "input", "logits", {"penultimate": "dec1"}, SegmentationExplainConfig(
            methods=("lrp_epsilon",), upsample=False, uint8=False, lrp=LrpOptions(epsilon=1e-9)))
        names = eg.output_names()
        out = dict(zip(names, session(eg.model).run(names, {"input": x})))
        region = out["logits"].argmax(1)[0][None] == np.arange(2)[:, None, None]
        scores = np.array([(out["logits"][0, c] * region[c]).sum() for c in range(2)], np.float64)
        absorbed = head_bias * region.reshape(2, -1).sum(1)
        _, _, total = ours(eg, out, "lrp_epsilon")
        assert relative_error(total, scores - absorbed) < 1e-5, (head_bias, total, scores - absorbed)


# --- each rule against the layer's dense matrix --------------------------------------------------------------------

def _conv_model(w, bias, x_shape, transpose=False, **attrs):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")]
    node = helper.make_node("ConvTranspose" if transpose else "Conv", ["x", "w", "b"], ["y"], name="layer", **attrs)
    g = helper.make_graph([node], "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)],
                                                               ir_version=8))


def _dense(w, bias, x_shape, transpose, attrs):
    """(M, b) of the layer as a dense map out = M x + b, read off the Jacobian in float64."""
    tw = torch.tensor(w, dtype=torch.float64)
    stride, pad = attrs.get("strides", [1, 1]), attrs.get("pads", [0] * 4)[:2]

    def f(v):
        v = v.reshape(x_shape)
        if transpose:
            return torch.nn.functional.conv_transpose2d(v, tw, None, stride, pad,
                                                        attrs.get("output_padding", [0, 0])).reshape(-1)
        return torch.nn.functional.conv2d(v, tw, None, stride, pad).reshape(-1)
    m = torch.autograd.functional.jacobian(f, torch.zeros(int(np.prod(x_shape)), dtype=torch.float64)).numpy()
    n_out = m.shape[0] // w.shape[1 if transpose else 0]
    return m, np.repeat(bias.astype(np.float64), n_out)


def _stab(z, eps):
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def _expected(rule, m, b, x, r, eps, g=0.25, low=None, high=None):
    """The rule's relevance at the input, in numpy from the dense matrix (the rule definitions of rules/relevance.py,
    after Zennit's)."""
    mp, mn, xp, xn, bp, bn = np.maximum(m, 0), np.minimum(m, 0), np.maximum(x, 0), np.minimum(x, 0), \
        np.maximum(b, 0), np.minimum(b, 0)
    if rule == "epsilon":
        return x * (m.T @ (r / _stab(m @ x + b, eps)))
    if rule == "epsilon_nobias":
        return x * (m.T @ (r / _stab(m @ x, eps)))
    if rule == "zplus":
        s = r / _stab(mp @ xp + mn @ xn + bp, eps)
        return xp * (mp.T @ s) + xn * (mn.T @ s)
    if rule == "alpha_beta":
        sp, sn = r / _stab(mp @ xp + mn @ xn + bp, eps), r / _stab(mn @ xp + mp @ xn + bn, eps)
        return 2 * (xp * (mp.T @ sp) + xn * (mn.T @ sp)) - (xp * (mn.T @ sn) + xn * (mp.T @ sn))
    if rule == "gamma":  # Zennit's generalised gamma: the output's sign picks the branch
        z = m @ x + b
        up, dn = m + g * mp, m + g * mn
        sp = r * (z > 0) / _stab(up @ xp + dn @ xn + b + g * bp, eps)
        sn = r * (z < 0) / _stab(dn @ xp + up @ xn + b + g * bn, eps)
        return xp * (up.T @ sp) + xn * (dn.T @ sp) + xp * (dn.T @ sn) + xn * (up.T @ sn)
    if rule == "flat":
        ones = (m != 0).astype(np.float64)
        return ones.T @ (r / _stab(ones @ np.ones_like(x), eps))
    if rule == "zbox":
        s = r / _stab(m @ x - mp @ low - mn @ high, eps)
        return x * (m.T @ s) - low * (mp.T @ s) - high * (mn.T @ s)
    raise KeyError(rule)


RULE_METHODS = {"epsilon": ("lrp_epsilon", 0.05), "epsilon_nobias": ("lrp_epsilon_nobias", 0.05),
                "zplus": ("lrp_zplus", 1e-6), "alpha_beta": ("lrp_alpha2_beta1", 1e-6),
                "gamma": ("lrp_gamma", 1e-6), "flat": ("lrp_epsilon_plus_flat", 1e-6),
                "zbox": ("lrp_epsilon_gamma_box", 1e-6)}


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("rule", list(RULE_METHODS))
def test_each_rule_against_the_layers_dense_matrix(rule, transpose):
    """One Conv (or ConvTranspose) layer whose input is the model input: the rule our composites put on it (a first
    layer takes Flat or z-box in their composites), against the formula on its dense matrix."""
    from hsi_xai_node.explain import Builder
    from hsi_xai_node.explain._composites import composite
    from hsi_xai_node.explain._reverse import append_backward

    rng = np.random.default_rng(3)
    x_shape = (1, 2, 5, 6)
    w = rng.standard_normal((2, 3, 3, 3) if transpose else (3, 2, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32) * 0.3
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]} if transpose else {"pads": [1, 1, 1, 1]}
    model = _conv_model(w, bias, x_shape, transpose, **attrs)
    x = rng.standard_normal(x_shape).astype(np.float32)
    method, eps = RULE_METHODS[rule]
    b = Builder(model)
    y_shape = b.shape("y")
    r = rng.standard_normal((2, *y_shape[1:])).astype(np.float32)  # two rows of relevance arriving at y
    seed = b.add_input("r", r.shape)
    prop = composite(method, b, "x", LrpOptions(epsilon=eps, stabilizer=eps))  # flat, zbox: the first layer's rule
    rel = append_backward(b, {"y": seed}, ["x"], 2, prop)["x"]
    b.add_output(rel, (2, *x_shape[1:]))
    got = session(model).run([rel], {"x": x, "r": r})[0]
    m, bb = _dense(w, bias, x_shape, transpose, attrs)
    x64 = x.astype(np.float64).reshape(-1)
    low = np.repeat(x.min(axis=(0, 2, 3)), x_shape[2] * x_shape[3]).astype(np.float64)
    high = np.repeat(x.max(axis=(0, 2, 3)), x_shape[2] * x_shape[3]).astype(np.float64)
    for row in range(2):
        want = _expected(rule, m, bb, x64, r[row].astype(np.float64).reshape(-1), eps, low=low, high=high)
        assert relative_error(got[row].reshape(-1), want) < 1e-4, (rule, transpose, relative_error(got[row].reshape(-1),
                                                                                                   want))


def test_a_pre_activation_of_exactly_zero_is_stabilised_upwards_as_zennit_does():
    """Zennit's stabiliser takes sign(0) = +1: z = x0 - x1 cancels exactly where the two channels are equal (inputs
    and weights are small integers), and the relevance of those outputs is divided by +eps, not -eps. Against
    Zennit's Epsilon rule on the same layer and against the dense-matrix formula."""
    from hsi_xai_node.explain import Builder
    from hsi_xai_node.explain._composites import composite
    from hsi_xai_node.explain._reverse import append_backward

    _zennit()
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite
    from zennit.rules import Epsilon
    from zennit.types import Convolution

    eps = 0.05
    w = np.array([1.0, -1.0], np.float32).reshape(1, 2, 1, 1)
    bias = np.zeros(1, np.float32)
    x_shape = (1, 2, 2, 3)
    x = np.array([[[3, 1, -2], [5, 4, 2]], [[3, 2, -2], [1, 4, -1]]], np.float32)[None]  # equal at 3 of 6 pixels
    model = _conv_model(w, bias, x_shape)
    b = Builder(model)
    r = np.array([[[[1.0, 2.0, -1.5], [0.5, -3.0, 1.0]]]], np.float32)
    seed = b.add_input("r", r.shape)
    rel = append_backward(b, {"y": seed}, ["x"], 1, composite("lrp_epsilon", b, "x", LrpOptions(epsilon=eps)))["x"]
    b.add_output(rel, x_shape)
    got = session(model).run([rel], {"x": x, "r": r})[0]

    m, bb = _dense(w, bias, x_shape, False, {})
    want = _expected("epsilon", m, bb, x.astype(np.float64).reshape(-1), r.astype(np.float64).reshape(-1), eps)
    assert relative_error(got.reshape(-1), want) < 1e-6
    conv = torch.nn.Conv2d(2, 1, 1).double()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(w, dtype=torch.float64))
        conv.bias.zero_()
    with Gradient(model=conv, composite=LayerMapComposite(layer_map=[(Convolution, Epsilon(eps))])) as attributor:
        _, ref = attributor(torch.tensor(x, dtype=torch.float64), torch.tensor(r, dtype=torch.float64))
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-6, atol=1e-6)
    # where z = 0 the relevance is +-x r / eps: 3 * 1 / 0.05 = 60 at the first pixel
    assert got[0, 0, 0, 0] == pytest.approx(60.0, rel=1e-6) and got[0, 1, 0, 0] == pytest.approx(-60.0, rel=1e-6)


def _signed_and_relu_inputs_net(rng):
    """conv1 (the graph's input) -> ReLU -> max-pool -> conv2 -> up-conv -> concat with the ReLU's output -> conv3:
    conv2 reads a max-pool of a ReLU's output (>= 0), the others read tensors that can be negative."""
    def w(*shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.5, f"w{len(inits)}")
    inits = []
    for shape in ((3, 2, 3, 3), (3,), (3, 3, 3, 3), (3,), (3, 3, 2, 2), (3,), (2, 6, 1, 1), (2,)):
        inits.append(w(*shape))
    n = [i.name for i in inits]
    nodes = [helper.make_node("Conv", ["x", n[0], n[1]], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["a"]),
             helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", n[2], n[3]], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("ConvTranspose", ["c2", n[4], n[5]], ["u"], strides=[2, 2], name="up"),
             helper.make_node("Concat", ["u", "a"], ["k"], axis=1),
             helper.make_node("Conv", ["k", n[6], n[7]], ["y"], name="conv3")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("method", ["lrp_zplus", "lrp_alpha2_beta1", "lrp_gamma"])
def test_a_relus_output_has_no_negative_part_terms_and_the_same_relevance_as_zennit(method):
    """Behind a ReLU (and a max-pool of it) x- is zero: z+, alpha-beta and gamma leave out that layer's terms of x-
    (their modified forward and one backward per term and row); a layer reading the graph's input, an up-conv's
    output or a concatenation holding one keeps them, the concatenation's only over the part that can be negative
    (the up-conv's), each part's relevance its own. The relevance against Zennit's rule on the same layers."""
    from hsi_xai_node.explain import Builder
    from hsi_xai_node.explain._composites import composite
    from hsi_xai_node.explain._graph import drop_unread
    from hsi_xai_node.explain._reverse import append_backward

    _zennit()
    from zennit.attribution import Gradient
    from zennit.rules import AlphaBeta, Gamma, ZPlus

    rng = np.random.default_rng(11)
    model = _signed_and_relu_inputs_net(rng)
    x = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    r = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)
    b = Builder(model)
    seed = b.add_input("r", r.shape)
    options = LrpOptions(gamma=0.25, stabilizer=1e-6)
    rel = append_backward(b, {"y": seed}, ["x"], 2, composite(method, b, "x", options))["x"]
    b.add_output(rel, (2, 2, 8, 8))
    drop_unread(model.graph)
    got = session(model).run([rel], {"x": x, "r": r})[0]
    nodes = model.graph.node
    # one x- input per layer that can see a negative value, for its modified forward: conv1, up, conv3 (not conv2);
    # and conv3's relevance per part of the concatenation it reads, with an x- of the up-conv's part only
    negative_parts = [n.input[0] for n in nodes if n.output[0].startswith("xai/backward/x_neg")]
    assert len(negative_parts) == 4 and negative_parts.count("u") == 1 and "a" not in negative_parts
    # the concatenation's rule takes those parts as they are: nothing concatenates or slices the relevance
    assert not any(n.output[0].startswith(("xai/backward/lrp_relevance_parts", "xai/backward/concat_grad"))
                   for n in nodes)

    net = OnnxModule(_signed_and_relu_inputs_net(np.random.default_rng(11))).double().eval()
    rule = {"lrp_zplus": lambda: ZPlus(stabilizer=1e-6), "lrp_alpha2_beta1": lambda: AlphaBeta(2.0, 1.0, stabilizer=1e-6),
            "lrp_gamma": lambda: Gamma(0.25, stabilizer=1e-6)}[method]
    ref = []
    for row in range(2):
        with Gradient(model=net, composite=_layer_map(rule())) as attributor:
            _, relevance = attributor(torch.tensor(x, dtype=torch.float64), torch.tensor(r[row:row + 1],
                                                                                         dtype=torch.float64))
        ref.append(relevance[0].numpy())
    assert relative_error(got, np.stack(ref)) < 1e-5, relative_error(got, np.stack(ref))


def _chain_net(rng):
    """conv1 -> ReLU -> conv2 -> ReLU -> conv3 (3x3 convs with bias, 8 x 8): the relevance reaching conv2 and conv1 is
    the layer above's backward times that layer's input, through the ReLU."""
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.5, f"w{i}")
             for i, shape in enumerate(((4, 2, 3, 3), (4,), (4, 4, 3, 3), (4,), (2, 4, 3, 3), (2,)))]
    n = [i.name for i in inits]
    nodes = [helper.make_node("Conv", ["x", n[0], n[1]], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["a1"]),
             helper.make_node("Conv", ["a1", n[2], n[3]], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["a2"]),
             helper.make_node("Conv", ["a2", n[4], n[5]], ["y"], pads=[1, 1, 1, 1], name="conv3")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _relevance_graph(model: onnx.ModelProto, method: str, rows: int) -> tuple[str, int]:
    """`method`'s relevance at the input "x" of a one-input net whose output is "y", for `rows` seeds fed as "r", with
    the nodes no output reads dropped: (the relevance's name, how many nodes were dropped)."""
    from hsi_xai_node.explain import Builder
    from hsi_xai_node.explain._composites import composite
    from hsi_xai_node.explain._graph import drop_unread
    from hsi_xai_node.explain._reverse import append_backward

    b = Builder(model)
    shape = b.shape("y")
    seed = b.add_input("r", (rows, *shape[1:]))
    rel = append_backward(b, {"y": seed}, ["x"], rows, composite(method, b, "x", OPTIONS))["x"]
    b.add_output(rel, (rows, *b.shape("x")[1:]))
    before = len(model.graph.node)
    drop_unread(model.graph)
    return rel, before - len(model.graph.node)


def _division_rows(model: onnx.ModelProto) -> list[int]:
    """The leading (batch) size of every Div's output, sorted: 1 for a division at the forward's batch."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    lead = {v.name: v.type.tensor_type.shape.dim[0].dim_value for v in inferred.graph.value_info}
    return sorted(lead[n.output[0]] for n in model.graph.node if n.op_type == "Div")


def _zennit_rows(make_net, seed: int, composite, x: np.ndarray, r: np.ndarray, dtype=torch.float64) -> np.ndarray:
    """Zennit's relevance of `make_net(default_rng(seed))` as torch layers, one seed row of `r` at a time, through
    `composite()`."""
    _zennit()
    from zennit.attribution import Gradient

    net = OnnxModule(make_net(np.random.default_rng(seed))).to(dtype).eval()
    ref = []
    for row in range(len(r)):
        with Gradient(model=net, composite=composite()) as attributor:
            _, relevance = attributor(torch.tensor(x, dtype=dtype), torch.tensor(r[row:row + 1], dtype=dtype))
        ref.append(relevance[0].numpy())
    return np.stack(ref)


def _zennit_rule(method: str):
    """Zennit's composite of `method`'s rule on every convolution, as a factory (one composite per attribution)."""
    _zennit()
    from zennit.rules import AlphaBeta, Epsilon, Gamma, ZPlus

    rule = {"lrp_epsilon": lambda: Epsilon(OPTIONS.epsilon),
            "lrp_epsilon_nobias": lambda: Epsilon(OPTIONS.epsilon, zero_params=["bias"]),
            "lrp_zplus": lambda: ZPlus(stabilizer=OPTIONS.stabilizer),
            "lrp_alpha2_beta1": lambda: AlphaBeta(2.0, 1.0, stabilizer=OPTIONS.stabilizer),
            "lrp_gamma": lambda: Gamma(OPTIONS.gamma, stabilizer=OPTIONS.stabilizer)}[method]
    return lambda: _layer_map(rule())


@pytest.mark.parametrize("method", ["lrp_epsilon", "lrp_epsilon_nobias", "lrp_zplus"])
def test_a_relevance_arriving_through_a_relu_is_divided_at_the_forwards_batch(method):
    """R / stab(z) where R arrives as A * a (the layer above's backward A over the rows times its input a, a forward
    tensor, handed on by the ReLU): A * (a / stab(z)), the quotient at batch 1 (rules/relevance.divided). Only the
    top layer, whose relevance is the seed itself, divides over the rows; the products A * a it read past are not in
    the explain graph (_graph.drop_unread); the relevance is Zennit's."""
    rng = np.random.default_rng(12)
    model = _chain_net(rng)
    x = rng.uniform(-1.0, 1.0, (1, 2, 8, 8)).astype(np.float32)
    r = rng.standard_normal((3, 2, 8, 8)).astype(np.float32)
    rel, dropped = _relevance_graph(model, method, 3)
    # conv2's and conv1's A * a; without the bias also their y - b, taken from the ReLU's output instead
    assert dropped == (4 if method == "lrp_epsilon_nobias" else 2)
    assert _division_rows(model) == [1, 1, 3]
    if method != "lrp_zplus":  # a / stab(z) from a = relu(z): z itself is read by its ReLU alone (fusable)
        readers = {t: [n.op_type for n in model.graph.node if t in n.input] for t in ("c1", "c2")}
        assert readers == {"c1": ["Relu"], "c2": ["Relu"]}, readers
    got = session(model).run([rel], {"x": x, "r": r})[0]
    ref = _zennit_rows(_chain_net, 12, _zennit_rule(method), x, r)
    # without the bias, z - b comes near 0 at a few outputs of this net and their shares are large (relevance up to
    # ~2000): float32 rounding there is amplified alike in any float32 computation; the tolerance is 1e-5 or four
    # times what Zennit's own rule makes of it in float32, whichever is larger
    tolerance = max(1e-5, 4 * relative_error(_zennit_rows(_chain_net, 12, _zennit_rule(method), x, r, torch.float32),
                                             ref))
    assert relative_error(got, ref) < tolerance, (relative_error(got, ref), tolerance)


@pytest.mark.parametrize("method, backward_convs, divisions, branches",
                         [("lrp_gamma", 5, [1, 1, 3, 3], 2), ("lrp_alpha2_beta1", 8, [1, 1, 1, 1, 3, 3], 0)])
def test_gamma_and_alpha_beta_behind_a_relu(method, backward_convs, divisions, branches):
    """On conv1 -> ReLU -> conv2 -> ReLU -> conv3: the relevance reaching conv2 and conv1 is A * relu(their output),
    zero wherever the output is not positive, so generalised gamma's group of the negative outputs gets none and is
    left out there (its modified forward and its backward per row: 5 backward convolutions where the groups of
    both signs at every layer make 8) and the positive group needs no mask (only conv3 has its two); the terms on one
    input are summed before their one product with it (alpha-beta's alpha and beta shares: (2 b+ - b-) * x), so the
    layer below still divides at batch 1, alpha scaling the quotient there. The relevance is Zennit's."""
    rng = np.random.default_rng(14)
    model = _chain_net(rng)
    x = rng.uniform(-1.0, 1.0, (1, 2, 8, 8)).astype(np.float32)
    r = rng.standard_normal((3, 2, 8, 8)).astype(np.float32)
    rel, _ = _relevance_graph(model, method, 3)
    nodes = model.graph.node
    assert sum(n.output[0].startswith("xai/backward/conv_grad") for n in nodes) == backward_convs
    assert sum(n.output[0].startswith("xai/backward/lrp_branch") and n.op_type in ("Greater", "Less")
               for n in nodes) == branches
    assert _division_rows(model) == divisions
    got = session(model).run([rel], {"x": x, "r": r})[0]
    ref = _zennit_rows(_chain_net, 14, _zennit_rule(method), x, r)
    assert relative_error(got, ref) < 1e-5, relative_error(got, ref)


def test_the_z_box_terms_of_the_input_bounds_are_one_backward_subtracted():
    """Deep Taylor on conv1 -> ReLU -> conv2 -> ReLU -> conv3: z-box at conv1 has the terms x * W^T s - low * W+^T s
    - high * W-^T s. The two of the bounds (per band, broadcast over the image) are one backward, (W+ low +
    W- high)^T s with the bounds in its weight, subtracted from the first term: no product of the rows with a bound,
    no negation. One modified forward for both, on an image of ones. The relevance is Zennit's (ZBox on the first
    layer, ZPlus on the others)."""
    rng = np.random.default_rng(15)
    model = _chain_net(rng)
    x = rng.uniform(-1.0, 1.0, (1, 2, 8, 8)).astype(np.float32)
    r = rng.standard_normal((3, 2, 8, 8)).astype(np.float32)
    rel, _ = _relevance_graph(model, "lrp_deep_taylor", 3)
    assert [n.op_type for n in model.graph.node if n.op_type in ("Neg", "Sub") and n.name.startswith(
        "xai/backward/lrp_relevance")] == ["Sub"]
    assert not any(n.op_type == "Neg" for n in model.graph.node)
    # conv3 and conv2 (z+ behind a ReLU: one term each), conv1: x's term and the bounds' one
    assert sum(n.output[0].startswith("xai/backward/conv_grad") for n in model.graph.node) == 4
    assert sum(n.output[0].startswith("xai/backward/lrp_z") for n in model.graph.node) == 3
    assert not any(n.output[0].startswith("xai/backward/x_low") or n.output[0].startswith("xai/backward/x_high")
                   for n in model.graph.node)
    got = session(model).run([rel], {"x": x, "r": r})[0]
    ref = _zennit_deep_taylor_rows(_chain_net, 15, x, r)
    assert relative_error(got, ref) < 1e-5, relative_error(got, ref)


def _zennit_deep_taylor_rows(make_net, seed: int, x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Zennit's deep Taylor relevance (ZBox with the frame's range per band on the first layer, ZPlus on the other
    convolutions) of `make_net(default_rng(seed))`, per seed row of `r`."""
    _zennit()
    from zennit.composites import SpecialFirstLayerMapComposite, layer_map_base
    from zennit.rules import ZBox, ZPlus
    from zennit.types import Convolution

    s = OPTIONS.stabilizer
    low = torch.tensor(x.min(axis=(0, 2, 3)), dtype=torch.float64).reshape(1, -1, 1, 1)
    high = torch.tensor(x.max(axis=(0, 2, 3)), dtype=torch.float64).reshape(1, -1, 1, 1)
    return _zennit_rows(make_net, seed, lambda: SpecialFirstLayerMapComposite(
        layer_map=layer_map_base(s) + [(Convolution, ZPlus(stabilizer=s))],
        first_map=[(Convolution, ZBox(low=low, high=high, stabilizer=s))]), x, r)


def _strided_first_net(rng):
    """conv1 (3x3, stride 2, 3 bands in) -> ReLU -> conv2 (3x3), 8 x 8 in, 4 x 4 out: a first layer whose backward
    is a ConvTranspose."""
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.5, f"w{i}")
             for i, shape in enumerate(((4, 3, 3, 3), (4,), (2, 4, 3, 3), (2,)))]
    n = [i.name for i in inits]
    nodes = [helper.make_node("Conv", ["x", n[0], n[1]], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv1"),
             helper.make_node("Relu", ["c1"], ["a1"]),
             helper.make_node("Conv", ["a1", n[2], n[3]], ["y"], pads=[1, 1, 1, 1], name="conv2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_the_z_box_bounds_term_of_a_strided_first_layer_is_zennits():
    """The bounds' one backward through a stride-2 first convolution: a ConvTranspose whose weight is scaled by the
    bounds per input band at run time (rules/conv.py: conv_input_vjp_scaled); the relevance is Zennit's."""
    rng = np.random.default_rng(16)
    model = _strided_first_net(rng)
    x = rng.uniform(-1.0, 2.0, (1, 3, 8, 8)).astype(np.float32)
    r = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    rel, _ = _relevance_graph(model, "lrp_deep_taylor", 3)
    assert [n.op_type for n in model.graph.node if n.output[0].startswith("xai/backward/conv_grad")] == \
        ["Conv", "ConvTranspose", "ConvTranspose"]  # conv2's; conv1's x term and bounds term
    got = session(model).run([rel], {"x": x, "r": r})[0]
    ref = _zennit_deep_taylor_rows(_strided_first_net, 16, x, r)
    assert relative_error(got, ref) < 1e-5, relative_error(got, ref)


@pytest.mark.parametrize("method", ["lrp_epsilon", "lrp_epsilon_nobias"])
def test_relevance_through_a_concatenation_and_a_max_pool_is_divided_at_the_forwards_batch(method):
    """A ReLU's output read by a max-pool and by a concatenation (a U-Net's skip): the relevance through each copying
    op arrives as (its gradient of A) * a, and the two consumers' sum as (sum of the A's) * a (_reverse.py), so that
    the layers below divide at batch 1 too: the up-conv's input share u / stab(u) and conv1's a / stab(c1). Only the
    top layer divides over the rows. The relevance is Zennit's."""
    rng = np.random.default_rng(13)
    model = _signed_and_relu_inputs_net(rng)
    x = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    r = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)
    rel, _ = _relevance_graph(model, method, 2)
    assert _division_rows(model) == [1, 1, 1, 2]
    got = session(model).run([rel], {"x": x, "r": r})[0]
    ref = _zennit_rows(_signed_and_relu_inputs_net, 13, _zennit_rule(method), x, r)
    assert relative_error(got, ref) < 1e-5, relative_error(got, ref)


def test_every_node_of_an_explain_graph_is_read_by_an_output(tiny):
    """Nothing an engine would compute for no one: every input method at once on the tiny U-Net."""
    graph = tiny[0].model.graph
    read = {o.name for o in graph.output}
    for node in reversed(graph.node):
        assert any(o in read for o in node.output), (node.op_type, node.name)
        read.update(node.input)


def test_an_op_without_a_rule_fails_naming_op_node_and_method():
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 4, 4])
    w = numpy_helper.from_array(np.ones((3, 2, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Erf", ["input"], ["e"], name="the_erf"),
             helper.make_node("Conv", ["e", "w"], ["logits"])]
    g = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(ExplainError, match=r"no backward rule for op 'Erf' \(node 'the_erf'\) on the path to target "
                                           r"'input' \(lrp_zplus\)"):
        build_segmentation_explainer(m, "input", "logits", {"penultimate": "e"},
                                     SegmentationExplainConfig(methods=("lrp_zplus",)))


# --- the bundled U-Net (25 bands, 208 x 400, 5 classes) ------------------------------------------------------------

def test_the_bundled_unet_against_autograd_captum_and_zennit(hsi_drive):
    """On the bundled model and a generated frame, in one graph: the gradient (float64 autograd), EpsilonPlusFlat
    (Zennit), guided backprop (Captum), DeepLIFT with pooling by gradient (Captum, functional pools) and with
    Captum's pool rule (summation-to-delta), integrated gradients (Captum, riemann_right).

    Which class: a max-pool window whose two largest values lie within float32 rounding sends a class's gradient
    to either, so float32 and float64 can differ by percents at the pixels behind it, whoever computes them (on this
    frame torch's own float32 gradient is 1.5% off its float64 one for one class). The class compared is one of those
    whose torch float32 gradient agrees with float64 to 1e-6, the largest of them (one class keeps the float64
    references to seconds): its backward crosses no such window, so 1e-5 measures the rules, not the ties."""
    from test.conftest import bundled_unet_input

    loaded, x = bundled_unet_input(hsi_drive)
    card, m = loaded.card, onnx.load_model_from_string(loaded.onnx_bytes)
    paths = PathOptions(ig_steps=3, ig_quadrature="riemann_right", baseline="spectral_mean")
    methods = ("gradient", "lrp_epsilon_plus_flat", "guided_backprop", "deeplift", "integrated_gradients")
    eg = build_segmentation_explainer(m, card.input.tensor, card.logits, card.layers, SegmentationExplainConfig(
        methods=methods, upsample=False, uint8=False, lrp=OPTIONS, paths=paths))
    assert_tensorrt_compatible(eg.model, "input attributions on the bundled U-Net")
    names = eg.output_names()
    out = dict(zip(names, session(eg.model).run(names, {card.input.tensor: x})))
    k = out[card.logits].shape[1]
    region = (out[card.logits].argmax(1)[None] == np.arange(k).reshape(k, 1, 1, 1)).astype(np.float64)
    sizes = region.reshape(k, -1).sum(1)
    net = OnnxModule(m).double().eval()
    scores = Scores(net, region)
    scores32 = Scores(OnnxModule(m).float().eval(), region)
    grads = {}
    for c in sorted((c for c in range(k) if sizes[c] > 0), key=lambda c: -sizes[c]):  # the largest first
        xt, xt32 = _x64(x), torch.tensor(x, requires_grad=True)
        g64 = torch.autograd.grad(scores(xt)[0, c], xt)[0][0].numpy()
        g32 = torch.autograd.grad(scores32.forward(xt32)[0, c].double(), xt32)[0][0].double().numpy()
        if relative_error(g32, g64) < 1e-6:
            grads[c] = g64
            break
    assert grads, "every class's backward crosses a float32 near-tie: choose another frame"
    rows = list(grads)

    def check_rows(method, ref, rtol=1e-5, magnitude=False):
        per_pixel, bands, total = ours(eg, out, method)
        for i, c in enumerate(rows):
            a = ref[i]
            assert relative_error(per_pixel[c], (np.abs(a) if magnitude else a).sum(0)) < rtol, (method, c)
            assert relative_error(bands[c], (a * region[c]).sum((1, 2))) < rtol, (method, c)

    check_rows("gradient", [grads[c] for c in rows], magnitude=True)
    guided = captum_attr.GuidedBackprop(scores)
    check_rows("guided_backprop", [guided.attribute(_x64(x), target=c)[0].detach().numpy() for c in rows])
    _zennit()
    from zennit import composites

    flat = []
    comp = composites.EpsilonPlusFlat(epsilon=OPTIONS.epsilon, stabilizer=OPTIONS.stabilizer)
    from zennit.attribution import Gradient
    with Gradient(model=net, composite=comp) as attributor:
        for c in rows:
            xt = torch.tensor(x, dtype=torch.float64)
            logits = net(xt).detach()
            start = torch.zeros_like(logits)
            start[0, c] = logits[0, c] * torch.tensor(region[c, 0])
            flat.append(attributor(xt, start)[1][0].detach().numpy())
    check_rows("lrp_epsilon_plus_flat", flat, rtol=1e-4)
    x0 = np.broadcast_to(x.astype(np.float64).mean(1, keepdims=True), x.shape).copy()
    # the path's points are other inputs, with near-ties of their own: the yardstick there is Captum's own float32
    # result against its float64 one (ours must be as close as three times that, and never held to less than 1e-5)
    def integrated(s, dtype):
        return [captum_attr.IntegratedGradients(s).attribute(
            torch.tensor(x, dtype=dtype, requires_grad=True), baselines=torch.tensor(x0, dtype=dtype), target=c,
            n_steps=3, method="riemann_right")[0].detach().double().numpy() for c in rows]
    ig64, ig32 = integrated(scores, torch.float64), integrated(scores32, torch.float32)
    spread = max(relative_error(a.sum(0), b.sum(0)) for a, b in zip(ig32, ig64))
    check_rows("integrated_gradients", ig64, rtol=max(1e-5, 3 * spread))
    delta = _scores_at(net, region, x) - _scores_at(net, region, x0)
    _, _, total = ours(eg, out, "deeplift")
    residual = conservation_residual(total, target_of(eg, out, "deeplift"))
    assert relative_error(target_of(eg, out, "deeplift")[rows], delta[rows]) < 1e-5
    assert np.nanmax(residual) < 1e-3, residual  # summation-to-delta through the bundled model's four pools
    pooled = OnnxModule(m).double().eval()
    for key, layer in list(pooled.layers.items()):
        if isinstance(layer, torch.nn.MaxPool2d):
            pooled.layers[key] = _FunctionalMaxPool(layer)
    eg2 = build_segmentation_explainer(m, card.input.tensor, card.logits, card.layers, SegmentationExplainConfig(
        methods=("deeplift",), upsample=False, uint8=False,
        paths=PathOptions(baseline="spectral_mean", deeplift_maxpool="gradient")))
    names2 = eg2.output_names()
    out2 = dict(zip(names2, session(eg2.model).run(names2, {card.input.tensor: x})))
    dl = captum_attr.DeepLift(Scores(pooled, region), eps=1e-10)
    ref = [dl.attribute(_x64(x), baselines=torch.tensor(x0), target=c)[0].detach().numpy() for c in rows]
    per_pixel = ours(eg2, out2, "deeplift")[0]
    for i, c in enumerate(rows):
        assert relative_error(per_pixel[c], ref[i].sum(0)) < 1e-5, c


# --- products and gates (SiLU, squeeze-excitation): the detector's ops ----------------------------------------------

def _gated_model(square: bool = False):
    """x (1, 2, 3, 3) -> 1x1 conv -> z -> SiLU a = z * sigmoid(z) -> squeeze-excitation h = a * sigmoid(Wg mean(a) +
    bg) -> h / 2 -> 1x1 conv -> logits (1, 2, 3, 3): every op a detector's path has. `square`: a = z * z instead."""
    rng = np.random.default_rng(11)
    w1, b1 = rng.standard_normal((3, 2)), rng.standard_normal(3) * 0.3
    wg, bg = rng.standard_normal((3, 3)), rng.standard_normal(3) * 0.3
    w2, b2 = rng.standard_normal((2, 3)), rng.standard_normal(2) * 0.3
    conv = {"w1": w1.reshape(3, 2, 1, 1), "b1": b1, "wg": wg.reshape(3, 3, 1, 1), "bg": bg,
            "w2": w2.reshape(2, 3, 1, 1), "b2": b2}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in conv.items()]
    inits.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["s"]),
             helper.make_node("Mul", ["z", "z" if square else "s"], ["a"], name="silu_mul"),
             helper.make_node("ReduceMean", ["a"], ["pooled"], axes=[2, 3], keepdims=1),
             helper.make_node("Conv", ["pooled", "wg", "bg"], ["g"]),
             helper.make_node("Sigmoid", ["g"], ["q"]),
             helper.make_node("Mul", ["a", "q"], ["h"], name="se_mul"),
             helper.make_node("Div", ["h", "two"], ["half"]),
             helper.make_node("Conv", ["half", "w2", "b2"], ["logits"])]
    g = helper.make_graph(nodes, "gated", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 3, 3])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 3, 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
    return m, x, {k: v.astype(np.float32).astype(np.float64) for k, v in
                  {"w1": w1, "b1": b1, "wg": wg, "bg": bg, "w2": w2, "b2": b2}.items()}


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _gated_forward(p, x):
    """Every tensor of _gated_model in float64, pixels as rows: x (9, 2)."""
    t = {"z": x @ p["w1"].T + p["b1"]}
    t["s"] = _sigmoid(t["z"])
    t["a"] = t["z"] * t["s"]
    t["g"] = t["a"].mean(0) @ p["wg"].T + p["bg"]
    t["q"] = _sigmoid(t["g"])
    t["half"] = t["a"] * t["q"] / 2.0
    t["logits"] = t["half"] @ p["w2"].T + p["b2"]
    return t


def test_lrp_hands_relevance_through_gates_and_constant_factors_to_the_signal():
    """LRP-epsilon through SiLU and a squeeze-excitation gate, worked on the dense 1x1 matrices: the epsilon rule at
    both convolutions, a division by a constant and both sigmoid gates passing the relevance to the signal (none to
    the gate: Arras 2017, Zennit's Pass on SiLU). A product of two signals fails naming its node."""
    from hsi_xai_node.explain import Builder
    from hsi_xai_node.explain._composites import composite
    from hsi_xai_node.explain._reverse import append_backward

    m, x, p = _gated_model()
    b = Builder(m)
    r = np.random.default_rng(5).standard_normal((2, 2, 3, 3)).astype(np.float32)
    seed = b.add_input("r", r.shape)
    rel = append_backward(b, {"logits": seed}, ["input"], 2, composite("lrp_epsilon", b, "input", OPTIONS))["input"]
    b.add_output(rel, (2, 2, 3, 3))
    got = session(m).run([rel], {"input": x, "r": r})[0]
    pixels = x[0].reshape(2, 9).T.astype(np.float64)
    t = _gated_forward(p, pixels)

    def stab(z):
        return z + OPTIONS.epsilon * np.where(z >= 0, 1.0, -1.0)

    for row in range(2):
        r_out = r[row].reshape(2, 9).T.astype(np.float64)
        r_half = t["half"] * ((r_out / stab(t["logits"])) @ p["w2"])  # epsilon at the last conv
        r_z = r_half  # / 2: the dividend takes it all; * q and * sigmoid(z): gates, the signal takes it all
        r_x = pixels * ((r_z / stab(t["z"])) @ p["w1"])
        assert relative_error(got[row].reshape(2, 9).T, r_x) < 1e-5
    square, _, _ = _gated_model(square=True)
    with pytest.raises(ExplainError, match=r"Mul node 'silu_mul': LRP has no rule for the product of two "
                                           r"input-dependent tensors"):
        build_segmentation_explainer(square, "input", "logits", {"penultimate": "half"},
                                     SegmentationExplainConfig(methods=("lrp_epsilon",)))


def test_deeplift_through_products_and_gates_worked_by_hand():
    """DeepLIFT against the zero reference on the same graph: the rescale rule on both sigmoids and the exact
    product rule m_a = m (b + b0) / 2 at both products, worked by hand in float64; the result sums to
    S(x) - S(x0) for every class."""
    m, x, p = _gated_model()
    eg = build_segmentation_explainer(m, "input", "logits", {"penultimate": "half"}, SegmentationExplainConfig(
        methods=("deeplift",), upsample=False, uint8=False, paths=PathOptions(baseline="zeros")))
    names = eg.output_names()
    out = dict(zip(names, session(eg.model).run(names, {"input": x})))
    pixels = x[0].reshape(2, 9).T.astype(np.float64)
    t, t0 = _gated_forward(p, pixels), _gated_forward(p, np.zeros_like(pixels))
    labels = t["logits"].argmax(1)

    def slope(y, y0, v, v0):
        return (y - y0) / (v - v0)  # no |v - v0| < 1e-10 here (checked below)

    # the graph's rescale slopes are float32 differences of sigmoids (values up to 1) over v - v0: their rounding,
    # about 2^-24 / |v - v0|, must stay well below the 1e-5 the results are held to (it is 2e-6 at worst here)
    moved = min(np.abs(t["z"] - t0["z"]).min(), np.abs(t["g"] - t0["g"]).min())
    assert 2.0 ** -24 / moved < 0.5e-5, moved
    for c in range(2):
        m_logits = (labels == c)[:, None] * np.eye(2)[c]  # the seed: class c's logit over its region
        m_half = m_logits @ p["w2"]
        m_h = m_half / 2.0
        m_a = m_h * (t["q"] + t0["q"]) / 2.0
        m_q = (m_h * (t["a"] + t0["a"]) / 2.0).sum(0)  # q is broadcast over the pixels
        m_g = m_q * slope(t["q"], t0["q"], t["g"], t0["g"])
        m_a = m_a + (m_g @ p["wg"]) / 9.0  # through the mean over the 9 pixels
        m_z = m_a * (t["s"] + t0["s"]) / 2.0 + m_a * (t["z"] + t0["z"]) / 2.0 * slope(t["s"], t0["s"], t["z"],
                                                                                       t0["z"])
        attribution = pixels * (m_z @ p["w1"])  # (x - x0) * m_x, x0 = 0
        per_pixel, bands, total = ours(eg, out, "deeplift")
        assert relative_error(per_pixel[c].reshape(-1), attribution.sum(1)) < 1e-5, c
        delta = (t["logits"][:, c] - t0["logits"][:, c])[labels == c].sum()
        assert abs(attribution.sum() - delta) < 1e-9 * max(1.0, abs(delta))  # the hand rule itself sums to delta
        assert relative_error(total[c:c + 1], np.array([delta])) < 1e-5
        assert relative_error(target_of(eg, out, "deeplift")[c:c + 1], np.array([delta])) < 1e-5


@pytest.mark.parametrize("method", ["lrp_epsilon", "deeplift"])
def test_an_op_whose_gradient_is_no_rule_of_the_method_fails_where_the_gradient_builds(method):
    """Softmax has a gradient rule, but its gradient is neither a relevance redistribution (LRP) nor a multiplier
    of differences (DeepLIFT): the build fails naming it instead of quietly using the gradient."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 4, 4])
    inits = [numpy_helper.from_array(np.ones((3, 2, 1, 1), np.float32), "w"),
             numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"]),
             helper.make_node("Softmax", ["c"], ["e"], name="the_softmax", axis=1),
             helper.make_node("Conv", ["e", "w2"], ["logits"])]
    g = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 4, 4])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    build_segmentation_explainer(m, "input", "logits", {"penultimate": "e"},
                                 SegmentationExplainConfig(methods=("gradient",)))
    with pytest.raises(ExplainError, match=rf"no backward rule for op 'Softmax' \(node 'the_softmax'\) on the path to "
                                           rf"target 'input' \({method}\)"):
        build_segmentation_explainer(m, "input", "logits", {"penultimate": "e"},
                                     SegmentationExplainConfig(methods=(method,)))
