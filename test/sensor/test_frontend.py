"""The front-end stage: fused path equals the composed functions; bad input is named."""

import cv2
import numpy as np
import pytest

from hsi_xai_node.errors import CalibrationError, FrameError, InputError
from hsi_xai_node.sensor import demosaic as dm, radiometry as rm
from hsi_xai_node.sensor.frontend import FrontEnd, FrontEndConfig
from test.sensor.profiles import profile_for_test


def _frames(p, seed=0):
    rng = np.random.default_rng(seed)
    top = (1 << p.bit_depth) - 1
    dark = rng.integers(10, 40, p.frame_shape).astype(np.uint16)
    white = rng.integers(top // 2, top - 50, p.frame_shape).astype(np.uint16)
    raw = rng.integers(0, top + 1, p.frame_shape).astype(np.uint16)
    return raw, dark, white


@pytest.mark.parametrize("profile", ["hsi-drive", "imec-600-875+flip", "small"])
@pytest.mark.parametrize("normalise", [True, False])
def test_fused_path_equals_composed_functions(profile, normalise):
    p = profile_for_test(profile)
    raw, dark, white = _frames(p)
    out = FrontEnd(p, dark, white, FrontEndConfig(normalise=normalise)).process(raw)
    refl = rm.reflectance(dm.subsample(raw, p), dm.subsample(dark, p), dm.subsample(white, p))
    expected = rm.per_pixel_normalise(refl) if normalise else refl
    np.testing.assert_allclose(out.cube.data, expected.data, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.reflectance.data, refl.data, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out.saturated, rm.saturation_mask(dm.subsample(raw, p), p.bit_depth))
    np.testing.assert_array_equal(out.cube.band_indices, np.arange(p.n_bands))


@pytest.mark.parametrize("normalise", [True, False])
def test_fused_path_without_references_equals_composed_functions(hsi_drive, normalise):
    """Without references the gain is one number and there is no offset: the fused path takes them as a scalar
    (bench/pipeline.py), the same values as the reflectance against a zero dark and a full-scale white frame."""
    p = hsi_drive
    raw, _, _ = _frames(p)
    fe = FrontEnd(p, config=FrontEndConfig(normalise=normalise))
    assert np.ndim(fe._tile_gain) == 0 and fe._tile_bias is None  # the scalar path, not the per-value arrays
    out = fe.process(raw)
    digital = dm.subsample(raw, p)
    top = np.float32((1 << p.bit_depth) - 1)
    refl = digital.with_data(digital.data.astype(np.float32) / top)
    expected = rm.per_pixel_normalise(refl) if normalise else refl
    # float32 rounding: x * (1/top) against x / top (a rounding each; with PN the reflectance is x / s * s, the
    # reciprocal and two products more), and PN's sum over the bands (one per band)
    eps = float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(out.reflectance.data, refl.data, rtol=(5 if normalise else 2) * eps, atol=0)
    np.testing.assert_allclose(out.cube.data, expected.data, rtol=(p.n_bands + 4) * eps, atol=0)
    # and bit for bit what the per-value gain and (negative zero) offset arrays gave
    arrays = FrontEnd(p, config=FrontEndConfig(normalise=normalise))
    arrays._tile_gain = np.full(p.cube_shape, fe._tile_gain, np.float32)
    arrays._tile_bias = np.full(p.cube_shape, -0.0, np.float32)
    np.testing.assert_array_equal(arrays.process(raw).cube.data, out.cube.data)


def test_unfused_options_match_composed_functions(imec_v1):
    p = imec_v1
    _, dark, white = _frames(p, 1)
    # a realistic frame (reflectance 0.4-0.6): uniform noise through a matrix of condition 4e5
    # would make the corrected PN sums cancel to ~0 and amplify float rounding
    rng = np.random.default_rng(5)
    raw = (dark + rng.uniform(0.4, 0.6, p.frame_shape) * (white.astype(float) - dark)).astype(np.uint16)
    bands = [700.0, 806.0, 900.0]  # nearest virtual bands: 701.61, 805.87, 901.13 nm
    cfg = FrontEndConfig(median_ksize=3, correction="hsi", bands=bands, band_tolerance_nm=2.0, normalise=True)
    out = FrontEnd(p, dark, white, cfg).process(raw).cube
    refl = rm.reflectance(dm.subsample(raw, p), dm.subsample(dark, p), dm.subsample(white, p))
    med = refl.with_data(np.stack([cv2.medianBlur(b, 3) for b in refl.data]))
    sub = rm.select_bands(rm.apply_correction(med, p.correction("hsi")), bands, tolerance_nm=2.0)
    expected = rm.per_pixel_normalise(sub)
    assert out.shape == (3, 217, 409)
    np.testing.assert_allclose(out.data, expected.data, rtol=1e-5, atol=1e-7)


def test_without_references_scales_by_bit_depth(hsi_drive):
    raw = np.full(hsi_drive.frame_shape, 1023, np.uint16)
    out = FrontEnd(hsi_drive, config=FrontEndConfig(normalise=False)).process(raw)
    np.testing.assert_allclose(out.cube.data, 1.0)
    assert out.saturated.all()


def test_bilinear_white_frame_is_reflectance_one(hsi_drive):
    _, dark, white = _frames(hsi_drive, 2)
    out = FrontEnd(hsi_drive, dark, white, FrontEndConfig(demosaic="bilinear", normalise=False)).process(white)
    assert out.cube.shape == (25, 1080, 2045)
    np.testing.assert_allclose(out.cube.data, 1.0, rtol=1e-5)


def test_bad_frames_and_references(hsi_drive):
    raw, dark, white = _frames(hsi_drive)
    fe = FrontEnd(hsi_drive, dark, white)
    with pytest.raises(FrameError, match="frame is 1080x2048"):
        fe.process(raw[:1080])
    with pytest.raises(FrameError, match="dtype int32"):
        fe.process(raw.astype(np.int32))
    with pytest.raises(FrameError, match="dark reference frame: frame is 1088x2040"):
        FrontEnd(hsi_drive, dark[:, :2040], white)
    with pytest.raises(FrameError, match="not brighter than the dark reference"):
        FrontEnd(hsi_drive, white, dark)
    with pytest.raises(InputError, match="both a dark and a white"):
        FrontEnd(hsi_drive, dark, None)


def test_bad_config(hsi_drive):
    with pytest.raises(InputError, match="front-end option demosaic: Input should be 'subsample' or 'bilinear'"):
        FrontEnd(hsi_drive, config=FrontEndConfig(demosaic="ppid"))
    with pytest.raises(InputError, match="front-end option median_ksize: must be 0 \\(off\\), 3 or 5"):
        FrontEnd(hsi_drive, config=FrontEndConfig(median_ksize=4))
    # what a hostile user tried (issue 16): each was a foreign exception, or silently wrong
    for options, message in [({"median_ksize": 3.0}, "median_ksize: Input should be a valid integer"),
                             ({"saturation_bit_depth": -1}, "saturation_bit_depth: Input should be greater than or"),
                             ({"bands": 731.88}, "bands: must be a list of wavelengths"),
                             ({"bands": [float("nan")]}, r"bands.wavelengths\[0\]"),
                             ({"bands": []}, "bands.wavelengths: List should have at least 1 item")]:
        with pytest.raises(InputError, match=message):
            FrontEndConfig(**options)
    # a wavelength the sensor does not have: refused when the front end is built, not on every frame
    with pytest.raises(InputError, match="no band within 2.0 nm of 400.0 nm"):
        FrontEnd(hsi_drive, config=FrontEndConfig(bands=[731.88, 400.0]))
    with pytest.raises(CalibrationError, match="has no spectral correction matrix"):
        FrontEnd(hsi_drive, config=FrontEndConfig(correction="hsi"))


def test_every_band_named_in_sensor_order_is_all_bands(hsi_drive):
    """A model card lists its 25 wavelengths: that takes the fused path with PN, bit for bit what bands=None gives,
    and the preview's planes come back exactly as the unfused reflectance has them (no x / s * s rounding)."""
    p = hsi_drive
    raw, dark, white = _frames(p, 3)
    listed = FrontEnd(p, dark, white, FrontEndConfig(normalise=True, bands=list(p.band_wavelengths_nm)),
                      keep_bands_nm=(850.0, 731.88, 564.36)).process(raw)
    assert listed._pixel_sum is not None  # the fused path ran
    np.testing.assert_array_equal(listed.cube.data,
                                  FrontEnd(p, dark, white, FrontEndConfig(normalise=True)).process(raw).cube.data)
    unfused = FrontEnd(p, dark, white, FrontEndConfig(normalise=False)).process(raw).cube
    kept = listed.reflectance_bands((850.0, 731.88, 564.36), 15.0)
    want = rm.select_bands(unfused, [850.0, 731.88, 564.36], 15.0)
    np.testing.assert_array_equal(kept.data, want.data)
    np.testing.assert_array_equal(kept.band_indices, want.band_indices)
    # a subset or another order is not "all bands": selected after the reflectance, as before
    subset = FrontEnd(p, dark, white, FrontEndConfig(normalise=True, bands=[731.88, 564.36])).process(raw)
    assert subset._pixel_sum is None and subset.cube.shape[0] == 2
