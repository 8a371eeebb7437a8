"""Material reflectance, daylight and thermal properties for the scene generator.

Everything spectral lives on `WAVELENGTHS_NM` (400-1000 nm at 1 nm), the grid of the
imec vendor filter responses. Reflectances are built from smooth parametric pieces
(logistic steps, Gaussians, ramps) whose physical meaning is named beside each term;
they follow published field spectra (USGS/ECOSTRESS libraries) in shape and level,
closely from 550 to 1000 nm where the sensors look, loosely below.

Irradiances are relative spectral irradiance on a horizontal surface: a 5778 K
blackbody (the sun's photosphere) times a clear-sky transmittance with Rayleigh and
aerosol extinction and the O2 / H2O absorption bands. Skylight is the scattered part
of the same beam, so it is bluer (Rayleigh ~ lambda^-4) and weak in the NIR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WAVELENGTHS_NM = np.arange(400.0, 1001.0)  # 601 samples, the vendor response grid
_WL = WAVELENGTHS_NM
AMBIENT_K = 290.0


# --- parametric pieces ------------------------------------------------------------------

def step(center_nm: float, width_nm: float) -> np.ndarray:
    """Logistic rise from 0 to 1 centred at `center_nm`."""
    return 1.0 / (1.0 + np.exp(-(_WL - center_nm) / width_nm))


def bump(center_nm: float, sigma_nm: float) -> np.ndarray:
    """Unit-height Gaussian."""
    return np.exp(-0.5 * ((_WL - center_nm) / sigma_nm) ** 2)


def ramp(start_nm: float = 400.0, end_nm: float = 1000.0) -> np.ndarray:
    """Linear 0 -> 1 between two wavelengths, flat outside."""
    return np.clip((_WL - start_nm) / (end_nm - start_nm), 0.0, 1.0)


def _leaf(green: float, nir: float, edge_nm: float = 716.0) -> np.ndarray:
    """Green leaf: chlorophyll absorbs blue and red (well at ~670 nm), reflects a little
    green (peak ~550 nm), then the red edge rises to the mesophyll NIR plateau; liquid
    water absorbs near 970 nm."""
    visible = 0.035 + green * bump(553.0, 28.0)
    red_edge = nir * step(edge_nm, 11.0) * (1.0 - 0.06 * ramp(800.0, 1000.0))
    return (visible + red_edge) * (1.0 - 0.12 * bump(972.0, 22.0))


# --- materials --------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Material:
    """A surface: reflectance on WAVELENGTHS_NM plus its thermal behaviour.

    `temperature_k` is the surface temperature out of the sun; sunlit pixels add
    `sun_heating_k` (dark, dry surfaces heat most; living things regulate). Emissivities
    are band averages for MIR (3-5 um) and FIR (8-14 um) cameras.
    """

    name: str
    reflectance: np.ndarray
    temperature_k: float = AMBIENT_K
    sun_heating_k: float = 2.0
    emissivity_mir: float = 0.92
    emissivity_fir: float = 0.95


def _materials() -> tuple[Material, ...]:
    m = []

    def add(name, refl, **thermal):
        m.append(Material(name, np.clip(refl, 0.0, 1.0), **thermal))

    # Sky is not a surface: the renderer gives its pixels sky radiance (reflectance 1
    # under skylight). Effective clear-sky brightness temperature is far below ambient.
    add("sky", np.ones_like(_WL), temperature_k=235.0, sun_heating_k=0.0,
        emissivity_mir=1.0, emissivity_fir=1.0)
    # Bitumen + aggregate: dark, almost flat, rising slowly towards the NIR.
    add("asphalt", 0.065 + 0.045 * ramp(), sun_heating_k=7.0, emissivity_fir=0.95)
    add("asphalt_worn", 0.10 + 0.05 * ramp() + 0.01 * step(560.0, 40.0), sun_heating_k=6.0)
    # TiO2 white: absorption edge below ~420 nm, flat and bright beyond.
    add("paint_white", 0.12 + 0.66 * step(418.0, 8.0) - 0.05 * ramp(700.0, 1000.0), sun_heating_k=1.5)
    # Yellow (lead-chromate/organic) paint: absorbs blue, edge ~510 nm.
    add("paint_yellow", 0.08 + 0.62 * step(512.0, 12.0) - 0.04 * ramp(700.0, 1000.0), sun_heating_k=2.0)
    add("grass", _leaf(green=0.075, nir=0.47), sun_heating_k=1.0, emissivity_mir=0.97, emissivity_fir=0.98)
    # Senescent grass: little chlorophyll (shallow 675 nm well), weak, wide red edge.
    add("dry_grass", (0.06 + 0.20 * step(560.0, 45.0) + 0.12 * step(725.0, 25.0)
                      - 0.025 * bump(675.0, 15.0)) * (1.0 - 0.06 * bump(972.0, 22.0)),
        sun_heating_k=5.0, emissivity_fir=0.96)
    # Gravel/soil shoulder: iron oxides make it rise steadily through the visible.
    add("soil", 0.09 + 0.22 * ramp(400.0, 1000.0) ** 0.8 - 0.02 * bump(900.0, 60.0), sun_heating_k=6.0)
    add("foliage_deciduous", _leaf(green=0.085, nir=0.50, edge_nm=714.0), sun_heating_k=0.5,
        emissivity_mir=0.97, emissivity_fir=0.98)
    add("foliage_conifer", _leaf(green=0.045, nir=0.30, edge_nm=720.0), sun_heating_k=0.5,
        emissivity_mir=0.97, emissivity_fir=0.98)
    # Bark: brown (rises from ~600 nm), no red edge.
    add("bark", 0.06 + 0.12 * step(640.0, 60.0) + 0.12 * ramp(650.0, 1000.0), sun_heating_k=2.0)
    # Cement: grey, gently rising (~0.25 -> ~0.35), slight drop in the blue.
    add("concrete", 0.25 + 0.10 * ramp(500.0, 1000.0) - 0.04 * (1.0 - step(460.0, 20.0)), sun_heating_k=4.0)
    add("kerb_concrete", 0.33 + 0.10 * ramp(500.0, 1000.0) - 0.05 * (1.0 - step(460.0, 20.0)),
        sun_heating_k=3.5)
    # Fired clay: hematite absorbs below ~560 nm and has a broad Fe3+ band near 870 nm.
    add("brick", 0.08 + 0.24 * step(575.0, 22.0) + 0.10 * ramp(650.0, 1000.0) - 0.05 * bump(870.0, 55.0),
        sun_heating_k=4.0)
    add("plaster", 0.42 + 0.14 * step(520.0, 35.0) + 0.04 * ramp(600.0, 1000.0), sun_heating_k=3.0)
    # Galvanised steel poles: grey, flat; bare metal has low thermal emissivity.
    add("metal_galvanised", 0.34 + 0.06 * ramp(), sun_heating_k=3.0, emissivity_mir=0.25, emissivity_fir=0.2)
    # Car paints: organic pigments turn transparent in the NIR, so the (grey/white)
    # primer shows through and most colours are bright beyond ~750 nm; carbon black is not.
    add("car_paint_red", 0.05 + 0.50 * step(602.0, 11.0) + 0.10 * step(760.0, 40.0), sun_heating_k=3.0)
    add("car_paint_blue", 0.05 + 0.14 * bump(465.0, 35.0) + 0.42 * step(725.0, 22.0), sun_heating_k=4.0)
    add("car_paint_white", 0.12 + 0.68 * step(418.0, 8.0) - 0.06 * ramp(650.0, 1000.0), sun_heating_k=1.5)
    add("car_paint_black", 0.04 + 0.015 * ramp(), sun_heating_k=8.0)
    add("car_paint_silver", 0.48 + 0.08 * ramp(), sun_heating_k=2.5)
    # Windows: dark interior seen through glass plus ~4-8% surface reflection; athermal
    # glass absorbs some NIR. Glass is opaque and emissive in the FIR.
    add("glass", 0.085 - 0.025 * step(780.0, 50.0), sun_heating_k=1.0, emissivity_mir=0.85,
        emissivity_fir=0.86)
    add("rubber", 0.04 + 0.015 * ramp(), sun_heating_k=5.0, emissivity_fir=0.96)
    # Skin: melanin darkens the blue, haemoglobin dips at 542/577 nm, high NIR
    # plateau, water absorption near 970 nm. Thermoregulated at ~306 K.
    add("skin", (0.16 + 0.08 * ramp(400.0, 580.0) + 0.24 * step(600.0, 10.0) + 0.08 * step(690.0, 25.0)
                 - 0.05 * bump(542.0, 9.0) - 0.05 * bump(577.0, 9.0) - 0.08 * step(920.0, 30.0)
                 - 0.06 * bump(972.0, 20.0)),
        temperature_k=306.0, sun_heating_k=0.0, emissivity_mir=0.97, emissivity_fir=0.98)
    # Dyed cotton: most textile dyes are transparent in the NIR (cellulose ~0.6 shows).
    clothing = dict(temperature_k=300.0, sun_heating_k=1.0, emissivity_mir=0.9, emissivity_fir=0.95)
    add("cotton_denim", 0.06 + 0.10 * bump(460.0, 40.0) + 0.50 * step(725.0, 18.0), **clothing)
    add("cotton_dark", 0.04 + 0.40 * step(765.0, 30.0), **clothing)
    add("cotton_red", 0.06 + 0.42 * step(598.0, 12.0) + 0.14 * step(740.0, 30.0), **clothing)
    add("cotton_light", 0.50 + 0.16 * step(470.0, 30.0) + 0.04 * ramp(600.0, 1000.0), **clothing)
    # Fluorescent-orange PVC cone: absorbs below ~570 nm, bright beyond ~600 nm.
    add("cone_orange", 0.07 + 0.62 * step(585.0, 9.0) + 0.05 * ramp(700.0, 1000.0), sun_heating_k=3.0)
    add("car_stop_concrete", 0.27 + 0.10 * ramp(500.0, 1000.0) - 0.04 * (1.0 - step(460.0, 20.0)),
        sun_heating_k=4.0)
    return tuple(m)


MATERIALS: tuple[Material, ...] = _materials()
MATERIAL_IDS: dict[str, int] = {mat.name: i for i, mat in enumerate(MATERIALS)}
SKY_MATERIAL = MATERIAL_IDS["sky"]


def reflectance(name: str) -> np.ndarray:
    """Reflectance spectrum of a material on WAVELENGTHS_NM."""
    return MATERIALS[MATERIAL_IDS[name]].reflectance


def reflectance_table() -> np.ndarray:
    """(n_materials, n_wavelengths) reflectances, row = material id."""
    return np.stack([mat.reflectance for mat in MATERIALS])


# --- daylight ----------------------------------------------------------------------------

SUN_TEMPERATURE_K = 5778.0
_H, _C, _KB = 6.62607015e-34, 2.99792458e8, 1.380649e-23

# Gas absorption optical depths at one airmass (band centre nm, sigma nm, depth),
# averaged over 1 nm: ozone Chappuis band, O2 B and A bands, water vapour bands.
_ABSORPTION_BANDS = (
    (600.0, 60.0, 0.03),   # O3 Chappuis
    (687.5, 2.0, 0.25),    # O2 B
    (723.0, 8.0, 0.06),    # H2O
    (760.5, 2.2, 1.10),    # O2 A
    (822.0, 10.0, 0.18),   # H2O
    (935.0, 16.0, 0.90),   # H2O (rho-sigma-tau band)
    (965.0, 12.0, 0.25),   # H2O
)


def planck(wavelengths_nm: np.ndarray, temperature_k: float) -> np.ndarray:
    """Blackbody spectral radiance, W m^-2 sr^-1 m^-1."""
    lam = np.asarray(wavelengths_nm, dtype=np.float64) * 1e-9
    return 2.0 * _H * _C**2 / lam**5 / np.expm1(_H * _C / (lam * _KB * temperature_k))


def airmass(elevation_deg: float) -> float:
    """Relative optical path through the atmosphere (Kasten & Young 1989)."""
    e = float(np.clip(elevation_deg, 1.0, 90.0))
    return 1.0 / (np.sin(np.radians(e)) + 0.50572 * (e + 6.07995) ** -1.6364)


def _optical_depths(turbidity: float):
    um = _WL / 1000.0
    rayleigh = 0.008569 * um**-4 * (1.0 + 0.0113 * um**-2 + 0.00013 * um**-4)
    aerosol = turbidity * (um / 0.55) ** -1.3  # Angstrom exponent 1.3
    absorption = sum(depth * bump(c, s) for c, s, depth in _ABSORPTION_BANDS)
    return rayleigh, aerosol, absorption


def _solar_top() -> np.ndarray:
    b = planck(_WL, SUN_TEMPERATURE_K)
    return b / np.interp(560.0, _WL, b)  # relative, 1 at 560 nm


@dataclass(frozen=True, eq=False)
class Illumination:
    """Relative spectral irradiance on a horizontal surface (1 ~ direct overhead sun at 560 nm).

    `sun`: direct beam; `sky`: skylight (scattered beam) from the whole sky;
    `diffuse`: what a surface out of the sun receives, skylight plus light scattered
    into shadows by the sunlit surroundings (trees, walls, vehicles) - that bounce has
    the surroundings' reflectance, mostly vegetation and grey, which keeps shadow
    spectra from being pure sky blue. `sky_radiance` is pi x zenith sky radiance, the
    value a sky pixel shows in the same units as reflectance x irradiance.
    """

    elevation_deg: float
    sun: np.ndarray
    sky: np.ndarray
    diffuse: np.ndarray
    sky_radiance: np.ndarray

    @property
    def total(self) -> np.ndarray:
        """Irradiance in full sun: direct plus diffuse."""
        return self.sun + self.diffuse


#: Share of the sunlit surroundings' radiance that reaches a shadowed surface.
SURROUND_BOUNCE = 0.25


def daylight(elevation_deg: float = 45.0, intensity: float = 1.0, turbidity: float = 0.08,
             haze: float = 0.0) -> Illumination:
    """Clear-sky daylight for a sun `elevation_deg` above the horizon.

    `intensity` scales everything (thin cloud, exposure drift); `haze` (0..1) whitens and
    brightens the sky radiance the way a milky sky does.
    """
    m = airmass(elevation_deg)
    rayleigh, aerosol, absorption = _optical_depths(turbidity)
    top = _solar_top() * intensity
    cos_zenith = np.sin(np.radians(max(elevation_deg, 1.0)))
    gas = np.exp(-m * absorption)
    sun = top * gas * np.exp(-m * (rayleigh + aerosol)) * cos_zenith
    # Single scattering, half of it downwards; aerosols scatter mostly forwards (0.8).
    sky = 0.5 * top * gas * (-np.expm1(-m * (rayleigh + 0.8 * aerosol))) * cos_zenith
    surroundings = 0.5 * (reflectance("foliage_deciduous") + reflectance("concrete"))
    diffuse = sky + SURROUND_BOUNCE * surroundings * (sun + sky)
    sky_radiance = sky * (1.0 - haze) + haze * 0.35 * (sun + sky)
    return Illumination(float(elevation_deg), sun, sky, diffuse, sky_radiance)


# --- thermal bands -----------------------------------------------------------------------

#: Camera passbands in um.
MIR_BAND_UM = (3.0, 5.0)
FIR_BAND_UM = (8.0, 14.0)
_TEMPERATURE_GRID_K = np.arange(150.0, 500.0, 0.25)


def band_radiance(band_um: tuple[float, float], temperature_k) -> np.ndarray:
    """Blackbody radiance integrated over a passband, W m^-2 sr^-1."""
    lam_nm = np.linspace(band_um[0], band_um[1], 400) * 1000.0
    t = np.atleast_1d(np.asarray(temperature_k, dtype=np.float64))
    spectral = planck(lam_nm[None, :], t[:, None])
    values = 0.5 * ((spectral[:, 1:] + spectral[:, :-1]) * np.diff(lam_nm * 1e-9)).sum(axis=1)
    return values if np.ndim(temperature_k) else values[0]


class ThermalBand:
    """Fast radiance <-> brightness temperature conversions for one passband (tables)."""

    def __init__(self, band_um: tuple[float, float]):
        self.band_um = band_um
        self.temperatures_k = _TEMPERATURE_GRID_K
        self.radiances = band_radiance(band_um, _TEMPERATURE_GRID_K)

    def radiance(self, temperature_k):
        return np.interp(temperature_k, self.temperatures_k, self.radiances)

    def brightness_temperature(self, radiance):
        return np.interp(radiance, self.radiances, self.temperatures_k)

    def solar_irradiance(self, elevation_deg: float, transmittance: float = 0.7) -> float:
        """Direct solar irradiance in the band on a horizontal surface, W m^-2."""
        solid_angle_factor = (6.957e8 / 1.496e11) ** 2  # (R_sun / 1 AU)^2
        e_normal = np.pi * float(band_radiance(self.band_um, SUN_TEMPERATURE_K)) * solid_angle_factor
        return e_normal * transmittance * np.sin(np.radians(max(elevation_deg, 1.0)))
