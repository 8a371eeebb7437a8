"""Raw snapshot-mosaic frame <-> spectral cube.

* `subsample`: one value per band per pattern tile (the norm for segmentation; HSI-Drive
  uses it): a 2048x1088 HSI-Drive frame becomes a 25 x 216 x 409 cube.
* `weighted_bilinear`: full resolution. Each band's sparse plane is convolved with a
  separable tent kernel of length 2p-1 (9x9 for a 5x5 pattern) and divided by the same
  convolution of its sampling mask, which is exact bilinear interpolation between a
  band's samples inside the image and a normalised extrapolation at the border.
* `mosaic_from_cube` / `mosaic_from_full`: the inverse direction, used to render raw
  frames (the scene generator) and to check the demosaicers.

Both demosaicers work for any pattern size and band layout a `SensorProfile` gives.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from ..errors import FrameError
from .calibration import SensorProfile
from .cube import Cube


def check_frame(raw: np.ndarray, profile: SensorProfile, what: str = "raw frame") -> np.ndarray:
    """Return `raw` if it is a 2-D unsigned-integer frame of the profile's size, else raise."""
    raw = np.asarray(raw)
    if raw.ndim != 2:
        raise FrameError(f"{what}: expected a 2-D mono frame of {profile.sensor_height}x"
                         f"{profile.sensor_width} (rows x cols), got shape {raw.shape}")
    if raw.shape != profile.frame_shape:
        raise FrameError(f"{what}: frame is {raw.shape[0]}x{raw.shape[1]} (rows x cols) but sensor "
                         f"profile {profile.name!r} expects {profile.sensor_height}x{profile.sensor_width}")
    if raw.dtype not in (np.uint16, np.uint8):
        raise FrameError(f"{what}: dtype {raw.dtype} is not a raw sensor type (expected uint16 "
                         f"holding {profile.bit_depth}-bit data, or uint8)")
    return raw


def band_plane_slices(profile: SensorProfile) -> list[tuple[slice, slice]]:
    """Per band index, the (row, col) slices of the raw frame holding its samples."""
    ch, cw = profile.cube_height, profile.cube_width
    out = []
    for b in range(profile.n_bands):
        r, c = profile.band_position(b)
        y0, x0 = profile.offset_y + r, profile.offset_x + c
        out.append((slice(y0, y0 + ch * profile.pattern_height, profile.pattern_height),
                    slice(x0, x0 + cw * profile.pattern_width, profile.pattern_width)))
    return out


def band_index_map(profile: SensorProfile) -> np.ndarray:
    """Band index of every pixel of the filter area, shape (area_height, area_width)."""
    rows = np.arange(profile.area_height) % profile.pattern_height
    cols = np.arange(profile.area_width) % profile.pattern_width
    return profile.layout[rows[:, None], cols[None, :]]


def _cube(profile: SensorProfile, data: np.ndarray) -> Cube:
    return Cube(data, profile.band_wavelengths_nm, np.arange(profile.n_bands))


def subsample(raw: np.ndarray, profile: SensorProfile, dtype=np.float32) -> Cube:
    """Sub-sampling demosaic: (n_bands, area_h // p_h, area_w // p_w), band-index order."""
    raw = check_frame(raw, profile)
    out = np.empty(profile.cube_shape, dtype=dtype)
    for b, (rows, cols) in enumerate(band_plane_slices(profile)):
        out[b] = raw[rows, cols]
    return _cube(profile, out)


def _tent(p: int) -> np.ndarray:
    """1-D tent kernel of length 2p-1 whose samples at spacing p sum to 1."""
    return (1.0 - np.abs(np.arange(-(p - 1), p)) / p).astype(np.float32)


def _edge_gain(p: int, phase: int, n: int) -> np.ndarray:
    """1-D reciprocal of the tent-convolved sampling mask (samples at phase, phase+p, ...).

    It is 1 wherever a pixel has samples on both sides; only the borders need it.
    """
    mask = np.zeros(n, np.float64)
    mask[phase::p] = 1.0
    weight = np.convolve(mask, _tent(p).astype(np.float64), mode="same")
    return (1.0 / weight).astype(np.float32)


@lru_cache(maxsize=8)
def _bilinear_plan(ph: int, pw: int, ah: int, aw: int):
    """Tent kernels, and per tile row / column the border rows and columns with their gains."""
    def border(p, n):
        plan = []
        for phase in range(p):
            gain = _edge_gain(p, phase, n)
            idx = np.flatnonzero(np.abs(gain - 1.0) > 1e-7)
            plan.append((idx, gain[idx]))
        return plan
    return _tent(pw), _tent(ph), border(ph, ah), border(pw, aw)


def weighted_bilinear(raw: np.ndarray, profile: SensorProfile) -> Cube:
    """Weighted-bilinear demosaic to full resolution: (n_bands, area_h, area_w) float32.

    Pixel (y, x) of the cube is raw pixel (offset_y + y, offset_x + x). The sampling
    mask of a band is separable (rows r::p_h times columns c::p_w), so its tent
    convolution is a product of 1-D profiles and the normalisation only touches the
    rows and columns near the border.
    """
    raw = check_frame(raw, profile)
    ph, pw = profile.pattern_height, profile.pattern_width
    ah, aw = profile.area_height, profile.area_width
    kx, ky, row_fix, col_fix = _bilinear_plan(ph, pw, ah, aw)
    area = raw[profile.offset_y:profile.offset_y + ah, profile.offset_x:profile.offset_x + aw]
    out = np.empty((profile.n_bands, ah, aw), np.float32)
    sparse = np.zeros((ah, aw), np.float32)
    for r in range(ph):
        for c in range(pw):
            plane = out[profile.layout[r, c]]
            sparse[r::ph, c::pw] = area[r::ph, c::pw]
            cv2.sepFilter2D(sparse, cv2.CV_32F, kx, ky, dst=plane, borderType=cv2.BORDER_CONSTANT)
            sparse[r::ph, c::pw] = 0.0  # leave the scratch plane empty for the next band
            rows, row_gain = row_fix[r]
            cols, col_gain = col_fix[c]
            plane[rows] *= row_gain[:, None]
            plane[:, cols] *= col_gain[None, :]
    return _cube(profile, out)


def mosaic_from_cube(cube: np.ndarray, profile: SensorProfile, dtype=np.uint16, fill: int = 0) -> np.ndarray:
    """Raw frame whose sub-sampling is `cube` (n_bands, cube_h, cube_w); the rest is `fill`."""
    if cube.shape != profile.cube_shape:
        raise FrameError(f"cube shape {cube.shape} does not match profile {profile.name!r} "
                         f"cube shape {profile.cube_shape}")
    raw = np.full(profile.frame_shape, fill, dtype=dtype)
    for b, (rows, cols) in enumerate(band_plane_slices(profile)):
        raw[rows, cols] = cube[b]
    return raw


def mosaic_from_full(cube: np.ndarray, profile: SensorProfile, dtype=np.uint16, fill: int = 0) -> np.ndarray:
    """Raw frame that samples a full-resolution cube (n_bands, area_h, area_w) through the mosaic."""
    expected = (profile.n_bands, profile.area_height, profile.area_width)
    if cube.shape != expected:
        raise FrameError(f"full-resolution cube shape {cube.shape} does not match profile "
                         f"{profile.name!r} ({expected})")
    raw = np.full(profile.frame_shape, fill, dtype=dtype)
    idx = band_index_map(profile)
    area = np.take_along_axis(cube, idx[None], axis=0)[0]
    raw[profile.offset_y:profile.offset_y + profile.area_height,
        profile.offset_x:profile.offset_x + profile.area_width] = area
    return raw
