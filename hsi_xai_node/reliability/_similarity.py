"""Similarity of two saliency maps, as in the sanity checks of Adebayo et al. 2018.

* `spearman(a, b)`: Spearman rank correlation of the flattened maps (scipy.stats.spearmanr).
  A constant map has no ranking (all ties), where scipy returns NaN; here the value is
  defined instead: 1.0 when both maps are constant (two all-tie rankings are the same
  ranking; a model compared with itself stays at 1), 0.0 when only one is (a map with no
  ranking shares none with another). NaN inside a map is an error, not a tie.
* `ssim(a, b)`: structural similarity (skimage.metrics.structural_similarity) of the maps
  each scaled to [0, 1] by its own min and max, with data_range 1: the protocol of
  Adebayo et al. 2018 for saliency maps, so SSIM compares structure, not the scale of the
  gradients (which randomising a layer changes by orders of magnitude). A constant map
  scales to all zeros. The window is skimage's 7x7, shrunk to the largest odd size that
  fits maps smaller than that (3 at least).
* `compare_maps(trained, randomised)`: both measures per method, averaged over rows
  (classes or boxes, and frames).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def _flat(a) -> np.ndarray:
    a = np.asarray(a, np.float64).ravel()
    if a.size == 0:
        raise ValueError("an empty map has no ranking")
    if not np.isfinite(a).all():
        raise ValueError("maps must be finite (NaN or inf found)")
    return a


def spearman(a, b) -> float:
    """Rank correlation of two maps of the same size; constant maps: see the module docstring."""
    from scipy.stats import spearmanr

    x, y = _flat(a), _flat(b)
    if x.shape != y.shape:
        raise ValueError(f"maps of different sizes: {np.shape(a)} vs {np.shape(b)}")
    cx, cy = np.ptp(x) == 0, np.ptp(y) == 0
    if cx or cy:
        return 1.0 if (cx and cy) else 0.0
    return float(spearmanr(x, y).statistic)


def unit_range(a) -> np.ndarray:
    """The map scaled to [0, 1] by its own min and max (a constant map gives zeros)."""
    a = np.asarray(a, np.float64)
    lo, span = a.min(), np.ptp(a)
    return (a - lo) / span if span > 0 else np.zeros_like(a)


def ssim(a, b) -> float:
    """SSIM of two 2-D maps of the same shape, each scaled to [0, 1] first (module docstring)."""
    from skimage.metrics import structural_similarity

    a, b = np.asarray(a), np.asarray(b)
    a2, b2 = np.squeeze(a), np.squeeze(b)
    if a2.shape != b2.shape or a2.ndim != 2:
        raise ValueError(f"ssim needs two 2-D maps of one shape, got {a.shape} and {b.shape}")
    _flat(a2), _flat(b2)
    side = min(a2.shape)
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        raise ValueError(f"maps of {a2.shape} are too small for SSIM (3x3 at least)")
    return float(structural_similarity(unit_range(a2), unit_range(b2), data_range=1.0, win_size=win))


def _rows(m) -> np.ndarray:
    """(..., h, w) -> (rows, h, w): classes, boxes and frames all become rows."""
    m = np.asarray(m)
    if m.ndim < 2:
        raise ValueError(f"a map needs (h, w) as its last two axes, got shape {m.shape}")
    return m.reshape(-1, *m.shape[-2:])


def compare_maps(trained: Mapping[str, np.ndarray], randomised: Mapping[str, np.ndarray],
                 skip_constant: bool = True) -> dict[str, dict]:
    """Per method (the keys both share): Spearman, Spearman of |map| and SSIM, per row and their means.

    Maps are (..., h, w): row r of the trained maps is compared with row r of the
    randomised ones (same class, box or frame). With `skip_constant` (default) rows where
    the trained map is constant are left out of the means (a class absent from the frame
    has no explanation to check); "rows" counts those kept. `spearman_abs` ranks |map|
    (Adebayo et al. show both, as a map's sign may or may not carry meaning).
    """
    out = {}
    for method in [m for m in trained if m in randomised]:
        t, r = _rows(trained[method]), _rows(randomised[method])
        if t.shape != r.shape:
            raise ValueError(f"{method}: trained maps {t.shape} and randomised maps {r.shape} differ in shape")
        keep = [i for i in range(len(t)) if not (skip_constant and np.ptp(t[i]) == 0)]
        rho = [spearman(t[i], r[i]) for i in keep]
        rho_abs = [spearman(np.abs(t[i]), np.abs(r[i])) for i in keep]
        sim = [ssim(t[i], r[i]) for i in keep]
        mean = (lambda v: float(np.mean(v)) if v else float("nan"))
        out[method] = {"spearman": mean(rho), "spearman_abs": mean(rho_abs), "ssim": mean(sim),
                       "rows": len(keep), "kept": keep,
                       "per_row": {"spearman": rho, "spearman_abs": rho_abs, "ssim": sim}}
    return out
