"""The multispectral camera rig: which cameras, their sizes and encodings, and where each one looks.

    rig = load_rig()                  # the default: config/rig_default.yaml (the generated drives' cameras)
    rig = load_rig("my_car.yaml")     # a vehicle's own calibration
    rig.cameras["rgb"].homography     # 3x3, common-view pixel centres -> camera pixel centres
    rig.common_view                   # (width, height) of the registered common view

A rig is data, read from a YAML file (the same file the scene generator renders its cameras
from, so neither imports the other):

    common_view: {width: 640, height: 480}      # optional; default 640x480
    cameras:
      - {name: rgb, kind: rgb, encoding: bgr8, width: 640, height: 480, homography: [[...], [...], [...]]}

Every value is checked against RigSchema when the file is read; a bad one is a RigError naming the
file and the field (`cameras[1].homography: ...`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import RigError
from ..files import read_yaml
from ..resources import share_path
from ..schema import Finite, Name, PixelCount, validation_message

DEFAULT_RIG = share_path("config/rig_default.yaml")
DEFAULT_COMMON_VIEW = (640, 480)


@dataclass(frozen=True, eq=False)
class CameraSpec:
    """A multispectral camera: size, ROS encoding, kind, homography common view -> camera."""

    name: str
    kind: str  # "rgb", "nir", "mir" or "fir"
    width: int
    height: int
    encoding: str
    homography: np.ndarray = field(default_factory=lambda: np.eye(3))


@dataclass(frozen=True, eq=False)
class Rig:
    cameras: dict[str, CameraSpec]
    common_view: tuple[int, int] = DEFAULT_COMMON_VIEW  # width, height
    source: str = ""


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class CameraSchema(_Strict):
    name: Name
    kind: Name | None = None
    encoding: Literal["bgr8", "rgb8", "mono8", "mono16"]
    width: PixelCount
    height: PixelCount
    homography: list[list[Finite]] = Field(min_length=3, max_length=3)

    @model_validator(mode="after")
    def _invertible(self):
        h = np.asarray(self.homography, np.float64)
        if h.shape != (3, 3) or abs(np.linalg.det(h)) < 1e-12:
            raise ValueError("homography must be an invertible 3x3 matrix")
        return self


class ViewSchema(_Strict):
    width: PixelCount
    height: PixelCount


class RigSchema(_Strict):
    common_view: ViewSchema = ViewSchema(width=DEFAULT_COMMON_VIEW[0], height=DEFAULT_COMMON_VIEW[1])
    cameras: list[CameraSchema] = Field(min_length=1, max_length=16)

    @model_validator(mode="after")
    def _unique(self):
        names = [c.name for c in self.cameras]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"camera name(s) {twice} appear more than once")
        return self


def read_rig(path: str | Path | None = None) -> Rig:
    """The rig of a YAML file (None: the default rig shipped in config/); a RigError names the field."""
    path = Path(path) if path is not None else DEFAULT_RIG
    doc = read_yaml(path, "rig file", RigError)  # size, depth, count bounded; no aliases (files.py)
    if not isinstance(doc, dict):
        raise RigError(f"rig file {path}: must be a mapping with 'cameras', got {type(doc).__name__}")
    try:
        rig = RigSchema.model_validate(doc)
    except ValidationError as exc:
        raise RigError(validation_message(exc, f"rig file {path}")) from None
    cameras = {c.name: CameraSpec(c.name, c.kind or c.name, c.width, c.height, c.encoding,
                                  np.asarray(c.homography, np.float64)) for c in rig.cameras}
    return Rig(cameras, (rig.common_view.width, rig.common_view.height), str(path))


def load_rig(path: str | Path | None = None) -> dict[str, CameraSpec]:
    """Camera name -> CameraSpec of a rig file (None: the default rig)."""
    return read_rig(path).cameras


def default_cameras() -> tuple[CameraSpec, ...]:
    """The default rig's cameras, in the file's order."""
    return tuple(read_rig().cameras.values())


def common_view_size(path: str | Path | None = None) -> tuple[int, int]:
    """(width, height) of a rig's registered common view."""
    return read_rig(path).common_view


def transform_box(box, homography: np.ndarray) -> tuple[float, float, float, float]:
    """Axis-aligned bounds of a pixel-edge box after a pixel-centre homography."""
    return transform_boxes([box], homography)[0]


def transform_boxes(boxes, homography: np.ndarray) -> list[tuple[float, float, float, float]]:
    """`transform_box` of each of `boxes` ((n, 4) x0, y0, x1, y1), all corners carried over in one call (a frame's
    detections: one OpenCV call instead of one per box; each point is transformed on its own, so the bounds are
    the same floats)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(b):
        return []
    low, high = corner_bounds(b - 0.5, homography)  # pixel edges to the centres' coordinates and back
    return [(x0, y0, x1, y1) for (x0, y0), (x1, y1) in zip((low + 0.5).tolist(), (high + 0.5).tolist())]


def corner_bounds(rects: np.ndarray, homography: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """((n, 2) lowest, (n, 2) highest) x and y of each rectangle's four corners ((n, 4) x0, y0, x1, y1 as given, no
    half-pixel shift) after `homography`, all corners in one OpenCV call."""
    corners = rects[:, [0, 1, 2, 1, 2, 3, 0, 3]]  # per rectangle (x0, y0), (x1, y0), (x1, y1), (x0, y1)
    out = cv2.perspectiveTransform(corners.reshape(1, -1, 2), np.asarray(homography, np.float64)).reshape(-1, 4, 2)
    return out.min(axis=1), out.max(axis=1)
