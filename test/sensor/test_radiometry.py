"""Radiometry: hand-computed reflectance, PN, correction, saturation, subsets, false colour."""

import numpy as np
import pytest

from hsi_xai_node.errors import FrameError, InputError
from hsi_xai_node.sensor import radiometry as rm
from hsi_xai_node.sensor.cube import Cube


def cube_of(data, wavelengths=None):
    data = np.asarray(data, dtype=np.float32)
    n = data.shape[0]
    wl = np.asarray(wavelengths if wavelengths is not None else 600.0 + 10 * np.arange(n))
    return Cube(data, wl, np.arange(n))


def test_reflectance_hand_computed():
    dark = cube_of(np.full((2, 1, 3), 20.0))
    white = cube_of([[[820, 420, 120]], [[220, 220, 220]]])
    raw = cube_of([[[420, 220, 70]], [[20, 220, 120]]])
    r = rm.reflectance(raw, dark, white).data
    np.testing.assert_allclose(r, [[[0.5, 0.5, 0.5]], [[0.0, 1.0, 0.5]]], rtol=1e-6)


def test_white_reference_gives_reflectance_one():
    rng = np.random.default_rng(0)
    dark = cube_of(rng.uniform(10, 40, (25, 8, 9)))
    white = cube_of(rng.uniform(500, 1000, (25, 8, 9)))
    np.testing.assert_allclose(rm.reflectance(white, dark, white).data, 1.0, rtol=1e-6)
    np.testing.assert_allclose(rm.reflectance(dark, dark, white).data, 0.0, atol=1e-6)


def test_reference_errors():
    dark = cube_of(np.full((2, 2, 2), 30.0))
    white = cube_of(np.full((2, 2, 2), 500.0))
    bad_white = white.data.copy()
    bad_white[1, 0, 1] = 30.0
    with pytest.raises(FrameError, match=r"not brighter than the dark reference at 1 of 8 .*band\(s\) \[1\]"):
        rm.Reflectance(dark, white.with_data(bad_white))
    with pytest.raises(FrameError, match="differ in shape"):
        rm.Reflectance(dark, cube_of(np.full((2, 2, 3), 500.0)))
    with pytest.raises(FrameError, match="does not match the reference cubes"):
        rm.Reflectance(dark, white).apply(cube_of(np.zeros((2, 3, 3))))


def test_per_pixel_normalisation():
    c = cube_of([[[1.0, 0.0, 2.0]], [[3.0, 0.0, 2.0]]])
    pn = rm.per_pixel_normalise(c).data
    np.testing.assert_allclose(pn[:, 0, 0], [0.25, 0.75])
    np.testing.assert_array_equal(pn[:, 0, 1], [0.0, 0.0])  # zero-sum pixel: zeros, not NaN
    np.testing.assert_allclose(pn[:, 0, 2], [0.5, 0.5])
    rng = np.random.default_rng(3)
    big = rm.per_pixel_normalise(cube_of(rng.uniform(0.01, 1, (25, 30, 40)))).data
    np.testing.assert_allclose(big.sum(axis=0), 1.0, rtol=1e-5)


def test_saturation_mask_bit_depth():
    raw = np.zeros((3, 2, 2), np.uint16)
    raw[1, 0, 1] = 1023
    raw[2, 1, 1] = 4095
    m10 = rm.saturation_mask(cube_of(raw), 10)
    np.testing.assert_array_equal(m10, [[False, True], [False, True]])
    m12 = rm.saturation_mask(cube_of(raw), 12)
    np.testing.assert_array_equal(m12, [[False, False], [False, True]])
    assert rm.saturation_mask(raw, 12, any_band=False).sum() == 1


def test_correction_hand_computed_and_rows_summing_to_one(imec_v1):
    from hsi_xai_node.sensor.calibration import SpectralCorrection
    corr = SpectralCorrection("t", np.array([700.0, 710.0, 720.0]),
                              np.array([[1.0, -0.5], [0.0, 2.0], [0.5, 0.5]]))
    out = rm.apply_correction(cube_of([[[2.0]], [[4.0]]]), corr)
    np.testing.assert_allclose(out.data[:, 0, 0], [0.0, 8.0, 3.0])
    np.testing.assert_array_equal(out.wavelengths_nm, [700, 710, 720])
    assert (out.band_indices == -1).all()
    # the vendor matrix's rows sum to 1, so a flat spectrum stays flat
    flat = cube_of(np.full((25, 4, 5), 0.3), imec_v1.band_wavelengths_nm)
    np.testing.assert_allclose(rm.apply_correction(flat, imec_v1.correction()).data, 0.3, rtol=1e-4)
    with pytest.raises(InputError, match="needs all 25 sensor bands"):
        rm.apply_correction(flat.take([0, 1]), imec_v1.correction())


def test_band_sets_on_hsi_drive(hsi_drive):
    c = Cube(np.arange(25, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32),
             hsi_drive.band_wavelengths_nm, np.arange(25))
    assert rm.select_bands(c, "central").band_indices.tolist() == [12]
    three = rm.select_bands(c, "paper000-3")
    assert three.band_indices.tolist() == [8, 21, 24]  # bands 9, 22, 25 (1-based)
    assert three.data[:, 0, 0].tolist() == [8.0, 21.0, 24.0]
    assert rm.select_bands(c, [944.5, 564.4]).band_indices.tolist() == [24, 22]
    assert rm.select_bands(c, "all") is c
    with pytest.raises(InputError, match="no band within 2.0 nm of 1000"):
        rm.select_bands(c, [1000.0])
    with pytest.raises(InputError, match="unknown band set 'rgb'"):
        rm.select_bands(c, "rgb")


def test_sorted_by_wavelength_keeps_planes_with_their_wavelengths(hsi_drive):
    c = Cube(np.arange(25, dtype=np.float32)[:, None, None], hsi_drive.band_wavelengths_nm, np.arange(25))
    s = c.sorted_by_wavelength()
    assert np.all(np.diff(s.wavelengths_nm) > 0)
    assert s.wavelengths_nm[0] == 564.36 and s.band_indices[0] == 22 and s.data[0, 0, 0] == 22.0
    np.testing.assert_array_equal(hsi_drive.band_wavelengths_nm[s.band_indices], s.wavelengths_nm)


def test_false_colour_hand_computed():
    c = cube_of([[[0.0]], [[0.25]], [[1.0]]], [560.0, 700.0, 850.0])
    bgr = rm.false_colour(c, (850.0, 700.0, 560.0), white_level=1.0, gamma=1.0)
    assert bgr.dtype == np.uint8 and bgr.shape == (1, 1, 3)
    assert bgr[0, 0].tolist() == [0, 64, 255]  # blue = 560 nm, green = 700 nm, red = 850 nm
    with pytest.raises(InputError, match="three wavelengths"):
        rm.false_colour(c, (850.0, 700.0))
