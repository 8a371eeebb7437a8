"""Anchors and box coding against hand-computed values."""

import numpy as np
import pytest

from hsi_xai_node.detection.anchors import AnchorConfig, generate_anchors
from hsi_xai_node.detection.boxes import MAX_LOG_SCALE, decode, encode, iou_matrix

TINY = AnchorConfig(strides=(8,), sizes=(8.0,), scales=(1.0,), ratios=(1.0, 4.0))


def test_tiny_anchors_by_hand():
    # 16 high x 8 wide, stride 8: cells (row 0, col 0) centred (4, 4) and (row 1, col 0) centred (4, 12).
    # ratio 1: 8 x 8; ratio 4 (w/h): w = 8 * 2 = 16, h = 8 / 2 = 4.
    expected = [[0, 0, 8, 8], [-4, 2, 12, 6],
                [0, 8, 8, 16], [-4, 10, 12, 14]]
    anchors = generate_anchors(TINY, (16, 8))
    assert anchors.dtype == np.float32 and TINY.count((16, 8)) == 4
    np.testing.assert_array_equal(anchors, np.float32(expected))


def test_anchor_order_is_row_major_then_scale_then_ratio_then_level():
    config = AnchorConfig(strides=(8, 16), sizes=(8.0, 16.0), scales=(1.0, 2.0), ratios=(1.0, 4.0))
    anchors = generate_anchors(config, (16, 32))
    # level 0: 2 x 4 cells, level 1: 1 x 2 cells, 4 anchors per cell
    assert anchors.shape == (4 * (8 + 2), 4) == (config.count((16, 32)), 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    sizes = anchors[:, 2:] - anchors[:, :2]
    # anchor 4 is level 0 cell (row 0, col 1); anchor 16 is cell (row 1, col 0)
    np.testing.assert_array_equal(centres[4], [12, 4])
    np.testing.assert_array_equal(centres[16], [4, 12])
    # within a cell: (scale 1, ratio 1), (1, 4), (2, 1), (2, 4)
    np.testing.assert_array_equal(sizes[:4], [[8, 8], [16, 4], [16, 16], [32, 8]])
    # first anchor of level 1 (offset 32): stride 16 cell (0, 0) centred (8, 8), size 16
    np.testing.assert_array_equal(anchors[32], [0, 0, 16, 16])
    np.testing.assert_array_equal(centres[36], [24, 8])


def test_anchor_config_errors():
    with pytest.raises(ValueError, match="one size per stride"):
        AnchorConfig(strides=(8, 16), sizes=(8.0,))
    with pytest.raises(ValueError, match="not divisible by stride 8"):
        TINY.count((12, 8))


def test_encode_by_hand_and_round_trip():
    anchor = np.array([0.0, 0.0, 8.0, 8.0])  # centre (4, 4), size 8 x 8
    box = np.array([2.0, 4.0, 10.0, 20.0])   # centre (6, 12), size 8 x 16
    np.testing.assert_allclose(encode(box, anchor), [2 / 8, 8 / 8, 0.0, np.log(2.0)], atol=1e-15)
    rng = np.random.default_rng(1)
    anchors = generate_anchors(TINY, (16, 8))
    xy = rng.uniform(-5, 20, (4, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 30, (4, 2))], 1)
    np.testing.assert_allclose(decode(encode(boxes, anchors), anchors), boxes, atol=1e-9)


def test_decode_clamps_log_scale():
    anchor = np.array([0.0, 0.0, 16.0, 8.0])  # centre (8, 4)
    box = decode(np.array([0.0, 0.0, 50.0, -1.0]), anchor)
    # width 16 * exp(log(1000 / 16)) = 1000; height 8 / e
    np.testing.assert_allclose(box, [8 - 500, 4 - 4 / np.e, 8 + 500, 4 + 4 / np.e])
    assert np.isclose(np.exp(MAX_LOG_SCALE), 1000 / 16)


def test_iou_matrix_hand_cases():
    a = [[0, 0, 10, 10], [0, 0, 2, 2]]
    b = [[20, 20, 30, 30],  # disjoint
         [2, 2, 4, 4],      # nested in a[0], touches a[1] at a corner
         [1, 0, 3, 2],      # half of a[1]: intersection 2, union 6
         [0, 0, 10, 10]]    # identical to a[0]
    expected = [[0, 4 / 100, 4 / 100, 1],
                [0, 0, 2 / 6, 4 / 100]]
    np.testing.assert_allclose(iou_matrix(a, b), expected, atol=1e-15)
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 4)
    assert iou_matrix([[1, 1, 1, 1]], [[1, 1, 1, 1]])[0, 0] == 0  # empty boxes: 0, not NaN
