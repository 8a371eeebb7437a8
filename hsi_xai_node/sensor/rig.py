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

Every value is checked when the file is read; a bad one is an InputError naming the file, the
camera and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..errors import InputError
from ..resources import share_path

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


def read_rig(path: str | Path | None = None) -> Rig:
    """The rig of a YAML file (None: the default rig shipped in config/)."""
    path = Path(path) if path is not None else DEFAULT_RIG
    try:
        doc = yaml.safe_load(path.read_text())
        view = doc.get("common_view") or {"width": DEFAULT_COMMON_VIEW[0], "height": DEFAULT_COMMON_VIEW[1]}
        common = (int(view["width"]), int(view["height"]))
        cameras = {}
        for i, c in enumerate(doc["cameras"]):
            h = np.asarray(c["homography"], np.float64)
            if h.shape != (3, 3) or not np.isfinite(h).all() or abs(np.linalg.det(h)) < 1e-12:
                raise ValueError(f"cameras[{i}] ({c.get('name')}): homography must be an invertible 3x3 matrix")
            name = str(c["name"])
            cameras[name] = CameraSpec(name, str(c.get("kind", name)), int(c["width"]), int(c["height"]),
                                       str(c["encoding"]), h)
        return Rig(cameras, common, str(path))
    except FileNotFoundError:
        raise InputError(f"rig file {path}: no such file") from None
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"rig file {path}: malformed ({type(exc).__name__}: {exc})") from None


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
    x0, y0, x1, y1 = (float(v) for v in box)
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64) - 0.5
    out = cv2.perspectiveTransform(corners[None], np.asarray(homography, np.float64))[0] + 0.5
    return (float(out[:, 0].min()), float(out[:, 1].min()), float(out[:, 0].max()), float(out[:, 1].max()))
