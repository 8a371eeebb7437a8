"""Spearman and SSIM of saliency maps (Adebayo et al. 2018), on cases with known answers."""

import numpy as np
import pytest

pytest.importorskip("skimage", reason="the similarity measures need the `reliability` extra (scikit-image)")

from hsi_xai_node.reliability import compare_maps, spearman, ssim, unit_range  # noqa: E402


def smooth_map(seed=0, shape=(32, 48)):
    """A saliency-like map: a few Gaussian blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    m = np.zeros(shape)
    for _ in range(4):
        cy, cx, s = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(3, 8)
        m += rng.uniform(0.5, 2) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s ** 2))
    return m


def test_spearman_monotone_transform_is_one_and_negation_minus_one():
    m = smooth_map()
    assert spearman(m, np.exp(3 * m) + 7) == pytest.approx(1.0, abs=1e-12)
    assert spearman(m, m ** 3) == pytest.approx(1.0, abs=1e-12)
    assert spearman(m, -m) == pytest.approx(-1.0, abs=1e-12)
    assert spearman(m, -np.log1p(m)) == pytest.approx(-1.0, abs=1e-12)


def test_spearman_hand_three_elements():
    # ranks (1, 2, 3) vs (1, 3, 2): sum d^2 = 2, rho = 1 - 6 * 2 / (3 * (9 - 1)) = 0.5
    assert spearman([1.0, 2.0, 3.0], [10.0, 30.0, 20.0]) == pytest.approx(0.5, abs=1e-12)
    # with a tie: ranks (1, 2.5, 2.5) vs (1, 2, 3): Pearson of the ranks = sqrt(3) / 2
    assert spearman([0.0, 5.0, 5.0], [1.0, 2.0, 3.0]) == pytest.approx(np.sqrt(3) / 2, abs=1e-12)


def test_spearman_constant_maps_are_defined():
    m = smooth_map()
    assert spearman(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
    assert spearman(np.full((4, 4), 3.0), np.zeros((4, 4))) == 1.0
    assert spearman(np.zeros_like(m), m) == 0.0
    assert spearman(m, np.ones_like(m)) == 0.0
    with pytest.raises(ValueError, match="finite"):
        spearman([1.0, np.nan, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="sizes"):
        spearman([1.0, 2.0], [1.0, 2.0, 3.0])


def test_ssim_identical_is_one_and_noise_is_small():
    m = smooth_map()
    assert ssim(m, m) == pytest.approx(1.0, abs=1e-12)
    assert ssim(m, 100 * m - 4) == pytest.approx(1.0, abs=1e-9)  # scaled to [0, 1] first
    noise = np.random.default_rng(1).uniform(size=m.shape)
    assert abs(ssim(m, noise)) < 0.2
    assert ssim(np.zeros((8, 8)), np.zeros((8, 8))) == pytest.approx(1.0)
    assert ssim(np.zeros((5, 6)), np.eye(5, 6)) < 0.5  # a 5x6 map: the window shrinks to 5


def test_unit_range():
    np.testing.assert_allclose(unit_range([2.0, 4.0, 3.0]), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(unit_range(np.full(3, 7.0)), np.zeros(3))


def test_compare_maps_per_method_means_over_rows():
    a, b = smooth_map(0), smooth_map(1)
    trained = {"m1": np.stack([a, b, np.zeros_like(a)])[:, None], "m2": np.stack([a, b])}
    randomised = {"m1": np.stack([a, -b, a])[:, None], "m2": np.stack([a, b]), "only_here": a[None]}
    out = compare_maps(trained, randomised)
    assert set(out) == {"m1", "m2"}
    # m1: row 2 (a constant trained map, an absent class) is left out
    assert out["m1"]["rows"] == 2 and out["m1"]["kept"] == [0, 1]
    assert out["m1"]["spearman"] == pytest.approx((1.0 - 1.0) / 2, abs=1e-12)
    assert out["m1"]["spearman_abs"] == pytest.approx(1.0, abs=1e-12)  # |b| and |-b| rank alike
    assert out["m1"]["ssim"] == pytest.approx((1.0 + ssim(b, -b)) / 2, abs=1e-12)
    assert out["m2"]["spearman"] == pytest.approx(1.0) and out["m2"]["ssim"] == pytest.approx(1.0)
    kept_all = compare_maps(trained, randomised, skip_constant=False)["m1"]
    assert kept_all["rows"] == 3 and kept_all["per_row"]["spearman"][2] == 0.0
    with pytest.raises(ValueError, match="shape"):
        compare_maps({"m": np.zeros((2, 4, 4))}, {"m": np.zeros((3, 4, 4))})
