"""What bench/explain.py and bench/attributions.py share: the random-weight U-Net they time, every variant timed in
interleaved rounds, and each variant's median as a multiple of the forward and of its arithmetic bound."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from hsi_xai_node.training.config import SIZES
from hsi_xai_node.training.segmentation import export_onnx
from hsi_xai_node.training.unet import UNet, UNetConfig


def random_unet(size: str, shape: tuple, classes: int) -> tuple[torch.nn.Module, onnx.ModelProto]:
    """(torch U-Net, its ONNX export) of the named size (bundled: 12 base filters; hsi-drive: 32), seed 0."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=shape[1], num_classes=classes, base_filters=SIZES[size])).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "u.onnx"
        export_onnx(net, path, shape)
        return net, onnx.load(str(path))


def interleaved_medians(runs: dict, repeats: int, log=None) -> dict[str, float]:
    """name -> median ms of `runs` (name -> callable), each called once to warm up, then once per round in turn, so
    the machine's noise hits every variant alike. `log(name, seconds)` after each timed call, if given."""
    times = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(repeats):
        for k, fn in runs.items():
            # let the previous run's thread pools go idle (PyTorch's OpenMP threads spin after a parallel region and
            # would steal the cores from the next ONNX Runtime run); not timed
            time.sleep(0.1)
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
            if log is not None:
                log(k, times[k][-1])
    return {k: float(np.median(v)) * 1e3 for k, v in times.items()}


def over_forward(med: dict[str, float], macs: dict[str, int]) -> dict[str, dict]:
    """name -> its median ms, x the "forward" variant and, for graphs with a multiply-add count, its bound (the
    multiply-adds over the forward's) and the time over that bound."""
    fwd = med["forward"]
    rows = {}
    for k, t in med.items():
        row = {"median_ms": t, "x_forward": t / fwd}
        if k in macs:
            bound = macs[k] / macs["forward"]
            row |= {"gmacs": macs[k] / 1e9, "bound_x_forward": bound, "x_bound": (t / fwd) / bound}
        rows[k] = row
    return rows
