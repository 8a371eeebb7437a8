"""`hsi-xai train-segmentation` and `train-detection`: argument parsing without importing torch (that waits for the run)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..errors import InputError
from .config import SIZES, DetectionTrainConfig, TrainConfig


def add_parser(sub) -> None:
    t = sub.add_parser("train-segmentation", help="train, evaluate and export the segmentation U-Nets "
                       "(needs the [train] extra: torch)")
    t.add_argument("--variants", default="1,3,25pn,25",
                   help="comma list of: 1 (731.88 nm), 3 (bands 9, 22, 25), 25pn (25 bands with PN), "
                        "25 (25 bands without PN, the control for PN)")
    t.add_argument("--size", choices=sorted(SIZES), default="bundled",
                   help="bundled: 12 base filters (~4.4 MB); hsi-drive: HSI-Drive's 32 (~31 MB); tiny: 4 (smoke tests)")
    t.add_argument("--bundle", default="1,3,25pn", help="variants to export as ONNX + card")
    t.add_argument("--out", default="models", help="output directory for models, cards and the study table")
    t.add_argument("--profile", default="hsi-drive")
    t.add_argument("--steps", type=int, default=TrainConfig.steps)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_cmd_train)

    d = sub.add_parser("train-detection", help="train, evaluate and export the multispectral EfficientDets, "
                       "one per input stack (needs the [train] extra: torch)")
    d.add_argument("--stacks", default="rgb+mir,rgb,nir,mir,fir",
                   help="comma list of camera stacks, cameras joined by + (paper 001's comparison)")
    d.add_argument("--bundle", default="rgb+mir", help="stacks to keep as ONNX + card")
    d.add_argument("--out", default="models")
    d.add_argument("--steps", type=int, default=DetectionTrainConfig.steps)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--cache", default=str(Path.home() / ".cache" / "hsi_xai_node"),
                   help="where rendered datasets are cached ('' = no cache)")
    d.set_defaults(func=_cmd_train_detection)


def _cmd_train(args) -> int:
    try:
        from .segmentation import run_study
    except ImportError as exc:
        raise InputError(f"training needs torch: pip install -e '.[train]' ({exc})") from None
    from ..sensor.calibration import load_profile

    command = "hsi-xai " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    run_study(load_profile(args.profile), args.variants.split(","), args.size, Path(args.out),
              TrainConfig(steps=args.steps, seed=args.seed), command=command,
              bundle=tuple(args.bundle.split(",")), log=lambda m: print(m, flush=True))
    return 0


def _cmd_train_detection(args) -> int:
    try:
        from .detection import run_study
    except ImportError as exc:
        raise InputError(f"training needs torch: pip install -e '.[train]' ({exc})") from None

    command = "hsi-xai " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    run_study(args.stacks.split(","), Path(args.out), DetectionTrainConfig(steps=args.steps, seed=args.seed),
              bundle=tuple(args.bundle.split(",")), cache=Path(args.cache) if args.cache else None,
              command=command, log=lambda m: print(m, flush=True))
    return 0
