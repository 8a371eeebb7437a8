"""All-class segmentation explanations in the graph vs PyTorch autograd in float64."""

import numpy as np
import onnx
import pytest

from hsi_xai_node.explain import (ExplainError, SegmentationExplainConfig, assert_tensorrt_compatible,
                                  build_segmentation_explainer, conservativeness_residual)
from test.explain.harness import relative_error, session, torch

from hsi_xai_node.training.segmentation import export_onnx  # noqa: E402  (torch is present: harness skipped otherwise)
from hsi_xai_node.training.unet import UNet, UNetConfig  # noqa: E402

LAYERS = {"penultimate": "dec1", "second_conv_block": "enc1", "bottleneck": "bottleneck", "dec2": "dec2",
          "enc1": "enc1", "dec1": "dec1"}
SHAPE = (1, 4, 16, 24)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = UNet(UNetConfig(in_channels=4, num_classes=3, depth=2, base_filters=4))
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    model.eval()
    x = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    with torch.no_grad():  # even out the class means so that every class wins somewhere
        logits = model(torch.from_numpy(x))
        model.head.bias -= logits.mean(dim=(0, 2, 3))
        assert len(np.unique(model(torch.from_numpy(x)).argmax(1).numpy())) == 3
    path = tmp_path_factory.mktemp("tiny") / "u.onnx"
    export_onnx(model, path, SHAPE)
    return model.double(), onnx.load(str(path)), x


def reference(model, x, region, layers):
    """Per class c: S_c = sum(region_c * logit_c); grads of S_c w.r.t. block outputs and input (float64)."""
    acts = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o)) for n in layers]
    x64 = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    logits = model(x64)
    for h in hooks:
        h.remove()
    grads = {n: [] for n in layers}
    grads["input"] = []
    for c in range(logits.shape[1]):
        s = (logits[0, c] * torch.tensor(region[c, 0], dtype=torch.float64)).sum()
        gs = torch.autograd.grad(s, [acts[n] for n in layers] + [x64], retain_graph=True)
        for n, gr in zip(layers + ["input"], gs):
            grads[n].append(gr[0].numpy())
    return ({n: np.stack(v) for n, v in grads.items()}, {n: a.detach().numpy() for n, a in acts.items()},
            logits.detach().numpy(), x64.detach().numpy())


def run(eg, feeds):
    sess = session(eg.model)
    names = eg.output_names()
    return dict(zip(names, sess.run(names, feeds)))


def test_all_methods_all_classes_match_autograd(tiny):
    model, m, x = tiny
    cfg = SegmentationExplainConfig(methods=("activation", "seg_gradcam", "seg_gradcam_signed", "hires", "spectral"),
                                    layers=("penultimate", "bottleneck", "dec2"), top_k=2)
    eg = build_segmentation_explainer(m, "input", "logits", LAYERS, cfg)
    assert_tensorrt_compatible(eg.model, "tiny U-Net explain graph")
    out = run(eg, {"input": x})
    logits = out["logits"]
    region = (logits.argmax(1)[None] == np.arange(3).reshape(3, 1, 1, 1)).astype(np.float64)  # (3, 1, H, W)
    grads, acts, ref_logits, x64 = reference(model, x, region, ["dec1", "bottleneck", "dec2", "enc1"])
    assert relative_error(logits, ref_logits) < 1e-5

    def ours(method, layer):
        return next(v for k, v in out.items() if eg.outputs.get(k) and eg.outputs[k].method == method
                    and eg.outputs[k].layer == layer)

    for layer in ["dec1", "bottleneck", "dec2"]:
        g, a = grads[layer], acts[layer]
        signed = (g.mean(axis=(2, 3), keepdims=True) * a).sum(1, keepdims=True)
        assert relative_error(ours("seg_gradcam_signed", layer), signed) < 1e-5, layer
        assert relative_error(ours("seg_gradcam", layer), np.maximum(signed, 0)) < 1e-5, layer
        assert relative_error(ours("hires", layer), (g * a).sum(1, keepdims=True)) < 1e-5, layer
    # low-resolution maps are also resized to the input and made uint8
    assert ours("seg_gradcam_full", "bottleneck").shape == (3, 1, 16, 24)
    u8 = ours("seg_gradcam_u8", "bottleneck")
    full = ours("seg_gradcam_full", "bottleneck")
    expected = np.clip(np.round(np.maximum(full, 0) * 255 / np.maximum(full.max(axis=(2, 3), keepdims=True), 1e-12)), 0, 255)
    assert u8.dtype == np.uint8 and np.abs(u8.astype(int) - expected).max() <= 1
    positive = full.reshape(3, -1).max(1) > 0
    assert (u8.reshape(3, -1).max(1) == np.where(positive, 255, 0)).all()  # an all-zero map stays 0
    signed_u8 = ours("seg_gradcam_signed_u8", "dec1").astype(int)
    assert signed_u8.min() >= 0 and ((signed_u8 == 0) | (signed_u8 == 255)).any()

    # activation maps: sum_k w_ck A_k = logit - bias; top-k channels by weight
    act = ours("activation", "dec1")
    np.testing.assert_allclose(act[:, 0] + eg.head_bias[:, None, None], logits[0], rtol=1e-5, atol=1e-5)
    w = model.head.weight.detach().numpy()[:, :, 0, 0]
    # and it is sum_k w_ck A_k, computed here from torch's own dec1 activations
    assert relative_error(act[:, 0], np.einsum("ck,khw->chw", w, acts["dec1"][0])) < 1e-5
    top = ours("activation_topk", "dec1")
    for c in range(3):
        for j, ch in enumerate(eg.topk_channels[c]):
            assert w[c, ch] == np.sort(w[c])[::-1][j]
            np.testing.assert_allclose(top[c, j], w[c, ch] * acts["dec1"][0, ch], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours("second_block", "enc1"), acts["enc1"], rtol=1e-5, atol=1e-6)

    # spectral attribution: gradient x input summed over each class region, per band
    spectral = (grads["input"] * x64 * region).sum(axis=(2, 3))
    assert relative_error(ours("spectral", "input"), spectral) < 1e-5


def test_the_head_closed_form_holds_beside_other_readers_of_its_input(tiny):
    """With `activation` (whose top-k Gather also reads the head input) and the CAMs at that layer, no backward
    node is built (the maps equal autograd's: test above); at another layer the backward pass runs."""
    _, m, _ = tiny
    for top_k in (0, 2):
        cfg = SegmentationExplainConfig(methods=("activation", "seg_gradcam", "hires", "gradcam_pp"), top_k=top_k)
        eg = build_segmentation_explainer(m, "input", "logits", LAYERS, cfg)
        assert any(n.op_type == "Gather" for n in eg.model.graph.node) == bool(top_k)
        assert not [n.name for n in eg.model.graph.node if n.name.startswith("xai/backward/")], top_k
    eg = build_segmentation_explainer(m, "input", "logits", LAYERS,
                                      SegmentationExplainConfig(methods=("seg_gradcam",), layers=("dec2",)))
    assert [n.name for n in eg.model.graph.node if n.name.startswith("xai/backward/")]


@pytest.mark.parametrize("seed", ["roi", "pixel"])
def test_roi_and_pixel_seeds(tiny, seed):
    model, m, x = tiny
    eg = build_segmentation_explainer(m, "input", "logits", LAYERS,
                                      SegmentationExplainConfig(methods=("hires",), seed=seed, uint8=False))
    if seed == "roi":
        roi = np.zeros((1, 1, 16, 24), np.float32)
        roi[..., 3:9, 5:20] = 1.0
        feeds, region = {"input": x, "roi": roi}, np.repeat(roi, 3, axis=0)
    else:
        feeds = {"input": x, "pixel": np.array([7, 11], np.int64)}
        region = np.zeros((3, 1, 16, 24))
        region[:, :, 7, 11] = 1.0
    assert set(eg.extra_inputs) == {seed}
    assert_tensorrt_compatible(eg.model, f"{seed}-seeded explain graph")
    out = run(eg, feeds)
    grads, acts, _, _ = reference(model, x, region, ["dec1"])
    hires = next(v for k, v in out.items() if k in eg.outputs and eg.outputs[k].method == "hires")
    assert relative_error(hires, (grads["dec1"] * acts["dec1"]).sum(1, keepdims=True)) < 1e-5


def test_conservativeness_separates_the_methods(tiny):
    """Activation maps are conservative (float rounding); Seg-Grad-CAM is not; HiRes only at the last layer."""
    _, m, x = tiny
    cfg = SegmentationExplainConfig(methods=("activation", "seg_gradcam", "hires"), layers=("penultimate", "dec2"),
                                    upsample=True, uint8=False)
    eg = build_segmentation_explainer(m, "input", "logits", LAYERS, cfg)
    out = run(eg, {"input": x})
    logits = out["logits"]
    region = logits.argmax(1)[None] == np.arange(3).reshape(3, 1, 1, 1)

    def residual(method, layer, full=False):
        name = next(k for k, o in eg.outputs.items() if o.method == method + ("_full" if full else "") and o.layer == layer)
        return conservativeness_residual(out[name], logits, region, eg.head_bias)
    assert np.nanmax(residual("activation", "dec1")) < 1e-5
    # HiRes at the layer before a 1x1 head is sum_k w_ck A_k inside the region: conservative there too
    assert np.nanmax(residual("hires", "dec1")) < 1e-5
    assert np.nanmin(residual("seg_gradcam", "dec1")) > 1e-2
    assert np.nanmin(residual("hires", "dec2", full=True)) > 1e-2


def test_bad_requests(tiny):
    _, m, _ = tiny
    with pytest.raises(ExplainError, match="unknown explanation method"):
        build_segmentation_explainer(m, "input", "logits", LAYERS, SegmentationExplainConfig(methods=("lrp",)))
    with pytest.raises(ExplainError, match="target layer 'enc7'"):
        build_segmentation_explainer(m, "input", "logits", LAYERS,
                                     SegmentationExplainConfig(methods=("hires",), layers=("enc7",)))
    with pytest.raises(ExplainError, match="unknown seed"):
        build_segmentation_explainer(m, "input", "logits", LAYERS, SegmentationExplainConfig(seed="box"))


@pytest.mark.parametrize("uint8_scale", ["frame", "input"])
def test_uint8_maps_of_the_predicted_class_are_the_class_maps_at_the_argmax(tiny, uint8_scale):
    """uint8_rows="predicted": one (1, 1, H, W) map holding at each pixel the predicted class's uint8 value, each
    class scaled by its own scale (its peak, or the scale fed), bit for bit the per-class maps taken at the argmax."""
    _, m, x = tiny
    outs = {}
    for rows in ("classes", "predicted"):
        cfg = SegmentationExplainConfig(methods=("activation", "seg_gradcam", "hires"), layers=("penultimate", "dec2"),
                                        uint8_scale=uint8_scale, uint8_rows=rows)
        eg = build_segmentation_explainer(m, "input", "logits", LAYERS, cfg)
        feeds = {"input": x, **{s: np.array([0.5, 0.0, 2.0], np.float32).reshape(3, 1, 1, 1)
                                for s, _ in eg.scale_inputs.values()}}
        out = run(eg, feeds)
        argmax = next(out[n] for n, o in eg.outputs.items() if o.method == "argmax")
        assert argmax.dtype == np.uint8
        np.testing.assert_array_equal(argmax[0, 0], out["logits"][0].argmax(0))
        outs[rows] = ({(o.method, o.layer): out[n] for n, o in eg.outputs.items() if o.method.endswith("_u8")}, argmax)
    (per_class, argmax), (predicted, _) = outs["classes"], outs["predicted"]
    assert set(per_class) == set(predicted) and len(predicted) == 5  # activation, and two CAMs at two layers
    for key, maps in per_class.items():
        assert maps.shape[0] == 3 and predicted[key].shape == (1, 1, *maps.shape[2:]), key
        np.testing.assert_array_equal(predicted[key], np.take_along_axis(maps, argmax, axis=0), err_msg=str(key))
