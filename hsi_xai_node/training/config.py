"""Training settings that the CLI needs without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

SIZES = {"bundled": 12, "hsi-drive": 32, "tiny": 4}  # U-Net base filters: bundled (~4.4 MB), HSI-Drive's (~31 MB), smoke tests


@dataclass
class TrainConfig:
    steps: int = 900
    batch: int = 8
    crop: tuple[int, int] = (112, 208)
    lr: float = 3e-3
    eval_every: int = 75
    patience: int = 4  # evaluations without improvement before stopping
    seed: int = 0
    threads: int = 2


@dataclass
class DetectionTrainConfig:
    steps: int = 8000
    batch: int = 8
    crop: tuple[int, int] = (128, 160)  # training crops (h, w), multiples of the largest stride
    zoom: tuple[float, float] = (0.7, 1.8)  # crop magnification, drawn log-uniformly (multi-scale training)
    ignore_below_px: float = 4.0  # objects lower than this in a crop are neither learnt nor background
    balance: bool = True  # repeat-factor sampling of frames with rare classes (LVIS)
    lr: float = 3e-3
    weight_decay: float = 1e-4
    eval_every: int = 250
    seed: int = 0
    threads: int = 2
