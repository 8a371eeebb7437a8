"""Per-box Grad-CAM of the exported EfficientDet (BiFPN: nearest upsampling, overlapping max-pools,
normalised fusions; shared heads; sigmoid scores; NMS in the graph) for the boxes NMS kept,
against PyTorch autograd in float64 on the same weights."""

import copy

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="torch is the reference here: pip install -e '.[test]'")

from hsi_xai_node.detection.postprocess import PostprocessConfig
from hsi_xai_node.explain import LEVEL_PART, DetectionExplainConfig, assert_tensorrt_compatible, build_detection_explainer
from hsi_xai_node.training.detection import export_onnx
from test.detection.tiny_efficientdet import HW, TINY, image, tiny_model, with_score_threshold
from test.detection.tiny_efficientdet import one_torch_thread  # noqa: F401 (autouse fixture)
from test.explain.harness import relative_error, session

F = torch.nn.functional
POST = PostprocessConfig(score_threshold=0.55, iou_threshold=0.5, max_detections=12)
SEED_X = 7


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    model = tiny_model(0)
    path = tmp_path_factory.mktemp("effdet_explain") / "tiny.onnx"
    export_onnx(model, path, HW, POST)
    return copy.deepcopy(model).double(), onnx.load(str(path))


def maxpool_margin(model64, x64) -> float:
    """Smallest gap between the two largest values of any BiFPN max-pool window, over the
    feature scale. ORT runs in float32: a gap near float32 rounding could pick another argmax
    there than float64 torch does, and the gradient would go to another pixel."""
    inputs = []
    hooks = []
    for layer in model64.bifpn:  # pooled: the P2 output of the top-down path and the bottom-up outputs but the last
        for fusion in [layer.top_down[-1], *layer.bottom_up[:-1]]:
            hooks.append(fusion.register_forward_hook(lambda m, i, o: inputs.append(o.detach())))
    with torch.no_grad():
        model64.features(x64)
    for h in hooks:
        h.remove()
    assert len(inputs) == 3 * len(model64.bifpn)
    margin = np.inf
    for t in inputs:
        windows = F.unfold(F.pad(t, (1, 1, 1, 1), value=-np.inf), 3, stride=2)  # (1, C * 9, windows)
        top2 = windows.reshape(t.shape[1], 9, -1).topk(2, dim=1).values
        margin = min(margin, float((top2[:, 0] - top2[:, 1]).min() / t.abs().max()))
    return margin


def reference_cams(model64, x: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(signed Grad-CAM, sigmoid scores) at bifpn_p2 for each (anchor * C + class) pair, float64;
    rows of -1 pairs are zero."""
    feats = model64.features(torch.tensor(x, dtype=torch.float64))
    scores = torch.sigmoid(model64.class_net(feats, TINY.num_classes))[0]
    a = feats[0][0].detach()  # bifpn_p2, (C, h, w)
    cams = np.zeros((len(pairs), 1, *a.shape[1:]))
    for row, pair in enumerate(pairs):
        if pair < 0:
            continue
        anchor, cls = divmod(int(pair), TINY.num_classes)
        # total derivative: bifpn_p3..p5 depend on bifpn_p2 through the bottom-up max-pools
        g = torch.autograd.grad(scores[anchor, cls], feats[0], retain_graph=True)[0][0]
        cams[row, 0] = (g.mean((1, 2), keepdim=True) * a).sum(0).numpy()
    return cams, scores.detach().numpy()


@pytest.mark.parametrize("k, kept", [(8, None), (6, 3)])
def test_box_gradcam_of_kept_boxes_matches_autograd(detector, k, kept):
    model64, m = detector
    x = image(SEED_X)
    assert maxpool_margin(model64, torch.tensor(x, dtype=torch.float64)) > 1e-5, \
        "a BiFPN max-pool window nearly tied: float32 ORT may pick another argmax; pick another SEED_X"
    if kept is not None:  # a threshold between the kept-th and next kept scores: exactly `kept` boxes
        top = session(m).run(["det_scores"], {"image": x})[0][0]
        m = with_score_threshold(m, float(top[kept - 1] + top[kept]) / 2)
    eg = build_detection_explainer(m, "image", "scores", {"class_head_input": "bifpn_p2"},
                                   DetectionExplainConfig(layers=("class_head_input",), top_k=k), pairs="det_pairs")
    assert_tensorrt_compatible(eg.model, "EfficientDet explain graph")
    names = [*eg.output_names(), "det_pairs", "det_scores"]
    out = dict(zip(names, session(eg.model).run(names, {"image": x})))
    by_method = {o.method: out[n] for n, o in eg.outputs.items()}
    assert {o.layer for o in eg.outputs.values()} == {"bifpn_p2"}

    pairs = out["det_pairs"][0][:k]
    valid = pairs >= 0
    n_kept = int(valid.sum())
    assert valid[:n_kept].all() and n_kept == (k if kept is None else kept)
    signed, scores = reference_cams(model64, x, pairs)
    np.testing.assert_allclose(out["scores"][0], scores, rtol=1e-4, atol=1e-6)
    anchors, classes = np.divmod(pairs[valid], TINY.num_classes)
    np.testing.assert_allclose(out["det_scores"][0][:n_kept], scores[anchors, classes], rtol=1e-5)

    h, w = HW[0] // 4, HW[1] // 4
    assert by_method["box_gradcam_signed"].shape == by_method["box_gradcam"].shape == (k, 1, h, w)
    assert relative_error(by_method["box_gradcam_signed"], signed) < 1e-4
    assert relative_error(by_method["box_gradcam"], np.maximum(signed, 0)) < 1e-4
    for row in range(n_kept):  # every kept box's own map, not only the largest one
        assert np.abs(signed[row]).max() > 0
        assert relative_error(by_method["box_gradcam_signed"][row], signed[row]) < 1e-4
    # empty slots: a zero seed gives exactly zero maps
    for method in ("box_gradcam", "box_gradcam_signed", "box_gradcam_full", "box_gradcam_signed_full"):
        assert not by_method[method][n_kept:].any(), method
    # the full-size maps are the bilinear (half-pixel) resize to the 64x96 input
    full = F.interpolate(torch.from_numpy(signed), size=HW, mode="bilinear", align_corners=False).numpy()
    assert by_method["box_gradcam_signed_full"].shape == (k, 1, *HW)
    assert relative_error(by_method["box_gradcam_signed_full"], full) < 1e-4
    assert by_method["box_gradcam_u8"].shape == (k, 1, *HW) and by_method["box_gradcam_u8"].dtype == np.uint8


def kept_box_maps(m, x, k: int, methods, what: str, **config):
    """(method -> output, the first k kept pairs, their boxes) of the per-box graph of `methods` at bifpn_p2, its
    maps at their own resolution, after the TensorRT op check; every one of the k rows a kept box."""
    eg = build_detection_explainer(m, "image", "scores", {"class_head_input": "bifpn_p2"},
                                   DetectionExplainConfig(layers=("class_head_input",), top_k=k, methods=methods,
                                                          upsample=False, uint8=False, **config),
                                   pairs="det_pairs", boxes="det_boxes")
    assert_tensorrt_compatible(eg.model, what)
    used = {i for n in eg.model.graph.node for i in n.input}  # ONNX Runtime warns of each unused one, every session
    assert not [t.name for t in eg.model.graph.initializer if t.name not in used]
    names = [*eg.output_names(), "det_pairs", "det_boxes"]
    out = dict(zip(names, session(eg.model).run(names, {"image": x})))
    pairs, boxes = out["det_pairs"][0][:k], out["det_boxes"][0][:k]
    assert (pairs >= 0).all()
    return {o.method: out[n] for n, o in eg.outputs.items()}, pairs, boxes


def test_the_cam_family_and_camera_attributions_per_box_match_autograd(detector):
    """Every per-box CAM method, and gradient x input per input channel inside each kept box (the camera
    shares of a detection), against float64 autograd."""
    from test.explain.test_cams import ref_fem, ref_gradcam_pp, ref_layercam, ref_xgradcam, ref_xres

    model64, m = detector
    x = image(SEED_X)
    k = 5
    methods = ("box_gradcam_pp", "box_xgradcam", "box_layercam", "box_xres", "box_hires", "box_eigencam",
               "box_fem", "box_spectral", "box_input_x_gradient")
    by_method, pairs, boxes = kept_box_maps(m, x, k, methods, "EfficientDet CAM family graph")
    x64 = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    feats = model64.features(x64)
    scores = torch.sigmoid(model64.class_net(feats, TINY.num_classes))[0]
    a = feats[0][0].detach().numpy()
    hh, ww = HW
    px, py = np.arange(ww), np.arange(hh)  # pixel [x, x+1) overlaps [x0, x1) when x0 < x + 1 and x < x1
    covered = 0
    for row, pair in enumerate(pairs):
        anchor, cls = divmod(int(pair), TINY.num_classes)
        g, gx = torch.autograd.grad(scores[anchor, cls], [feats[0], x64], retain_graph=True)
        g = g[0].numpy()
        for method, formula in (("box_gradcam_pp", ref_gradcam_pp), ("box_xgradcam", ref_xgradcam),
                                ("box_layercam", ref_layercam), ("box_xres", ref_xres)):
            assert relative_error(by_method[method][row, 0], formula(g, a)) < 1e-4, (method, row)
        assert relative_error(by_method["box_hires"][row, 0], (g * a).sum(0)) < 1e-4
        attribution = (gx[0] * x64[0]).detach().numpy()  # (C_in, H, W)
        assert relative_error(by_method["box_input_x_gradient"][row, 0], attribution.sum(0)) < 1e-4
        x0, y0, x1, y1 = boxes[row]
        inside = ((py + 1 > y0) & (py < y1))[:, None] & ((px + 1 > x0) & (px < x1))[None, :]
        covered += int(inside.any())  # (the random test detector also keeps boxes outside the image: zero)
        np.testing.assert_allclose(by_method["box_spectral"][row], (attribution * inside).sum(axis=(1, 2)),
                                   rtol=1e-4, atol=1e-7 * np.abs(attribution).sum())
    assert covered >= 2
    eigen = by_method["box_eigencam"]
    assert all(np.array_equal(eigen[0], eigen[r]) for r in range(k))  # one map for every box
    fem = by_method["box_fem"]
    assert all(np.array_equal(fem[0], fem[r]) for r in range(k))
    # pixels where a channel sits within float32 rounding of its K-sigma threshold may fall either side: left out
    mean, std = a.mean(axis=(1, 2), keepdims=True), a.std(axis=(1, 2), keepdims=True)
    clear = (np.abs(a - (mean + 2.0 * std)) > 1e-5 * (np.abs(mean) + std)).all(0)
    assert clear.mean() > 0.99
    assert relative_error(fem[0, 0][clear], ref_fem(a, 2.0)[clear]) < 1e-5


def test_input_attributions_per_box_match_autograd_and_deeplift_sums_to_delta(detector):
    """Paper 003's input attributions per kept box, one row per box: the gradient and gradient x input, SmoothGrad on
    the graph's fixed-seed noise and integrated gradients (right Riemann, the spectrally flat baseline) against float64
    autograd of each box's score; DeepLIFT (rescale rule at every sigmoid, the exact product rule at the SiLU and
    squeeze-excitation products, Captum's max-pool rule) summing to S(x) - S(x0) of the float64 model; the LRP
    composites' graphs build and pass the TensorRT op check (their rules are checked on the gated graph in
    test_input_attributions.py)."""
    from hsi_xai_node.explain import PathOptions
    from hsi_xai_node.explain._baselines import noise_from_tiles, noise_tiles

    model64, m = detector
    x = image(SEED_X)
    k = 4
    paths = PathOptions(smoothgrad_samples=2, smoothgrad_noise=0.05, ig_steps=3, ig_quadrature="riemann_right",
                        baseline="spectral_mean")
    methods = ("box_gradient", "box_input_x_gradient", "box_smoothgrad", "box_integrated_gradients", "box_deeplift",
               "box_lrp_epsilon_plus_flat", "box_gradcam")
    by, pairs, boxes = kept_box_maps(m, x, k, methods, "EfficientDet input attributions", paths=paths)
    _, channels, hh, ww = x.shape
    x0 = np.broadcast_to(x.astype(np.float64).mean(1, keepdims=True), x.shape)  # each pixel's mean in every band
    sigma = paths.smoothgrad_noise * float(x.max() - x.min())
    noisy = [x + sigma * noise_from_tiles(t, hh, ww)[None] for t in noise_tiles(2, channels, paths.smoothgrad_seed)]
    points = [x0 + j / 3 * (x - x0) for j in (1, 2, 3)]
    # no max-pool window near a float32 tie at an input whose gradient is compared (the baseline's forward only is
    # used, and the values at a tie are equal)
    for v in [x, *noisy, *points]:
        assert maxpool_margin(model64, torch.tensor(v, dtype=torch.float64)) > 1e-5

    def score_and_grad(v, anchor, cls):
        v64 = torch.tensor(v, dtype=torch.float64, requires_grad=True)
        score = torch.sigmoid(model64.class_net(model64.features(v64), TINY.num_classes))[0, anchor, cls]
        return float(score.detach()), torch.autograd.grad(score, v64)[0][0].numpy()

    px, py = np.arange(ww), np.arange(hh)
    for row, pair in enumerate(pairs):
        anchor, cls = divmod(int(pair), TINY.num_classes)
        x0_, y0_, x1_, y1_ = boxes[row]
        inside = ((py + 1 > y0_) & (py < y1_))[:, None] & ((px + 1 > x0_) & (px < x1_))[None, :]
        s, g = score_and_grad(x, anchor, cls)
        s0, _ = score_and_grad(x0, anchor, cls)
        want = {"box_gradient": g, "box_input_x_gradient": g * x[0],
                "box_smoothgrad": sum(score_and_grad(v, anchor, cls)[1] for v in noisy) / 2,
                "box_integrated_gradients": sum(score_and_grad(v, anchor, cls)[1] for v in points) / 3 * (x - x0)[0]}
        for method, a in want.items():
            magnitude = method in ("box_gradient", "box_smoothgrad")
            assert relative_error(by[method][row, 0], (np.abs(a) if magnitude else a).sum(0)) < 1e-4, (method, row)
            np.testing.assert_allclose(by[f"{method}_bands"][row], (a * inside).sum((1, 2)), rtol=1e-4,
                                       atol=1e-6 * np.abs(a).sum(), err_msg=method)
        assert relative_error(by["box_integrated_gradients_target"][row], np.array([s - s0])) < 1e-5
        assert relative_error(by["box_deeplift_target"][row], np.array([s - s0])) < 1e-5
        # summation-to-delta: float32 terms of both signs over 3 x 64 x 96 inputs, against a delta of ~0.01..0.5
        assert abs(by["box_deeplift_total"][row, 0] - (s - s0)) < 1e-4 * max(abs(s - s0), 1e-2), row
        assert np.isfinite(by["box_lrp_epsilon_plus_flat"][row]).all()


def test_box_level_cams_are_each_boxs_own_pyramid_level_against_autograd(detector):
    """`box_level`: each box's CAM at the BiFPN output of its own level (the tensor its class head read), against
    float64 autograd of its score with respect to that level's features, resized to the input; for one box on every
    level (P2 and P3 through one window copy of the head they share, P4 and P5 on whole maps, smaller than a
    window). FEM (gradient-free) is the level's map in its rows
    only. And the backward stops at the levels: no backward node reads a tensor of the feature pyramid's inside."""
    from test.explain.test_cams import ref_fem, ref_layercam

    model64, m = detector
    x = image(SEED_X)
    levels = {"bifpn_p2": "bifpn_p2", "bifpn_p3": "bifpn_p3", "bifpn_p4": "bifpn_p4", "bifpn_p5": "bifpn_p5",
              "class_head_input": "bifpn_p2"}
    feats = model64.features(torch.tensor(x, dtype=torch.float64))
    scores = torch.sigmoid(model64.class_net(feats, TINY.num_classes))[0]
    sizes = [f.shape[2] * f.shape[3] for f in feats]
    per_position = scores.shape[0] // sum(sizes)
    starts = np.cumsum([0] + [s * per_position for s in sizes])
    # per level its best-scoring pair, and an empty slot (-1): a graph input in place of NMS's det_pairs
    s = scores.detach().numpy()
    chosen = [int(np.argmax(s[starts[i]:starts[i + 1]].ravel())) + starts[i] * TINY.num_classes for i in range(4)]
    chosen = np.array([chosen[::-1] + [-1]], np.int64)  # P5 first: rows are not in level order
    g = onnx.ModelProto()
    g.CopyFrom(m)
    g.graph.input.append(onnx.helper.make_tensor_value_info("chosen_pairs", onnx.TensorProto.INT64, [1, 5]))
    methods = ("box_gradcam", "box_gradcam_signed", "box_layercam", "box_fem")
    eg = build_detection_explainer(g, "image", "scores", levels,
                                   DetectionExplainConfig(layers=("box_level",), top_k=5, methods=methods,
                                                          uint8=False), pairs="chosen_pairs")
    assert_tensorrt_compatible(eg.model, "EfficientDet box-level graph")
    # the maps at the input's size, and each one's part at every level, at the level's size
    assert {o.layer for o in eg.outputs.values() if not o.method.endswith(LEVEL_PART)} == {"box_level"}
    assert {o.layer for o in eg.outputs.values() if o.method.endswith(LEVEL_PART)} == set(levels.values())
    used = {i for n in eg.model.graph.node for i in n.input}  # ONNX Runtime warns of each unused one, every session
    assert not [t.name for t in eg.model.graph.initializer if t.name not in used]
    names = eg.output_names()
    out = dict(zip(names, session(eg.model).run(names, {"image": x, "chosen_pairs": chosen})))
    by = {o.method: out[n] for n, o in eg.outputs.items()}
    assert by["box_gradcam"].shape == (5, 1, *HW)
    parts = {(o.method.removesuffix(LEVEL_PART), o.layer): out[n] for n, o in eg.outputs.items()
             if o.method.endswith(LEVEL_PART)}

    def resized(level_map):
        return F.interpolate(torch.from_numpy(level_map[None, None]), size=HW, mode="bilinear",
                             align_corners=False).numpy()[0, 0]

    for row, pair in enumerate(chosen[0][:4]):
        anchor, cls = divmod(int(pair), TINY.num_classes)
        level = int(np.searchsorted(starts, anchor, side="right")) - 1
        assert level == 3 - row
        grad = torch.autograd.grad(scores[anchor, cls], feats[level], retain_graph=True)[0][0].numpy()
        a = feats[level][0].detach().numpy()
        signed = (grad.mean((1, 2), keepdims=True) * a).sum(0)
        assert np.abs(signed).max() > 0
        assert relative_error(by["box_gradcam_signed"][row, 0], resized(signed)) < 1e-4, row
        for i in range(4):  # the box's part at its level is the level's map; at the others it is zero
            part = parts[("box_gradcam_signed", f"bifpn_p{i + 2}")][row, 0]
            assert part.shape == feats[i].shape[2:]
            assert relative_error(part, signed) < 1e-4 if i == level else not part.any(), (row, i)
        assert relative_error(by["box_gradcam"][row, 0], resized(np.maximum(signed, 0))) < 1e-4, row
        assert relative_error(by["box_layercam"][row, 0], resized(ref_layercam(grad, a))) < 1e-4, row
        # FEM: pixels next to a level pixel within float32 rounding of its K-sigma threshold left out
        mean, std = a.mean(axis=(1, 2), keepdims=True), a.std(axis=(1, 2), keepdims=True)
        unclear = (np.abs(a - (mean + 2.0 * std)) <= 1e-5 * (np.abs(mean) + std)).any(0)
        clear = resized(unclear.astype(np.float64)) == 0
        assert clear.mean() > 0.9
        assert relative_error(by["box_fem"][row, 0][clear], resized(ref_fem(a, 2.0))[clear]) < 1e-5, row
    for method in methods:  # the empty slot
        assert not by[method][4].any(), method
    # the backward never enters the pyramid: every forward tensor a backward node reads is the head's or a level's
    made_by = {o: n.name for n in m.graph.node for o in n.output}
    read = {i for n in eg.model.graph.node if n.name.startswith("xai/backward") for i in n.input}
    assert not [t for t in read if "bifpn" in made_by.get(t, "") and t not in levels.values()]
    assert {t for t in read if t in levels.values()} == {"bifpn_p2", "bifpn_p3"}  # the windows' crops (P4, P5 whole)
