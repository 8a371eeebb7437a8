"""mAP against hand-worked examples."""

import numpy as np
import pytest

from hsi_xai_node.detection.evaluation import (
    Detections,
    GroundTruth,
    average_precision,
    evaluate_map,
)


def dets(*rows):
    """rows of (x0, y0, x1, y1, score, class)."""
    a = np.asarray(rows, np.float64).reshape(-1, 6)
    return Detections(a[:, :4], a[:, 4], a[:, 5].astype(int))


def gts(*rows, ignore=None):
    """rows of (x0, y0, x1, y1, class)."""
    a = np.asarray(rows, np.float64).reshape(-1, 5)
    return GroundTruth(a[:, :4], a[:, 4].astype(int), ignore)


def test_hand_worked_two_images():
    # One class, 3 GTs: image 1 has A = [0,0,10,10] and B = [20,0,30,10], image 2 has C = [0,0,10,10].
    # Detections by score, with IoUs:
    #   0.9 img1 [0,0,10,10]   IoU(A) = 1            -> TP (A)
    #   0.8 img2 [0,0,10,4]    IoU(C) = 40/100 < 0.5 -> FP
    #   0.7 img1 [20,0,30,8]   IoU(B) = 80/100       -> TP (B)
    #   0.6 img1 [0,0,10,8]    IoU(A) = 0.8 but A is taken, IoU(B) = 0 -> FP (duplicate)
    #   0.5 img2 [0,0,10,6]    IoU(C) = 0.6          -> TP (C)
    # cum TP 1 1 2 2 3, cum FP 0 1 1 2 2
    # precision 1, 1/2, 2/3, 2/4, 3/5;  recall 1/3, 1/3, 2/3, 2/3, 1
    # monotone precision (max to the right): 1, 2/3, 2/3, 3/5, 3/5
    # AP = 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/5 = 15/45 + 10/45 + 9/45 = 34/45
    d1 = dets((0, 0, 10, 10, 0.9, 0), (20, 0, 30, 8, 0.7, 0), (0, 0, 10, 8, 0.6, 0))
    d2 = dets((0, 0, 10, 4, 0.8, 0), (0, 0, 10, 6, 0.5, 0))
    g1 = gts((0, 0, 10, 10, 0), (20, 0, 30, 10, 0))
    g2 = gts((0, 0, 10, 10, 0))
    r = evaluate_map([d1, d2], [g1, g2])
    assert r.ap[0] == pytest.approx(34 / 45, abs=1e-12) and r.mean_ap == pytest.approx(34 / 45, abs=1e-12)
    assert (r.num_gt, r.tp, r.fp, r.dropped) == ((3,), (3,), (2,), (0,))
    # at IoU 0.7 the 0.5 detection (IoU 0.6) becomes FP: TP FP TP FP FP -> AP = 1/3 * 1 + 1/3 * 2/3 = 5/9
    assert evaluate_map([d1, d2], [g1, g2], iou_threshold=0.7).ap[0] == pytest.approx(5 / 9, abs=1e-12)


def test_iou_exactly_at_threshold_is_a_match():
    r = evaluate_map([dets((0, 0, 10, 5, 0.9, 0))], [gts((0, 0, 10, 10, 0))])  # IoU exactly 1/2
    assert r.tp == (1,) and r.ap == (1.0,)


def test_ignored_ground_truth():
    g = gts((0, 0, 10, 10, 0), (50, 50, 60, 60, 0), ignore=[False, True])
    # 0.95: IoU 0.3 with the ignored box only -> FP; 0.9: on the real box -> TP;
    # 0.8: on the ignored box -> dropped (were it FP: FP FP TP, AP 1/3). FP, TP -> AP = 1 * 1/2
    d = dets((50, 50, 53, 60, 0.95, 0), (0, 0, 10, 10, 0.9, 0), (50, 50, 60, 60, 0.8, 0))
    r = evaluate_map([d], [g])
    assert (r.num_gt, r.tp, r.fp, r.dropped) == ((1,), (1,), (1,), (1,))
    assert r.ap[0] == pytest.approx(0.5)
    # a real GT is preferred to an ignored one it overlaps; once taken, a second hit on both is dropped
    g = gts((0, 0, 10, 10, 0), (0, 0, 10, 8, 0), ignore=[False, True])
    d = dets((0, 0, 10, 8, 0.9, 0), (0, 0, 10, 8, 0.8, 0))  # IoU 0.8 with the real one, 1 with the ignored
    r = evaluate_map([d], [g])
    assert (r.tp, r.fp, r.dropped, r.ap) == ((1,), (0,), (1,), (1.0,))
    # only ignored GT: the class has no GT
    assert evaluate_map([d], [gts((0, 0, 10, 8, 0), ignore=[True])]).ap == (None,)


def test_class_without_ground_truth_is_left_out_of_the_mean():
    g = gts((0, 0, 10, 10, 0), (20, 20, 30, 30, 2))
    d = dets((0, 0, 10, 10, 0.9, 0), (40, 40, 50, 50, 0.8, 1))  # class 1: no GT; class 2: missed
    r = evaluate_map([d], [g], num_classes=4)
    assert r.ap == (1.0, None, 0.0, None)
    assert (r.num_gt, r.tp, r.fp) == ((1, 0, 1, 0), (1, 0, 0, 0), (0, 1, 0, 0))
    assert r.mean_ap == pytest.approx(0.5)
    assert evaluate_map([dets()], [gts()]).mean_ap is None


def test_perfect_detections():
    rng = np.random.default_rng(0)
    images_d, images_g = [], []
    for _ in range(4):
        xy = rng.uniform(0, 100, (6, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 20, (6, 2))], 1)
        classes = rng.integers(0, 3, 6)
        images_g.append(GroundTruth(boxes, classes))
        images_d.append(Detections(boxes, rng.uniform(0.1, 1, 6), classes))
    r = evaluate_map(images_d, images_g, num_classes=3)
    assert r.ap == (1.0, 1.0, 1.0) and r.mean_ap == 1.0 and sum(r.fp) == 0


def test_duplicate_detection_is_a_false_positive():
    # image 1 GT A, image 2 GT B. 0.9 on A: TP; 0.8 on A again: FP; 0.7 on B: TP.
    # precision 1, 1/2, 2/3; recall 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    d = [dets((0, 0, 10, 10, 0.9, 0), (0, 0, 10, 10, 0.8, 0)), dets((5, 5, 15, 15, 0.7, 0))]
    r = evaluate_map(d, [gts((0, 0, 10, 10, 0)), gts((5, 5, 15, 15, 0))])
    assert (r.tp, r.fp) == ((2,), (1,)) and r.ap[0] == pytest.approx(5 / 6, abs=1e-12)


def test_greedy_match_takes_best_unmatched_ground_truth():
    # G1 = [0,0,10,10], G2 = [2,0,12,10]. The 0.9 detection [1,0,11,10] has IoU 9/11 with both: takes the
    # first; the 0.8 detection [0,0,10,10] has IoU 1 with G1 (taken) and 8/12 with G2: TP on G2
    g = gts((0, 0, 10, 10, 0), (2, 0, 12, 10, 0))
    r = evaluate_map([dets((1, 0, 11, 10, 0.9, 0), (0, 0, 10, 10, 0.8, 0))], [g])
    assert (r.tp, r.fp, r.ap) == ((2,), (0,), (1.0,))


def test_average_precision_direct():
    assert average_precision(np.array([1, 0, 1, 0, 1]), 3) == pytest.approx(34 / 45)
    assert average_precision(np.array([], int), 2) == 0.0
    assert average_precision(np.array([0, 1]), 2) == pytest.approx(0.25)  # recall 1/2 at precision 1/2


def test_input_validation():
    with pytest.raises(ValueError, match="2 images but ground truth for 1"):
        evaluate_map([dets(), dets()], [gts()])
    with pytest.raises(ValueError, match=r"boxes must be \(N, 4\)"):
        Detections(np.zeros((2, 3)), np.zeros(2), np.zeros(2, int))
    with pytest.raises(ValueError, match="as many scores and classes as boxes"):
        Detections(np.zeros((2, 4)), np.zeros(1), np.zeros(2, int))
    with pytest.raises(ValueError, match="non-negative integers"):
        GroundTruth(np.zeros((1, 4)), np.array([0.5]))
    with pytest.raises(ValueError, match="out of range for num_classes=1"):
        evaluate_map([dets((0, 0, 1, 1, 0.5, 1))], [gts()], num_classes=1)
