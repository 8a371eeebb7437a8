"""Scene generator speed: one generated drive frame, with and without the cameras.

    .venv/bin/python bench/scenes.py [--frames 10]

Median of N frames after one warm-up, hsi-drive profile, seed 1.
"""

import argparse
import time

import numpy as np

from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.calibration import load_profile


def median_ms(fn, indices):
    fn(0)  # warm-up
    times = []
    for i in indices:
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3, float(max(times)) * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=10)
    args = ap.parse_args(argv)
    profile = load_profile("hsi-drive")
    hsi_only = DriveGenerator(profile, seed=1, render_cameras=False)
    with_cams = DriveGenerator(profile, seed=1)
    idx = range(1, args.frames + 1)
    frame_med, frame_max = median_ms(hsi_only.frame, idx)
    layout_med, _ = median_ms(hsi_only.layout.maps, idx)
    cams_med, _ = median_ms(with_cams.frame, idx)
    print(f"HSI frame (raw + labels): median {frame_med:.0f} ms, max {frame_max:.0f} ms "
          f"(layout {layout_med:.0f} ms); with the four cameras {cams_med:.0f} ms")


if __name__ == "__main__":
    main()
