"""`hsi-xai reliability` (declared in hsi_xai_node.cli): checks what it needs, applies --quick, runs report.py."""

from __future__ import annotations

import dataclasses


def cmd_reliability(args) -> int:
    from pathlib import Path

    from ..errors import InputError
    from .config import QUICK, ReportConfig

    try:
        import scipy  # noqa: F401
        import skimage  # noqa: F401
    except ImportError as exc:
        raise InputError(f"the reliability report needs scipy and scikit-image: pip install -e '.[reliability]' "
                         f"({exc})") from None
    from .report import run_report

    if args.train_random_labels:
        try:
            from ..training.random_labels import train_random_label_model
        except ImportError as exc:
            raise InputError(f"--train-random-labels needs torch: pip install -e '.[train]' ({exc})") from None
        args.random_labels_model = str(train_random_label_model(
            Path(args.out) / "random_labels", args.train_random_labels, args.random_labels_size,
            log=lambda m: print(m, flush=True)))
    cfg = ReportConfig(model=args.model, detector=args.detector or None, random_labels_model=args.random_labels_model,
                       threads=args.threads)
    if args.quick:
        cfg = dataclasses.replace(cfg, **QUICK, preset="quick")
    given = {"frames": args.frames, "rise_masks": args.rise_masks, "perturbation_steps": args.steps,
             "cascade_steps": args.cascade_steps, "backend": args.backend,
             "smoothgrad_samples": args.smoothgrad_samples, "ig_steps": args.ig_steps,
             "sensitivity_draws": args.sensitivity_draws, "sensitivity_noise": args.sensitivity_noise,
             "region_patch": args.region_patch}
    if args.input_methods is not None:
        from ..explain import INPUT_METHODS

        chosen = tuple(m.strip() for m in args.input_methods.split(",") if m.strip())
        unknown = [m for m in chosen if m not in INPUT_METHODS]
        if unknown:
            raise InputError(f"--input-methods: {unknown} are not input attribution methods; known: "
                             f"{', '.join(INPUT_METHODS)}")
        given["input_methods"] = chosen
    cfg = dataclasses.replace(cfg, **{k: v for k, v in given.items() if v is not None})
    for name in ("frames", "rise_masks", "perturbation_steps", "cascade_steps", "smoothgrad_samples", "ig_steps",
                 "sensitivity_draws", "region_patch"):
        if getattr(cfg, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if not 0.0 < cfg.sensitivity_noise <= 0.5:
        raise InputError(f"--sensitivity-noise must be in (0, 0.5], got {cfg.sensitivity_noise}")
    run_report(args.out, cfg, log=lambda m: print(m, flush=True), progress=not args.no_progress)
    print(f"wrote {args.out}/index.html and {args.out}/report.json")
    return 0
