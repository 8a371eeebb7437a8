"""Paper 003's evaluation measures (_metrics.py, region perturbation) against Quantus 0.6 on the same arrays
(pointing game, relevance mass and rank accuracy, AUC, sparseness, region perturbation with a real model), against
scipy where it has the statistic, and against hand-worked cases; the evaluation's ranking and verdict by hand."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hsi_xai_node.reliability._evaluation import (RANDOMISATION_THRESHOLD, object_masks, random_logit,
                                                  randomisation_verdicts, summarise, truth_window, verdict)
from hsi_xai_node.reliability._metrics import (band_separability, fixation_map, map_similarity, pointing_game,
                                               relative_change, relevance_mass, relevance_rank, roc_auc, sparseness,
                                               spectral_agreement)
from hsi_xai_node.reliability._perturbation import region_batch, region_perturbation
from test.references import quantus

QUANTUS = dict(disable_warnings=True, display_progressbar=False)


@pytest.fixture(scope="module")
def cases():
    """Six continuous maps (no ties: the orderings are unique) and regions of 5 % to 60 % of the pixels."""
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(6, 1, 14, 20)) + np.linspace(0, 2, 20)  # a trend, so the regions are not all alike
    regions = np.stack([rng.random((1, 14, 20)) < p for p in (0.05, 0.1, 0.2, 0.3, 0.45, 0.6)]).astype(np.float64)
    regions[1, 0, 3:9, 12:19] = 1  # a block where the trend puts high values
    return maps.astype(np.float64), regions


def _quantus(metric, maps, regions, **kw):
    x = np.zeros((len(maps), 3, *maps.shape[-2:]), np.float32)
    return np.asarray(metric(**QUANTUS, **kw)(model=None, x_batch=x, y_batch=np.zeros(len(maps), int),
                                              a_batch=maps.copy(), s_batch=regions, device="cpu"), np.float64)


def test_localisation_matches_quantus(cases):
    q = quantus()
    maps, regions = cases
    plain = dict(normalise=False, abs=False)
    np.testing.assert_array_equal([pointing_game(m, r) for m, r in zip(maps, regions)],
                                  _quantus(q.PointingGame, maps, regions, **plain))
    np.testing.assert_allclose([relevance_rank(m, r) for m, r in zip(maps, regions)],
                               _quantus(q.RelevanceRankAccuracy, maps, regions, **plain), rtol=0, atol=1e-12)
    np.testing.assert_allclose([roc_auc(m, r) for m, r in zip(maps, regions)],
                               _quantus(q.AUC, maps, regions, **plain), rtol=0, atol=1e-12)
    # relevance mass counts positive relevance only (Arras et al. 2022): Quantus on the maps' positive parts
    positive = np.clip(maps, 0, None)
    np.testing.assert_allclose([relevance_mass(m, r) for m, r in zip(maps, regions)],
                               _quantus(q.RelevanceMassAccuracy, positive, regions, **plain), rtol=1e-6)
    # Quantus' Gini adds 1e-7 to every |value| (n = 280 of them, sum ~300): a relative shift below 1e-6
    np.testing.assert_allclose([sparseness(m) for m in maps],
                               _quantus(q.Sparseness, maps, regions, normalise=False, abs=True), rtol=1e-6)


def test_localisation_by_hand():
    region = np.zeros((2, 3), bool)
    region[0, :2] = True
    m = np.array([[3.0, -1.0, 0.5], [2.0, 3.0, -4.0]])  # the maximum 3 is tied: once inside, once outside
    assert pointing_game(m, region) == 1.0 and pointing_game(m, ~region) == 1.0
    assert pointing_game(np.where(region, 0.0, 1.0), region) == 0.0
    assert relevance_mass(m, region) == pytest.approx(3.0 / 8.5)  # positives 3, 0.5, 2, 3
    assert relevance_rank(m, region) == 0.5  # top-2 by value then index: (0,0) inside, (1,1) outside
    # ROC AUC: region values {3, -1} against {0.5, 2, 3, -4}: 3 beats 0.5, 2, -4 and ties 3 (half); -1 beats -4
    assert roc_auc(m, region) == pytest.approx((3.5 + 1.0) / 8.0)
    assert np.isnan(relevance_mass(-np.abs(m), region)) and np.isnan(roc_auc(m, np.ones((2, 3), bool)))
    assert sparseness(np.ones((4, 4))) == 0.0
    one = np.zeros((4, 4))
    one[1, 2] = 5.0
    assert sparseness(one) == pytest.approx(15 / 16)  # (n - 1) / n


def test_map_comparison_by_hand_and_against_scipy():
    from scipy.ndimage import gaussian_filter
    from scipy.stats import pearsonr

    region = np.zeros((30, 40), bool)
    region[8:20, 10:25] = True
    ref = fixation_map(region, 2.5)
    # scipy's Gaussian filter with the same mirror-at-the-edge border and a 4-sigma kernel
    np.testing.assert_allclose(ref, gaussian_filter(region.astype(np.float64), 2.5, mode="reflect", truncate=4.0),
                               atol=2e-6)
    m = np.random.default_rng(1).normal(size=(30, 40)) + 2 * region
    got = map_similarity(m, ref)
    p = np.clip(m, 0, None)
    assert got["pcc"] == pytest.approx(pearsonr(p.ravel(), ref.ravel()).statistic, abs=1e-12)
    tiny_m = np.array([[1.0, 3.0, 0.0], [0.0, -2.0, 0.0], [0.0, 0.0, 0.0]])
    tiny_ref = np.array([[2.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    small = map_similarity(tiny_m, tiny_ref)
    # SIM: min of (1/4, 3/4, 0...) and (1/2, 1/2, 0...) summed; L1: |(1/3, 1, 0...) - (1, 1, 0...)| over 9 pixels
    assert small["sim"] == pytest.approx(0.75) and small["l1"] == pytest.approx((2 / 3) / 9)
    itself = map_similarity(ref, ref)
    assert itself["ssim"] == pytest.approx(1.0) and itself["sim"] == pytest.approx(1.0) and itself["l1"] == 0.0


def test_spectral_and_robustness_measures_by_hand():
    from scipy.stats import spearmanr

    x = np.zeros((3, 2, 2))
    region = np.array([[True, True], [False, False]])
    x[0] = [[1.0, 1.0], [0.0, 0.0]]          # separates perfectly, no spread: 0 variance -> 0 by convention
    x[1] = [[2.0, 4.0], [0.0, 2.0]]          # means 3 vs 1, variances 1 + 1: (3 - 1)^2 / 2 = 2
    x[2] = [[1.0, 3.0], [1.0, 3.0]]          # the same inside and out: 0
    x[0, 1, 1] = 0.5                         # now means 1 vs 0.25, variances 0 + 0.0625: 0.5625 / 0.0625 = 9
    np.testing.assert_allclose(band_separability(x, region), [9.0, 2.0, 0.0])
    totals, sep = np.array([-5.0, 1.0, 0.2, 3.0]), np.array([4.0, 0.5, 0.1, 2.0])
    assert spectral_agreement(totals, sep) == pytest.approx(spearmanr(np.abs(totals), sep).statistic) == 1.0
    assert np.isnan(spectral_agreement(np.ones(4), sep))
    assert relative_change(np.array([3.0, 4.0]), np.array([3.0, 5.0])) == pytest.approx(0.2)


def _tiny_classifier(rng):
    """y = W2 . mean(ReLU(conv3x3(x))): the same weights as an ONNX graph (for ours) and torch layers (Quantus')."""
    torch = pytest.importorskip("torch")
    w1 = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(size=(2, 4)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "w2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 18, 18])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
    lin = torch.nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w1))
        lin.weight.copy_(torch.from_numpy(w2))
    net = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), lin).eval()
    return model, net


def test_region_perturbation_matches_quantus():
    q = quantus()
    rng = np.random.default_rng(5)
    model, net = _tiny_classifier(rng)
    x = rng.normal(size=(1, 3, 18, 18)).astype(np.float32)
    saliency = rng.normal(size=(18, 18))
    curve = region_perturbation(model, x, saliency, lambda o: o["y"][:, 1], patch=3, replacement=0.0,
                                normalise=False, regions=8, threads=1)
    theirs = q.RegionPerturbation(patch_size=3, regions_evaluation=8, order="morf", perturb_baseline=0.0,
                                  normalise=False, abs=False, **QUANTUS)(
        model=net, x_batch=x, y_batch=np.array([1]), a_batch=saliency[None, None].astype(np.float32), device="cpu",
        softmax=False)
    drops = curve.reference - curve.scores[1:]  # Quantus: score(x) - score(x_k), k = 1..8
    # float32 forwards of a 162-term conv and an 18x18 mean, ORT against torch: a few float32 ulps of the outputs
    np.testing.assert_allclose(drops, np.asarray(theirs[0], np.float64), rtol=0,
                               atol=1e-5 * abs(curve.reference) + 1e-6)
    assert curve.auc == pytest.approx(np.sum(theirs[0]) / 9, abs=1e-5)  # AOPC: the mean over k = 0..8
    # the squares by hand: row k replaces the k best squares; uniform noise stays within the frame's range
    batch, fractions = region_batch(x, saliency, 3, 8, "uniform", seed=0)
    np.testing.assert_allclose(fractions, np.arange(9) * 9 / 324)
    sums = saliency.reshape(6, 3, 6, 3).sum(axis=(1, 3)).ravel()
    first = np.argmax(sums)
    r, c = divmod(first, 6)
    changed = np.any(batch[1] != x[0], axis=0)
    assert changed[3 * r:3 * r + 3, 3 * c:3 * c + 3].all() and changed.sum() == 9
    assert batch.min() >= x.min() and batch.max() <= x.max()


def test_ranking_and_verdict_by_hand():
    table = {"a": {"roc_auc": 0.9, "aopc": 0.2, "l1": 0.1}, "b": {"roc_auc": 0.7, "aopc": 0.3, "l1": 0.1},
             "c": {"roc_auc": float("nan"), "aopc": 0.1, "l1": 0.3}}
    s = summarise(table)
    assert s["metrics"] == ["roc_auc", "l1", "aopc"]  # the METRICS order
    ranks = {m: {k: v["rank"] for k, v in c.items()} for m, c in s["methods"].items()}
    assert ranks == {"a": {"roc_auc": 1, "aopc": 2, "l1": 1}, "b": {"roc_auc": 2, "aopc": 1, "l1": 1},
                     "c": {"roc_auc": None, "aopc": 3, "l1": 3}}  # l1: lower is better, a tie shares rank 1
    sanity = {"cascading": [{"methods": {"a": {"spearman_abs": 0.9}}},
                            {"methods": {"a": {"spearman_abs": 0.1}, "b": {"spearman_abs": -0.8}}}]}
    verdicts = randomisation_verdicts(sanity, {"a": 0.2, "b": 0.1, "c": 0.95})
    assert verdicts["a"]["model_randomisation_pass"] is True and verdicts["b"]["model_randomisation_pass"] is False
    assert verdicts["c"]["model_randomisation_pass"] is None and verdicts["c"]["random_logit_pass"] is False
    lines = verdict(s, verdicts, "regions")
    assert lines[0] == "Localisation (ROC AUC of the map against the regions): best a 0.9, b 0.7; worst b 0.7, a 0.9."
    assert f"Fail model-parameter randomisation (|Spearman| of |map|, trained vs every layer randomised) at " \
           f"{RANDOMISATION_THRESHOLD}: b 0.8." in lines  # a rank correlation of -0.8 is as much a dependence
    assert lines[-1].startswith("Supported by the evidence") and lines[-1].endswith(": a (mean rank 1.5).")


def test_random_logit_compares_a_class_with_another():
    rng = np.random.default_rng(0)
    same = np.repeat(rng.random((1, 12, 12)), 3, axis=0)  # every class the same map: no class sensitivity
    own = rng.random((3, 12, 12))
    flipped = np.stack([same[0], -same[0], same[0]])  # class 1 the negative of classes 0 and 2
    got = random_logit({"same": same, "own": own, "flipped": flipped}, [0, 1, 2], seed=0)
    assert got["same"] == pytest.approx(1.0) and abs(got["own"]) < 0.3
    # the seeded draw: class 0 -> 2, 1 -> 2, 2 -> 1 (numpy's PCG64, seed 0): Spearman +1, -1, -1
    assert got["flipped"] == pytest.approx(-1.0 / 3.0)


def test_ground_truth_windows_and_object_masks(hsi_drive):
    """The labels cut to the U-Net's window in its channels; each generated object's warped pixels fill its box."""
    from hsi_xai_node.model_card import load_model
    from hsi_xai_node.resources import share_path
    from hsi_xai_node.scenes.drive import DriveGenerator
    from hsi_xai_node.sensor.multispectral import boxes_to_network

    card = load_model(share_path("models/unet_bundled_25pn.onnx"), profile=hsi_drive).card
    frame = DriveGenerator(hsi_drive, seed=2000, render_hsi=False).frame(30)
    truth = truth_window(frame.labels, card)
    assert truth.shape == card.input.shape[2:]
    for c in card.classes:
        i = card.input
        assert (truth == c.channel).sum() == (frame.labels[i.crop_top:i.crop_top + i.height,
                                                           i.crop_left:i.crop_left + i.width] == c.id).sum()
    # a model of HSI-Drive v2.0's classes (sky is id 5 there, 4 in the generated drives; no 'other'): by name
    from hsi_xai_node.model_import import class_table

    v2 = dataclasses.replace(card, classes=class_table("hsi-drive-v2", 11))
    truth_v2 = truth_window(frame.labels, v2)
    sky = next(c.channel for c in v2.classes if c.name == "sky")
    assert sky == 5 and (truth_v2 == sky).sum() == (truth == next(c.channel for c in card.classes
                                                                  if c.name == "sky")).sum() > 0
    other = next(c.channel for c in card.classes if c.name == "other")
    assert (truth_v2[truth == other] == -1).all()  # the 5-class set's 'other' is no v2.0 class
    config = SimpleNamespace(input_size=(320, 256), common_size=(640, 480))  # the two sizes of a StackConfig
    masks = object_masks(frame, config, (320, 256))
    assert frame.camera_objects and set(masks) >= {o.instance for o in frame.camera_objects if o.pixels > 400}
    checked = 0
    for o in frame.camera_objects:
        if o.instance not in masks or masks[o.instance].sum() < 50:
            continue
        checked += 1
        x0, y0, x1, y1 = boxes_to_network([o.box], config)[0]
        ys, xs = np.nonzero(masks[o.instance])
        # nearest-neighbour warping: the mask's extent is the box's to within a pixel and a half on each side
        assert abs(xs.min() - x0) <= 1.5 and abs(xs.max() + 1 - x1) <= 1.5, o
        assert abs(ys.min() - y0) <= 1.5 and abs(ys.max() + 1 - y1) <= 1.5, o
    assert checked >= 2


def test_random_logit_matches_quantus():
    """With two classes the other class is forced, so Quantus' RandomLogit (Spearman as its similarity, the maps
    given through its explain_func) must agree with ours exactly."""
    q = quantus()
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(2, 10, 12))
    maps[1] = 0.6 * maps[0] + rng.normal(size=(10, 12))  # class 1's map partly follows class 0's

    def explain(model, inputs, targets, **kw):
        return np.stack([maps[int(t)][None] for t in np.atleast_1d(targets)]).astype(np.float32)

    x, y = np.zeros((2, 1, 10, 12), np.float32), np.array([0, 1])
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(120, 2))  # never called: the maps are given
    theirs = q.RandomLogit(num_classes=2, similarity_func=q.similarity_func.correlation_spearman, normalise=False,
                           abs=False, **QUANTUS)(model=net, x_batch=x, y_batch=y, a_batch=explain(None, x, y),
                                                 explain_func=explain, device="cpu")
    assert random_logit({"m": maps}, [0, 1])["m"] == pytest.approx(float(np.mean(theirs)), abs=1e-6)
    assert 0.3 < np.mean(theirs) < 0.8
