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


def interleaved_medians(runs: dict, repeats: int, log=None, reference: str | None = None):
    """name -> median ms of `runs` (name -> callable), each called once to warm up, then once per round in turn, so
    the machine's noise hits every variant alike. `log(name, seconds)` after each timed call, if given.

    With `reference` (one of the names, the forward): each other variant's call in a round comes right after a call
    of the reference, also timed, and the result is (medians, ratios), ratios: name -> the median over the rounds of
    the variant's time over the reference call's just before it. On the shared 2-vCPU VMs the speed drifts by tens
    of percent within a round of several seconds; a ratio of two medians taken seconds apart carries that drift, a
    ratio of neighbouring calls much less of it."""
    times = {k: [] for k in runs}
    beside = {k: [] for k in runs}  # the reference call's time just before each of k's

    def timed(k) -> float:
        # let the previous run's thread pools go idle (PyTorch's OpenMP threads spin after a parallel region and
        # would steal the cores from the next ONNX Runtime run); not timed
        time.sleep(0.1)
        t0 = time.perf_counter()
        runs[k]()
        t = time.perf_counter() - t0
        if log is not None:
            log(k, t)
        return t

    for fn in runs.values():
        fn()  # warm-up
    for _ in range(repeats):
        for k in runs:
            if reference is not None and k != reference:
                beside[k].append(timed(reference))
                times[reference].append(beside[k][-1])
            times[k].append(timed(k))
    medians = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    if reference is None:
        return medians
    ratios = {k: float(np.median(np.array(times[k]) / np.array(beside[k]))) for k in runs if k != reference}
    return medians, ratios | {reference: 1.0}


def over_forward(med: dict[str, float], macs: dict[str, int], ratios: dict[str, float] | None = None) -> dict[str, dict]:
    """name -> its median ms, x the "forward" variant and, for graphs with a multiply-add count, its bound (the
    multiply-adds over the forward's) and the time over that bound. With `ratios` (`interleaved_medians` with the
    forward as its reference), x forward is each variant's median ratio to the forward call beside it, not the ratio
    of the two medians."""
    fwd = med["forward"]
    rows = {}
    for k, t in med.items():
        x = ratios[k] if ratios is not None else t / fwd
        row = {"median_ms": t, "x_forward": x}
        if k in macs:
            bound = macs[k] / macs["forward"]
            row |= {"gmacs": macs[k] / 1e9, "bound_x_forward": bound, "x_bound": x / bound}
        rows[k] = row
    return rows
