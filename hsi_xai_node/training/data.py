"""Training data: generated drives -> reflectance cubes, labels and sun maps, split by seed.

The split is by drive seed, so no scene is in two splits: train, validation and test
drives never share a road, objects or shadows. Cubes are kept as reflectance (all 25
bands, float16) so every model variant (band set, PN or not) and every augmentation is
applied at batch time from the same data.

Augmentation is physical, not cosmetic:
* illumination: the whole cube scaled by a random factor (a dimmer or brighter frame
  than the white reference was taken under);
* shadow: a random blob multiplied, band by band, by the shadow-to-sun ratio of a white
  surface under the generator's daylight model (diffuse / (direct + diffuse)), times a
  random depth; PN removes the overall dimming but not this spectral tilt.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..classes import SEGMENTATION_CLASSES, ClassInfo
from ..drive_splits import DEFAULT_SPLITS, Split  # noqa: F401  (re-exported: the training modules' split names)
from ..scenes.drive import DriveGenerator
from ..scenes.spectra import WAVELENGTHS_NM, daylight
from ..sensor.calibration import SensorProfile
from ..sensor.frontend import FrontEnd, FrontEndConfig


@dataclass
class DriveSet:
    """Reflectance cubes (n, 25, h, w) float16, labels (n, h, w) uint8, sun share (n, h, w) uint8 0-255 (None for a
    dataset without one), and the labelled classes (ids 1..k ride in logits channels 0..k-1)."""

    reflectance: np.ndarray
    labels: np.ndarray
    sun: np.ndarray | None
    wavelengths_nm: np.ndarray
    classes: tuple[ClassInfo, ...] = tuple(c for c in SEGMENTATION_CLASSES if c.id > 0)
    source: str = "generated drives"

    def __len__(self) -> int:
        return len(self.labels)


def generate(profile: SensorProfile, split: Split, progress=None) -> DriveSet:
    refl, labels, sun = [], [], []
    for seed in split.seeds:
        gen = DriveGenerator(profile, seed=seed, render_cameras=False)
        dark, white = gen.references()
        fe = FrontEnd(profile, dark, white, FrontEndConfig(normalise=False))
        for k in range(split.frames_per_seed):
            frame = gen.frame(k * split.stride)
            r = fe.process(frame.raw).cube.data
            refl.append(np.clip(r, 0.0, 4.0).astype(np.float16))
            labels.append(frame.labels)
            sun.append((np.clip(frame.sun, 0, 1) * 255).astype(np.uint8))
            if progress:
                progress()
    return DriveSet(np.stack(refl), np.stack(labels), np.stack(sun), profile.band_wavelengths_nm.copy())


def from_dataset(dataset, wavelengths_nm: np.ndarray, classes: tuple[ClassInfo, ...], log=print) -> DriveSet:
    """A labelled dataset's readable reflectance cubes as a DriveSet (unreadable or unlabelled files skipped and
    reported); the cubes must share one size and hold label ids of `classes` only (and 0)."""
    from ..datasets import DatasetError

    refl, labels, skipped = [], [], []
    for sample in dataset:
        if isinstance(sample, DatasetError) or sample.labels is None:
            skipped.append(str(sample) if isinstance(sample, DatasetError) else f"{sample.name}: no annotation")
            continue
        if refl and sample.cube.shape != refl[0].shape:
            raise DatasetError(f"{sample.name}: cube {sample.cube.shape}, the others are {refl[0].shape}")
        unknown = set(np.unique(sample.labels).tolist()) - {0} - {c.id for c in classes}
        if unknown:
            raise DatasetError(f"{sample.name}: label ids {sorted(unknown)} are not of the classes "
                               f"{[c.name for c in classes]}")
        refl.append(np.clip(sample.cube, 0.0, 4.0).astype(np.float16))
        labels.append(sample.labels)
    if skipped:
        log(f"  {dataset.describe()}: skipped {len(skipped)} file(s), first: {skipped[0]}")
    if not refl:
        raise DatasetError(f"{dataset.describe()}: no readable labelled cube")
    return DriveSet(np.stack(refl), np.stack(labels), None, np.asarray(wavelengths_nm, np.float64), classes,
                    dataset.describe())


def shadow_ratio(profile: SensorProfile, elevation_deg: float = 45.0) -> np.ndarray:
    """Per band: signal of a white surface in shadow over the same in sun (daylight model)."""
    light = daylight(elevation_deg)
    resp = profile.effective_responses(WAVELENGTHS_NM)
    return ((resp @ light.diffuse) / (resp @ light.total)).astype(np.float32)


@dataclass(frozen=True)
class Variant:
    """A model input: which bands, normalised or not, and the scale that makes it ~unit size."""

    name: str
    bands_nm: tuple[float, ...] | None  # None: all bands in sensor order
    normalise: bool

    def bands(self, wavelengths_nm: np.ndarray) -> np.ndarray:
        if self.bands_nm is None:
            return np.arange(len(wavelengths_nm))
        return np.array([int(np.argmin(np.abs(wavelengths_nm - w))) for w in self.bands_nm])

    def scale(self, n_bands: int) -> float:
        # PN values average 1/n; reflectance is already ~0-1
        return float(n_bands) if self.normalise else 1.0

    def transform(self, refl: np.ndarray, wavelengths_nm: np.ndarray) -> np.ndarray:
        """(n, 25, h, w) reflectance -> (n, bands, h, w) float32 model input."""
        idx = self.bands(wavelengths_nm)
        x = refl[:, idx].astype(np.float32)
        if self.normalise:
            total = x.sum(axis=1, keepdims=True)
            x = np.divide(x, total, out=np.zeros_like(x), where=total > 1e-6)
        return x * np.float32(self.scale(len(idx)))


#: Paper 000's study, plus the 25-band model without PN as the control for "does PN help".
VARIANTS = {
    "1": Variant("1", (731.88,), False),
    "3": Variant("3", (770.58, 858.95, 944.49), False),
    "25pn": Variant("25pn", None, True),
    "25": Variant("25", None, False),
}


def augment(refl: np.ndarray, rng: np.random.Generator, ratio: np.ndarray) -> np.ndarray:
    """Illumination and shadow augmentation of a (n, 25, h, w) float32 reflectance batch, in place."""
    n, _, h, w = refl.shape
    for i in range(n):
        refl[i] *= np.float32(rng.uniform(0.6, 1.4))
        if rng.random() < 0.5:
            mask = np.zeros((h, w), np.float32)
            centre = (int(rng.integers(0, w)), int(rng.integers(h // 3, h)))
            axes = (int(rng.integers(w // 10, w // 2)), int(rng.integers(h // 12, h // 4)))
            cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
            mask = cv2.GaussianBlur(mask, (0, 0), 2.0)
            depth = np.float32(rng.uniform(0.6, 1.0))
            # factor per band: 1 outside the blob, `ratio` at full depth inside it
            factor = 1.0 - depth * mask[None] * (1.0 - ratio[:, None, None])
            refl[i] *= factor
    return refl


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """1/sqrt(frequency) weights for label ids 1..num_classes, normalised to mean 1."""
    counts = np.bincount(labels.ravel(), minlength=num_classes + 1)[1:num_classes + 1].astype(np.float64)
    w = 1.0 / np.sqrt(np.maximum(counts, 1.0) / counts.sum())
    return (w / w.mean()).astype(np.float32)


def centre_window(h: int, w: int, multiple: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the largest centred window with sides a multiple of `multiple`."""
    wh, ww = (h // multiple) * multiple, (w // multiple) * multiple
    return (h - wh) // 2, (w - ww) // 2, wh, ww
