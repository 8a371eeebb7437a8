"""Labelled datasets users bring, read in their documented layouts (and generated drives in the same shape).

    dataset = open_segmentation_dataset("data/HSIDrive20", "hsi-drive-mmseg", split="test")
    for sample in dataset:  # SegmentationSample, or a DatasetError naming a bad file (count it, skip it)
        sample.cube, sample.labels, sample.meta

`_hsidrive` reads HSI-Drive v2.0 (mmsegmentation's .npy/.png layout, the release's .mat cubes);
`_generated` renders held-out generated drives through the node's front end.
"""

from __future__ import annotations

from pathlib import Path

from ._generated import GeneratedDrives
from ._hsidrive import DatasetError, HsiDriveMat, HsiDriveMmseg, SegmentationSample  # noqa: F401
from ._inputs import VALUES, dataset_model_input  # noqa: F401
from ._mods import DetectionSample, ModsDataset, read_split, read_voc, read_yolo, stack_registered  # noqa: F401

SEGMENTATION_LAYOUTS = ("hsi-drive-mmseg", "hsi-drive-mat", "generated")


def default_values(dataset) -> str:
    """What a layout's cubes hold when the user does not say (DESIGN.md section 8)."""
    return "model" if dataset.layout == "hsi-drive-mmseg" else "reflectance"


def guess_layout(root: Path) -> str:
    if (root / "images").is_dir() and (root / "annotations").is_dir():
        return "hsi-drive-mmseg"
    if root.is_dir() and next(root.rglob("*.mat"), None) is not None:
        return "hsi-drive-mat"
    raise DatasetError(f"{root}: neither mmsegmentation's HSI-Drive v2.0 layout (images/, annotations/) nor a folder "
                       "of .mat cubes; give --layout")


def open_segmentation_dataset(source: str, layout: str | None = None, split: str = "test", axes: str = "chw",
                              limit: int | None = None):
    """`source` is a folder, or 'generated' (held-out generated drives, `split` as a seed list 'A-B')."""
    if layout is None:
        layout = "generated" if source == "generated" else guess_layout(Path(source))
    if layout not in SEGMENTATION_LAYOUTS:
        raise DatasetError(f"unknown layout {layout!r}; known: {list(SEGMENTATION_LAYOUTS)}")
    if layout == "hsi-drive-mmseg":
        return HsiDriveMmseg(source, split, limit)
    if layout == "hsi-drive-mat":
        return HsiDriveMat(source, axes, limit)
    return GeneratedDrives.from_split(split, limit)
