"""Anchor boxes of the detector: one set per feature level, in the order the heads emit scores.

A head's output at level l is (N, anchors_per_cell * k, H_l, W_l); it is permuted to
(N, H_l, W_l, anchors_per_cell, k) and flattened, and the levels are concatenated. So
anchor index = level offset + (row * W_l + col) * anchors_per_cell + a, with
a = scale_index * len(ratios) + ratio_index. Boxes are (x0, y0, x1, y1) pixel edges of
the network input; cell (row, col) of a stride-s level is centred at ((col + 0.5) s, (row + 0.5) s).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AnchorConfig:
    strides: tuple[int, ...] = (4, 8, 16, 32)
    sizes: tuple[float, ...] = (8.0, 16.0, 32.0, 64.0)  # base anchor side per level, pixels
    scales: tuple[float, ...] = (1.0, 1.5)
    ratios: tuple[float, ...] = (0.4, 1.0, 2.5)  # width / height: people and cones, square, cars and car stops

    def __post_init__(self):
        if len(self.strides) != len(self.sizes) or not self.strides:
            raise ValueError(f"anchors need one size per stride, got strides {self.strides} and sizes {self.sizes}")
        if min(self.scales + self.ratios + self.sizes) <= 0:
            raise ValueError("anchor sizes, scales and ratios must be positive")

    @property
    def per_cell(self) -> int:
        return len(self.scales) * len(self.ratios)

    def level_shapes(self, input_hw: tuple[int, int]) -> list[tuple[int, int]]:
        h, w = input_hw
        for s in self.strides:
            if h % s or w % s:
                raise ValueError(f"input {h}x{w} is not divisible by stride {s}")
        return [(h // s, w // s) for s in self.strides]

    def count(self, input_hw: tuple[int, int]) -> int:
        return sum(h * w for h, w in self.level_shapes(input_hw)) * self.per_cell


def cell_shapes(config: AnchorConfig) -> np.ndarray:
    """(per_cell, 2) anchor widths and heights of the unit level (size 1)."""
    out = []
    for scale in config.scales:
        for ratio in config.ratios:
            out.append((scale * np.sqrt(ratio), scale / np.sqrt(ratio)))
    return np.asarray(out, np.float64)


def generate_anchors(config: AnchorConfig, input_hw: tuple[int, int]) -> np.ndarray:
    """(anchors, 4) float32 boxes, in the heads' output order (see the module docstring)."""
    unit = cell_shapes(config)
    levels = []
    for (h, w), stride, size in zip(config.level_shapes(input_hw), config.strides, config.sizes):
        cy, cx = np.meshgrid((np.arange(h) + 0.5) * stride, (np.arange(w) + 0.5) * stride, indexing="ij")
        centres = np.stack([cx, cy], -1).reshape(-1, 1, 2)             # (cells, 1, 2)
        half = (unit * size / 2.0)[None]                                  # (1, per_cell, 2)
        levels.append(np.concatenate([centres - half, centres + half], -1).reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)
