"""From digital numbers to the model's input: reflectance, saturation, correction, PN, bands.

All functions take and return `Cube`s (or plain arrays for masks and previews); they do
not care which demosaicer made the cube, only that the references went through the
same one.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..errors import FrameError, InputError
from .calibration import SpectralCorrection
from .cube import Cube

#: Paper 000's band sets, as (1-based) HSI-Drive band numbers -> first-order peaks.
PAPER000_CENTRAL_BAND_NM = (731.88,)
PAPER000_THREE_BANDS_NM = (770.58, 858.95, 944.49)  # bands 9, 22 and 25 (1-based)
BAND_SETS = {
    "all": None,
    "central": PAPER000_CENTRAL_BAND_NM,
    "paper000-3": PAPER000_THREE_BANDS_NM,
}


class Reflectance:
    """Dark/white reference calibration: reflectance = (cube - dark) / (white - dark).

    Build it once from the demosaiced reference cubes; `apply` is then one subtract and
    one multiply per value. A white reference that is not brighter than the dark one
    anywhere would produce inf/NaN, so it is rejected here, naming how many pixels fail.
    """

    def __init__(self, dark: Cube, white: Cube):
        if dark.shape != white.shape:
            raise FrameError(f"dark reference cube {dark.shape} and white reference cube "
                             f"{white.shape} differ in shape")
        span = white.data.astype(np.float64) - dark.data.astype(np.float64)
        bad = ~(span > 0)
        if bad.any():
            raise FrameError(
                f"white reference is not brighter than the dark reference at {int(bad.sum())} of "
                f"{bad.size} cube values (band(s) {sorted(set(np.nonzero(bad)[0].tolist()))[:10]}): "
                "reflectance would be infinite or NaN there")
        self.shape = dark.shape
        self.offset = dark.data.astype(np.float32)
        self.gain = (1.0 / span).astype(np.float32)

    def check(self, cube: Cube) -> None:
        if cube.shape != self.shape:
            raise FrameError(f"cube shape {cube.shape} does not match the reference cubes {self.shape}")

    def apply(self, cube: Cube) -> Cube:
        self.check(cube)
        out = np.subtract(cube.data, self.offset, dtype=np.float32)
        out *= self.gain
        return cube.with_data(out)


def reflectance(cube: Cube, dark: Cube, white: Cube) -> Cube:
    """One-off reflectance; use `Reflectance` to calibrate many frames."""
    return Reflectance(dark, white).apply(cube)


def saturation_mask(raw_cube: Cube | np.ndarray, bit_depth: int, any_band: bool = True) -> np.ndarray:
    """True where a raw value reached the top of its bit depth (2**bit_depth - 1).

    With `any_band` (default) the mask is per pixel: (rows, cols), True where any band
    saturated, which is what invalidates a pixel's spectrum and its PN.
    """
    data = raw_cube.data if isinstance(raw_cube, Cube) else np.asarray(raw_cube)
    if not 1 <= bit_depth <= 16:
        raise InputError(f"bit depth {bit_depth} outside 1..16")
    sat = data >= (1 << bit_depth) - 1
    return sat.any(axis=0) if any_band and sat.ndim == 3 else sat


def apply_correction(cube: Cube, correction: SpectralCorrection) -> Cube:
    """Virtual bands = correction.matrix @ bands; planes must be in sensor band order."""
    if cube.n_bands != correction.matrix.shape[1] or not np.array_equal(
            cube.band_indices, np.arange(cube.n_bands)):
        raise InputError(f"correction {correction.name!r} needs all {correction.matrix.shape[1]} sensor "
                         f"bands in band-index order; the cube has bands {cube.band_indices.tolist()}")
    n, h, w = cube.shape
    flat = cube.data.reshape(n, h * w)
    virtual = (correction.matrix.astype(np.float32) @ flat).reshape(-1, h, w)
    k = virtual.shape[0]
    return Cube(virtual, correction.virtual_wavelengths_nm.copy(), np.full(k, -1))


def per_pixel_normalise(cube: Cube, eps: float = 1e-12) -> Cube:
    """Paper 000's PN: each pixel's values divided by their sum over bands.

    A pixel whose sum is not above `eps` (dark, or all-negative noise) becomes all zeros
    rather than inf/NaN.
    """
    total = cube.data.sum(axis=0, dtype=np.float32)
    return cube.with_data(cube.data * safe_reciprocal(total, eps)[None])


def safe_reciprocal(total: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """1 / total where total > eps, else 0 (so a dark pixel normalises to zeros, not NaN)."""
    return np.divide(1.0, total, out=np.zeros_like(total), where=total > eps)


def select_bands(cube: Cube, wavelengths_nm: Sequence[float] | str | None, tolerance_nm: float = 2.0) -> Cube:
    """The planes nearest to the given wavelengths, in the order given.

    `wavelengths_nm` may be a list, a name from `BAND_SETS` ('all', 'central',
    'paper000-3') or None for all bands.
    """
    if isinstance(wavelengths_nm, str):
        if wavelengths_nm not in BAND_SETS:
            raise InputError(f"unknown band set {wavelengths_nm!r}; known: {sorted(BAND_SETS)}")
        wavelengths_nm = BAND_SETS[wavelengths_nm]
    if wavelengths_nm is None:
        return cube
    return cube.take([cube.plane_nearest(w, tolerance_nm) for w in wavelengths_nm])


def false_colour(cube: Cube, wavelengths_nm: Sequence[float] = (850.0, 731.88, 564.36),
                 white_level: float | None = 1.0, tolerance_nm: float = 15.0,
                 gamma: float = 1.0 / 2.2) -> np.ndarray:
    """A bgr8 preview (rows, cols, 3) from three wavelengths given as (red, green, blue).

    `white_level` maps that value to 255 (1.0 suits reflectance and keeps the
    brightness stable across a video); None stretches each frame to its own 99.5th
    percentile. The nearest band to each wavelength is used, within `tolerance_nm`.
    """
    if len(wavelengths_nm) != 3:
        raise InputError(f"false colour needs three wavelengths (red, green, blue), got {wavelengths_nm}")
    rgb = select_bands(cube, list(wavelengths_nm), tolerance_nm).data.astype(np.float32)  # a copy: worked in place
    scale = white_level if white_level is not None else float(np.percentile(rgb, 99.5)) or 1.0
    if scale != 1.0:  # x / 1 is x
        rgb /= np.float32(scale)
    np.clip(rgb, 0.0, 1.0, out=rgb)
    np.power(rgb, gamma, out=rgb)
    rgb *= 255.0
    rgb += 0.5
    u8 = rgb.astype(np.uint8)
    # the same float32 steps as one expression on the (rows, cols, 3) view, in place on the planes and then
    # interleaved by OpenCV: 1.4x faster, the same bytes (runtime/ingraph.py derives its thresholds from this)
    return cv2.merge([u8[2], u8[1], u8[0]]) if u8.size else np.zeros((*u8.shape[1:], 3), np.uint8)
