import numpy as np
import pytest

from hsi_xai_node.runtime.frame_quality import STEP, method_disagreement, prediction_margin


def test_margin_of_known_probabilities():
    logits = np.zeros((1, 3, 8, 8), np.float32)
    logits[0, 1] = np.log(3.0)  # p = (1/5, 3/5, 1/5): margin 0.4
    logits[0, :, :, 4:] = 0.0  # p = (1/3, 1/3, 1/3): margin 0 on the right half
    assert prediction_margin(logits) == pytest.approx(0.2, abs=1e-6)


def test_margin_ignores_constant_offsets_and_is_near_one_when_sure():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 5, 16, 16)).astype(np.float32)
    assert prediction_margin(logits + 100.0) == pytest.approx(prediction_margin(logits), abs=1e-6)
    sure = np.zeros((1, 5, 16, 16), np.float32)
    sure[0, 2] = 50.0
    assert prediction_margin(sure) == pytest.approx(1.0, abs=1e-9)


def test_disagreement_by_hand():
    rng = np.random.default_rng(1)
    h, w = 16, 16
    channel = np.zeros((h, w), int)
    channel[:, 8:] = 1
    a = rng.uniform(0, 255, (2, 1, h, w))
    b = a.copy()
    assert method_disagreement(a, b, channel) == pytest.approx(0.0, abs=1e-12)
    assert method_disagreement(a, 255 - a, channel) == pytest.approx(2.0, abs=1e-12)
    b[1] = rng.uniform(0, 255, (1, h, w))  # class 1: unrelated map
    sub = channel[::STEP, ::STEP]
    r1 = np.corrcoef(a[1, 0, ::STEP, ::STEP][sub == 1], b[1, 0, ::STEP, ::STEP][sub == 1])[0, 1]
    n0, n1 = (sub == 0).sum(), (sub == 1).sum()
    expected = 1.0 - (n0 * 1.0 + n1 * r1) / (n0 + n1)
    assert method_disagreement(a, b, channel) == pytest.approx(expected, abs=1e-12)


def test_disagreement_none_when_nothing_to_compare():
    channel = np.zeros((8, 8), int)
    flat = np.full((1, 1, 8, 8), 7.0)
    assert method_disagreement(flat, flat, channel) is None


def test_residual_of_labels_equals_the_one_hot_regions():
    from hsi_xai_node.explain import conservativeness_residual, conservativeness_residual_of_labels

    rng = np.random.default_rng(4)
    logits = rng.normal(size=(1, 5, 12, 20))
    labels = logits[0].argmax(0)
    labels[labels == 3] = 0  # class 3 predicted nowhere: NaN
    maps = rng.normal(size=(5, 1, 12, 20))  # not conservative: residuals of order 1, compared tightly
    bias = rng.normal(size=5)
    region = labels[None] == np.arange(5)[:, None, None]
    want = conservativeness_residual(maps, logits, region, bias)
    got = conservativeness_residual_of_labels(maps, logits, labels, bias)
    assert np.isnan(got[3]) and np.isnan(want[3])
    np.testing.assert_allclose(np.delete(got, 3), np.delete(want, 3), rtol=1e-12)


def test_disagreement_of_maps_already_fused_by_class():
    """The pipeline's uint8 maps hold each pixel's predicted class's value: the same figure as per-class maps."""
    rng = np.random.default_rng(7)
    channel = rng.integers(0, 4, (20, 24))
    a, b = rng.uniform(0, 255, (4, 1, 20, 24)), rng.uniform(0, 255, (4, 1, 20, 24))
    fused = [np.take_along_axis(m[:, 0], channel[None], 0)[:, None] for m in (a, b)]
    assert method_disagreement(*fused, channel) == pytest.approx(method_disagreement(a, b, channel), abs=1e-12)
