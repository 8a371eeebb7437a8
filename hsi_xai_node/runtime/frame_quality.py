"""Per-frame figures that say whether a frame is worth a human look (the fleet report ranks by them).

    prediction_margin(logits)            how sure the model is: mean over pixels of p(top class) - p(second)
    method_disagreement(a, b, channel)   how differently two explanation methods see the predicted classes

Both look at every STEP-th pixel in each direction: a frame-level figure needs no more, and the node
pays microseconds for it.
"""

from __future__ import annotations

import numpy as np

STEP = 4


def prediction_margin(logits: np.ndarray) -> float:
    """Mean softmax margin p1 - p2 over the pixels of (1, K, h, w) logits: near 0 where two classes tie."""
    x = np.asarray(logits)[0, :, ::STEP, ::STEP]
    # pixels as rows, classes sorted along each row (contiguous: a partition across the class axis was 2x slower)
    x = np.sort(x.reshape(len(x), -1).T.astype(np.float64), axis=1)
    p = np.exp(x - x[:, -1:])
    return float(((p[:, -1] - p[:, -2]) / p.sum(axis=1)).mean()) if x.shape[1] > 1 else 1.0


def method_disagreement(maps_a: np.ndarray, maps_b: np.ndarray, channel: np.ndarray) -> float | None:
    """1 - the correlation of two methods' per-class maps (K, 1, h, w) over each predicted class's pixels
    (channel: (h, w) class index), weighted by region size: 0 where the methods rank pixels alike, up to 2
    where they are opposite. None when no region has two distinct values to compare. Maps of shape (1, 1, h, w)
    are taken as already holding each pixel's predicted class's value (the pipeline's fused uint8 maps)."""
    ch = np.asarray(channel)[::STEP, ::STEP].astype(np.intp)
    k = int(ch.max()) + 1 if ch.size else 1

    def predicted(maps) -> np.ndarray:  # each sampled pixel's own class's value
        m = np.asarray(maps)[:, 0, ::STEP, ::STEP]
        return (m[0] if m.shape[0] == 1 else np.take_along_axis(m, ch[None], 0)[0]).astype(np.float64).ravel()

    x, y = predicted(maps_a), predicted(maps_b)
    c = ch.ravel()
    # per class, the moments of its pixels' values (one pass over the pixels, not one per class)
    n = np.bincount(c, minlength=k).astype(np.float64)
    safe = np.maximum(n, 1.0)
    mx, my = np.bincount(c, x, k) / safe, np.bincount(c, y, k) / safe
    dx, dy = x - mx[c], y - my[c]
    sxx, syy, sxy = np.bincount(c, dx * dx, k), np.bincount(c, dy * dy, k), np.bincount(c, dx * dy, k)
    usable = (n >= 3) & (sxx > 0) & (syy > 0)
    if not usable.any():
        return None
    corr = sxy[usable] / np.sqrt(sxx[usable] * syy[usable])
    return float(1.0 - (n[usable] * corr).sum() / n[usable].sum())
