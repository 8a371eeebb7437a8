"""The other inputs the path methods run the model on: integrated gradients' and DeepLIFT's baseline, SmoothGrad's
noise. Both are built in the graph from the frame's own input, so every frame and every engine gets the same.

Baselines (`PathOptions.baseline`):

    zeros           the all-zero input (Sundararajan 2017's black image; no light in every band)
    blur            the input blurred by a Gaussian of `blur_sigma_px` per band, normalised at the borders (each
                    pixel divides by the kernel weight inside the image): the frame's layout without its detail
    spectral_mean   each pixel's mean over the bands in every band: the frame's brightness with a flat spectrum,
                    so the attributions say which wavelengths, not which pixels, made the score

SmoothGrad noise: sample k adds sigma * N_k, sigma = noise * (max - min of the frame's input) (Smilkov 2017's
relative noise level), N_k standard normal from a fixed seed. A full-frame constant per sample would put
samples x bands x H x W floats in the model file (8 MB per sample at the bundled U-Net's input), so N_k is the sum of
two tiles of 61 and 64 pixels (each N(0, 1/2), drawn once from `seed`) repeated over the frame: every element is
N(0, 1), the pattern repeats only after 61 x 64 = 3904 pixels, and elements 61 or 64 pixels apart along a row or
column share one of the two tiles (correlation 1/2).
"""

from __future__ import annotations

import math

import numpy as np

from ._graph import Builder, ExplainError

BASELINES = ("zeros", "blur", "spectral_mean")
NOISE_TILES = (61, 64)


def noise_tiles(samples: int, bands: int, seed: int) -> list[tuple[np.ndarray, ...]]:
    """Per sample, the two float32 tiles (bands, t, t) whose repetitions add up to its noise."""
    rng = np.random.default_rng(seed)
    half = np.float32(math.sqrt(0.5))
    return [tuple(rng.standard_normal((bands, t, t)).astype(np.float32) * half for t in NOISE_TILES)
            for _ in range(samples)]


def noise_from_tiles(tiles: tuple[np.ndarray, ...], h: int, w: int) -> np.ndarray:
    """(bands, h, w): the tiles repeated over the frame and added, exactly as the graph does it (float32)."""
    parts = [np.tile(t, (1, math.ceil(h / t.shape[1]), math.ceil(w / t.shape[2])))[:, :h, :w] for t in tiles]
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def append_noise(b: Builder, tiles: tuple[np.ndarray, ...], h: int, w: int, hint: str) -> str:
    """(1, bands, h, w) the noise of `noise_from_tiles`, built in the graph from the tile constants."""
    parts = []
    for t in tiles:
        bands, th, tw = t.shape
        repeats = b.ints([1, 1, math.ceil(h / th), math.ceil(w / tw)])
        repeated = b.op("Tile", [b.const(t[None], f"{hint}_tile"), repeats], f"{hint}_repeated")
        parts.append(b.op("Slice", [repeated, b.ints([0, 0]), b.ints([h, w]), b.ints([2, 3])], f"{hint}_cropped"))
    out = parts[0]
    for p in parts[1:]:
        out = b.op("Add", [out, p], hint)
    return out


def gaussian_kernel(sigma_px: float) -> np.ndarray:
    """1-D Gaussian weights over +-ceil(3 sigma), summing to 1 (float64)."""
    r = max(1, math.ceil(3.0 * sigma_px))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_px) ** 2)
    return k / k.sum()


def _along(a: np.ndarray, axis: int, k: np.ndarray) -> np.ndarray:
    """`a` convolved with the odd-length kernel `k` along `axis`, zero outside (float64)."""
    r, n = len(k) // 2, a.shape[axis]
    out = np.zeros(a.shape, np.float64)
    for d in range(-r, r + 1):
        src, dst = [slice(None)] * a.ndim, [slice(None)] * a.ndim
        src[axis], dst[axis] = slice(max(0, d), n + min(0, d)), slice(max(0, -d), n - max(0, d))
        out[tuple(dst)] += k[d + r] * a[tuple(src)]
    return out


def _inside_weight(h: int, w: int, k: np.ndarray) -> np.ndarray:
    """(h, w): the share of the 2-D kernel that falls inside the image at each pixel."""
    return _along(_along(np.ones((h, w)), 0, k), 1, k)


def blur_reference(x: np.ndarray, sigma_px: float) -> np.ndarray:
    """The blur baseline in float64 numpy, (1, bands, h, w): the definition the graph's convolution follows."""
    k = gaussian_kernel(sigma_px)
    return _along(_along(x.astype(np.float64), 2, k), 3, k) / _inside_weight(*x.shape[2:], k)


def append_baseline(b: Builder, input_name: str, kind: str, blur_sigma_px: float) -> str:
    """The baseline tensor (the input's shape) of `kind` for the frame fed as `input_name`."""
    shape = b.shape(input_name)
    _, bands, h, w = shape
    if kind == "zeros":
        return b.op("Expand", [b.const(0.0, "zero"), b.ints(list(shape))], "baseline_zeros")
    if kind == "spectral_mean":
        return b.op("Expand", [b.reduce("ReduceMean", input_name, [1], 1, "pixel_mean"), b.ints(list(shape))],
                    "baseline_spectral_mean")
    if kind == "blur":
        k = gaussian_kernel(blur_sigma_px)
        r = len(k) // 2
        # separable: a row pass and a column pass, each one depthwise Conv (2 (2r + 1) multiply-adds per element)
        rows = np.tile(k.reshape(1, 1, 1, -1), (bands, 1, 1, 1)).astype(np.float32)
        blurred = b.op("Conv", [input_name, b.const(rows, "blur_row_w")], "blur_rows", group=bands, pads=[0, r, 0, r])
        cols = np.tile(k.reshape(1, 1, -1, 1), (bands, 1, 1, 1)).astype(np.float32)
        blurred = b.op("Conv", [blurred, b.const(cols, "blur_col_w")], "blur", group=bands, pads=[r, 0, r, 0])
        norm = b.const(_inside_weight(h, w, k)[None, None].astype(np.float32), "blur_norm")
        return b.op("Div", [blurred, norm], "baseline_blur")
    raise ExplainError(f"baseline must be one of {list(BASELINES)}, got {kind!r}")
