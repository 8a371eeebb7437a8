"""Mean average precision of a detector over a set of images (Pascal VOC 2010+ all-point AP).

Per image and class, detections are visited by descending score; each is a true positive
if some not yet matched, non-ignored ground-truth box of its class overlaps it with
IoU >= `iou_threshold` (the one of highest IoU is taken). Otherwise a detection overlapping
an ignored ground-truth box (KITTI DontCare, objects too small to count) with IoU >=
`iou_threshold` is dropped, neither TP nor FP; any other is a false positive (duplicates
included). Ignored boxes do not count as ground truth. Per class, the precision/recall
curve over all images is made monotone (precision at recall r = best precision at recall
>= r) and AP is the area under it. Classes without ground truth get AP None and stay out of
the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .boxes import iou_matrix

# The protocol of this project's detection figures (training study, demo report): objects lower
# than this in the 320x256 network view (15 px of the 640x480 common view) are ignore regions.
MIN_HEIGHT_PX = 8.0


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray    # (N, 4) x0, y0, x1, y1
    scores: np.ndarray   # (N,)
    classes: np.ndarray  # (N,) int

    def __post_init__(self):
        boxes, scores, classes = _boxes(self.boxes, "detection"), np.asarray(self.scores, np.float64).reshape(-1), \
            np.asarray(self.classes).reshape(-1)
        if not len(boxes) == len(scores) == len(classes):
            raise ValueError(f"detections need as many scores and classes as boxes, got {len(boxes)} boxes, "
                             f"{len(scores)} scores, {len(classes)} classes")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "classes", _classes(classes, "detection"))


@dataclass(frozen=True)
class GroundTruth:
    boxes: np.ndarray                 # (M, 4) x0, y0, x1, y1
    classes: np.ndarray               # (M,) int
    ignore: np.ndarray | None = None  # (M,) bool: matches neither count nor penalise

    def __post_init__(self):
        boxes, classes = _boxes(self.boxes, "ground-truth"), np.asarray(self.classes).reshape(-1)
        ignore = np.zeros(len(boxes), bool) if self.ignore is None else np.asarray(self.ignore, bool).reshape(-1)
        if not len(boxes) == len(classes) == len(ignore):
            raise ValueError(f"ground truth needs as many classes and ignore flags as boxes, got {len(boxes)} boxes, "
                             f"{len(classes)} classes, {len(ignore)} ignore flags")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "classes", _classes(classes, "ground-truth"))
        object.__setattr__(self, "ignore", ignore)


def _boxes(boxes, what: str) -> np.ndarray:
    b = np.asarray(boxes, np.float64)
    if b.size == 0:
        return b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{what} boxes must be (N, 4), got shape {b.shape}")
    return b


def _classes(classes: np.ndarray, what: str) -> np.ndarray:
    if classes.size and (not np.issubdtype(classes.dtype, np.integer) or classes.min() < 0):
        raise ValueError(f"{what} classes must be non-negative integers, got {classes.dtype} {classes[:5]}")
    return classes.astype(np.int64)


@dataclass(frozen=True)
class MapResult:
    iou_threshold: float
    ap: tuple[float | None, ...]  # per class; None where the class has no (non-ignored) ground truth
    num_gt: tuple[int, ...]       # non-ignored ground-truth boxes per class
    tp: tuple[int, ...]           # true positives per class (all scores)
    fp: tuple[int, ...]           # false positives per class
    dropped: tuple[int, ...]      # detections matched only to ignored ground truth
    mean_ap: float | None         # mean over classes with ground truth; None if none has any


def match_image(det: Detections, gt: GroundTruth, cls: int, iou_threshold: float):
    """For class `cls` of one image: (scores, outcome) of its detections in descending score
    order, outcome 1 = TP, 0 = FP, -1 = dropped; and the number of non-ignored GT boxes."""
    d = np.flatnonzero(det.classes == cls)
    d = d[np.argsort(-det.scores[d], kind="stable")]
    g = gt.classes == cls
    real, ignored = gt.boxes[g & ~gt.ignore], gt.boxes[g & gt.ignore]
    iou = iou_matrix(det.boxes[d], real)
    hit_ignored = (iou_matrix(det.boxes[d], ignored) >= iou_threshold).any(1)
    free = np.ones(len(real), bool)
    outcome = np.zeros(len(d), np.int64)
    for i in range(len(d)):  # greedy, so sequential
        cand = np.where(free & (iou[i] >= iou_threshold), iou[i], -1.0)
        if len(real) and cand.max() >= 0:
            free[cand.argmax()] = False
            outcome[i] = 1
        elif hit_ignored[i]:
            outcome[i] = -1
    return det.scores[d], outcome, len(real)


def average_precision(outcome: np.ndarray, num_gt: int) -> float:
    """All-point interpolated AP of TP(1)/FP(0) outcomes already sorted by descending score."""
    tp = np.cumsum(outcome == 1)
    fp = np.cumsum(outcome == 0)
    recall = np.concatenate([[0.0], tp / num_gt, [1.0]])
    precision = np.concatenate([[0.0], tp / np.maximum(tp + fp, 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at any higher recall
    step = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[step + 1] - recall[step]) * precision[step + 1]))


def evaluate_map(detections: Sequence[Detections], ground_truth: Sequence[GroundTruth],
                 num_classes: int | None = None, iou_threshold: float = 0.5) -> MapResult:
    """mAP over images; `detections[i]` and `ground_truth[i]` belong to image i. `num_classes`
    defaults to one more than the largest class id seen."""
    if len(detections) != len(ground_truth):
        raise ValueError(f"got detections for {len(detections)} images but ground truth for {len(ground_truth)}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    top = max((int(x.classes.max(initial=-1)) for x in [*detections, *ground_truth]), default=-1)
    n_cls = top + 1 if num_classes is None else num_classes
    if top >= n_cls:
        raise ValueError(f"class id {top} is out of range for num_classes={n_cls}")
    ap, num_gt, tps, fps, dropped = [], [], [], [], []
    for c in range(n_cls):
        per_image = [match_image(d, g, c, iou_threshold) for d, g in zip(detections, ground_truth)]
        scores = np.concatenate([p[0] for p in per_image]) if per_image else np.zeros(0)
        outcome = np.concatenate([p[1] for p in per_image]) if per_image else np.zeros(0, np.int64)
        n = sum(p[2] for p in per_image)
        outcome = outcome[np.argsort(-scores, kind="stable")]
        num_gt.append(n)
        tps.append(int((outcome == 1).sum()))
        fps.append(int((outcome == 0).sum()))
        dropped.append(int((outcome == -1).sum()))
        ap.append(average_precision(outcome[outcome >= 0], n) if n else None)
    valid = [a for a in ap if a is not None]
    return MapResult(iou_threshold, tuple(ap), tuple(num_gt), tuple(tps), tuple(fps), tuple(dropped),
                     float(np.mean(valid)) if valid else None)
