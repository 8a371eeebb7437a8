"""The sensor front-end stage: raw mosaic frame in, model-ready cube out.

`FrontEnd` holds what does not change between frames (profile, reference cubes,
options) and turns each raw frame into a `FrontEndResult`:

    raw (mono16) -> demosaic -> reflectance (dark/white) -> [median] -> [correction]
                 -> band subset -> [per-pixel normalisation] -> model input

The sub-sampling path is fused (one pass per band computes demosaic and
reflectance) because it runs on every frame of a live camera; see bench/frontend.py.
"""

from __future__ import annotations

from dataclasses import dataclass as _plain_dataclass
from typing import Annotated, Literal

import cv2
import numpy as np
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Discriminator, Field, Tag
from pydantic.dataclasses import dataclass

from ..errors import InputError
from ..schema import PositiveFinite, raise_as
from .calibration import SensorProfile
from .cube import Cube
from .demosaic import check_frame, subsample, weighted_bilinear
from .radiometry import (Reflectance, apply_correction, per_pixel_normalise, safe_reciprocal, saturation_mask,
                         select_bands)

DEMOSAIC_METHODS = {"subsample": subsample, "bilinear": weighted_bilinear}


Wavelengths = Annotated[list[Annotated[PositiveFinite, Field(lt=100_000)]], Field(min_length=1, max_length=1024)]


def _as_list(value):
    return list(value) if isinstance(value, tuple) else value


def _ksize(value: int) -> int:
    if value not in (0, 3, 5):
        raise ValueError("must be 0 (off), 3 or 5")
    return value


def _band_kind(value):
    """Which form a `bands` value takes (so an error names the form, not pydantic's union members)."""
    if value is None:
        return "all bands"
    if isinstance(value, str):
        return "set"
    if isinstance(value, (list, tuple)):
        return "wavelengths"
    return None


@dataclass(frozen=True, config=ConfigDict(strict=True))
class FrontEndConfig:
    """Options of the front end (each one is a node/replay parameter of the same name), checked on
    construction: a bad one is an InputError naming the option."""

    demosaic: Literal["subsample", "bilinear"] = "subsample"  # 1/p resolution, or full (weighted bilinear)
    median_ksize: Annotated[int, AfterValidator(_ksize)] = 0  # 0 = off; 3 or 5 (HSI-Drive median-filters its cubes)
    correction: str | None = None  # name of a profile correction matrix, or None
    # wavelengths (a list), a band set ('all', 'central', 'paper000-3') or None (all): radiometry.select_bands
    bands: Annotated[Annotated[Wavelengths, BeforeValidator(_as_list), Tag("wavelengths")]
                     | Annotated[Literal["all", "central", "paper000-3"], Tag("set")]
                     | Annotated[None, Tag("all bands")],
                     Discriminator(_band_kind, custom_error_type="bands",
                                   custom_error_message="must be a list of wavelengths (nm), a band set name ('all', "
                                                        "'central', 'paper000-3') or null")] = "all"
    band_tolerance_nm: PositiveFinite = 2.0  # how far a requested wavelength may be from a band's peak
    normalise: bool = True  # per-pixel normalisation (PN)
    saturation_bit_depth: Annotated[int, Field(ge=1, le=16)] | None = None  # None: the profile's bit depth

    def validated(self) -> "FrontEndConfig":
        return self  # checked when constructed


raise_as(FrontEndConfig, InputError, field_prefix="front-end option ")


@_plain_dataclass
class FrontEndResult:
    """One processed frame. `reflectance` is all sensor bands before correction, subset and PN."""

    cube: Cube  # model input
    saturated: np.ndarray  # (rows, cols) bool: some band reached full scale
    _reflectance: Cube | None = None
    _pixel_sum: np.ndarray | None = None  # PN divisor when PN was done in place
    _kept: Cube | None = None  # the fused path's copies of the planes asked for (keep_bands_nm), before PN

    @property
    def reflectance(self) -> Cube:
        if self._reflectance is None:  # the fused path normalised in place: undo PN (rounded: x / s * s)
            self._reflectance = self.cube.with_data(self.cube.data * self._pixel_sum[None])
        return self._reflectance

    def reflectance_bands(self, wavelengths_nm, tolerance_nm: float) -> Cube:
        """The reflectance planes nearest to `wavelengths_nm`: the exact values the fused path kept before PN
        when they were asked for, else selected from `reflectance`."""
        source = self._kept if self._kept is not None else self.reflectance
        return select_bands(source, list(wavelengths_nm), tolerance_nm)


class FrontEnd:
    """Raw frame -> model input for one sensor, with optional dark/white references.

    Without references the cube is digital numbers scaled to [0, 1] by the bit depth.
    """

    def __init__(self, profile: SensorProfile, dark: np.ndarray | None = None,
                 white: np.ndarray | None = None, config: FrontEndConfig = FrontEndConfig(),
                 keep_bands_nm=(), keep_tolerance_nm: float = 15.0):
        """`keep_bands_nm`: reflectance planes a caller will read besides the model input (the preview's three):
        the fused path with PN copies them before normalising in place, so `reflectance_bands` gives them
        exactly without undoing PN over the whole cube."""
        self.profile = profile
        self.config = config.validated()
        if config.correction is not None:
            profile.correction(config.correction)  # fail now, not on the first frame
        # the band request against this sensor now, not on every frame
        probe = Cube(np.zeros((profile.n_bands, 1, 1), np.float32), profile.band_wavelengths_nm, np.arange(profile.n_bands))
        chosen = select_bands(probe, config.bands, config.band_tolerance_nm).band_indices
        # a list naming every band in sensor order (a model card's usual 25 wavelengths) is "all bands": it may take
        # the fused path with PN, and skips a copy of the cube
        self._all_bands = np.array_equal(chosen, np.arange(profile.n_bands))
        self._keep = select_bands(probe, list(keep_bands_nm), keep_tolerance_nm).band_indices if len(keep_bands_nm) \
            else np.zeros(0, int)
        self._demosaic = DEMOSAIC_METHODS[config.demosaic]
        self.bit_depth = config.saturation_bit_depth or profile.bit_depth
        if (dark is None) != (white is None):
            raise InputError("give both a dark and a white reference frame, or neither")
        if dark is not None:
            dark = check_frame(dark, profile, "dark reference frame")
            white = check_frame(white, profile, "white reference frame")
            self.reflectance = Reflectance(self._demosaic(dark, profile), self._demosaic(white, profile))
        else:
            full_scale = float((1 << profile.bit_depth) - 1)
            shape = profile.cube_shape if config.demosaic == "subsample" else (
                profile.n_bands, profile.area_height, profile.area_width)
            zeros = Cube(np.zeros(shape, np.float32), profile.band_wavelengths_nm, np.arange(profile.n_bands))
            self.reflectance = Reflectance(zeros, zeros.with_data(np.full(shape, full_scale, np.float32)))
        # The fused path works in tile-position order; keep gain and bias in that order.
        tile_band = profile.layout.ravel()
        self._tile_gain = self.reflectance.gain[tile_band]
        self._tile_bias = -self.reflectance.offset[tile_band] * self._tile_gain
        # No references (or uniform ones): the gain is one number and the offset zero. A scalar multiply and no
        # add give the same float32 values (x + -0.0 is x) without reading two cube-sized arrays from memory on
        # every frame, where the engine call has just evicted them: 4.7 -> 3.9 ms of the pipeline's front end.
        if (self._tile_gain == self._tile_gain.flat[0]).all():
            self._tile_gain = self._tile_gain.flat[0]
        if not self._tile_bias.any():
            self._tile_bias = None
        identity = np.array_equal(tile_band, np.arange(profile.n_bands))
        self._tile_of_band = None if identity else np.argsort(tile_band)

    BLOCK_ROWS = 32  # cube rows per block of the fused path (fits in L2 on this machine)

    def _subsample_reflectance(self, raw: np.ndarray, normalise: bool):
        """Fused sub-sampling + reflectance + saturation (+ PN), in blocks of cube rows.

        Each block of raw rows is regrouped by tile position once and finished while it
        is still in cache; a per-band pass over the whole frame is slower
        (bench/frontend.py times the straightforward version beside it).
        Returns (cube, saturated, pixel_sum or None).
        """
        p = self.profile
        ph, pw = p.pattern_height, p.pattern_width
        n, ch, cw = p.cube_shape
        area = raw[p.offset_y:p.offset_y + ch * ph, p.offset_x:p.offset_x + cw * pw]
        out = np.empty((n, ch, cw), np.float32)  # tile-position order
        saturated = np.empty((ch, cw), bool)
        pixel_sum = np.empty((ch, cw), np.float32) if normalise else None
        keep = np.unique(self._keep) if normalise else np.zeros(0, int)  # sensor band indices
        keep_tiles = keep if self._tile_of_band is None else self._tile_of_band[keep]
        kept = np.empty((len(keep), ch, cw), np.float32)
        top = (1 << self.bit_depth) - 1
        for r0 in range(0, ch, self.BLOCK_ROWS):
            r1 = min(ch, r0 + self.BLOCK_ROWS)
            k = r1 - r0
            block = out[:, r0:r1]
            # regrouped by tile position straight into float32 (exact for any 16-bit count): the gain is then a
            # float32 product; a uint16 x float32 multiply casts through a buffer and was 2x slower
            block.reshape(ph, pw, k, cw)[...] = area[r0 * ph:r1 * ph].reshape(k, ph, cw, pw).transpose(1, 3, 0, 2)
            np.greater_equal(block.max(axis=0), top, out=saturated[r0:r1])
            block *= self._tile_gain if np.ndim(self._tile_gain) == 0 else self._tile_gain[:, r0:r1]
            if self._tile_bias is not None:
                block += self._tile_bias[:, r0:r1]
            if normalise:
                kept[:, r0:r1] = block[keep_tiles]
                total = block.sum(axis=0, out=pixel_sum[r0:r1])
                block *= safe_reciprocal(total)
        if self._tile_of_band is not None:
            out = out[self._tile_of_band]
        kept_cube = Cube(kept, p.band_wavelengths_nm[keep], keep) if len(keep) else None
        return Cube(out, p.band_wavelengths_nm, np.arange(n)), saturated, pixel_sum, kept_cube

    def process(self, raw: np.ndarray) -> FrontEndResult:
        raw = check_frame(raw, self.profile)
        cfg = self.config
        if cfg.demosaic == "subsample":
            # PN can be fused only when nothing sits between reflectance and PN.
            fuse_pn = cfg.normalise and not cfg.median_ksize and cfg.correction is None and self._all_bands
            refl, saturated, pixel_sum, kept = self._subsample_reflectance(raw, fuse_pn)
            if fuse_pn:
                return FrontEndResult(cube=refl, saturated=saturated, _pixel_sum=pixel_sum, _kept=kept)
        else:
            digital = self._demosaic(raw, self.profile)
            saturated = saturation_mask(digital, self.bit_depth)
            refl = self.reflectance.apply(digital)
        cube = refl
        if cfg.median_ksize:
            cube = cube.with_data(np.stack([cv2.medianBlur(plane, cfg.median_ksize) for plane in cube.data]))
        if cfg.correction is not None:
            cube = apply_correction(cube, self.profile.correction(cfg.correction))
        if not self._all_bands:
            cube = select_bands(cube, cfg.bands, cfg.band_tolerance_nm)
        if cfg.normalise:
            cube = per_pixel_normalise(cube)
        return FrontEndResult(cube=cube, saturated=saturated, _reflectance=refl)

