"""Segmentation metrics: confusion matrix, per-class IoU and accuracy, over any pixel mask."""

from __future__ import annotations

import numpy as np


def confusion(truth: np.ndarray, pred: np.ndarray, num_labels: int, mask: np.ndarray | None = None) -> np.ndarray:
    """(num_labels, num_labels) counts, rows = truth, cols = prediction; label 0 is ignored."""
    t, p = truth.ravel().astype(np.int64), pred.ravel().astype(np.int64)
    keep = t > 0
    if mask is not None:
        keep &= mask.ravel()
    return np.bincount(t[keep] * num_labels + p[keep], minlength=num_labels ** 2).reshape(num_labels, num_labels)


def scores(cm: np.ndarray, names: dict[int, str]) -> dict:
    """Per-class IoU and accuracy (share of the class's pixels labelled right) and their means.

    Classes with no pixels in the truth get None and are left out of the means.
    """
    out = {"iou": {}, "accuracy": {}, "pixels": {}}
    for cid, name in names.items():
        tp = cm[cid, cid]
        truth, predicted = cm[cid].sum(), cm[:, cid].sum()
        out["pixels"][name] = int(truth)
        out["iou"][name] = float(tp / (truth + predicted - tp)) if truth else None
        out["accuracy"][name] = float(tp / truth) if truth else None
    present = [v for v in out["iou"].values() if v is not None]
    out["miou"] = float(np.mean(present)) if present else None
    acc = [v for v in out["accuracy"].values() if v is not None]
    out["mean_accuracy"] = float(np.mean(acc)) if acc else None
    total = cm[1:, :].sum()  # every labelled pixel, also those predicted unlabelled (a miss)
    out["pixel_accuracy"] = float(np.trace(cm[1:, 1:]) / total) if total else None
    return out


def percent(v) -> str:
    """A score as a percentage with one decimal; "n/a" where there is none (a class absent from the split)."""
    return "n/a" if v is None else f"{100 * v:.1f}"
