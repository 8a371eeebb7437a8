"""Conservativeness (paper 000): does a map's sum over the seed region equal the logit sum there?

    residual_c = | sum_R map_c - (sum_R logit_c - bias_c * |R|) | / | sum_R logit_c |

With the final layer's bias passed, paper 000's activation maps (sum_k w_ck A_k) give
a residual at float rounding; Grad-CAM-family maps in general do not. Measured, not
assumed: the transports report it per frame, the tests show it per method.
"""

from __future__ import annotations

import numpy as np


def conservativeness_residual(maps: np.ndarray, logits: np.ndarray, region: np.ndarray,
                              bias: np.ndarray | None = None) -> np.ndarray:
    """Per-class relative residual. maps (K[,1],H,W), logits ([1,]K,H,W), region (K[,1],H,W) 0/1.

    Maps must be at the logits' resolution. Classes with an empty region get NaN.
    """
    k = logits.shape[-3]
    maps = np.asarray(maps, np.float64).reshape(k, *logits.shape[-2:])
    logit = np.asarray(logits, np.float64).reshape(k, *logits.shape[-2:])
    r = np.asarray(region, np.float64).reshape(k, *logits.shape[-2:])
    area = r.sum(axis=(1, 2))
    logit_sum = (logit * r).sum(axis=(1, 2))
    target = logit_sum - (np.zeros(k) if bias is None else np.asarray(bias, np.float64) * area)
    residual = np.abs((maps * r).sum(axis=(1, 2)) - target) / np.maximum(np.abs(logit_sum), 1e-30)
    residual[area == 0] = np.nan
    return residual


def conservativeness_residual_of_labels(maps: np.ndarray, logits: np.ndarray, labels: np.ndarray,
                                        bias: np.ndarray | None = None) -> np.ndarray:
    """`conservativeness_residual` with each class's region given as the pixels labelled with it (labels (h, w),
    class indices, as the predicted seed): one pass over the pixels instead of one per class, in float64."""
    k = logits.shape[-3]
    h, w = logits.shape[-2:]
    lab = np.asarray(labels).reshape(-1).astype(np.intp)
    # each pixel's own class's value, by its index into the flat (k, h, w) array (take_along_axis: 2x slower)
    flat = lab * (h * w) + np.arange(h * w)

    def at(a):
        return np.take(np.asarray(a).reshape(k * h * w), flat)

    area = np.bincount(lab, minlength=k)[:k].astype(np.float64)
    logit_sum = np.bincount(lab, weights=at(logits), minlength=k)[:k]
    map_sum = np.bincount(lab, weights=at(maps), minlength=k)[:k]
    target = logit_sum - (np.zeros(k) if bias is None else np.asarray(bias, np.float64) * area)
    residual = np.abs(map_sum - target) / np.maximum(np.abs(logit_sum), 1e-30)
    residual[area == 0] = np.nan
    return residual
