"""Insertion/deletion on the real models: the bundled U-Net (re-batched, one engine call per curve) and a tiny
EfficientDet (hard-coded batch in its head reshapes: looped), each against batch-1 runs of the same inputs."""

import numpy as np
import onnx
import pytest

pytest.importorskip("onnxruntime")

from hsi_xai_node.explain import SegmentationExplainConfig, build_segmentation_explainer  # noqa: E402
from hsi_xai_node.reliability import (BatchedModel, PerturbationConfig, deletion, detection_score,  # noqa: E402
                                      insertion, perturbed_batch, rebatch, segmentation_score)
from test.reliability.conftest import run_all  # noqa: E402


def test_bundled_unet_batched_deletion_insertion(bundled_frame):
    loaded, x = bundled_frame
    card = loaded.card
    model = onnx.load_model_from_string(loaded.onnx_bytes)
    eg = build_segmentation_explainer(model, card.input.tensor, card.logits, card.layers,
                                      SegmentationExplainConfig(methods=("activation",), upsample=False, uint8=False,
                                                                top_k=0, second_block=False))
    assert rebatch(eg.model, 5) is None  # the explain graph puts classes in the batch axis: not re-batchable
    out = run_all(eg.model, {card.input.tensor: x})
    logits, act = out[card.logits], out[next(iter(eg.outputs))]
    pred = logits[0].argmax(0)
    c = int(np.argmax(np.bincount(pred.ravel(), minlength=5)[:4]))  # a large class
    runner = BatchedModel(model, 5, threads=1)
    assert runner.batched
    score = segmentation_score(card.logits, c, pred == c)
    cfg = PerturbationConfig(steps=4)
    d = deletion(runner, x, act[c, 0], score, cfg)
    i = insertion(runner, x, act[c, 0], score, cfg)
    assert runner.calls == 2
    # the unperturbed rows reproduce the batch-1 score; an inner row matches a batch-1 run of the same input
    p = np.exp(logits[0] - logits[0].max(0))
    assert d.reference == pytest.approx(float((p[c] / p.sum(0))[pred == c].mean()), rel=1e-5)
    assert i.reference == pytest.approx(d.reference, rel=1e-5)
    rows, _ = perturbed_batch(x, act[c, 0], np.zeros_like(x), 4, "deletion")
    one = run_all(model, {card.input.tensor: rows[2][None]})
    assert d.scores[2] == pytest.approx(float(score(one)[0]), rel=1e-4)
    assert d.scores[-1] < d.scores[0] and 0 <= d.auc <= 1.5


@pytest.fixture(scope="module")
def detector_path(request):
    """test/conftest.py's tiny detector, exported with one torch thread (the machine is shared)."""
    torch = pytest.importorskip("torch", reason="exporting the test detector needs torch")
    torch.set_num_threads(1)
    return request.getfixturevalue("tiny_detector")


def test_tiny_detector_box_deletion_loops(detector_path):
    """A box's class score at its anchor; the detector's head reshapes hard-code batch 1, so rows are looped."""
    model = onnx.load(str(detector_path))
    name = model.graph.input[0].name
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(3).uniform(-1, 1, shape).astype(np.float32)
    out = run_all(model, {name: x})
    pair, classes = int(out["det_pairs"][0, 0]), out["scores"].shape[2]
    assert pair >= 0
    anchor, cls = divmod(pair, classes)
    assert out["scores"][0, anchor, cls] == pytest.approx(out["det_scores"][0, 0], rel=1e-5)
    runner = BatchedModel(model, 4, threads=1)
    assert not runner.batched
    saliency = np.random.default_rng(4).uniform(size=shape[2:])
    cfg = PerturbationConfig(steps=3, deletion_baseline="zeros")
    curve = deletion(runner, x, saliency, detection_score(pair, classes), cfg)
    assert runner.calls == 4
    rows, _ = perturbed_batch(x, saliency, np.zeros_like(x), 3, "deletion")
    ref = [run_all(model, {name: r[None]})["scores"][0, anchor, cls] for r in rows]
    np.testing.assert_allclose(curve.scores, ref, rtol=1e-5)
    assert curve.reference == pytest.approx(out["det_scores"][0, 0], rel=1e-5)
    with pytest.raises(ValueError, match="empty"):
        detection_score(-1, classes)
