"""Demosaicing: hand-computed samples, exact round trips, interpolation error bounds."""

import numpy as np
import pytest

from hsi_xai_node.errors import FrameError
from hsi_xai_node.sensor import demosaic as dm
from hsi_xai_node.sensor.calibration import load_profile
from test.sensor.profiles import profile_for_test, small_profile


def test_subsample_hand_computed():
    # 2x2 pattern, bands laid out [[2, 0], [3, 1]], filter area 4x4 at offset (1, 1) of a 5x6 sensor
    p = small_profile(ph=2, pw=2, sensor=(5, 6), offset=(1, 1), area=(4, 4))
    p = p.__class__(**{**p.__dict__, "layout": np.array([[2, 0], [3, 1]])})
    raw = np.arange(30, dtype=np.uint16).reshape(5, 6)
    cube = dm.subsample(raw, p)
    # band 2 sits at tile (0, 0): raw rows 1, 3 and cols 1, 3
    np.testing.assert_array_equal(cube.data[2], [[7, 9], [19, 21]])
    np.testing.assert_array_equal(cube.data[0], [[8, 10], [20, 22]])
    np.testing.assert_array_equal(cube.data[3], [[13, 15], [25, 27]])
    np.testing.assert_array_equal(cube.data[1], [[14, 16], [26, 28]])
    assert cube.data.dtype == np.float32
    np.testing.assert_array_equal(cube.wavelengths_nm, [600, 610, 620, 630])


@pytest.mark.parametrize("name", ["hsi-drive", "imec-665-975", "imec-600-875+flip", "small"])
def test_cube_mosaic_subsample_round_trip_is_exact(name):
    p = profile_for_test(name)
    rng = np.random.default_rng(1)
    cube = rng.integers(0, 1 << p.bit_depth, p.cube_shape).astype(np.uint16)
    raw = dm.mosaic_from_cube(cube, p, fill=65535)  # no sample can hold it
    back = dm.subsample(raw, p, dtype=np.uint16)
    np.testing.assert_array_equal(back.data, cube)
    # pixels outside the sampled tiles keep the fill value
    assert (raw == 65535).sum() == raw.size - cube.size


def test_band_index_map_agrees_with_slices():
    p = small_profile()
    idx = dm.band_index_map(p)
    for b, (rows, cols) in enumerate(dm.band_plane_slices(p)):
        r = rows.start - p.offset_y
        c = cols.start - p.offset_x
        assert idx[r, c] == b and idx[r + p.pattern_height, c + p.pattern_width] == b


def _full_frame(p, f):
    """A full-resolution cube sampled from f(band, y, x) and mosaicked."""
    y, x = np.mgrid[0:p.area_height, 0:p.area_width].astype(np.float64)
    full = np.stack([f(b, y, x) for b in range(p.n_bands)])
    return full, dm.mosaic_from_full(np.round(full).astype(np.uint16), p)


def _interior(p, b):
    """Rows/cols of the area that have a sample of band b on both sides (or on them)."""
    r, c = p.band_position(b)
    last_r = r + ((p.area_height - 1 - r) // p.pattern_height) * p.pattern_height
    last_c = c + ((p.area_width - 1 - c) // p.pattern_width) * p.pattern_width
    return slice(r, last_r + 1), slice(c, last_c + 1)


@pytest.mark.parametrize("profile", ["hsi-drive", "small"])
def test_weighted_bilinear_exact_on_linear_scene(profile):
    p = load_profile("hsi-drive") if profile == "hsi-drive" else small_profile()
    full, raw = _full_frame(p, lambda b, y, x: 3 * y + 2 * x + 10 * b + 5)
    cube = dm.weighted_bilinear(raw, p)
    assert cube.shape == (p.n_bands, p.area_height, p.area_width)
    for b in range(p.n_bands):
        rows, cols = _interior(p, b)
        np.testing.assert_allclose(cube.data[b][rows, cols], full[b][rows, cols], rtol=0, atol=2e-3)


def test_weighted_bilinear_constant_everywhere_including_borders():
    p = small_profile()
    _, raw = _full_frame(p, lambda b, y, x: 100.0 + 0 * y)
    np.testing.assert_allclose(dm.weighted_bilinear(raw, p).data, 100.0, atol=1e-4)


def test_weighted_bilinear_hand_computed_between_two_samples():
    # 1 x 5 pattern: along a row band b's samples are 5 apart; the tent gives (1 - d/5, d/5)
    p = small_profile(ph=1, pw=5, sensor=(3, 20), offset=(0, 0), area=(3, 20))
    raw = np.zeros((3, 20), np.uint16)
    b = int(p.layout[0, 0])
    raw[:, 0], raw[:, 5] = 100, 200
    out = dm.weighted_bilinear(raw, p).data[b][1]
    np.testing.assert_allclose(out[:6], [100, 120, 140, 160, 180, 200], atol=1e-4)


def test_weighted_bilinear_smooth_scene_within_interpolation_bound():
    """Linear interpolation error <= h^2/8 * max|f''| per axis; h = 5 px, period 120 px."""
    p = load_profile("hsi-drive")
    amp, period = 200.0, 120.0
    k = 2 * np.pi / period
    full, raw = _full_frame(p, lambda b, y, x: 500 + amp * np.sin(k * y + 0.1 * b) * np.cos(k * x))
    cube = dm.weighted_bilinear(raw, p)
    bound = 2 * (5 ** 2 / 8) * amp * k ** 2 + 1.0  # two axes + mosaic rounding to integers
    worst = max(np.abs(cube.data[b][_interior(p, b)] - full[b][_interior(p, b)]).max() for b in range(p.n_bands))
    assert worst <= bound
    assert worst > 0.2 * bound  # the bound is tight enough to mean something
    assert bound < 0.04 * amp


def test_check_frame_errors(hsi_drive):
    with pytest.raises(FrameError, match=r"frame is 1088x2047 .* expects 1088x2048"):
        dm.subsample(np.zeros((1088, 2047), np.uint16), hsi_drive)
    with pytest.raises(FrameError, match="dtype float32 is not a raw sensor type"):
        dm.subsample(np.zeros((1088, 2048), np.float32), hsi_drive)
    with pytest.raises(FrameError, match=r"expected a 2-D mono frame .* got shape \(1088, 2048, 3\)"):
        dm.weighted_bilinear(np.zeros((1088, 2048, 3), np.uint16), hsi_drive)
    with pytest.raises(FrameError, match="does not match profile"):
        dm.mosaic_from_cube(np.zeros((25, 10, 10)), hsi_drive)
