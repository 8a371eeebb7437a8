"""A dataset cube as a model's input: the card's bands by wavelength, its window, and its normalisation and scale
unless the cube holds the model's input values already (`values`)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..model_card import ModelCard
from ..sensor.cube import Cube
from ..sensor.radiometry import per_pixel_normalise, select_bands
from ._hsidrive import DatasetError, SegmentationSample

#: reflectance: the card's normalisation and scale are applied, as the node does to its front end's output;
#: model: the cubes are the model's input values (mmsegmentation's HSI-Drive v2.0 layout feeds them unchanged).
VALUES = ("reflectance", "model")


def dataset_model_input(card: ModelCard, sample: SegmentationSample, wavelengths_nm: np.ndarray, values: str) -> np.ndarray:
    """(1, bands, h, w) float32: the card's bands (by wavelength) of the cube's window, normalised unless the
    cube holds model values already."""
    if sample.cube.shape[0] != len(wavelengths_nm):
        raise DatasetError(f"{sample.name}: {sample.cube.shape[0]} bands, the sensor profile has {len(wavelengths_nm)}")
    cube = Cube(sample.cube, np.asarray(wavelengths_nm, np.float64), np.arange(len(wavelengths_nm)))
    cube = select_bands(cube, list(card.input.bands_nm), card.input.band_tolerance_nm)
    i = card.input
    if values == "model":
        window = cube.data[:, i.crop_top:i.crop_top + i.height, i.crop_left:i.crop_left + i.width]
        if window.shape != tuple(i.shape[1:]):
            raise DatasetError(f"{sample.name}: cube {sample.cube.shape[1:]} cannot hold the model's {i.height}x"
                               f"{i.width} window at ({i.crop_top}, {i.crop_left})")
        return np.ascontiguousarray(window[None], np.float32)
    if i.normalise == "pn":
        cube = per_pixel_normalise(cube)
    try:
        return card.model_input(cube.data)
    except InputError as exc:
        raise DatasetError(f"{sample.name}: {exc}") from None
