"""Detector training throughput: one run with N torch threads versus K runs side by side with 1 thread each.

    .venv/bin/python bench/train_threads.py [--stack rgb] [--steps 60] [--threads 2] [--runs 2]

Each run is a fresh process training the default EfficientDet with the default recipe (the same batches as
`hsi-xai train-detection`) for --steps steps, without the periodic validation. The datasets come from the
training cache (~/.cache/hsi_xai_node; the first call renders them, minutes). Reported: seconds per step of
each run and the combined steps per second of the side-by-side runs against the single run's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

ONE_RUN = """
import sys, time
from pathlib import Path
from hsi_xai_node.training.config import DetectionTrainConfig
from hsi_xai_node.training.detection import DETECTION_SPLITS, generate, train
from hsi_xai_node.training.efficientdet import EfficientDetConfig
stack, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cache = Path.home() / ".cache/hsi_xai_node"
train_set, val_set = generate(DETECTION_SPLITS["train"], cache), generate(DETECTION_SPLITS["val"], cache)
t0 = time.perf_counter()
train(stack, train_set, val_set, EfficientDetConfig(), DetectionTrainConfig(steps=steps, eval_every=10**9,
      threads=threads), log=lambda m: None)
print((time.perf_counter() - t0) / steps)
"""


def _runs(stack: str, steps: int, threads: int, count: int) -> list[float]:
    procs = [subprocess.Popen([sys.executable, "-c", ONE_RUN, stack, str(steps), str(threads)],
                              stdout=subprocess.PIPE, text=True) for _ in range(count)]
    return [float(p.communicate()[0].split()[-1]) for p in procs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stack", default="rgb")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2, help="threads of the single run")
    ap.add_argument("--runs", type=int, default=2, help="side-by-side 1-thread runs")
    args = ap.parse_args()
    t0 = time.perf_counter()
    (single,) = _runs(args.stack, args.steps, args.threads, 1)
    side = _runs(args.stack, args.steps, 1, args.runs)
    combined = sum(1 / s for s in side)
    print(f"1 run x {args.threads} threads: {single:.3f} s/step ({1 / single:.2f} steps/s)")
    print(f"{args.runs} runs x 1 thread: " + ", ".join(f"{s:.3f}" for s in side)
          + f" s/step ({combined:.2f} steps/s together, {combined * single:.2f}x)")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
