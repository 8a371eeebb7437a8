import numpy as np
import pytest

from hsi_xai_node.classes import OTHER, ROAD, ROAD_MARKS, SKY, VEGETATION
from hsi_xai_node.scenes.layout import DriveLayout

H, W = 540, 1022  # half the HSI-Drive filter area keeps the tests quick


@pytest.fixture(scope="module")
def layout():
    return DriveLayout(3, H, W)


@pytest.fixture(scope="module")
def maps(layout):
    return layout.maps(0)


def test_deterministic_and_seeded(layout, maps):
    again = DriveLayout(3, H, W).maps(0)
    for name in ("surface", "sun", "texture", "class_ids", "material_ids"):
        assert np.array_equal(getattr(maps, name), getattr(again, name)), name
    assert maps.objects == again.objects
    other = DriveLayout(4, H, W).maps(0)
    assert not np.array_equal(maps.class_ids, other.class_ids)


def test_every_class_with_plausible_share(maps):
    share = np.bincount(maps.class_ids.ravel(), minlength=6) / maps.class_ids.size
    assert share[0] == 0  # everything is labelled
    assert 0.1 < share[SKY] < 0.5
    assert 0.15 < share[ROAD] < 0.6
    assert 0.003 < share[ROAD_MARKS] < 0.06
    assert 0.03 < share[VEGETATION] < 0.6
    assert 0.01 < share[OTHER] < 0.5
    assert maps.sun.min() >= 0 and maps.sun.max() <= 1 and maps.texture.min() > 0


def test_sky_above_road(maps):
    rows_sky = np.nonzero((maps.class_ids == SKY).any(1))[0]
    rows_road = np.nonzero((maps.class_ids == ROAD).any(1))[0]
    assert rows_sky.max() < rows_road.min()
    assert rows_sky.max() <= maps.horizon_y + 1 <= rows_road.min() + 1


def test_boxes_are_tight_around_object_pixels(layout):
    for i in (0, 40):
        m = layout.maps(i)
        assert m.objects
        inst = m.instance_ids
        for obj in m.objects:
            ys, xs = np.nonzero(inst == obj.instance)
            assert len(xs) == obj.pixels
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == obj.box
            assert np.all(m.class_ids[ys, xs] == OTHER)
        assert set(np.unique(inst)) <= {0, *(o.instance for o in m.objects)}


def test_drive_moves_forward(layout):
    """Static objects come closer by speed x time; the lane dashes scroll."""
    a, b = layout.maps(0), layout.maps(10)
    step = layout.speed_mps * 10 / layout.fps
    moved = [(oa, ob) for oa in a.objects for ob in b.objects
             if oa.class_id == ob.class_id and oa.material == ob.material
             and abs(oa.distance_m - step - ob.distance_m) < 1e-6]
    assert moved
    oa, ob = max(moved, key=lambda p: p[1].pixels)
    assert ob.pixels > oa.pixels  # nearer means bigger
    assert not np.array_equal(a.class_ids == ROAD_MARKS, b.class_ids == ROAD_MARKS)


def test_shadow_amount_controls_road_shade():
    def shaded(amount):
        m = DriveLayout(5, H, W, shadow_amount=amount).maps(0)
        return float((m.sun[m.class_ids == ROAD] < 0.5).mean())

    assert shaded(0.0) < 0.2
    assert shaded(1.0) > 0.6


def test_penumbra_is_soft(maps):
    values = maps.sun[maps.class_ids == ROAD]
    assert ((values > 0.05) & (values < 0.95)).any()
