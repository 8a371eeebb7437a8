"""`hsi-xai train-segmentation` and `train-detection` (declared in hsi_xai_node.cli): torch is imported only here, when a run starts."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..errors import InputError
from .config import DetectionTrainConfig, TrainConfig


def cmd_train_segmentation(args) -> int:
    try:
        from .segmentation import run_study
    except ImportError as exc:
        raise InputError(f"training needs torch: pip install -e '.[train]' ({exc})") from None
    from ..sensor.calibration import load_profile

    command = "hsi-xai " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    run_study(load_profile(args.profile), args.variants.split(","), args.size, Path(args.out),
              TrainConfig(steps=args.steps, seed=args.seed, threads=args.threads), command=command,
              bundle=tuple(args.bundle.split(",")), log=lambda m: print(m, flush=True))
    return 0


def cmd_train_detection(args) -> int:
    try:
        from .detection import run_study
    except ImportError as exc:
        raise InputError(f"training needs torch: pip install -e '.[train]' ({exc})") from None

    command = "hsi-xai " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.jobs < 1 or args.threads < 0:
        raise InputError(f"--jobs must be at least 1 and --threads at least 0, got {args.jobs} and {args.threads}")
    threads = args.threads or max(1, DetectionTrainConfig.threads // args.jobs)
    run_study(args.stacks.split(","), Path(args.out), DetectionTrainConfig(steps=args.steps, seed=args.seed, threads=threads),
              bundle=tuple(args.bundle.split(",")), cache=Path(args.cache).expanduser() if args.cache else None,
              command=command, log=lambda m: print(m, flush=True), jobs=args.jobs)
    return 0
