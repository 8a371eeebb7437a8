"""Paper 000's band-count study: final-layer weights, channel matching, and the study on the bundled models.

Known answers: the weights are the head conv's initialiser (and PyTorch's `head.weight`
of the exported model); a permuted, rescaled, noisy copy of a model's channels is matched
back to the permutation and its permuted weights correlate 1 per class (-1 negated); the
study's accuracies equal metrics.confusion on a direct ONNX Runtime run of the same model
on the same frame, and its activations reproduce the logits through the weights.
"""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from hsi_xai_node.metrics import confusion, scores
from hsi_xai_node.model_card import ClassSpec, InputSpec, LoadedModel, ModelCard, load_model
from hsi_xai_node.reliability._bandstudy import (SHADE, SUN, activation_correlation, band_study, channel_images,
                                                 class_weight_correlation, final_layer_bias, final_layer_weights,
                                                 held_out_frames, match_channels, most_correlated_channels,
                                                 pearson_matrix, penultimate_activations, weight_correlation)
from test.conftest import REPO

MODELS = REPO / "models"
BUNDLED = {v: MODELS / f"unet_bundled_{v}.onnx" for v in ("1", "3", "25pn")}


def _head_initialiser(model: onnx.ModelProto, logits: str = "logits"):
    """(weight, bias) of the node producing the logits, straight from the initialisers."""
    node = next(n for n in model.graph.node if logits in n.output)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return node, inits[node.input[1]], inits[node.input[2]]


# --- final layer -----------------------------------------------------------------------------------

def test_final_layer_weights_of_a_tiny_exported_unet(tmp_path):
    torch = pytest.importorskip("torch", reason="exporting the tiny U-Net needs torch")
    from hsi_xai_node.training import segmentation
    from hsi_xai_node.training.unet import UNet, UNetConfig

    assert (SUN, SHADE) == (segmentation.SUN, segmentation.SHADE)  # the cards' sun/shade thresholds
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=2, num_classes=3, depth=2, base_filters=4)).eval()
    shape = (1, 2, 16, 24)
    path = tmp_path / "tiny.onnx"
    segmentation.export_onnx(net, path, shape)
    model = onnx.load(str(path))
    model.ir_version = min(model.ir_version, 8)
    node, w, b = _head_initialiser(model)
    assert node.input[0] == "dec1"
    ours = final_layer_weights(model, "logits")
    assert ours.shape == (3, net.head.in_channels)
    np.testing.assert_array_equal(ours, w[:, :, 0, 0])
    np.testing.assert_array_equal(final_layer_bias(model, "logits"), b)
    np.testing.assert_allclose(ours, net.head.weight.detach().numpy()[:, :, 0, 0], rtol=0, atol=0)

    # the penultimate activations exposed from the graph are PyTorch's dec1 output
    card = ModelCard(name="tiny", task="segmentation", file=path.name, sha256="", sensor_profile="none",
                     input=InputSpec("input", shape, (700.0, 800.0), "none", 1.0, 0, 0),
                     classes=tuple(ClassSpec(i, i + 1, f"c{i}", (0, 0, 0)) for i in range(3)),
                     logits="logits", layers={"penultimate": "dec1"})
    x = np.random.default_rng(1).standard_normal((2, *shape[1:])).astype(np.float32)
    acts, logits = penultimate_activations(LoadedModel(path, card, model.SerializeToString()), x,
                                           return_logits=True)
    seen = {}
    net.dec1.register_forward_hook(lambda m, i, o: seen.__setitem__("dec1", o))
    with torch.no_grad():
        ref_logits = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(acts, seen["dec1"].numpy(), atol=1e-5)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5)


def test_final_layer_weights_of_the_bundled_model():
    if not BUNDLED["25pn"].exists():
        pytest.skip("no bundled model")
    loaded = load_model(BUNDLED["25pn"])
    model = onnx.load_model_from_string(loaded.onnx_bytes)
    node, w, b = _head_initialiser(model, loaded.card.logits)
    assert node.input[0] == loaded.card.layers["penultimate"] == "dec1"
    ours = final_layer_weights(model, loaded.card)
    assert ours.shape == (len(loaded.card.classes), loaded.card.architecture["base_filters"])
    np.testing.assert_array_equal(ours, w[:, :, 0, 0])
    np.testing.assert_array_equal(final_layer_bias(model, loaded.card), b)


# --- matching on constructed cases -----------------------------------------------------------------

def _constructed(seed=0, channels=12, classes=5):
    rng = np.random.default_rng(seed)
    acts_a = np.maximum(rng.standard_normal((2, channels, 9, 11)), 0).astype(np.float32)  # ReLU-like
    perm = rng.permutation(channels)
    scale = rng.uniform(0.3, 3.0, channels)[None, :, None, None]
    acts_b = acts_a[:, perm] * scale + 0.01 * rng.standard_normal(acts_a.shape)
    weights_a = rng.standard_normal((classes, channels))
    return acts_a, acts_b, weights_a, perm


def test_matching_recovers_a_known_permutation():
    acts_a, acts_b, wa, perm = _constructed()
    m = match_channels(acts_a, acts_b)
    np.testing.assert_array_equal(m.perm, perm)
    assert np.all(m.corr > 0.99)
    np.testing.assert_allclose(np.diag(activation_correlation(acts_a[:, perm], acts_b)), m.corr)

    wb = wa[:, perm]
    corr = weight_correlation({"a": wa, "b": wb}, {"a": acts_a, "b": acts_b}, class_names=list("vwxyz"))
    pair = corr["pairs"]["a|b"]
    assert pair["perm"] == perm.tolist()
    np.testing.assert_allclose(list(pair["per_class"].values()), 1.0, atol=1e-12)
    assert pair["all"] == pytest.approx(1.0, abs=1e-12)
    assert max(pair["p_value"].values()) < 0.02  # 12 channels: a perfect correlation is rare by chance
    np.testing.assert_allclose(pair["channel_weight_corr"], 1.0, atol=1e-12)

    neg = weight_correlation({"a": wa, "b": -wb}, {"a": acts_a, "b": acts_b})["pairs"]["a|b"]
    np.testing.assert_allclose(list(neg["per_class"].values()), -1.0, atol=1e-12)

    # the channels as they come (no matching) do not line up
    plain = weight_correlation({"a": wa, "b": wb}, match="none", permutations=0)["pairs"]["a|b"]
    assert max(abs(v) for v in plain["per_class"].values()) < 0.95
    # paper 000's criterion (each channel's class-weight vector) finds the same permutation here
    paper = weight_correlation({"a": wa, "b": wb}, match="weights", permutations=0)["pairs"]["a|b"]
    assert paper["perm"] == perm.tolist()


def test_matching_with_anticorrelated_and_unequal_channel_counts():
    acts_a, acts_b, wa, perm = _constructed(seed=3)
    flipped = acts_b.copy()
    flipped[:, 2] = -flipped[:, 2]  # an anticorrelated channel still matches (|corr|)
    m = match_channels(acts_a, flipped)
    np.testing.assert_array_equal(m.perm, perm)
    assert m.corr[2] < -0.99
    fewer = match_channels(acts_a, acts_b[:, :7])  # B has fewer channels: each matched
    np.testing.assert_array_equal(fewer.perm, perm[:7])
    more = match_channels(acts_a[:, perm[:7]], acts_b)  # B has more: 5 left unmatched (-1)
    assert (more.perm == -1).sum() == 5
    np.testing.assert_array_equal(more.perm[:7], np.arange(7))
    r = class_weight_correlation(wa[:, perm[:7]], wa[:, perm], more.perm)
    np.testing.assert_allclose(r, 1.0, atol=1e-12)


def test_constant_channel_correlates_zero():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 50))
    a[1] = 0.7
    r = pearson_matrix(a, a)
    assert r[1].tolist() == [0.0, 0.0, 0.0] and r[0, 0] == pytest.approx(1.0)


def test_most_correlated_channels_and_images():
    rng = np.random.default_rng(5)
    acts_a = np.maximum(rng.standard_normal((1, 6, 10, 12)), 0)
    noise = np.array([0.05, 2.0, 0.5, 0.01, 1.0, 0.2])[None, :, None, None]  # least noisy: 3, 0, 5
    acts_b = acts_a + noise * rng.standard_normal(acts_a.shape)
    top = most_correlated_channels(acts_a, acts_b, k=3)
    assert [(p.a, p.b) for p in top] == [(3, 3), (0, 0), (5, 5)]
    assert top[0].corr > top[1].corr > top[2].corr
    images = channel_images(acts_a, acts_a, top, gap=2)
    assert len(images) == 3
    img = images[0]
    assert img.dtype == np.uint8 and img.shape == (10, 2 * 12 + 2, 3)
    assert (img[:, 12:14] == 255).all()
    np.testing.assert_array_equal(img[:, :12], img[:, 14:])  # the same channel on both sides
    assert len(np.unique(img[:, :12].reshape(-1, 3), axis=0)) > 10


def test_module_imports_without_torch():
    code = ("import sys, numpy as np\n"
            "from hsi_xai_node.reliability._bandstudy import match_channels, weight_correlation\n"
            "a = np.random.default_rng(0).random((4, 30)); m = match_channels(a, a[[2, 0, 3, 1]])\n"
            "print(m.perm.tolist(), sorted(k for k in ('torch', 'hsi_xai_node.training') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         check=False, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[2, 0, 3, 1] []"


# --- the study on the bundled models ---------------------------------------------------------------

@pytest.fixture(scope="module")
def study(tmp_path_factory, hsi_drive):
    if not all(p.exists() for p in BUNDLED.values()):
        pytest.skip("the bundled models are made by `hsi-xai train-segmentation --out models`")
    frames = held_out_frames(hsi_drive, seeds=(2004,), index=30)  # a held-out drive with sun and shade
    out = tmp_path_factory.mktemp("band_study")
    s = band_study(frames, list(BUNDLED.values()), names=list(BUNDLED), profile=hsi_drive, out_dir=out,
                   permutations=200)
    return s, frames, out


def test_band_study_accuracy_matches_a_direct_run(study, hsi_drive):
    import onnxruntime as ort

    from hsi_xai_node.sensor.frontend import FrontEnd

    s, frames, _ = study
    assert s.models == ["1", "3", "25pn"] and s.classes == ["road", "road_marks", "vegetation", "sky", "other"]
    assert s.frames[0]["shaded_share"] > 0.2 and s.frames[0]["sunlit_share"] > 0.2
    assert [len(s.inputs[n]["bands_nm"]) for n in s.models] == [1, 3, 25]

    f = frames[0]
    loaded = load_model(BUNDLED["3"], profile=hsi_drive)
    card, i = loaded.card, loaded.card.input
    x = card.model_input(FrontEnd(hsi_drive, f.dark, f.white, card.frontend_config()).process(f.frame.raw).cube.data)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(loaded.onnx_bytes, opts, providers=["CPUExecutionProvider"])
    logits, = sess.run([card.logits], {i.tensor: x})
    pred = card.label_ids()[logits[0].argmax(0)]
    np.testing.assert_array_equal(s.predictions["3"][0], pred)
    rows, cols = slice(i.crop_top, i.crop_top + i.height), slice(i.crop_left, i.crop_left + i.width)
    truth, sun = f.frame.labels[rows, cols], f.frame.sun[rows, cols]
    names = {c.id: c.name for c in card.classes}
    expected = {"all": scores(confusion(truth, pred, 6), names),
                "sun": scores(confusion(truth, pred, 6, sun >= 0.9), names),
                "shadow": scores(confusion(truth, pred, 6, sun <= 0.1), names)}
    assert s.scores["3"] == expected
    assert expected["shadow"]["pixels"]["road"] > 1000

    # the activations and weights the study correlates reproduce the model's logits
    acts = s.activations["3"][0]
    w, b = s.weights["3"], s.bias["3"]
    t, left = s.window[0] - i.crop_top, s.window[1] - i.crop_left
    z = logits[0][:, t:t + acts.shape[1], left:left + acts.shape[2]]
    np.testing.assert_allclose(np.einsum("kc,chw->khw", w, acts) + b[:, None, None], z, atol=2e-4)
    np.testing.assert_array_equal(penultimate_activations(loaded, x)[0][:, t:t + acts.shape[1],
                                                                       left:left + acts.shape[2]], acts)


def test_band_study_correlations_and_report(study):
    s, _, out = study
    assert set(s.correlation["pairs"]) == {"1|3", "1|25pn", "3|25pn"}
    for key, p in s.correlation["pairs"].items():
        a, b = p["a"], p["b"]
        assert sorted(p["perm"]) == list(range(12))  # one to one
        m = match_channels(s.activations[a], s.activations[b])
        assert p["perm"] == m.perm.tolist()
        r = class_weight_correlation(s.weights[a], s.weights[b], m.perm)
        assert list(p["per_class"].values()) == pytest.approx(r.tolist())
        assert [(q.a, q.b) for q in s.top_pairs[key]] == [(q.a, q.b) for q in
                                                          most_correlated_channels(s.activations[a],
                                                                                   s.activations[b], 3)]
        assert len(s.images[key]) == 3 and s.images[key][0].shape == (208, 2 * 400 + 4, 3)
    d = s.as_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text)["scores"]["25pn"]["shadow"]["accuracy"]["sky"] is None  # no sky in shade
    for name in d["plots"].values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "band_study_channels.png" in d["html"]
