"""The class heads' backward on a window around each box's anchor (explain/_windows.py): what it finds in an
exported EfficientDet, and its gradients at the class-head input against float64 autograd, for anchors on every
corner of every pyramid level (where the window leaves the image and the network's own zero padding matters)."""

import copy

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="torch is the reference here: pip install -e '.[test]'")

from hsi_xai_node.detection.postprocess import PostprocessConfig
from hsi_xai_node.explain import DetectionExplainConfig, assert_tensorrt_compatible, build_detection_explainer
from hsi_xai_node.explain._graph import Builder
from hsi_xai_node.explain._reverse import _closure_forward, append_backward, influences
from hsi_xai_node.explain._windows import local_regions
from hsi_xai_node.training.detection import export_onnx
from test.detection.tiny_efficientdet import HW, TINY, image, tiny_model
from test.detection.tiny_efficientdet import one_torch_thread  # noqa: F401 (autouse fixture)
from test.explain.harness import relative_error, session
from test.explain.test_efficientdet_explain import maxpool_margin

LEVELS = [(HW[0] // s, HW[1] // s) for s in (4, 8, 16, 32)]  # P2..P5: 16x24, 8x12, 4x6, 2x3
SEED_X = 7


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    model = tiny_model(0)
    path = tmp_path_factory.mktemp("windows") / "tiny.onnx"
    export_onnx(model, path, HW, PostprocessConfig(score_threshold=0.55, iou_threshold=0.5, max_detections=12))
    return copy.deepcopy(model).double(), onnx.load(str(path))


def regions_of(m: onnx.ModelProto, target: str = "bifpn_p2"):
    b = Builder(m)
    on_path = _closure_forward(m.graph, {target}) & influences(m.graph, {"scores"})
    return local_regions(b, {"scores": "seed"}, [target], on_path).regions


def test_the_regions_are_the_class_heads_where_a_window_is_smaller_than_half_the_map(detector):
    _, m = detector
    regions = {r.source: r for r in regions_of(m)}
    # head_layers = 1: the head's separable conv and the predict conv, two 3x3 depthwise layers, reach 2 pixels; a
    # 5x5 window is under half of P2 (16x24) and P3 (8x12), and larger than P4 (4x6) and P5
    assert sorted(regions) == ["bifpn_p2", "bifpn_p3"]
    for r in regions.values():
        assert r.alone
        assert r.radius == (TINY.head_layers + 1, TINY.head_layers + 1)
        assert [n.op_type for n in r.nodes].count("Conv") == 2 * (TINY.head_layers + 1)
        assert r.nodes[-1].output[0] == r.output
    # a target inside the head stops the region there (its own gradient is wanted in full)
    inner = regions["bifpn_p2"].nodes[1].output[0]
    assert all(inner not in (n.output[0] for n in r.nodes) for r in regions_of(m, inner))


def corner_seeds(total_anchors: int, classes: int) -> tuple[np.ndarray, list]:
    """One-hot seeds at the four corners and the centre of every level, anchor types and classes varied."""
    per_cell = total_anchors // sum(h * w for h, w in LEVELS)
    rows, where, start = [], [], 0
    for level, (h, w) in enumerate(LEVELS):
        for y, x in [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (h // 2, w // 2)]:
            t, c = len(rows) % per_cell, len(rows) % classes
            rows.append((start + (y * w + x) * per_cell + t, c))
            where.append((level, y, x))
        start += h * w * per_cell
    seeds = np.zeros((len(rows), total_anchors, classes), np.float32)
    for k, (a, c) in enumerate(rows):
        seeds[k, a, c] = 1.0
    return seeds, rows


def gradient_at_p2(m: onnx.ModelProto, x: np.ndarray, seeds: np.ndarray, windows: bool):
    out = onnx.ModelProto()
    out.CopyFrom(m)
    b = Builder(out)
    b.add_input("seed", seeds.shape)
    grads = append_backward(b, {"scores": "seed"}, ["bifpn_p2"], len(seeds), one_hot_rows=windows)
    b.add_output(grads["bifpn_p2"], (len(seeds), *b.shape("bifpn_p2")[1:]))
    onnx.checker.check_model(out)
    return out, session(out).run([grads["bifpn_p2"]], {"image": x, "seed": seeds})[0]


def test_windowed_gradients_match_autograd_at_every_corner_of_every_level(detector):
    model64, m = detector
    x = image(SEED_X)
    x64 = torch.tensor(x, dtype=torch.float64)
    assert maxpool_margin(model64, x64) > 1e-5, "a BiFPN max-pool window nearly tied; pick another SEED_X"
    feats = model64.features(x64)
    scores = torch.sigmoid(model64.class_net(feats, TINY.num_classes))[0]
    seeds, rows = corner_seeds(scores.shape[0], TINY.num_classes)
    graph, ours = gradient_at_p2(m, x, seeds, windows=True)
    assert sum("window_place" in n.name for n in graph.graph.node) == 2  # P2 and P3 ran on windows
    assert_tensorrt_compatible(graph, "windowed backward")
    for k, (a, c) in enumerate(rows):
        ref = torch.autograd.grad(scores[a, c], feats[0], retain_graph=True)[0][0].numpy()
        assert np.abs(ref).max() > 0
        # float32 through the class head and BiFPN against float64: the per-box CAM tests' yardstick
        assert relative_error(ours[k], ref) < 1e-4, (k, a, c)
        if k < 5:  # a P2 anchor: its gradient is zero beyond the window (what makes the window exact)
            ys, xs = np.nonzero(np.abs(ref).sum(0))
            y, x0 = divmod((a // (scores.shape[0] // sum(h * w for h, w in LEVELS))), LEVELS[0][1])
            reach = TINY.head_layers + 1  # the head's 3x3 layers
            assert np.abs(ys - y).max() <= reach and np.abs(xs - x0).max() <= reach
    # the same rules over the whole map: the windows change where the arithmetic runs, not its result
    _, full = gradient_at_p2(m, x, seeds, windows=False)
    np.testing.assert_allclose(ours, full, rtol=0, atol=1e-6 * np.abs(full).max())


def test_per_box_maps_are_the_same_with_and_without_windows(detector):
    _, m = detector
    x = image(SEED_X)
    outs = []
    for windows in (True, False):
        eg = build_detection_explainer(m, "image", "scores", {"class_head_input": "bifpn_p2"},
                                       DetectionExplainConfig(layers=("class_head_input",), top_k=6,
                                                              methods=("box_gradcam_signed", "box_hires"),
                                                              upsample=False, uint8=False, window_backward=windows),
                                       pairs="det_pairs")
        names = list(eg.outputs)
        outs.append({eg.outputs[n].method: v for n, v in zip(names, session(eg.model).run(names, {"image": x}))})
        assert any("window_place" in n.name for n in eg.model.graph.node) == windows
    for method, value in outs[1].items():
        np.testing.assert_allclose(outs[0][method], value, rtol=0, atol=1e-6 * np.abs(value).max(), err_msg=method)
