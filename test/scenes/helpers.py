"""Shared fixtures for the scene tests: synthetic layout maps and reflectance cubes."""

import numpy as np

from hsi_xai_node.classes import OTHER, SKY
from hsi_xai_node.scenes.layout import LayoutMaps, SceneConditions, Surface
from hsi_xai_node.scenes.spectra import MATERIAL_IDS, SKY_MATERIAL
from hsi_xai_node.sensor.demosaic import subsample


def flat_maps(profile, material: str, texture: np.ndarray | float = 1.0, sun: float = 1.0) -> LayoutMaps:
    """The whole filter area one material, in full sun unless told otherwise."""
    shape = (profile.area_height, profile.area_width)
    return LayoutMaps(
        surface=np.ones(shape, np.uint16), sun=np.full(shape, sun, np.float32),
        texture=np.broadcast_to(np.asarray(texture, np.float32), shape).copy(),
        surfaces=(Surface(SKY, SKY_MATERIAL), Surface(OTHER, MATERIAL_IDS[material])),
        objects=(), horizon_y=0.0, conditions=SceneConditions(45.0, 90.0, 1.0, 0.0))


def reflectance_cube(raw, dark, white, profile) -> np.ndarray:
    """(raw - dark) / (white - dark) on the sub-sampled cube, float64."""
    c, d, w = (subsample(x, profile).data.astype(np.float64) for x in (raw, dark, white))
    return (c - d) / (w - d)
