"""Label randomisation (Adebayo et al. 2018): the segmentation U-Net trained on permuted labels.

A thin wrapper over `segmentation.train`: the training and validation labels are
randomly permuted (two ways, below), then training runs as usual.

    mode="pixels" (default): all labelled pixels of the set permuted together; class
        frequencies are kept and any relation between a pixel's spectrum, its place and
        its label is gone (the segmentation analogue of permuting image labels).
    mode="frames": whole label maps permuted between frames; the scene layout (road
        below, sky above) survives, only the match of labels to inputs is broken.

With "pixels" the unlabelled pixels (id 0) stay where they are. The validation labels are
permuted the same way, so early stopping selects on the random task, not the true one
(set `TrainConfig.patience` high to let the model memorise, as Adebayo et al. do).
Explain the returned model after export (`segmentation.export_onnx`) and compare its
maps with the trained model's (`hsi_xai_node.reliability.compare_maps`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .config import TrainConfig
from .data import VARIANTS, DriveSet, Variant
from .segmentation import TrainResult, train
from .unet import UNetConfig

MODES = ("pixels", "frames")


def permute_labels(labels: np.ndarray, rng: np.random.Generator, mode: str = "pixels") -> np.ndarray:
    """A copy of (n, h, w) label maps with the labels randomly permuted (module docstring)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    out = np.array(labels, copy=True)
    if mode == "frames":
        return out[rng.permutation(len(out))]
    labelled = labels != 0
    out[labelled] = rng.permutation(labels[labelled])
    return out


def train_with_random_labels(variant: Variant, train_set: DriveSet, val_set: DriveSet, unet: UNetConfig,
                             cfg: TrainConfig, ratio: np.ndarray, mode: str = "pixels", seed: int = 0,
                             log=print) -> TrainResult:
    """`segmentation.train` on copies of the sets with permuted labels; the sets passed in are untouched."""
    rng = np.random.default_rng(seed)
    return train(variant, replace(train_set, labels=permute_labels(train_set.labels, rng, mode)),
                 replace(val_set, labels=permute_labels(val_set.labels, rng, mode)), unet, cfg, ratio, log)


def train_random_label_model(out_dir: Path, steps: int = 300, size: str = "bundled", seeds: int = 4,
                             log=print) -> Path:
    """A 25-band PN U-Net trained on pixel-permuted labels of a few generated drives, exported with
    its card to `out_dir` (the model label randomisation compares a trained model's maps with)."""
    from ..sensor.calibration import load_profile
    from .config import SIZES
    from .data import Split, centre_window, generate, shadow_ratio
    from .segmentation import CLASSES, write_model

    profile = load_profile("hsi-drive")
    train_set = generate(profile, Split(tuple(range(seeds)), 4, 12))
    val_set = generate(profile, Split((1000,), 2, 15))
    variant = VARIANTS["25pn"]
    unet = UNetConfig(in_channels=25, num_classes=len(CLASSES), base_filters=SIZES[size])
    cfg = TrainConfig(steps=steps, eval_every=max(steps // 4, 1), patience=steps)
    result = train_with_random_labels(variant, train_set, val_set, unet, cfg, shadow_ratio(profile), log=log)
    window = centre_window(*val_set.labels.shape[1:], result.model.multiple)
    path, _ = write_model(result, profile, window, Path(out_dir), f"unet_{size}_25pn_random_labels", {},
                          {"data": "generated drives with pixel-permuted labels (label randomisation)",
                           "steps_run": result.steps_run, "size": size})
    return path
