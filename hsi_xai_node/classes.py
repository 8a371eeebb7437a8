"""Class tables: HSI-Drive's 5-class segmentation set and the multispectral detection set.

Segmentation ids are HSI-Drive's (0 is unlabelled); detection ids follow the
Multispectral Object Detection dataset (Takumi 2017) in alphabetical order. Colours are
BGR, ready for OpenCV and ROS `bgr8` images.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    bgr: tuple[int, int, int]


SEGMENTATION_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(0, "unlabelled", (0, 0, 0)),
    ClassInfo(1, "road", (128, 64, 128)),
    ClassInfo(2, "road_marks", (255, 255, 255)),
    ClassInfo(3, "vegetation", (35, 142, 107)),
    ClassInfo(4, "sky", (180, 130, 70)),
    ClassInfo(5, "other", (0, 170, 250)),
)
UNLABELLED, ROAD, ROAD_MARKS, VEGETATION, SKY, OTHER = range(6)

#: HSI-Drive v2.0's 11 segmentation classes (its release and mmsegmentation's HSIDrive20Dataset): ids as the
#: annotation PNGs store them, 0 unlabelled (ignored in training and evaluation); colours are its palette, as BGR.
HSI_DRIVE_V2_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(0, "unlabelled", (0, 0, 0)),
    ClassInfo(1, "road", (77, 77, 77)),
    ClassInfo(2, "road_marks", (255, 255, 255)),
    ClassInfo(3, "vegetation", (0, 255, 0)),
    ClassInfo(4, "painted_metal", (0, 0, 255)),
    ClassInfo(5, "sky", (255, 0, 0)),
    ClassInfo(6, "concrete", (0, 51, 102)),
    ClassInfo(7, "pedestrian", (0, 255, 255)),
    ClassInfo(8, "water", (250, 207, 0)),
    ClassInfo(9, "unpainted_metal", (0, 166, 255)),
    ClassInfo(10, "glass", (204, 204, 0)),
)
#: Class tables by the name a user gives them (`hsi-xai import-model --classes`, dataset readers).
SEGMENTATION_CLASS_SETS = {"hsi-drive": SEGMENTATION_CLASSES, "hsi-drive-v2": HSI_DRIVE_V2_CLASSES}

DETECTION_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(0, "bike", (255, 128, 0)),
    ClassInfo(1, "car", (0, 0, 255)),
    ClassInfo(2, "car_stop", (255, 0, 255)),
    ClassInfo(3, "color_cone", (0, 128, 255)),
    ClassInfo(4, "person", (0, 255, 0)),
)
BIKE, CAR, CAR_STOP, COLOR_CONE, PERSON = range(5)


def class_id(name: str, classes: tuple[ClassInfo, ...] = SEGMENTATION_CLASSES) -> int:
    """Id of a class by name."""
    for c in classes:
        if c.name == name:
            return c.id
    raise KeyError(f"no class {name!r}; known: {[c.name for c in classes]}")


def palette(classes: tuple[ClassInfo, ...] = SEGMENTATION_CLASSES) -> np.ndarray:
    """(256, 3) uint8 BGR lookup table; ids without a class are black."""
    lut = np.zeros((256, 3), np.uint8)
    for c in classes:
        lut[c.id] = c.bgr
    return lut


_SEGMENTATION_PALETTE = palette()


def bgr_lookup(indices: np.ndarray, table: np.ndarray) -> np.ndarray:
    """table[indices] for a (256, 3) uint8 BGR table (a palette, a colormap): an (h, w) uint8 image through OpenCV's
    lookup (the table as applyColorMap's user colour table, 5x numpy's take on a 208 x 400 frame), anything else
    through numpy's take."""
    if indices.dtype != np.uint8 or indices.ndim != 2 or indices.size == 0:
        return np.take(table, indices, axis=0)
    return cv2.applyColorMap(np.ascontiguousarray(indices), np.ascontiguousarray(table).reshape(256, 1, 3))


def colourise(labels: np.ndarray, classes: tuple[ClassInfo, ...] = SEGMENTATION_CLASSES) -> np.ndarray:
    """A label map (h, w) of class ids as a (h, w, 3) uint8 BGR image."""
    lut = _SEGMENTATION_PALETTE if classes is SEGMENTATION_CLASSES else palette(classes)
    return bgr_lookup(np.asarray(labels, dtype=np.uint8), lut)
