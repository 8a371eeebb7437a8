"""Fleet throughput on this machine: the same generated bags through `hsi-xai replay` one bag after
another, and through `hsi-xai fleet --workers 1` and `--workers 2`, in one run.

    .venv/bin/python bench/fleet.py [--bags 4] [--frames 24] [--shard-seconds 0.5] [--json out.json]

Each command runs as a user would run it (a fresh process, ONNX Runtime CPU, raw mosaics not copied
to the outputs). Reported per command: wall time of the whole command, its frames/s over that wall
time, and the frames/s of the work alone (the replay's loop; the fleet's shards and joins, without
Ray's start-up, which is reported separately). Bags: generated drives (seed 5000 + k) with the RGB,
NIR, MIR and FIR cameras, so detection runs too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hsi_xai_node.transports.config import load_config
from hsi_xai_node.transports.drive_bag import write_drive_bag

CLI = [sys.executable, "-m", "hsi_xai_node.cli"]


def run(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0, out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bags", type=int, default=4)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--shard-seconds", type=float, default=0.5)
    ap.add_argument("--json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_fleet_"))
    try:
        config = load_config()
        bags = [write_drive_bag(tmp / "in" / f"drive{k}", config, seed=5000 + k, frames=args.frames)
                for k in range(args.bags)]
        total = args.bags * args.frames
        rows = {}
        wall, work = 0.0, 0.0
        for bag in bags:
            w, text = run([*CLI, "replay", str(bag), str(tmp / "replay" / bag.name), "--backend", "ort-cpu",
                           "--no-copy-raw", "--no-progress"])
            wall += w
            work += float(re.search(r"frames/s over ([\d.]+) s", text).group(1))
        rows["replay, one bag after another"] = {"wall_s": wall, "fps_wall": total / wall, "work_s": work,
                                                 "fps_work": total / work, "ray_start_s": None}
        for workers in (1, 2):
            out = tmp / f"fleet{workers}"
            w, text = run([*CLI, "fleet", str(tmp / "in"), str(out), "--backend", "ort-cpu", "--workers",
                           str(workers), "--shard-seconds", str(args.shard_seconds), "--no-copy-raw",
                           "--no-progress"])
            doc = json.loads((out / "fleet.json").read_text())["fleet"]
            assert doc["frames_processed"] == total, doc
            rows[f"fleet --workers {workers}"] = {"wall_s": w, "fps_wall": total / w, "work_s": doc["wall_s"],
                                                  "fps_work": total / doc["wall_s"],
                                                  "ray_start_s": doc["ray_start_s"], "shards": doc["shards"]}
        base = rows["replay, one bag after another"]
        print(f"{args.bags} bags x {args.frames} frames (segmentation + RGB+MIR detection), {os.cpu_count()} CPUs")
        print(f"{'command':34s} {'wall s':>8s} {'frames/s':>9s} {'x replay':>9s} {'work s':>8s} {'frames/s':>9s} "
              f"{'x replay':>9s} {'Ray start s':>12s}")
        for name, r in rows.items():
            ray_s = "" if r["ray_start_s"] is None else f"{r['ray_start_s']:.1f}"
            print(f"{name:34s} {r['wall_s']:8.1f} {r['fps_wall']:9.2f} {r['fps_wall'] / base['fps_wall']:9.2f} "
                  f"{r['work_s']:8.1f} {r['fps_work']:9.2f} {r['fps_work'] / base['fps_work']:9.2f} {ray_s:>12s}")
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(),
                                                   "bags": args.bags, "frames": args.frames, "rows": rows}, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
