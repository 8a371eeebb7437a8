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
    x = np.asarray(logits, np.float64)[0, :, ::STEP, ::STEP]
    x = x - x.max(axis=0, keepdims=True)
    p = np.exp(x)
    p /= p.sum(axis=0, keepdims=True)
    top2 = np.partition(p, -2, axis=0)[-2:]
    return float((top2[1] - top2[0]).mean())


def method_disagreement(maps_a: np.ndarray, maps_b: np.ndarray, channel: np.ndarray) -> float | None:
    """1 - the correlation of two methods' per-class maps (K, 1, h, w) over each predicted class's pixels
    (channel: (h, w) class index), weighted by region size: 0 where the methods rank pixels alike, up to 2
    where they are opposite. None when no region has two distinct values to compare."""
    a = np.asarray(maps_a, np.float64)[:, 0, ::STEP, ::STEP]
    b = np.asarray(maps_b, np.float64)[:, 0, ::STEP, ::STEP]
    ch = np.asarray(channel)[::STEP, ::STEP]
    total = weight = 0.0
    for c in np.unique(ch):
        region = ch == c
        x, y = a[c][region], b[c][region]
        if x.size < 3 or x.std() == 0 or y.std() == 0:
            continue
        total += region.sum() * float(np.corrcoef(x, y)[0, 1])
        weight += region.sum()
    return None if weight == 0 else 1.0 - total / weight
