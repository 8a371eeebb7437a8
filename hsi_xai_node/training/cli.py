"""`hsi-xai train-segmentation` and `train-detection` (declared in hsi_xai_node.cli): torch is imported only here, when a run starts."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..errors import InputError
from .config import DetectionTrainConfig, TrainConfig


def cmd_train_segmentation(args) -> int:
    try:
        from .segmentation import CLASSES, run_study
    except ImportError as exc:
        raise InputError(f"training needs torch: pip install -e '.[train]' ({exc})") from None
    from ..sensor.calibration import load_profile

    command = "hsi-xai " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    datasets, classes = hsi_drive_splits(args) if args.dataset else (None, CLASSES)
    run_study(load_profile(args.profile), args.variants.split(","), args.size, Path(args.out),
              TrainConfig(steps=args.steps, seed=args.seed, threads=args.threads), command=command,
              bundle=tuple(args.bundle.split(",")), log=lambda m: print(m, flush=True), datasets=datasets,
              classes=classes)
    return 0


def hsi_drive_splits(args) -> tuple[dict, tuple]:
    """(split -> reader, the labelled classes) of HSI-Drive on disk: the mmsegmentation layout's splits, or .mat
    cubes in training/, validation/ and test/ sub-folders. Reflectance cubes only."""
    from ..classes import SEGMENTATION_CLASS_SETS
    from ..datasets import HsiDriveMat, HsiDriveMmseg, guess_layout

    root = Path(args.dataset)
    layout = args.layout or guess_layout(root)
    if layout == "hsi-drive-mmseg" and args.values != "reflectance":
        raise InputError("train-segmentation --dataset needs reflectance cubes (the variants normalise them, and the "
                         "card states that normalisation); mmsegmentation's layout stores the model's input values: "
                         "pass --values reflectance if these cubes are reflectance")
    if args.values == "model":
        raise InputError("train-segmentation --dataset needs reflectance cubes (--values reflectance)")
    table = SEGMENTATION_CLASS_SETS[args.classes or ("hsi-drive-v2" if layout == "hsi-drive-mmseg" else "hsi-drive")]
    classes = tuple(c for c in table if c.id > 0)
    readers = {}
    for key, folder in (("train", "training"), ("val", "validation"), ("test", "test")):
        readers[key] = HsiDriveMmseg(root, folder) if layout == "hsi-drive-mmseg" else \
            HsiDriveMat(root / folder, args.mat_axes)
    return readers, classes


def cmd_train_detection(args) -> int:
    try:
        from .detection import run_study
    except ImportError as exc:
        raise InputError(f"training needs torch: pip install -e '.[train]' ({exc})") from None

    command = "hsi-xai " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.jobs < 1 or args.threads < 0:
        raise InputError(f"--jobs must be at least 1 and --threads at least 0, got {args.jobs} and {args.threads}")
    threads = args.threads or max(1, DetectionTrainConfig.threads // args.jobs)
    datasets = mods_splits(args) if args.dataset else None
    run_study(args.stacks.split(","), Path(args.out), DetectionTrainConfig(steps=args.steps, seed=args.seed, threads=threads),
              bundle=tuple(args.bundle.split(",")), cache=Path(args.cache).expanduser() if args.cache else None,
              command=command, log=lambda m: print(m, flush=True), jobs=args.jobs, datasets=datasets)
    return 0


def mods_splits(args) -> dict:
    """split -> ModsDataset of the Multispectral Object Detection dataset's registered frames, all four cameras. The
    dataset has no official split: train.txt, val.txt and test.txt (frame numbers) in --splits (default: its root)."""
    from ..datasets import DatasetError, ModsDataset, read_split
    from .detection import ALL_CAMERAS

    root = Path(args.dataset)
    folder = Path(args.splits) if args.splits else root
    files = {k: folder / f"{k}.txt" for k in ("train", "val", "test")}
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing:
        raise DatasetError(f"the Multispectral Object Detection dataset has no official split: write train.txt, "
                           f"val.txt and test.txt (frame numbers, one per line) into {folder} or give --splits DIR "
                           f"(missing {', '.join(missing)})")
    class_map = tuple(args.class_map.split(",")) if args.class_map else None
    return {k: ModsDataset(root, ALL_CAMERAS, images=args.images, labels=args.labels, class_map=class_map,
                           frames=read_split(f), split=k) for k, f in files.items()}
