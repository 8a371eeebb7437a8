"""`hsi-xai import-model` on segmentation models shaped like those users export, built and exported here with torch.

Each is imported with one command (the CLI, as a user runs it), its card loaded by the loader every command
uses, and its explanations (activation, Seg-Grad-CAM, HiRes-CAM at the chosen layer, the input gradient per
band) compared with float64 autograd of the torch module the file came from.
"""

import json
import warnings

import numpy as np
import onnx
import pytest

from test.explain.harness import relative_error, session, torch

from hsi_xai_node.cli import main  # noqa: E402
from hsi_xai_node.explain import SegmentationExplainConfig, build_segmentation_explainer  # noqa: E402
from hsi_xai_node.model_card import load_model  # noqa: E402

nn, F = torch.nn, torch.nn.functional
BANDS = 25


def cbr(i, o, k=3):
    return nn.Sequential(nn.Conv2d(i, o, k, padding=k // 2, bias=False), nn.BatchNorm2d(o), nn.ReLU())


class MMSegUNet(nn.Module):
    """mmsegmentation's UNet-S5-D16 + FCN head in miniature: five stages, max-pool down, bilinear up then conv,
    an FCN head (3x3 conv block, 1x1 conv_seg) and the logits resized to the input, as its decode head does."""

    def __init__(self, classes=11, base=4):
        super().__init__()
        ch = [base * 2 ** i for i in range(5)]
        self.enc = nn.ModuleList([nn.Sequential(cbr(BANDS if i == 0 else ch[i - 1], ch[i]), cbr(ch[i], ch[i]))
                                  for i in range(5)])
        self.up = nn.ModuleList([cbr(ch[i + 1], ch[i], 1) for i in range(4)])
        self.dec = nn.ModuleList([nn.Sequential(cbr(2 * ch[i], ch[i]), cbr(ch[i], ch[i])) for i in range(4)])
        self.head = nn.Sequential(nn.MaxPool2d(2), cbr(ch[0], ch[0]))  # at half resolution, as many heads work
        self.conv_seg = nn.Conv2d(ch[0], classes, 1)

    def forward(self, x):
        skips, h = [], x
        for i, e in enumerate(self.enc):
            h = e(F.max_pool2d(h, 2) if i else h)
            skips.append(h)
        for i in reversed(range(4)):
            h = self.dec[i](torch.cat([skips[i], self.up[i](F.interpolate(h, scale_factor=2, mode="bilinear"))], 1))
        out = self.conv_seg(self.head(h))
        return F.interpolate(out, size=x.shape[2:], mode="bilinear", align_corners=False)

    def penultimate(self):
        return self.head


class SmpUNet(nn.Module):
    """segmentation_models_pytorch's Unet in miniature: stride-2 conv encoder, nearest upsampling + concat + two
    conv blocks per decoder stage, and its SegmentationHead: a 3x3 conv straight to the classes."""

    def __init__(self, classes=5, base=4):
        super().__init__()
        self.stem = cbr(BANDS, base)
        self.down = nn.ModuleList([nn.Sequential(nn.Conv2d(base * 2 ** i, base * 2 ** (i + 1), 3, 2, 1),
                                                 nn.BatchNorm2d(base * 2 ** (i + 1)), nn.ReLU()) for i in range(3)])
        self.dec = nn.ModuleList([nn.Sequential(cbr(base * 2 ** (i + 1) + base * 2 ** i, base * 2 ** i),
                                                cbr(base * 2 ** i, base * 2 ** i)) for i in range(3)])
        self.seg_head = nn.Conv2d(base, classes, 3, padding=1)

    def forward(self, x):
        skips, h = [], self.stem(x)
        for d in self.down:
            skips.append(h)
            h = d(h)
        for i in reversed(range(3)):
            h = self.dec[i](torch.cat([F.interpolate(h, scale_factor=2, mode="nearest"), skips[i]], 1))
        self.last = h
        return self.seg_head(h)

    def penultimate(self):
        return self.dec[0]


class KerasUNet(nn.Module):
    """HSI-Drive's own Keras U-Net as tf2onnx exports it: channels-last in and out (1, H, W, 25) -> (1, H, W, K),
    transposed convolutions up, a 1x1 conv head."""

    def __init__(self, classes=5, base=4):
        super().__init__()
        self.e1, self.e2 = nn.Sequential(cbr(BANDS, base), cbr(base, base)), cbr(base, 2 * base)
        self.up = nn.ConvTranspose2d(2 * base, base, 2, 2)
        self.d1 = nn.Sequential(cbr(2 * base, base), cbr(base, base))
        self.head = nn.Conv2d(base, classes, 1)

    def forward(self, x):
        a = self.e1(x.permute(0, 3, 1, 2))
        b = self.e2(F.max_pool2d(a, 2))
        return self.head(self.d1(torch.cat([a, self.up(b)], 1))).permute(0, 2, 3, 1)

    def penultimate(self):
        return self.d1


def _prepared(make, classes, x_shape):
    """`make()` with seeded weights (built after the seed: otherwise they depend on which tests ran before in the same
    process), random batch-norm statistics (the import folds them into the convs) and a head bias that lets every
    class win somewhere on a standard-normal input."""
    torch.manual_seed(0)
    module = make()
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    module.eval()
    head = [m for m in module.modules() if isinstance(m, nn.Conv2d)][-1]
    x = torch.from_numpy(np.random.default_rng(2).standard_normal(x_shape).astype(np.float32))
    with torch.no_grad():
        out = module(x)
        channel_axis = 3 if out.shape[3] == classes else 1
        head.bias -= out.mean(dim=tuple(a for a in range(4) if a != channel_axis))
    return module


def _export(module, path, shape, dynamic=False, opset=17, dynamo=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = {"dynamic_axes": {"x": {0: "batch", 2: "height", 3: "width"},
                                   "out": {0: "batch", 2: "height", 3: "width"}}} if dynamic else {}
        torch.onnx.export(module, (torch.zeros(shape),), str(path), dynamo=dynamo, input_names=["x"],
                          output_names=["out"], **({} if dynamo else {"opset_version": opset}), **kwargs)
    return path


def _import(capsys, *argv):
    code = main(["import-model", *map(str, argv)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def check_against_autograd(module, model_path, nhwc=False, methods=("activation", "seg_gradcam", "hires")):
    """The imported graph's maps for every class vs float64 autograd of `module` on a standard-normal input."""
    loaded = load_model(model_path)
    card = loaded.card
    graph = build_segmentation_explainer(onnx.load_model_from_string(loaded.onnx_bytes), card.input.tensor,
                                         card.logits, card.layers,
                                         SegmentationExplainConfig(methods=(*methods, "gradient"), top_k=0,
                                                                   second_block=False, uint8=False))
    x = np.random.default_rng(3).standard_normal(card.input.shape).astype(np.float32)
    names = graph.output_names()
    out = dict(zip(names, session(graph.model).run(names, {card.input.tensor: x})))
    k = len(card.classes)
    logits = out[card.logits]
    region = (logits.argmax(1)[None] == np.arange(k).reshape(k, 1, 1, 1)).astype(np.float64)
    assert region.reshape(k, -1).any(1).sum() >= 3, "too few classes win somewhere for the test to mean much"

    model64 = module.double()
    acts = {}
    hook = model64.penultimate().register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    x64 = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ref = model64(x64.permute(0, 2, 3, 1) if nhwc else x64)
    hook.remove()
    ref = ref.permute(0, 3, 1, 2) if nhwc else ref
    assert relative_error(logits, ref.detach().numpy()) < 1e-5
    a = acts["a"].detach().numpy()[0]
    for c in range(k):
        s = (ref[0, c] * torch.tensor(region[c, 0])).sum()
        ga, gx = (v.numpy()[0] for v in torch.autograd.grad(s, [acts["a"], x64], retain_graph=True))
        pen = card.layers["penultimate"]

        def ours(method, layer=pen):
            return next(v for n, v in out.items() if graph.outputs.get(n) and graph.outputs[n].method == method
                        and graph.outputs[n].layer == layer)[c, 0]

        if "seg_gradcam" in methods:
            gradcam = np.maximum((ga.mean(axis=(1, 2), keepdims=True) * a).sum(0), 0)
            assert relative_error(ours("seg_gradcam"), gradcam) < 1e-5, c
            assert relative_error(ours("hires"), (ga * a).sum(0)) < 1e-5, c
        if "activation" in methods:  # logit - bias: the head's weighted sum, resized where the model resizes
            bias = [m for m in module.modules() if isinstance(m, nn.Conv2d)][-1].bias.detach().numpy()
            assert relative_error(ours("activation"), ref.detach().numpy()[0, c] - bias[c]) < 1e-5, c
        # the input gradient crosses every ReLU and max-pool of the model: where a pre-activation lies within float32
        # rounding of zero (or a pool window's two largest values do), float32 and float64 take different branches
        # and the gradient moves at the pixels that unit sees; at 208 x 400 a few such units turn up in some runs.
        # So: the per-pixel map (|dS/dx| summed over the bands) equal to float32 rounding at 99.9 % of the pixels.
        ours_map = out[next(n for n, o in graph.outputs.items() if o.method == "gradient")][c, 0]
        ref_map = np.abs(gx).sum(0)
        close = np.abs(ours_map - ref_map) <= 1e-5 * ref_map.max()
        assert close.mean() >= 0.999, (c, close.mean())
    return card


def test_mmsegmentation_unet_opset11_dynamic(tmp_path, capsys):
    """Opset 11, dynamic batch/height/width, batch norms, an FCN head at half resolution behind a final bilinear
    Resize, HSI-Drive v2.0's 11 channels: fixed at 208x400, converted, folded; the activation map holds through
    the Resize, the CAMs take the backward pass."""
    module = _prepared(MMSegUNet, 11, (1, BANDS, 208, 400))
    src = _export(module, tmp_path / "unet_s5_d16.onnx", (1, BANDS, 64, 128), dynamic=True, opset=11)
    text = _import(capsys, src, "--classes", "hsi-drive-v2", "--input-size", "208x400", "--normalise", "none")
    assert "opset 11 -> 17" in text and "height 'height' -> 208" in text and "(through Resize)" in text
    assert "activation map exact, CAMs by the backward pass" in text
    assert "channel 0 is 'unlabelled'" in text
    card = check_against_autograd(module, tmp_path / "unet_s5_d16_static.onnx")
    assert [c.name for c in card.classes][:3] == ["unlabelled", "road", "road_marks"] and card.classes[0].id == 0
    assert (card.input.crop_top, card.input.crop_left) == (4, 4)  # centred in HSI-Drive's 216 x 409 cube
    assert card.architecture["source"]["input"] == ["batch", "25", "height", "width"]
    assert card.layers["bottleneck"].startswith("/enc.4/")  # 13 x 25, the deepest stage
    # then the replay runs it as written, with nothing edited by hand
    from hsi_xai_node.transports.drive_bag import write_drive_bag

    write_drive_bag(tmp_path / "bag", seed=4000, frames=1, cameras=False)
    assert main(["replay", str(tmp_path / "bag"), str(tmp_path / "out"), "--model",
                 str(tmp_path / "unet_s5_d16_static.onnx"), "--backend", "ort-cpu", "--no-progress"]) == 0
    assert "frames: 1 in, 1 processed" in capsys.readouterr().out


def test_smp_unet_with_a_3x3_head(tmp_path, capsys):
    module = _prepared(SmpUNet, 5, (1, BANDS, 64, 128))
    src = _export(module, tmp_path / "smp_unet.onnx", (1, BANDS, 64, 128))
    text = _import(capsys, src, "--classes", "hsi-drive", "--crop", "0,0")
    assert "no activation map, CAMs by the backward pass" in text
    assert "--methods seg_gradcam,hires,gradient" in text  # how to run it without the activation map
    check_against_autograd(module, tmp_path / "smp_unet_static.onnx", methods=("seg_gradcam", "hires"))


def test_channels_last_keras_unet_at_hsi_drive_size(tmp_path, capsys):
    module = _prepared(KerasUNet, 5, (1, 208, 400, BANDS))
    src = _export(module, tmp_path / "keras_unet.onnx", (1, 208, 400, BANDS))
    text = _import(capsys, src, "--classes", "road,road_marks,vegetation,sky,other", "--normalise", "max")
    assert "NHWC input 'x' read from a new NCHW input" in text and "NHWC logits 'out' given as NCHW" in text
    assert "closed-form gradient, no backward pass" in text
    card = check_against_autograd(module, tmp_path / "keras_unet_static.onnx", nhwc=True)
    assert card.input.normalise == "max" and [c.id for c in card.classes] == [1, 2, 3, 4, 5]


def test_torch_dynamo_exporter(tmp_path, capsys):
    """torch's newer exporter: opset 18+, weights in a .data file beside the model (embedded by the import)."""
    pytest.importorskip("onnxscript", reason="torch's dynamo exporter needs onnxscript: pip install -e '.[test]'")
    module = _prepared(MMSegUNet, 11, (1, BANDS, 64, 128))
    src = _export(module, tmp_path / "dynamo.onnx", (1, BANDS, 64, 128), dynamo=True)
    assert (tmp_path / "dynamo.onnx.data").is_file()
    text = _import(capsys, src, "--classes", "hsi-drive-v2", "--normalise", "none")
    assert "dynamo.onnx.data) embedded" in text
    check_against_autograd(module, tmp_path / "dynamo_static.onnx")


def test_the_command_offers_every_normalisation_the_card_knows():
    from hsi_xai_node.cli import NORMALISATION_CHOICES
    from hsi_xai_node.model_card import NORMALISATIONS

    assert NORMALISATION_CHOICES == NORMALISATIONS


def test_a_static_nchw_model_is_described_as_it_is(tmp_path, capsys):
    """Nothing to change: the card sits beside the user's file and hashes it; the file is not rewritten."""
    module = _prepared(SmpUNet, 5, (1, BANDS, 64, 128))
    src = _export(module, tmp_path / "plain.onnx", (1, BANDS, 64, 128))
    m = onnx.load(str(src))  # what ONNX Runtime's basic optimisations would do, done already
    folded = tmp_path / "folded.onnx"
    from hsi_xai_node.model_import._graph import fold_constants

    onnx.save(fold_constants(m), str(folded))
    before = folded.read_bytes()
    text = _import(capsys, folded, "--classes", "hsi-drive", "--no-check")
    assert "changed none" in text
    assert folded.read_bytes() == before
    card = json.loads((tmp_path / "folded.json").read_text())
    assert card["file"] == "folded.onnx" and card["architecture"]["changes"] == []


# --- refusals: one line naming the problem and the way out, exit 2, nothing written --------------------------

class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(BANDS, 5, 1), nn.Conv2d(BANDS, 5, 1)

    def forward(self, x):
        return self.a(x), self.b(x)


class ArgmaxOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(BANDS, 5, 1)

    def forward(self, x):
        return self.conv(x).argmax(1, keepdim=True)


@pytest.mark.parametrize("case, argv, message", [
    ("argmax", ["--classes", "hsi-drive"], "outputs only class indices (out), not per-class scores"),
    ("two", ["--classes", "hsi-drive"], "several outputs could be the logits (out, out2); name one with --logits"),
    ("dynamic", ["--classes", "hsi-drive"], "dynamic height/width ('batch', 25, 'height', 'width'): give the size"),
    ("plain", ["--classes", "a,b"], "--classes names 2 classes but the model has 5 logits channels"),
    ("plain", ["--classes", "hsi-drive", "--bands", "central"], "neither axis 1 (NCHW) nor axis 3 (NHWC) is the 1"),
    ("plain", ["--classes", "hsi-drive", "--crop", "200,0"], "the 32x48 window does not fit the 216x409 cube"),
])
def test_refusals(tmp_path, capsys, case, argv, message):
    module = {"argmax": ArgmaxOnly, "two": TwoHeads}.get(case, lambda: nn.Conv2d(BANDS, 5, 1))().eval()
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, BANDS, 32, 48),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["out", "out2"] if case == "two" else ["out"],
                          **({"dynamic_axes": {"x": {0: "batch", 2: "height", 3: "width"}}} if case == "dynamic"
                             else {}))
    code = main(["import-model", str(path), *argv])
    out, err = capsys.readouterr()
    assert code == 2 and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
