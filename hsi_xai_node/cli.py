"""`hsi-xai`: the command-line entry point (no ROS needed).

    hsi-xai profiles [NAME_OR_XML]   list sensor profiles, or describe one
    hsi-xai demo [--out DIR]         generated drive -> rosbag2 -> replay -> output bag + HTML report
    hsi-xai replay IN OUT            a rosbag2 through the node's pipeline, written as a new bag
    hsi-xai train-segmentation       train, evaluate and export the U-Nets (needs torch)
    hsi-xai build-engine MODEL.onnx  build (or find) the cached TensorRT engine ahead of time
"""

from __future__ import annotations

import argparse
import sys

from .errors import InputError


def _cmd_profiles(args) -> int:
    from .sensor.calibration import load_profile, profile_names

    if not args.profile:
        for name in profile_names():
            p = load_profile(name)
            print(f"{name:14s} {p.n_bands} bands {p.band_wavelengths_nm.min():.0f}-"
                  f"{p.band_wavelengths_nm.max():.0f} nm, cube {p.cube_shape}, source {p.source}")
        return 0
    p = load_profile(args.profile, flip_vertical=args.flip_vertical)
    print(f"profile      {p.name} ({p.source})")
    print(f"sensor       {p.sensor_width}x{p.sensor_height}, {p.bit_depth} bit")
    print(f"filter area  {p.area_width}x{p.area_height} at ({p.offset_x}, {p.offset_y}), "
          f"pattern {p.pattern_width}x{p.pattern_height}")
    print(f"cube         {p.cube_shape} (bands, rows, cols) by sub-sampling")
    print(f"corrections  {[c.name for c in p.corrections] or 'none'}; "
          f"optics {[o.name for o in p.optics] or 'none'}")
    if p.notes:
        print(f"notes        {p.notes}")
    print("band  tile(r,c)  peaks nm (order, contribution)")
    for b in sorted(range(p.n_bands), key=lambda b: p.band_wavelengths_nm[b]):
        peaks = ", ".join(f"{pk.wavelength_nm:.2f} (o{pk.order}"
                          + (f", {pk.contribution:.2f}" if pk.contribution is not None else "") + ")"
                          for pk in p.peaks[b])
        print(f"{b:4d}  {str(p.band_position(b)):9s}  {peaks}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hsi-xai", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("profiles", help="list sensor profiles or describe one")
    pr.add_argument("profile", nargs="?", help="profile name or imec XML path")
    pr.add_argument("--flip-vertical", action="store_true",
                    help="frames are read out upside down (XIMEA API convention for v0 files)")
    pr.set_defaults(func=_cmd_profiles)
    from .demo import add_demo_parser
    add_demo_parser(sub)
    from .training.cli import add_parser as add_train_parser
    add_train_parser(sub)
    from .runtime.tensorrt_backend import add_build_engine_parser
    add_build_engine_parser(sub)
    from .transports.replay import add_replay_parser
    add_replay_parser(sub)
    from .reliability.cli import add_reliability_parser
    add_reliability_parser(sub)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:  # bad input: one clear line, no traceback
        print(f"hsi-xai {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
