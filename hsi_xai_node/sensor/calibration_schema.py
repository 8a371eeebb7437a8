"""The numeric fields of an imec calibration XML, declared with their physical ranges (pydantic).

`sensor.calibration` reads the XML into this structure of number strings (an element that should
appear once but appears twice is refused there), and `ImecCalibration.model_validate` turns the
strings into numbers and checks them, before any array is sized from them:

    sizes          integers ("3.7", "1e400" and "" are not), sensor 1..65535 px, pattern 1..16 per side,
                   the filter area inside the sensor and at least one pattern tile
    bit depth      1..16
    grid           finite, start < end, step > 0, at most MAX_SAMPLES samples (v0: the declared count agrees)
    bands          exactly one per pattern position, indices 0..n-1 each once
    peaks          1..8 per band, orders integers >= 1 and each once, a first-order peak always; wavelength
                   inside the response grid, FWHM > 0, contribution in [0, 1], QE >= 0 (v1 gives a fraction,
                   v0 a percentage that reaches 111 in the bundled file: at most 1000)
    vectors        as many finite values as the grid (or the band count) needs, and as their nr_elements says

A value outside these is a CalibrationError naming the file, the field and the problem, in one
bounded line; none of them makes the parser allocate more than the file's own size warrants.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

MAX_SAMPLES = 20_000  # response-grid samples (the vendor files have 601)
MAX_PATTERN = 16  # pattern tiles per side (imec mosaics: 4x4 and 5x5)
MAX_VECTOR_CHARS = 4_000_000  # characters of one comma-separated vector


def _strip(v):
    return v.strip() if isinstance(v, str) else v


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


Int = Annotated[int, BeforeValidator(_strip)]
Float = Annotated[float, BeforeValidator(_strip), AfterValidator(_finite)]
Size = Annotated[Int, Field(ge=1, le=65535)]
Offset = Annotated[Int, Field(ge=0, le=65535)]


def parse_vector(text: str, declared: str | None) -> np.ndarray:
    """A comma-separated list of finite numbers; `declared` is its nr_elements attribute, if any."""
    if len(text) > MAX_VECTOR_CHARS:
        raise ValueError(f"has {len(text)} characters, more than any calibration vector needs")
    items = [v for v in text.split(",") if v.strip()]
    try:
        values = np.array([float(v) for v in items], dtype=np.float64)
    except ValueError:
        raise ValueError("is not a comma-separated list of numbers") from None
    if not np.all(np.isfinite(values)):
        raise ValueError("contains non-finite values")
    if declared is not None:
        try:
            n = int(declared.strip())
        except ValueError:
            raise ValueError(f"nr_elements={declared[:20]!r} is not an integer") from None
        if n != values.size:
            raise ValueError(f"has {values.size} values but declares nr_elements={n}")
    return values


class Vector(BaseModel):
    """A comma-separated vector as read (text and nr_elements attribute), parsed when validated."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    text: str
    declared: str | None = None
    values: np.ndarray | None = None

    @model_validator(mode="after")
    def _parse(self):
        self.values = parse_vector(self.text, self.declared)
        return self


class PeakIn(BaseModel):
    order: Annotated[Int, Field(ge=1, le=10)] = 1
    wavelength_nm: Annotated[Float, Field(gt=0, lt=100_000)]
    fwhm_nm: Annotated[Float, Field(gt=0, le=1000)]
    qe: Annotated[Float, Field(ge=0, le=1000)] | None = None  # v1: a fraction; v0: up to ~111 (a percentage with gain)
    contribution: Annotated[Float, Field(ge=0, le=1)] | None = None


class BandIn(BaseModel):
    index: Annotated[Int, Field(ge=0, le=MAX_PATTERN ** 2 - 1)]
    peaks: list[PeakIn] = Field(min_length=1, max_length=8)
    response: Vector

    @model_validator(mode="after")
    def _orders(self):
        orders = [p.order for p in self.peaks]
        if len(set(orders)) != len(orders):
            raise ValueError(f"band {self.index}: peak orders {orders} repeat")
        if 1 not in orders:
            raise ValueError(f"band {self.index}: no first-order peak (orders {orders})")
        return self


class GridIn(BaseModel):
    start_nm: Annotated[Float, Field(ge=0, lt=100_000)]
    end_nm: Annotated[Float, Field(gt=0, lt=100_000)]
    step_nm: Annotated[Float, Field(gt=0)]
    count: Int | None = None  # v0's nr_measurements

    @model_validator(mode="after")
    def _range(self):
        if self.end_nm <= self.start_nm:
            raise ValueError(f"wavelength range {self.start_nm}-{self.end_nm} nm is empty")
        n = (self.end_nm - self.start_nm) / self.step_nm
        if n + 1 > MAX_SAMPLES:
            raise ValueError(f"{self.start_nm}-{self.end_nm} nm at {self.step_nm} nm would be {n + 1:.3g} samples "
                             f"(at most {MAX_SAMPLES})")
        if self.count is not None and self.count != self.samples:
            raise ValueError(f"nr_measurements={self.count} does not match the range {self.start_nm:g}-"
                             f"{self.end_nm:g} nm ({self.samples} samples)")
        return self

    @property
    def samples(self) -> int:
        return int(round((self.end_nm - self.start_nm) / self.step_nm)) + 1

    def wavelengths(self) -> np.ndarray:
        return np.linspace(self.start_nm, self.end_nm, self.samples)


class VirtualBandIn(BaseModel):
    wavelength_nm: Annotated[Float, Field(gt=0, lt=100_000)]
    fwhm_nm: Annotated[Float, Field(gt=0, le=1000)] | None = None
    coefficients: Vector


class CorrectionIn(BaseModel):
    name: str
    virtual_bands: list[VirtualBandIn] = Field(min_length=1, max_length=1024)


class OpticIn(BaseModel):
    name: str
    response: Vector


class ImecCalibration(BaseModel):
    """Everything numeric of one imec calibration file, checked before it is used."""

    sensor_width: Size
    sensor_height: Size
    offset_x: Offset
    offset_y: Offset
    area_width: Size
    area_height: Size
    pattern_width: Annotated[Int, Field(ge=1, le=MAX_PATTERN)]
    pattern_height: Annotated[Int, Field(ge=1, le=MAX_PATTERN)]
    bit_depth: Annotated[Int, Field(ge=1, le=16)]
    grid: GridIn
    bands: list[BandIn] = Field(min_length=1, max_length=MAX_PATTERN ** 2)
    optics: list[OpticIn] = Field(default_factory=list, max_length=64)
    corrections: list[CorrectionIn] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _consistent(self):
        if self.offset_x + self.area_width > self.sensor_width or self.offset_y + self.area_height > self.sensor_height:
            raise ValueError(f"filter area {self.area_width}x{self.area_height} at ({self.offset_x}, {self.offset_y}) "
                             f"lies outside the {self.sensor_width}x{self.sensor_height} sensor")
        if self.area_width < self.pattern_width or self.area_height < self.pattern_height:
            raise ValueError(f"filter area {self.area_width}x{self.area_height} is smaller than one "
                             f"{self.pattern_width}x{self.pattern_height} pattern tile")
        n = self.pattern_width * self.pattern_height
        indices = [b.index for b in self.bands]
        twice = sorted({i for i in indices if indices.count(i) > 1})
        if twice:
            raise ValueError(f"band index(es) {twice[:10]} appear more than once")
        outside = sorted(i for i in indices if i >= n)
        if outside:
            raise ValueError(f"band index(es) {outside[:10]} outside 0..{n - 1} for a {n}-band pattern")
        missing = sorted(set(range(n)) - set(indices))
        if missing:
            raise ValueError(f"missing band(s) {missing[:10]}{' ...' if len(missing) > 10 else ''}: the pattern "
                             f"needs {n} bands, the file has {len(indices)}")
        lo, hi, samples = self.grid.start_nm, self.grid.end_nm, self.grid.samples
        for b in self.bands:
            for p in b.peaks:
                if not lo <= p.wavelength_nm <= hi:
                    raise ValueError(f"band {b.index}: peak (order {p.order}) at {p.wavelength_nm:g} nm lies outside "
                                     f"the response grid {lo:g}-{hi:g} nm")
            if b.response.values.size != samples:
                raise ValueError(f"band {b.index} <response>: has {b.response.values.size} values, expected {samples}")
        for o in self.optics:
            if o.response.values.size != samples:
                raise ValueError(f"optical component {o.name} <response>: has {o.response.values.size} values, "
                                 f"expected {samples}")
        for c in self.corrections:
            for k, v in enumerate(c.virtual_bands):
                if v.coefficients.values.size != n:
                    raise ValueError(f"correction matrix {c.name!r} virtual band {k}: has "
                                     f"{v.coefficients.values.size} coefficients, expected {n}")
        return self
