"""Render layout maps into sensor frames: the snapshot-mosaic HSI camera and the
multispectral RGB / NIR / MIR / FIR cameras.

Hyperspectral: per frame the renderer integrates, for every material m and band b,
S[m, b] = sum_lambda R_m E_sun resp_b and K[m, b] = the same under diffuse light
(sky radiance for the sky), then folds each surface's material and sky view into
per-surface tables. A raw pixel of band b = band_index_map[y, x] is then two table
look-ups: signal = texture * (sun * S[s, b] + K[s, b]). The exposure puts a white
panel in full sun at `white_fill` of full scale for the brightest band; signal
becomes electrons through the conversion gain, gets shot noise (the normal
approximation of Poisson: accurate above ~20 e-, and darker pixels are dominated by
the 13 e- read noise anyway) and read noise, fixed-pattern
gain (PRNU) and offset (DSNU) noise, the black level, and is quantised to the
profile's bit depth and clipped (bright paint may saturate, as on the real camera).

Multispectral cameras see the layout through a registered *common view*: a 640x480
(4:3) view centred on the layout, covering its full height. Each camera has a
homography mapping common-view pixels to its own pixels (OpenCV pixel-centre
coordinates); a camera image is the layout maps warped by
`homography @ common_from_layout` (nearest for ids, linear for sun and texture).
Object boxes for these cameras are reported in the common view, so registering a
camera back with the inverse homography lines them up.

Thermal cameras (MIR 3-5 um, FIR 8-14 um) output brightness temperature as mono16 in
centikelvin (the "TLinear" radiometric mode of common LWIR cores): value / 100 = K.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..sensor.calibration import SensorProfile
from ..sensor.demosaic import band_index_map
from ..sensor.rig import CameraSpec, common_view_size, default_cameras, transform_box  # noqa: F401 (re-exported)
from .layout import LayoutMaps
from .spectra import (AMBIENT_K, FIR_BAND_UM, MATERIALS, MIR_BAND_UM, SKY_MATERIAL, WAVELENGTHS_NM,
                      Illumination, ThermalBand, bump, reflectance_table, step)

WHITE_PANEL_REFLECTANCE = 0.99
COMMON_VIEW_SIZE = common_view_size()  # width, height of the registered common view (the default rig's)
_FIXED_PATTERN_SEED = 90210    # the same sensor for every drive


@dataclass(frozen=True)
class SensorNoise:
    """CMV2000-like sensor electronics (datasheet order of magnitude)."""

    full_well_e: float = 10500.0
    read_noise_e: float = 13.0
    black_level_dn: float = 32.0
    prnu: float = 0.01          # pixel gain non-uniformity, relative std
    dsnu_dn: float = 0.5        # dark offset non-uniformity, std in DN
    white_fill: float = 0.75    # white panel in full sun, share of full scale (brightest band)


class HsiRenderer:
    """Raw mosaic frames of one profile under one exposure.

    The exposure is fixed by `reference` (the illumination the white reference was
    taken under), so frames under brighter or dimmer light come out brighter or dimmer.
    """

    def __init__(self, profile: SensorProfile, reference: Illumination, noise: SensorNoise = SensorNoise()):
        self.profile, self.noise = profile, noise
        self.responses = profile.effective_responses(WAVELENGTHS_NM)  # (bands, wavelengths)
        self.band_map = band_index_map(profile).astype(np.int32)
        self.full_scale = float(2 ** profile.bit_depth - 1)
        self.e_per_dn = noise.full_well_e / 2 ** profile.bit_depth
        white = WHITE_PANEL_REFLECTANCE * self.responses @ reference.total
        self.dn_per_unit = (noise.white_fill * self.full_scale - noise.black_level_dn) / white.max()
        fixed = np.random.default_rng(_FIXED_PATTERN_SEED)
        self.gain_map = (1.0 + noise.prnu * fixed.standard_normal(self.band_map.shape)).astype(np.float32)
        self.gain_map *= np.float32(self.dn_per_unit)
        self.offset_map = (noise.black_level_dn + noise.dsnu_dn * fixed.standard_normal(profile.frame_shape)
                           ).astype(np.float32)
        self._area = (slice(profile.offset_y, profile.offset_y + profile.area_height),
                      slice(profile.offset_x, profile.offset_x + profile.area_width))
        self._refl = reflectance_table()

    # --- spectral tables ----------------------------------------------------------------
    def band_signals(self, illumination: Illumination) -> tuple[np.ndarray, np.ndarray]:
        """(S, K): per material and band, reflected direct sun and diffuse light."""
        s = (self._refl * illumination.sun) @ self.responses.T
        k = (self._refl * illumination.diffuse) @ self.responses.T
        s[SKY_MATERIAL] = 0.0
        k[SKY_MATERIAL] = illumination.sky_radiance @ self.responses.T
        return s, k

    def band_reflectance(self, reflectance: np.ndarray, illumination: Illumination) -> np.ndarray:
        """What a calibrated camera measures for a sunlit Lambertian reflectance spectrum:
        the spectrum averaged over each band's response, weighted by the light."""
        weight = self.responses * illumination.total
        return (weight @ reflectance) / weight.sum(axis=1)

    def expected_signal(self, maps: LayoutMaps, illumination: Illumination) -> np.ndarray:
        """Mean signal above the black level, DN, over the filter area (float32)."""
        s, k = self.band_signals(illumination)
        mats = maps.table("material", np.intp)
        sky_view = maps.table("sky_view", np.float64)
        sky_view[mats == SKY_MATERIAL] = 1.0
        s_tab = s[mats].astype(np.float32).ravel()
        k_tab = (k[mats] * sky_view[:, None]).astype(np.float32).ravel()
        idx = maps.surface.astype(np.int32)
        idx *= self.profile.n_bands
        idx += self.band_map
        signal = np.take(s_tab, idx)
        signal *= maps.sun
        signal += np.take(k_tab, idx)
        signal *= maps.texture
        signal *= self.gain_map
        return signal

    # --- frames ---------------------------------------------------------------------------
    def _expose(self, signal_dn: np.ndarray, rng: np.random.Generator, average_of: int = 1) -> np.ndarray:
        """Noisy, quantised uint16 frame from a mean signal over the filter area."""
        read_var = np.float32((self.noise.read_noise_e / self.e_per_dn) ** 2)
        frame = np.zeros(self.profile.frame_shape, np.float32)
        frame[self._area] = signal_dn
        # shot noise variance in DN^2 is signal_dn / e_per_dn (Poisson in electrons)
        sigma = np.maximum(frame, 0.0) * np.float32(1.0 / self.e_per_dn)
        sigma += read_var
        np.sqrt(sigma, out=sigma)
        if average_of > 1:
            sigma *= np.float32(1.0 / np.sqrt(average_of))
        noise = rng.standard_normal(frame.shape, dtype=np.float32)
        noise *= sigma
        frame += noise
        frame += self.offset_map
        np.clip(frame, 0.0, self.full_scale, out=frame)
        return np.rint(frame, out=frame).astype(np.uint16)

    def raw(self, maps: LayoutMaps, illumination: Illumination, rng: np.random.Generator) -> np.ndarray:
        """A raw frame (sensor_height, sensor_width) uint16; outside the filter area: dark."""
        return self._expose(self.expected_signal(maps, illumination), rng)

    def references(self, illumination: Illumination, rng: np.random.Generator,
                   frames_averaged: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(dark, white) reference frames: lens cap, and a flat panel filling the view in full sun.

        Both are averages of `frames_averaged` exposures, so their noise is that much
        smaller; they carry the same fixed-pattern gain and offset as the frames.
        """
        dark = self._expose(np.zeros(self.band_map.shape, np.float32), rng, frames_averaged)
        per_band = WHITE_PANEL_REFLECTANCE * self.responses @ illumination.total
        white = self._expose(per_band.astype(np.float32)[self.band_map] * self.gain_map, rng, frames_averaged)
        return dark, white


# --- multispectral cameras -----------------------------------------------------------------

def similarity(scale: float, dx: float, dy: float, angle_deg: float, size: tuple[int, int],
               common_size: tuple[int, int] = COMMON_VIEW_SIZE) -> np.ndarray:
    """Homography common view -> camera: scale and rotate about the centres, then shift by (dx, dy)."""
    a = np.radians(angle_deg)
    src_c = np.array([(common_size[0] - 1) / 2.0, (common_size[1] - 1) / 2.0])
    dst_c = np.array([(size[0] - 1) / 2.0 + dx, (size[1] - 1) / 2.0 + dy])
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    h = np.eye(3)
    h[:2, :2] = rot
    h[:2, 2] = dst_c - rot @ src_c
    return h


def common_from_layout(layout_height: int, layout_width: int,
                       common_size: tuple[int, int] = COMMON_VIEW_SIZE) -> np.ndarray:
    """Homography layout pixels -> common-view pixels (pixel centres): a centred crop
    of the common view's aspect over the layout's full height, scaled to its size."""
    cw, ch = common_size
    scale = ch / layout_height
    crop_x0 = (layout_width - layout_height * cw / ch) / 2.0
    # edges map as x_edge' = (x_edge - crop_x0) * scale; pixel centres sit at edge - 0.5
    return np.array([[scale, 0.0, (0.5 - crop_x0) * scale - 0.5],
                     [0.0, scale, 0.5 * scale - 0.5],
                     [0.0, 0.0, 1.0]])


def _channel_sensitivities(kind: str) -> np.ndarray:
    wl = WAVELENGTHS_NM
    if kind == "rgb":  # B, G, R rows (OpenCV order); silicon behind an IR-cut filter
        ir_cut = 1.0 - step(660.0, 8.0)
        return np.stack([bump(450.0, 28.0), bump(540.0, 32.0), bump(610.0, 30.0)]) * ir_cut
    if kind == "nir":  # long-pass at ~750 nm, silicon QE falling towards 1000 nm
        return (step(750.0, 8.0) * np.clip((1050.0 - wl) / 300.0, 0.0, 1.0))[None]
    raise ValueError(f"no spectral sensitivity for camera kind {kind!r}")


class MultispectralRenderer:
    """Renders the multispectral cameras from layout maps."""

    def __init__(self, cameras: tuple[CameraSpec, ...], reference: Illumination):
        self.cameras = cameras
        self._sens = {k: _channel_sensitivities(k) for k in ("rgb", "nir")}
        self._white = {k: s @ reference.total for k, s in self._sens.items()}  # white balance
        self._refl = reflectance_table()
        self._bands = {"mir": ThermalBand(MIR_BAND_UM), "fir": ThermalBand(FIR_BAND_UM)}
        self._eps = {"mir": np.array([m.emissivity_mir for m in MATERIALS]),
                     "fir": np.array([m.emissivity_fir for m in MATERIALS])}
        self._temp = np.array([m.temperature_k for m in MATERIALS])
        self._heating = np.array([m.sun_heating_k for m in MATERIALS])

    def render(self, maps: LayoutMaps, illumination: Illumination, rng: np.random.Generator) -> dict:
        """name -> image for every camera."""
        a = common_from_layout(*maps.shape)
        out = {}
        for cam in self.cameras:
            m = cam.homography @ a
            size = (cam.width, cam.height)
            surface = cv2.warpPerspective(maps.surface, m, size, flags=cv2.INTER_NEAREST,
                                          borderMode=cv2.BORDER_REPLICATE)
            sun = cv2.warpPerspective(maps.sun, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            tex = cv2.warpPerspective(maps.texture, m, size, flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE)
            if cam.kind in ("rgb", "nir"):
                out[cam.name] = self._reflective(cam.kind, maps, surface, sun, tex, illumination, rng)
            else:
                out[cam.name] = self._thermal(cam.kind, maps, surface, sun, tex, illumination, rng)
        return out

    def _reflective(self, kind, maps, surface, sun, tex, illumination, rng) -> np.ndarray:
        sens = self._sens[kind] / self._white[kind][:, None]  # white panel in sun -> 1
        s = (self._refl * illumination.sun) @ sens.T
        k = (self._refl * illumination.diffuse) @ sens.T
        s[SKY_MATERIAL] = 0.0
        k[SKY_MATERIAL] = illumination.sky_radiance @ sens.T
        mats = maps.table("material", np.intp)
        sky_view = np.where(mats == SKY_MATERIAL, 1.0, maps.table("sky_view", np.float64))
        linear = tex[..., None] * (sun[..., None] * s[mats][surface] + (k[mats] * sky_view[:, None])[surface])
        linear = np.clip(0.8 * linear, 0.0, 1.0)
        if kind == "rgb":  # display gamma, as a consumer camera delivers
            linear = linear ** (1.0 / 2.2)
        img = 255.0 * linear + rng.normal(0.0, 1.2, linear.shape)
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        return img if kind == "rgb" else img[..., 0]

    def _thermal(self, kind, maps, surface, sun, tex, illumination, rng) -> np.ndarray:
        band = self._bands[kind]
        mats = maps.table("material", np.intp)
        override = np.array([np.nan if s.temperature_k is None else s.temperature_k for s in maps.surfaces])
        base = np.where(np.isnan(override), self._temp[mats], override)
        temperature = base[surface] + self._heating[mats][surface] * sun + 5.0 * (tex - 1.0)
        eps = self._eps[kind][mats][surface]
        down = band.radiance(AMBIENT_K - 35.0)  # sky and surroundings seen by a surface, on average
        radiance = eps * band.radiance(temperature) + (1.0 - eps) * down
        if kind == "mir":  # the sun's 3-5 um tail reflects off surfaces
            radiance += (1.0 - eps) * sun * band.solar_irradiance(illumination.elevation_deg) / np.pi
        brightness = band.brightness_temperature(radiance) + rng.normal(0.0, 0.05, radiance.shape)  # NETD
        return np.clip(np.rint(brightness * 100.0), 0, 65535).astype(np.uint16)
