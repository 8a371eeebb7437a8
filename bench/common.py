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


def interleaved_medians(runs: dict, repeats: int, log=None, reference: str | None = None, pairs: dict | None = None):
    """name -> median ms of `runs` (name -> callable), each called once to warm up, then once per round in turn, so
    the machine's noise hits every variant alike. `log(name, seconds)` after each timed call, if given.

    With `reference` (one of the names, the forward): each other variant's call in a round comes right after a call
    of the reference, also timed, and the result is (medians, ratios), ratios: name -> the median over the rounds of
    the variant's time over the reference call's just before it. On the shared 2-vCPU VMs the speed drifts by tens
    of percent within a round of several seconds; a ratio of two medians taken seconds apart carries that drift, a
    ratio of neighbouring calls much less of it. `pairs` (a dict, with `reference`): filled with name -> the (reference
    seconds before, variant seconds, reference seconds after or None for the last call) of each round, for
    `by_state`."""
    times = {k: [] for k in runs}
    beside = {k: [] for k in runs}  # the reference call's time just before each of k's
    calls: list[tuple[str, float]] = []  # every timed call, in order

    def timed(k) -> float:
        # let the previous run's thread pools go idle (PyTorch's OpenMP threads spin after a parallel region and
        # would steal the cores from the next ONNX Runtime run); not timed
        time.sleep(0.1)
        t0 = time.perf_counter()
        runs[k]()
        t = time.perf_counter() - t0
        if log is not None:
            log(k, t)
        calls.append((k, t))
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
    if pairs is not None:
        # the reference call's time just after each variant's call (None after the run's last call)
        after: dict[str, list] = {k: [] for k in runs if k != reference}
        for i, (k, _) in enumerate(calls):
            if k != reference:
                after[k].append(next((t for name, t in calls[i + 1:] if name == reference), None))
        pairs.update({k: list(zip(beside[k], times[k], after[k])) for k in after})
    return medians, ratios | {reference: 1.0}


def by_state(pairs: dict, apart: float = 1.15) -> dict:
    """name -> {"fast": (median ratio, rounds), "slow": ...} from `interleaved_medians`' pairs, each round put in
    the state its reference call ran in. The development VMs switch, tens of seconds apart, between two speeds (the
    bundled U-Net's forward 32-33 ms in one, 41-42 in the other), which move the forward's convolutions more than the
    explain graphs' passes over memory: a median over rounds of both states is neither's. The reference times are
    split in two where the groups' log-times lie furthest apart for their sizes (Otsu's threshold: a lone slow call
    does not make a state of its own), and kept apart when the slower group's median is over `apart` times the
    faster's; else every round is one state ("all"). A round counts in a state when the reference calls before and
    after its variant's call both ran in it (the VM switched during the variant's call otherwise: such rounds are
    left out)."""
    ref = np.sort([f for rounds in pairs.values() for f, _, _ in rounds])
    split = None
    if len(ref) > 1:
        logs = np.log(ref)
        n = np.arange(1, len(ref))
        left = np.cumsum(logs)[:-1] / n
        right = (logs.sum() - np.cumsum(logs)[:-1]) / (len(ref) - n)
        i = int(np.argmax(n * (len(ref) - n) * (right - left) ** 2))
        if np.median(ref[i + 1:]) > apart * np.median(ref[:i + 1]):
            split = (ref[i] + ref[i + 1]) / 2

    def state(f):
        return None if f is None else "all" if split is None else "fast" if f < split else "slow"

    out = {}
    for k, rounds in pairs.items():
        groups: dict[str, list] = {}
        for before, t, after in rounds:
            if after is None or state(after) == state(before):
                groups.setdefault(state(before), []).append(t / before)
        out[k] = {s: (float(np.median(g)), len(g)) for s, g in sorted(groups.items())}
    return out


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
