"""`hsi-xai reliability`: argument parsing; the work is in report.py."""

from __future__ import annotations


def add_reliability_parser(sub) -> None:
    r = sub.add_parser("reliability", help="evaluate the explanations: conservativeness, sanity checks, "
                       "insertion/deletion with RISE and SIDU, the band-count study; writes an HTML report and JSON")
    from .report import ReportConfig

    d = ReportConfig()
    r.add_argument("--out", default="reliability_out")
    r.add_argument("--model", default=d.model, help="segmentation U-Net (ONNX with its card)")
    r.add_argument("--detector", default=d.detector, help="detector ONNX with its card; '' = no detection sections")
    r.add_argument("--random-labels-model", default=None, help="a U-Net trained on permuted labels (label randomisation)")
    r.add_argument("--train-random-labels", type=int, default=0, metavar="STEPS",
                   help="train a U-Net on permuted labels for STEPS steps first and use it for label "
                        "randomisation (needs the [train] extra: torch); 0 = only a given --random-labels-model")
    r.add_argument("--random-labels-size", default="bundled", help="its size: bundled or tiny")
    r.add_argument("--frames", type=int, default=d.frames)
    r.add_argument("--rise-masks", type=int, default=d.rise_masks)
    r.add_argument("--steps", type=int, default=d.perturbation_steps, help="insertion/deletion steps")
    r.add_argument("--cascade-steps", type=int, default=d.cascade_steps)
    r.add_argument("--threads", type=int, default=0)
    r.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from pathlib import Path

    from ..errors import InputError
    from .report import ReportConfig, run_report

    try:
        import scipy  # noqa: F401
        import skimage  # noqa: F401
    except ImportError as exc:
        raise InputError(f"the reliability report needs scipy and scikit-image: pip install -e '.[reliability]' "
                         f"({exc})") from None
    if args.train_random_labels:
        try:
            from ..training.random_labels import train_random_label_model
        except ImportError as exc:
            raise InputError(f"--train-random-labels needs torch: pip install -e '.[train]' ({exc})") from None
        args.random_labels_model = str(train_random_label_model(
            Path(args.out) / "random_labels", args.train_random_labels, args.random_labels_size,
            log=lambda m: print(m, flush=True)))
    cfg = ReportConfig(model=args.model, detector=args.detector or None, random_labels_model=args.random_labels_model,
                       frames=args.frames, rise_masks=args.rise_masks, perturbation_steps=args.steps,
                       cascade_steps=args.cascade_steps, threads=args.threads)
    run_report(args.out, cfg, log=lambda m: print(m, flush=True))
    print(f"wrote {args.out}/index.html and {args.out}/report.json")
    return 0
