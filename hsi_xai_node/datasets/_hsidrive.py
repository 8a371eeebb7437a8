"""HSI-Drive v2.0 on disk, in the two layouts users have it in (DESIGN.md section 8).

* mmsegmentation's (`HSIDrive20Dataset`): `images/{training,validation,test}/NAME.npy`, each cube
  height x width x 25 (channels last, loaded as stored), and `annotations/{split}/NAME.png`, label ids
  0-10 (0 unlabelled). mmsegmentation's config feeds the cubes to the model as they are (no mean/std):
  their values are the model's input values.
* the original release: `.mat` files holding the cube under `cube_fl32` (or `cube_u16`), in an axis order
  that differs between release versions (25 x 216 x 409 in v1.1): `axes` says which ("chw" or "hwc") and
  the shape is checked against it; labels, where present, as `NAME.png` beside the cube or in a `labels/`
  folder next to the cubes' folder.

Bands are in the camera's tile order, which is the built-in `hsi-drive` sensor profile's band order.
Each sample keeps its file name (HSI-Drive's image numbering: season, weather, daytime and scene) as
metadata. A file that cannot be read, or whose shape or values are not the layout's, is one
`DatasetError` naming the file; readers yield it in place of the sample so a caller can count and skip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation",
          "test": "test"}
BANDS = 25
MAX_LABEL = 10  # HSI-Drive v2.0's ids 0-10
MAT_KEYS = ("cube_fl32", "cube_u16")
_NPY_LIMIT = 512 * 1024 * 1024  # bytes: a real cube is 216 x 409 x 25 float32 (8.8 MB); refuse a 'cube' of GBs


class DatasetError(InputError):
    """A dataset folder, or one of its files, is not in the documented layout."""


@dataclass
class SegmentationSample:
    name: str  # the file stem: HSI-Drive's image numbering
    cube: np.ndarray  # (bands, rows, cols) float32, bands in the sensor's tile order
    labels: np.ndarray | None  # (rows, cols) uint8 ids, 0 unlabelled; None when the dataset has none
    meta: dict = field(default_factory=dict)


def _labels(path: Path, shape: tuple[int, int], max_label: int) -> np.ndarray:
    import cv2

    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise DatasetError(f"{path}: not a readable PNG")
    if labels.ndim == 3:  # a palette PNG saved as colour is not an id map
        raise DatasetError(f"{path}: {labels.shape[2]} channels; annotations are single-channel id images")
    if labels.shape != shape:
        raise DatasetError(f"{path}: annotation {labels.shape[0]}x{labels.shape[1]} does not match its cube "
                           f"{shape[0]}x{shape[1]}")
    if labels.max() > max_label:
        raise DatasetError(f"{path}: label id {int(labels.max())} above the dataset's {max_label}")
    return labels.astype(np.uint8)


def _checked_cube(cube, path: Path, axes: str) -> np.ndarray:
    if not isinstance(cube, np.ndarray) or cube.ndim != 3 or cube.dtype.kind not in "fiu":
        raise DatasetError(f"{path}: not a 3-D numeric cube ({getattr(cube, 'shape', type(cube).__name__)})")
    band_axis = 2 if axes == "hwc" else 0
    if cube.shape[band_axis] != BANDS:
        other = [a for a in (0, 2) if a != band_axis and cube.shape[a] == BANDS]
        hint = f" (its axis {other[0]} has {BANDS}: the other axis order?)" if other else ""
        raise DatasetError(f"{path}: cube {cube.shape} has no {BANDS} bands on axis {band_axis} ({axes}){hint}")
    cube = np.moveaxis(cube, 2, 0) if axes == "hwc" else cube
    cube = np.ascontiguousarray(cube, dtype=np.float32)
    if not np.isfinite(cube).all():
        raise DatasetError(f"{path}: the cube holds NaN or infinite values")
    return cube


def read_npy_cube(path: Path) -> np.ndarray:
    """One mmsegmentation-layout cube (height x width x 25) as (25, height, width) float32."""
    if path.stat().st_size > _NPY_LIMIT:
        raise DatasetError(f"{path}: {path.stat().st_size / 2**20:.0f} MB, far larger than a cube")
    try:
        cube = np.load(path, allow_pickle=False)  # never unpickle a data file
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0]})") from None
    return _checked_cube(cube, path, "hwc")


def read_mat_cube(path: Path, axes: str = "chw") -> np.ndarray:
    """One original-release cube (key cube_fl32 or cube_u16), `axes` as stored, as (25, rows, cols) float32."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DatasetError("reading .mat cubes needs scipy: pip install 'hsi_xai_node[datasets]'") from None
    try:
        doc = loadmat(str(path))
    except NotImplementedError:  # MATLAB v7.3 files are HDF5
        raise DatasetError(f"{path}: a MATLAB v7.3 (HDF5) file; save it as v7 (-v7) or give the .npy layout") from None
    except (ValueError, OSError, TypeError) as exc:  # scipy's errors for a damaged or foreign file
        raise DatasetError(f"{path}: not a readable .mat file ({str(exc).splitlines()[0]})") from None
    key = next((k for k in MAT_KEYS if k in doc), None)
    if key is None:
        keys = sorted(k for k in doc if not k.startswith("__"))
        raise DatasetError(f"{path}: no {' or '.join(MAT_KEYS)} in the file (it holds {keys[:8]})")
    return _checked_cube(doc[key], path, axes)


class HsiDriveMmseg:
    """HSI-Drive v2.0 in mmsegmentation's layout: one split's (cube, annotation) pairs, sorted by name."""

    layout = "hsi-drive-mmseg"

    def __init__(self, root: str | Path, split: str = "test", limit: int | None = None):
        self.root = Path(root)
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; HSI-Drive v2.0 has {sorted(set(SPLITS.values()))}")
        self.split = SPLITS[split]
        images = self.root / "images" / self.split
        if not images.is_dir():
            raise DatasetError(f"{self.root}: no images/{self.split} folder (mmsegmentation's HSI-Drive v2.0 layout: "
                               "images/{training,validation,test}/*.npy, annotations/{...}/*.png)")
        self.files = sorted(images.glob("*.npy"))[:limit]
        if not self.files:
            raise DatasetError(f"{images}: no .npy cubes")
        self.annotations = self.root / "annotations" / self.split

    def describe(self) -> str:
        return f"HSI-Drive v2.0 (mmsegmentation layout) {self.root}, split {self.split}, {len(self)} cubes"

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self):
        for path in self.files:
            try:
                cube = read_npy_cube(path)
                label_path = self.annotations / f"{path.stem}.png"
                labels = _labels(label_path, cube.shape[1:], MAX_LABEL) if label_path.is_file() else None
                yield SegmentationSample(path.stem, cube, labels, {"image": path.stem, "split": self.split})
            except DatasetError as exc:
                yield exc


class HsiDriveMat:
    """The original release's .mat cubes under a folder (recursively), labels as NAME.png beside each cube or in
    a sibling `labels/` folder."""

    layout = "hsi-drive-mat"

    def __init__(self, root: str | Path, axes: str = "chw", limit: int | None = None):
        self.root = Path(root)
        if axes not in ("chw", "hwc"):
            raise DatasetError(f"axes must be 'chw' or 'hwc', got {axes!r}")
        self.axes = axes
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such folder")
        self.files = sorted(self.root.rglob("*.mat"))[:limit]
        if not self.files:
            raise DatasetError(f"{self.root}: no .mat cubes")

    def describe(self) -> str:
        return f"HSI-Drive (.mat cubes, axes {self.axes}) {self.root}, {len(self)} cubes"

    def __len__(self) -> int:
        return len(self.files)

    def _label_path(self, cube: Path) -> Path | None:
        for candidate in (cube.with_suffix(".png"), cube.parent.parent / "labels" / f"{cube.stem}.png",
                          cube.parent / "labels" / f"{cube.stem}.png"):
            if candidate.is_file():
                return candidate
        return None

    def __iter__(self):
        for path in self.files:
            try:
                cube = read_mat_cube(path, self.axes)
                label_path = self._label_path(path)
                labels = _labels(label_path, cube.shape[1:], MAX_LABEL) if label_path else None
                yield SegmentationSample(path.stem, cube, labels, {"image": path.stem})
            except DatasetError as exc:
                yield exc
