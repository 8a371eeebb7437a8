"""Front-end speed: fused sub-sampling path and weighted bilinear, each beside a reference.

    .venv/bin/python bench/frontend.py [--profile hsi-drive] [--frames 60] [--json out.json]

Each pair is run interleaved (A, B, A, B, ...) on the same frames so that the shared
machine's noise hits both sides alike; the ratio is what to compare across machines.

* sub-sampling + reflectance + PN, 2048x1088 mono16 -> 25x216x409 float32:
  `FrontEnd.process` (fused, blocked) vs the literal composition (strided band planes
  stacked to float32, (x - dark) / (white - dark), divided by the per-pixel sum).
* weighted bilinear, 2048x1088 -> 25x1080x2045: `weighted_bilinear` (separable tent,
  border-only normalisation) vs the literal definition (2-D 9x9 tent `filter2D` of each
  sparse band plane divided by the same filter of its sampling mask).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import cv2
import numpy as np

from hsi_xai_node.sensor.calibration import load_profile
from hsi_xai_node.sensor.demosaic import weighted_bilinear
from hsi_xai_node.sensor.frontend import FrontEnd


def reference_subsample_reflectance_pn(raw, dark, white, p):
    """The straightforward version: what one writes first."""
    def planes(frame):
        out = []
        for b in range(p.n_bands):
            r, c = p.band_position(b)
            out.append(frame[p.offset_y + r:p.offset_y + p.area_height:p.pattern_height,
                             p.offset_x + c:p.offset_x + p.area_width:p.pattern_width][:p.cube_height, :p.cube_width])
        return np.stack(out).astype(np.float32)
    refl = (planes(raw) - planes(dark)) / (planes(white) - planes(dark))
    return refl / refl.sum(axis=0, keepdims=True)


def reference_weighted_bilinear(raw, p):
    ph, pw = p.pattern_height, p.pattern_width
    tent = np.outer(1 - np.abs(np.arange(-(ph - 1), ph)) / ph, 1 - np.abs(np.arange(-(pw - 1), pw)) / pw)
    tent = tent.astype(np.float32)
    area = raw[p.offset_y:p.offset_y + p.area_height, p.offset_x:p.offset_x + p.area_width].astype(np.float32)
    out = np.empty((p.n_bands, p.area_height, p.area_width), np.float32)
    for b in range(p.n_bands):
        r, c = p.band_position(b)
        mask = np.zeros_like(area)
        mask[r::ph, c::pw] = 1.0
        num = cv2.filter2D(area * mask, -1, tent, borderType=cv2.BORDER_CONSTANT)
        den = cv2.filter2D(mask, -1, tent, borderType=cv2.BORDER_CONSTANT)
        out[b] = num / den
    return out


def side_by_side(fn_a, fn_b, frames, repeats):
    ta, tb = [], []
    fn_a(frames[0]), fn_b(frames[0])  # warm-up (caches, plans)
    for i in range(repeats):
        f = frames[i % len(frames)]
        t0 = time.perf_counter()
        fn_a(f)
        t1 = time.perf_counter()
        fn_b(f)
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    ma, mb = float(np.median(ta)) * 1e3, float(np.median(tb)) * 1e3
    return {"ours_ms": ma, "reference_ms": mb, "speedup": mb / ma, "repeats": repeats}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="hsi-drive")
    ap.add_argument("--frames", type=int, default=60, help="repeats of the sub-sampling pair")
    ap.add_argument("--bilinear-frames", type=int, default=6, help="repeats of the bilinear pair")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    p = load_profile(args.profile)
    rng = np.random.default_rng(0)
    top = (1 << p.bit_depth) - 1
    dark = rng.normal(32, 2, p.frame_shape).clip(0, top).astype(np.uint16)
    white = rng.normal(0.8 * top, 20, p.frame_shape).clip(0, top).astype(np.uint16)
    frames = [rng.integers(0, top + 1, p.frame_shape).astype(np.uint16) for _ in range(4)]

    fe = FrontEnd(p, dark, white)
    np.testing.assert_allclose(fe.process(frames[0]).cube.data,
                               reference_subsample_reflectance_pn(frames[0], dark, white, p), rtol=1e-4, atol=1e-6)
    results = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "profile": p.name,
        "subsample_reflectance_pn": side_by_side(
            fe.process, lambda f: reference_subsample_reflectance_pn(f, dark, white, p), frames, args.frames),
        "weighted_bilinear": side_by_side(
            lambda f: weighted_bilinear(f, p), lambda f: reference_weighted_bilinear(f, p), frames,
            args.bilinear_frames),
    }
    for name in ("subsample_reflectance_pn", "weighted_bilinear"):
        r = results[name]
        print(f"{name:26s} ours {r['ours_ms']:8.2f} ms   reference {r['reference_ms']:8.2f} ms   "
              f"speed-up {r['speedup']:5.2f}x   (median of {r['repeats']})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
