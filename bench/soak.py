"""Soak: resident memory, threads and open files over many frames of the node's pipeline and of the replay.

    .venv/bin/python bench/soak.py --frames 10000 [--part pipeline|replay|both] [--every 250] [--json out.json]

pipeline: the node's segmentation `Pipeline` (bundled U-Net, default explanations and overlays, card
scales) and the bundled detector's `DetectionPipeline`, each frame in turn, on a cycle of generated
frames (rendering is not what is soaked).
replay: `hsi-xai replay` of a small generated bag (raw mosaic and cameras, detection on), again and
again in one process (each replay builds its pipelines anew, as a fleet worker's shards do), until
`--frames` raw frames have been replayed.

Samples (Linux /proc): RSS (MB), threads, open file descriptors, every `--every` frames. The
figure is the RSS change from the first sample after warm-up (10% of the run) to the end, per
1,000 frames; threads and descriptors should not change at all.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def sample() -> dict:
    status = Path("/proc/self/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024
    return {"rss_mb": rss, "threads": len(os.listdir("/proc/self/task")), "fds": len(os.listdir("/proc/self/fd"))}


def summarise(samples: list[dict], frames: int) -> dict:
    warm = samples[max(1, len(samples) // 10)] if len(samples) > 2 else samples[0]
    last = samples[-1]
    span = max(last["frame"] - warm["frame"], 1)
    return {"frames": frames, "rss_start_mb": round(warm["rss_mb"], 1), "rss_end_mb": round(last["rss_mb"], 1),
            "rss_max_mb": round(max(s["rss_mb"] for s in samples), 1),
            "rss_mb_per_1000_frames": round((last["rss_mb"] - warm["rss_mb"]) * 1000 / span, 2),
            "threads": sorted({s["threads"] for s in samples[1:]}), "fds": sorted({s["fds"] for s in samples[1:]}),
            "samples": samples}


def soak_pipeline(frames: int, every: int, cycle: int = 8, log=print) -> dict:
    from hsi_xai_node.runtime import Pipeline, PipelineConfig
    from hsi_xai_node.runtime.detection import DetectionPipeline, DetectionPipelineConfig
    from hsi_xai_node.scenes.drive import DriveGenerator
    from hsi_xai_node.sensor.calibration import load_profile

    gen = DriveGenerator(load_profile("hsi-drive"), seed=4000)
    frames_cycle = [gen.frame(k) for k in range(cycle)]
    seg = Pipeline(PipelineConfig(backend="ort-cpu"), *gen.references())
    det = DetectionPipeline(DetectionPipelineConfig(backend="ort-cpu"))
    samples, t0 = [], time.perf_counter()
    for k in range(frames):
        f = frames_cycle[k % cycle]
        seg.process(f.raw)
        det.process({n: f.cameras[n].image for n in det.cameras})
        if k % every == 0 or k == frames - 1:
            samples.append({"frame": k + 1, "seconds": round(time.perf_counter() - t0, 1), **sample()})
            log(f"pipeline {k + 1}/{frames}: {samples[-1]}")
    return summarise(samples, frames)


def soak_replay(frames: int, every: int, bag_frames: int = 20, log=print) -> dict:
    from hsi_xai_node.transports.config import load_config
    from hsi_xai_node.transports.drive_bag import CAMERA_TOPIC, write_drive_bag
    from hsi_xai_node.transports.replay import replay

    config = load_config(backend="ort-cpu", multispectral_topics=tuple(CAMERA_TOPIC.values()))
    samples, done, t0 = [], 0, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bag = write_drive_bag(Path(tmp) / "in", config, seed=4000, frames=bag_frames)
        while done < frames:
            replay(bag, Path(tmp) / "out", config, progress=False, overwrite=True, copy_raw=False)
            done += bag_frames
            if (done // bag_frames) % max(1, every // bag_frames) == 0 or done >= frames:
                samples.append({"frame": done, "seconds": round(time.perf_counter() - t0, 1), **sample()})
                log(f"replay {done}/{frames}: {samples[-1]}")
    return summarise(samples, done)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--part", choices=("pipeline", "replay", "both"), default="both")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    report = {}
    if args.part in ("pipeline", "both"):
        report["pipeline"] = soak_pipeline(args.frames, args.every)
    if args.part in ("replay", "both"):
        report["replay"] = soak_replay(args.frames, args.every)
    for part, r in report.items():
        print(f"{part}: {r['frames']} frames, RSS {r['rss_start_mb']} -> {r['rss_end_mb']} MB (max {r['rss_max_mb']}), "
              f"{r['rss_mb_per_1000_frames']:+.2f} MB per 1000 frames; threads {r['threads']}, open files {r['fds']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
