"""Paper 003's evaluation measures (section 7) on precomputed maps: plain arrays in, numbers out.

Every function takes one map (H, W) as the product computes it (signed or not: positive values are evidence for
the class or box explained) and, where it needs one, the ground-truth region (H, W) bool of that class or object.
Quantus groups the same measures as here; the tests hold each against Quantus 0.6 where it has the measure and
against hand-worked cases elsewhere.

Localisation (against the ground-truth region)
    pointing_game(m, region)       1.0 if the map's largest value lies in the region (Zhang et al. 2018)
    relevance_mass(m, region)      share of the map's positive mass inside the region (Arras et al. 2022: only
                                   positive relevance counts); NaN for a map with no positive value
    relevance_rank(m, region)      share of the region's size K of top-K pixels that fall inside it (Arras 2022)
    roc_auc(m, region)             area under the ROC of the map's values separating region from complement
                                   (ties count half: the Mann-Whitney statistic)
Map comparison (paper 003 sec. 7.2; a blurred region stands in for a gaze-fixation density map)
    fixation_map(region, sigma)    the region Gaussian-blurred, the stand-in reference
    map_similarity(m, reference)   pcc, sim (histogram intersection of both made distributions over the pixels),
                                   ssim, l1 (mean |m - ref| of both scaled to [0, 1] by their maxima), on the
                                   map's positive part
Complexity
    sparseness(m)                  Gini index of |m| (Chalasani et al. 2020): 0 uniform, -> 1 one pixel
Spectral localisation (what a hyperspectral product can check)
    band_separability(x, region)   per band, Fisher's score of the region's pixels against the rest
    spectral_agreement(t, sep)     Spearman rank correlation of |per-band totals| with the separability
Robustness and randomisation
    relative_change(m, m2)         ||m2 - m|| / ||m|| (Frobenius), the quantity max-sensitivity maximises
                                   (Yeh et al. 2019)
"""

from __future__ import annotations

import numpy as np


def _map(m) -> np.ndarray:
    """The map as (H, W) float64, finite."""
    m = np.squeeze(np.asarray(m, np.float64))
    if m.ndim != 2:
        raise ValueError(f"need an (H, W) map, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("the map has NaN or inf")
    return m


def _pair(m, region) -> tuple[np.ndarray, np.ndarray]:
    m, r = _map(m), np.squeeze(np.asarray(region, bool))
    if m.shape != r.shape:
        raise ValueError(f"need a map and a region of one (H, W) shape, got {m.shape} and {r.shape}")
    return m, r


def pointing_game(m, region) -> float:
    """1.0 when a largest value of the map lies inside the region, else 0.0; NaN for an empty region."""
    m, r = _pair(m, region)
    if not r.any():
        return float("nan")
    return float(np.any(r[m == m.max()]))


def relevance_mass(m, region) -> float:
    """Positive mass inside the region / positive mass everywhere; NaN for an empty region or no positive value."""
    m, r = _pair(m, region)
    p = np.clip(m, 0.0, None)
    total = p.sum()
    if not r.any() or total <= 0:
        return float("nan")
    return float(p[r].sum() / total)


def relevance_rank(m, region) -> float:
    """Of the K = |region| largest values (ties by pixel index), the share inside the region."""
    m, r = _pair(m, region)
    k = int(r.sum())
    if k == 0:
        return float("nan")
    top = np.argsort(-m.ravel(), kind="stable")[:k]
    return float(r.ravel()[top].mean())


def roc_auc(m, region) -> float:
    """Area under the ROC curve of the map's values as a detector of region pixels (ties count half); NaN when
    the region is empty or everything."""
    from scipy.stats import rankdata

    m, r = _pair(m, region)
    pos, n = int(r.sum()), r.size
    if pos in (0, n):
        return float("nan")
    ranks = rankdata(m.ravel())  # average ranks: a tie between a region and a background pixel counts half
    return float((ranks[r.ravel()].sum() - pos * (pos + 1) / 2.0) / (pos * (n - pos)))


def fixation_map(region, sigma: float) -> np.ndarray:
    """The region (H, W) bool Gaussian-blurred with `sigma` px: the stand-in for a gaze-fixation density map."""
    import cv2

    r = np.squeeze(np.asarray(region, np.float32))
    return cv2.GaussianBlur(r, (0, 0), float(sigma), borderType=cv2.BORDER_REFLECT).astype(np.float64)


def map_similarity(m, reference) -> dict[str, float]:
    """pcc, sim, ssim and l1 between the map's positive part and a reference map (NaN where undefined)."""
    from ._similarity import ssim

    m = _map(m)
    ref = np.squeeze(np.asarray(reference, np.float64))
    if ref.shape != m.shape:
        raise ValueError(f"map {m.shape} and reference {ref.shape} differ in shape")
    p = np.clip(m, 0.0, None)
    nan = float("nan")
    out = {"pcc": nan, "sim": nan, "ssim": float(ssim(p, ref)), "l1": nan}
    if p.std() > 0 and ref.std() > 0:
        out["pcc"] = float(np.corrcoef(p.ravel(), ref.ravel())[0, 1])
    if p.sum() > 0 and ref.sum() > 0:
        out["sim"] = float(np.minimum(p / p.sum(), ref / ref.sum()).sum())
        out["l1"] = float(np.abs(p / p.max() - ref / ref.max()).mean())
    return out


def sparseness(m) -> float:
    """Gini index of |m| over the pixels: 0 for a uniform map, (n - 1) / n for one non-zero pixel; NaN for 0."""
    a = np.sort(np.abs(np.asarray(m, np.float64)).ravel())
    n, total = a.size, a.sum()
    if total <= 0:
        return float("nan")
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * a).sum() / (n * total))


def band_separability(x, region) -> np.ndarray:
    """(B,) Fisher's score per band of the input x (B, H, W): (mean_in - mean_out)^2 / (var_in + var_out), the
    region's pixels against the rest. Zeros when either side is empty."""
    x = np.asarray(x, np.float64)
    x = x.reshape(-1, *x.shape[-2:]) if x.ndim != 3 else x
    r = np.squeeze(np.asarray(region, bool))
    if x.shape[1:] != r.shape:
        raise ValueError(f"input {x.shape} and region {r.shape} differ in (H, W)")
    if not r.any() or r.all():
        return np.zeros(x.shape[0])
    inside, outside = x[:, r], x[:, ~r]
    spread = inside.var(axis=1) + outside.var(axis=1)
    gap = (inside.mean(axis=1) - outside.mean(axis=1)) ** 2
    return np.where(spread > 0, gap / np.where(spread > 0, spread, 1.0), 0.0)


def spectral_agreement(band_totals, separability) -> float:
    """Spearman rank correlation of |per-band attribution totals| with the bands' separability; NaN when either
    is constant."""
    from scipy.stats import spearmanr

    t = np.abs(np.asarray(band_totals, np.float64).ravel())
    s = np.asarray(separability, np.float64).ravel()
    if t.shape != s.shape:
        raise ValueError(f"{t.size} band totals against {s.size} bands")
    if np.ptp(t) == 0 or np.ptp(s) == 0:
        return float("nan")
    return float(spearmanr(t, s).statistic)


def relative_change(m, changed) -> float:
    """||changed - m||_F / ||m||_F; NaN for an all-zero m."""
    a, b = np.asarray(m, np.float64), np.asarray(changed, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps of shapes {a.shape} and {b.shape}")
    norm = np.linalg.norm(a)
    return float(np.linalg.norm(b - a) / norm) if norm > 0 else float("nan")
