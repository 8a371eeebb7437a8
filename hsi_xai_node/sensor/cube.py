"""The spectral cube: band planes plus the wavelength each plane stands for."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Cube:
    """A (bands, rows, cols) array with its band wavelengths.

    `band_indices` says which sensor band each plane came from (in the profile's band
    numbering), or -1 for planes that are mixtures, such as spectrally corrected
    virtual bands. Planes are kept in sensor band order unless a method says otherwise.
    """

    data: np.ndarray
    wavelengths_nm: np.ndarray
    band_indices: np.ndarray

    def __post_init__(self):
        if self.data.ndim != 3:
            raise InputError(f"a cube is (bands, rows, cols); got an array of shape {self.data.shape}")
        n = self.data.shape[0]
        if len(self.wavelengths_nm) != n or len(self.band_indices) != n:
            raise InputError(f"cube has {n} planes but {len(self.wavelengths_nm)} wavelengths "
                             f"and {len(self.band_indices)} band indices")

    @property
    def n_bands(self) -> int:
        return self.data.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)

    def with_data(self, data: np.ndarray) -> "Cube":
        """The same bands holding other values (same number of planes)."""
        return Cube(data, self.wavelengths_nm, self.band_indices)

    def take(self, planes) -> "Cube":
        """The planes at the given positions, in that order."""
        planes = np.asarray(planes, dtype=np.intp)
        return Cube(self.data[planes], self.wavelengths_nm[planes], self.band_indices[planes])

    def sorted_by_wavelength(self) -> "Cube":
        """Planes reordered by increasing wavelength (sensor order is by tile position)."""
        return self.take(np.argsort(self.wavelengths_nm, kind="stable"))

    def plane_nearest(self, wavelength_nm: float, tolerance_nm: float = 2.0) -> int:
        """Position of the plane whose wavelength is nearest to `wavelength_nm`."""
        i = int(np.argmin(np.abs(self.wavelengths_nm - wavelength_nm)))
        if abs(self.wavelengths_nm[i] - wavelength_nm) > tolerance_nm:
            have = ", ".join(f"{w:.2f}" for w in np.sort(self.wavelengths_nm))
            raise InputError(f"no band within {tolerance_nm} nm of {wavelength_nm} nm; "
                             f"the cube has {have} nm")
        return i
