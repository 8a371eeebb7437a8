"""Sensor profiles: imec snapshot-mosaic calibration XMLs and built-in layouts.

A `SensorProfile` says where the filter area sits on the sensor, how big the mosaic
pattern is, which band sits at which tile position, each band's Fabry-Perot peaks and
(when the vendor measured them) its filter response, and the spectral correction
matrices. Everything downstream (demosaicing, rendering, model cards) reads it.

Choose a profile with `load_profile(name_or_path)`: a built-in name (`hsi-drive`, the
bundled vendor files `imec-665-975` and `imec-600-875`) or the path of an imec XML.

Reading the two XML format versions, and what was verified against the files
themselves (see test/sensor/test_calibration.py):

* Version 1 (`CMV2K-SSM5x5-665_975-13.8.15.1_HS02-NIR.xml`): bands are
  `filter_zones/filter_zone/bands/band[@index]`, each with order-1 and order-2
  `peaks/peak` (wavelength, FWHM, QE, contribution) and a 601-sample `response`.
  Band i sits at tile row i // 5, column i % 5. Verified: each band's response
  peaks within 2 nm of its first-order peak (except bands 4, 20 and 21, whose
  response maximum is their short-wavelength leak at 650-670 nm; the 675 nm long-pass
  filter the file also lists removes it for bands 4 and 20, while band 21's leak at
  676 nm sits on the filter edge and stays its largest response); the correction matrix's 25 rows sum to 1,
  its columns are indexed by band index (the largest coefficient of the virtual band
  at 688.58 nm is in column 22, whose first-order peak is 688.58 nm, and likewise for
  all 25 rows but the near-duplicate virtual bands at 916.66 and 926.00 nm).
* Version 0 (`CMV2K-SSM5x5-600_875-5.5.9.2.xml`): bands are `filter_info/bands/band`
  with `pattern_position_index`, a single peak (no contribution) and
  `response_composition/data`; the correction is a list of virtual bands with 25
  `custom_spectral_correction` coefficients. Verified: the position indices are a
  permutation of 0..24; the virtual-band wavelengths are exactly the 25 band peaks;
  their coefficient columns are indexed by position index (e.g. the 636.43 nm virtual
  band's largest coefficient is in column 18, the band peaking at 636.43 nm); the
  filter area (offset_y 3, 1080 rows) is exactly the crop HSI-Drive documents for its
  5x5 600-1000 nm camera (rows 3..1082), so the file's geometry is taken as written.
  XIMEA's own API delivers these sensors' frames flipped vertically; for frames read
  that way pass `flip_vertical=True`, which mirrors the filter area (offset_y becomes
  sensor_height - height - offset_y) and reverses the tile rows.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from ..errors import CalibrationError
from ..schema import MAX_MESSAGE, validation_message
from .calibration_schema import ImecCalibration

MAX_FILE_BYTES = 64 << 20  # the vendor files are ~0.3 MB

_DATA_DIR = Path(__file__).with_name("data")

#: Bundled vendor files (MIT licence, see data/LICENSE-swisssmartfarming.txt).
BUNDLED_XML = {
    "imec-665-975": _DATA_DIR / "CMV2K-SSM5x5-665_975-13.8.15.1_HS02-NIR.xml",
    "imec-600-875": _DATA_DIR / "CMV2K-SSM5x5-600_875-5.5.9.2.xml",
}


@dataclass(frozen=True)
class Peak:
    """One Fabry-Perot transmission peak of a band."""

    wavelength_nm: float
    fwhm_nm: float
    order: int = 1
    contribution: float | None = None  # share of the band's signal (v1 files only)
    qe: float | None = None


@dataclass(frozen=True)
class SpectralCorrection:
    """A vendor correction matrix: virtual band k = sum_j matrix[k, j] * band j."""

    name: str
    virtual_wavelengths_nm: np.ndarray  # (k,)
    matrix: np.ndarray  # (k, n_bands), columns indexed by band index
    virtual_fwhm_nm: np.ndarray | None = None


@dataclass(frozen=True)
class OpticalComponent:
    """An external filter in the optical path (v0 rejection filter, v1 lp/sp filters)."""

    name: str
    transmission: np.ndarray  # on SensorProfile.response_wavelengths_nm


@dataclass(frozen=True)
class SensorProfile:
    """Geometry and spectral description of a snapshot-mosaic sensor."""

    name: str
    source: str  # "builtin" or the XML path
    sensor_width: int
    sensor_height: int
    offset_x: int
    offset_y: int
    area_width: int
    area_height: int
    pattern_width: int
    pattern_height: int
    bit_depth: int
    #: band index at each tile position, shape (pattern_height, pattern_width)
    layout: np.ndarray
    #: per band index, its peaks (first order first)
    peaks: tuple[tuple[Peak, ...], ...]
    #: measured filter responses (n_bands, n_samples), or None for peak-only profiles
    responses: np.ndarray | None = None
    response_wavelengths_nm: np.ndarray | None = None
    corrections: tuple[SpectralCorrection, ...] = ()
    optics: tuple[OpticalComponent, ...] = ()
    notes: str = field(default="", compare=False)

    # --- derived geometry -------------------------------------------------------------
    @property
    def n_bands(self) -> int:
        return self.pattern_width * self.pattern_height

    @property
    def cube_height(self) -> int:
        return self.area_height // self.pattern_height

    @property
    def cube_width(self) -> int:
        return self.area_width // self.pattern_width

    @property
    def cube_shape(self) -> tuple[int, int, int]:
        """Shape of the sub-sampled cube: (bands, rows, cols)."""
        return (self.n_bands, self.cube_height, self.cube_width)

    @property
    def frame_shape(self) -> tuple[int, int]:
        """Shape of a raw frame: (rows, cols)."""
        return (self.sensor_height, self.sensor_width)

    @property
    def band_wavelengths_nm(self) -> np.ndarray:
        """First-order peak wavelength of each band, by band index."""
        return np.array([p[0].wavelength_nm for p in self.peaks], dtype=np.float64)

    def band_position(self, band: int) -> tuple[int, int]:
        """(row, col) of a band inside the pattern tile."""
        rows, cols = np.nonzero(self.layout == band)
        return int(rows[0]), int(cols[0])

    def band_nearest(self, wavelength_nm: float, tolerance_nm: float = 2.0) -> int:
        """Index of the band whose first-order peak is nearest to `wavelength_nm`."""
        wl = self.band_wavelengths_nm
        i = int(np.argmin(np.abs(wl - wavelength_nm)))
        if abs(wl[i] - wavelength_nm) > tolerance_nm:
            raise CalibrationError(
                f"profile {self.name!r}: no band within {tolerance_nm} nm of "
                f"{wavelength_nm} nm (nearest is band {i} at {wl[i]:.2f} nm)")
        return i

    def correction(self, name: str | None = None) -> SpectralCorrection:
        """A correction matrix by name (the first one when `name` is None)."""
        if not self.corrections:
            raise CalibrationError(f"profile {self.name!r} has no spectral correction matrix")
        if name is None:
            return self.corrections[0]
        for c in self.corrections:
            if c.name == name:
                return c
        raise CalibrationError(f"profile {self.name!r} has no correction matrix {name!r}; "
                               f"it has {[c.name for c in self.corrections]}")

    def effective_responses(self, wavelengths_nm: np.ndarray) -> np.ndarray:
        """Band responses of the whole optical path sampled at `wavelengths_nm`.

        Measured responses times every external filter's transmission when the profile
        has them; otherwise unit-height Gaussians at the peaks, weighted by each peak's
        contribution (1 for a first-order peak without one).
        """
        wavelengths_nm = np.asarray(wavelengths_nm, dtype=np.float64)
        if self.responses is not None:
            src = self.response_wavelengths_nm
            resp = np.stack([np.interp(wavelengths_nm, src, r, left=0.0, right=0.0)
                             for r in self.responses])
            for comp in self.optics:
                resp *= np.interp(wavelengths_nm, src, comp.transmission, left=0.0, right=0.0)
            return resp
        resp = np.zeros((self.n_bands, wavelengths_nm.size))
        for b, peaks in enumerate(self.peaks):
            for p in peaks:
                weight = p.contribution if p.contribution is not None else (1.0 if p.order == 1 else 0.3)
                sigma = p.fwhm_nm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
                resp[b] += weight * np.exp(-0.5 * ((wavelengths_nm - p.wavelength_nm) / sigma) ** 2)
        return resp

    def flipped_vertically(self) -> "SensorProfile":
        """The same sensor read out upside down (XIMEA's convention for v0 files)."""
        if self.area_height % self.pattern_height:
            raise CalibrationError(
                f"profile {self.name!r}: cannot flip a filter area whose height "
                f"{self.area_height} is not a multiple of the pattern height {self.pattern_height}")
        return dataclasses.replace(
            self,
            name=self.name + "+flip",
            offset_y=self.sensor_height - self.area_height - self.offset_y,
            layout=self.layout[::-1].copy(),
        )


# --- built-in profile: HSI-Drive's camera (imec 5x5, sensor 5.5.9.9, 600-1000 nm) ---------

#: Peak wavelengths by tile position (HSI-Drive documentation, DESIGN.md section 3).
HSI_DRIVE_PEAKS_NM = np.array([
    [888.48, 897.66, 879.13, 869.11, 956.11],
    [795.96, 807.63, 783.76, 770.58, 679.14],
    [744.48, 757.92, 731.88, 718.30, 692.90],
    [928.81, 936.25, 920.60, 912.17, 950.39],
    [848.55, 858.95, 564.36, 826.77, 944.49],
])
#: Secondary peaks reported by paper 000 for bands 22 and 25 (1-based).
HSI_DRIVE_SECOND_ORDER_NM = {21: 577.147, 24: 657.995}
#: Not published for this sensor: typical of imec 5x5 NIR sensors (the bundled
#: 665-975 file's first-order FWHMs are 8-17 nm, its second-order contributions 0.07-0.2).
HSI_DRIVE_ASSUMED_FWHM_NM = 12.0
HSI_DRIVE_ASSUMED_SECOND_ORDER_CONTRIBUTION = 0.25


def hsi_drive_profile() -> SensorProfile:
    """The HSI-Drive camera: 2048x1088, filter area rows 3..1082, cols 0..2044, 10 bit."""
    peaks = []
    for b, wl in enumerate(HSI_DRIVE_PEAKS_NM.ravel()):
        band = [Peak(float(wl), HSI_DRIVE_ASSUMED_FWHM_NM, order=1, contribution=1.0)]
        if b in HSI_DRIVE_SECOND_ORDER_NM:
            band.append(Peak(HSI_DRIVE_SECOND_ORDER_NM[b], HSI_DRIVE_ASSUMED_FWHM_NM, order=2,
                             contribution=HSI_DRIVE_ASSUMED_SECOND_ORDER_CONTRIBUTION))
        peaks.append(tuple(band))
    return SensorProfile(
        name="hsi-drive", source="builtin",
        sensor_width=2048, sensor_height=1088,
        offset_x=0, offset_y=3, area_width=2045, area_height=1080,
        pattern_width=5, pattern_height=5, bit_depth=10,
        layout=np.arange(25).reshape(5, 5),
        peaks=tuple(peaks),
        notes=(f"peaks from HSI-Drive; FWHM {HSI_DRIVE_ASSUMED_FWHM_NM} nm and second-order "
               f"contributions {HSI_DRIVE_ASSUMED_SECOND_ORDER_CONTRIBUTION} assumed"),
    )


BUILTIN_PROFILES = {"hsi-drive": hsi_drive_profile}


def profile_names() -> list[str]:
    return sorted([*BUILTIN_PROFILES, *BUNDLED_XML])


def load_profile(name_or_path: str | Path, flip_vertical: bool = False) -> SensorProfile:
    """A profile by built-in name, bundled vendor-file name, or path of an imec XML."""
    key = str(name_or_path)
    if key in BUILTIN_PROFILES:
        profile = BUILTIN_PROFILES[key]()
    elif key in BUNDLED_XML:
        profile = parse_imec_xml(BUNDLED_XML[key], name=key)
    elif key.lower().endswith(".xml") or Path(key).is_file():
        profile = parse_imec_xml(key)
    else:
        raise CalibrationError(
            f"unknown sensor profile {key!r}: give one of {profile_names()} or the path of an imec XML")
    return profile.flipped_vertically() if flip_vertical else profile


# --- imec XML parsing -----------------------------------------------------------------------


class _Reader:
    """Reads the XML's elements as strings (numbers are checked by calibration_schema), naming the file in
    every error; an element that should appear once but appears more often is refused."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, problem: str) -> CalibrationError:
        return CalibrationError(f"calibration file {self.path}: {problem}"[:MAX_MESSAGE])

    def node(self, parent: ET.Element, tag: str) -> ET.Element:
        found = parent.findall(tag)
        if not found:
            raise self.fail(f"missing <{tag}> under <{parent.tag}>")
        if len(found) > 1:
            raise self.fail(f"<{tag}> appears {len(found)} times under <{parent.tag}> (once expected)")
        return found[0]

    def text(self, parent: ET.Element, tag: str) -> str:
        return self.node(parent, tag).text or ""

    def optional(self, parent: ET.Element, tag: str) -> str | None:
        return self.text(parent, tag) if parent.find(tag) is not None else None

    def vector(self, elem: ET.Element) -> dict:
        return {"text": elem.text or "", "declared": elem.get("nr_elements")}


def parse_imec_xml(path: str | Path, name: str | None = None) -> SensorProfile:
    """Parse an imec sensor calibration XML (format version 0 or 1); any problem is one CalibrationError."""
    path = Path(path)
    rd = _Reader(path)
    try:
        if not path.is_file():
            raise rd.fail("no such file")
        size = path.stat().st_size
    except OSError as exc:
        raise rd.fail(f"cannot be read ({exc.strerror})") from None
    if size > MAX_FILE_BYTES:
        raise rd.fail(f"{size} bytes: larger than any calibration file ({MAX_FILE_BYTES} bytes at most)")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise rd.fail(f"not well-formed XML (truncated or damaged?): {exc}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise rd.fail(f"cannot be read as XML ({type(exc).__name__})") from None
    if root.tag != "sensor_calibration":
        raise rd.fail(f"root element is <{root.tag[:40]}>, expected <sensor_calibration>")
    version = root.get("version")
    if version == "1":
        raw = _read_v1(root, rd)
    elif version == "0":
        raw = _read_v0(root, rd)
    else:
        raise rd.fail(f"unsupported format version {str(version)[:20]!r} (supported: 0 and 1)")
    try:
        cal = ImecCalibration.model_validate(raw)
    except ValidationError as exc:
        raise CalibrationError(validation_message(exc, f"calibration file {path}")) from None
    return _profile(cal, name or path.stem, str(path))


def _profile(cal: ImecCalibration, name: str, source: str) -> SensorProfile:
    n = cal.pattern_width * cal.pattern_height
    bands = sorted(cal.bands, key=lambda b: b.index)
    peaks = tuple(tuple(Peak(p.wavelength_nm, p.fwhm_nm, p.order, p.contribution, p.qe)
                        for p in sorted(b.peaks, key=lambda p: p.order)) for b in bands)
    corrections = tuple(SpectralCorrection(
        name=c.name, virtual_wavelengths_nm=np.array([v.wavelength_nm for v in c.virtual_bands]),
        matrix=np.stack([v.coefficients.values for v in c.virtual_bands]),
        virtual_fwhm_nm=(np.array([v.fwhm_nm for v in c.virtual_bands])
                         if all(v.fwhm_nm is not None for v in c.virtual_bands) else None))
        for c in cal.corrections)
    return SensorProfile(
        name=name, source=source, sensor_width=cal.sensor_width, sensor_height=cal.sensor_height,
        offset_x=cal.offset_x, offset_y=cal.offset_y, area_width=cal.area_width, area_height=cal.area_height,
        pattern_width=cal.pattern_width, pattern_height=cal.pattern_height, bit_depth=cal.bit_depth,
        layout=np.arange(n).reshape(cal.pattern_height, cal.pattern_width), peaks=peaks,
        responses=np.stack([b.response.values for b in bands]), response_wavelengths_nm=cal.grid.wavelengths(),
        corrections=corrections, optics=tuple(OpticalComponent(o.name, o.response.values) for o in cal.optics))


def _area(rd: _Reader, parent: ET.Element) -> dict:
    area = rd.node(parent, "filter_area")
    return dict(offset_x=rd.text(area, "offset_x"), offset_y=rd.text(area, "offset_y"),
                area_width=rd.text(area, "width"), area_height=rd.text(area, "height"))


def _peak(rd: _Reader, p: ET.Element, contribution: bool) -> dict:
    return {"order": p.get("order", "1"), "wavelength_nm": rd.text(p, "wavelength_nm"), "fwhm_nm": rd.text(p, "fwhm_nm"),
            "qe": rd.optional(p, "QE"), **({"contribution": rd.text(p, "contribution")} if contribution else {})}


def _read_v1(root: ET.Element, rd: _Reader) -> dict:
    sensor = rd.node(root, "sensor_info")
    finfo = rd.node(root, "filter_info")
    cal = rd.node(finfo, "calibration_info")
    zones = [z for z in rd.node(finfo, "filter_zones").findall("filter_zone") if z.get("layout", "MOSAIC") == "MOSAIC"]
    if not zones:
        raise rd.fail("no MOSAIC <filter_zone> in <filter_zones>")
    zone = zones[0]
    bands = [{"index": band.get("index", ""), "peaks": [_peak(rd, p, True) for p in rd.node(band, "peaks").findall("peak")],
              "response": rd.vector(rd.node(band, "response"))} for band in rd.node(zone, "bands").findall("band")]
    optics, corrections = [], []
    sys_info = root.find("system_info")
    if sys_info is not None:
        for comp in sys_info.findall("optical_components/optical_component"):
            label = (comp.findtext("tag") or comp.findtext("type") or "filter").strip()[:64]
            optics.append({"name": label, "response": rd.vector(rd.node(comp, "response"))})
        for cm in sys_info.findall("spectral_correction_info/correction_matrices/correction_matrix"):
            cname = (cm.findtext("name") or f"matrix{len(corrections)}").strip()[:64]
            corrections.append({"name": cname, "virtual_bands": [
                {"wavelength_nm": rd.text(v, "wavelength_nm"), "fwhm_nm": rd.text(v, "fwhm_nm"),
                 "coefficients": rd.vector(rd.node(v, "coefficients"))}
                for v in rd.node(cm, "virtual_bands").findall("virtual_band")]})
    return {"sensor_width": rd.text(sensor, "width"), "sensor_height": rd.text(sensor, "height"), **_area(rd, zone),
            "pattern_width": rd.text(zone, "pattern_width"), "pattern_height": rd.text(zone, "pattern_height"),
            "bit_depth": rd.text(cal, "bit_depth"),
            "grid": {"start_nm": rd.text(cal, "wavelength_range_start_nm"), "end_nm": rd.text(cal, "wavelength_range_end_nm"),
                     "step_nm": rd.text(cal, "wavelength_resolution_nm")},
            "bands": bands, "optics": optics, "corrections": corrections}


def _read_v0(root: ET.Element, rd: _Reader) -> dict:
    sensor = rd.node(root, "sensor_info")
    finfo = rd.node(root, "filter_info")
    cal = rd.node(finfo, "calibration_info")
    bands = [{"index": band.get("pattern_position_index", ""),
              "peaks": [_peak(rd, p, False) for p in rd.node(band, "peaks").findall("peak")],
              "response": rd.vector(rd.node(band, "response_composition/data"))}
             for band in rd.node(finfo, "bands").findall("band")]
    optics, corrections = [], []
    rej = finfo.find("rejection_filter")
    if rej is not None:
        label = (rej.findtext("type") or "rejection_filter").strip()[:64]
        optics.append({"name": label, "response": rd.vector(rd.node(rej, "filter_response/data"))})
    sci = finfo.find("spectral_correction_info")
    if sci is not None:
        vbs = rd.node(sci, "virtual_bands").findall("band")
        if vbs:
            corrections.append({"name": "custom", "virtual_bands": [
                {"wavelength_nm": rd.text(v, "wavelength_nm"),
                 "coefficients": rd.vector(rd.node(v, "custom_spectral_correction/data"))} for v in vbs]})
    return {"sensor_width": rd.text(sensor, "width"), "sensor_height": rd.text(sensor, "height"), **_area(rd, finfo),
            "pattern_width": rd.text(finfo, "pattern_width"), "pattern_height": rd.text(finfo, "pattern_height"),
            "bit_depth": rd.text(sensor, "input_bpp"),
            "grid": {"start_nm": rd.text(cal, "measurement_range_start_nm"),
                     "end_nm": rd.text(cal, "measurement_range_end_nm"),
                     "step_nm": rd.text(cal, "measurement_resolution_nm"), "count": rd.text(cal, "nr_measurements")},
            "bands": bands, "optics": optics, "corrections": corrections}
