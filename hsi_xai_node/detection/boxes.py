"""Box arithmetic shared by training and evaluation: IoU and the anchor box coding.

Coding (Faster R-CNN / EfficientDet, centre-size): for an anchor with centre (ax, ay)
and size (aw, ah), a box with centre (x, y) and size (w, h) is
(dx, dy, dw, dh) = ((x - ax) / aw, (y - ay) / ah, log(w / aw), log(h / ah)).
Decoding clamps dw, dh at `MAX_LOG_SCALE` so an untrained head cannot overflow exp.
"""

from __future__ import annotations

import numpy as np

MAX_LOG_SCALE = float(np.log(1000.0 / 16.0))


def area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union of (x0, y0, x1, y1) boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _centre_size(boxes: np.ndarray):
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + w / 2, boxes[..., 1] + h / 2, w, h


def encode(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(..., 4) deltas of `boxes` relative to `anchors` (same leading shape)."""
    x, y, w, h = _centre_size(np.asarray(boxes, np.float64))
    ax, ay, aw, ah = _centre_size(np.asarray(anchors, np.float64))
    return np.stack([(x - ax) / aw, (y - ay) / ah, np.log(w / aw), np.log(h / ah)], -1)


def decode(deltas: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Inverse of `encode`: (..., 4) boxes (x0, y0, x1, y1)."""
    d = np.asarray(deltas, np.float64)
    ax, ay, aw, ah = _centre_size(np.asarray(anchors, np.float64))
    x, y = ax + d[..., 0] * aw, ay + d[..., 1] * ah
    w = aw * np.exp(np.minimum(d[..., 2], MAX_LOG_SCALE))
    h = ah * np.exp(np.minimum(d[..., 3], MAX_LOG_SCALE))
    return np.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], -1)
