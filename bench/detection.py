"""Detection pipeline speed on ONNX Runtime CPU, and the cost of per-box Grad-CAM over detection alone.

    .venv/bin/python bench/detection.py [--model models/efficientdet_rgb_mir.onnx] [--frames 12] [--json out.json]

Runs the same generated camera frames, interleaved frame by frame, through five
pipelines on the same detector: no explanations (decoding + NMS only), per-box Grad-CAM
for the top 10 kept boxes at each box's own pyramid level (the default, layer box_level), the same
with each box's backward through the class heads over the whole map instead of a window around its
anchor (what explain/_windows.py saves), the 10 boxes at the finest level's head input for every box
(layer class_head_input: a box of a coarser level is then differentiated back through the feature
pyramid), and 20 boxes at their own level. The explained rows are a
fixed batch of K whatever the number of boxes kept (empty slots get zero seeds), so the
cost does not depend on the scene.
Stages: frontend (registration + stacking), engine (model + NMS + explanations), post
(detections, fused overlay, boxes drawn). A 50 ms untimed pause before each call lets the other
pipelines' engine threads go idle (without it ONNX Runtime's detection-only call measured 46-52 ms
interleaved against 32 ms alone).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

from hsi_xai_node.explain import BOX_LEVEL, DetectionExplainConfig
from hsi_xai_node.runtime.detection import DEFAULT_DETECTOR, DetectionPipeline, DetectionPipelineConfig
from hsi_xai_node.runtime.engine import ORT_OPTIMIZATION, only_outputs
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.calibration import load_profile


sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/pipeline.py
from pipeline import kernel_split, machine_cpu  # noqa: E402

PAUSE_S = 0.05  # before every timed call: the other pipelines' engine threads (ONNX Runtime spins) go idle first


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_DETECTOR))
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    ap.add_argument("--backend", default="ort-cpu")
    ap.add_argument("--profile-rounds", type=int, default=0,
                    help="also profile each pipeline's graph with ONNX Runtime over this many runs: kernel ms of the "
                         "explain nodes (xai/...) against the detector's")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    gen = DriveGenerator(load_profile("hsi-drive"), seed=3005, render_hsi=False)
    frames = [{n: c.image for n, c in gen.frame(i * 7).cameras.items()} for i in range(args.frames + 1)]
    variants = {"detection only": (0, True, BOX_LEVEL), "+ per-box Grad-CAM, 10 boxes": (10, True, BOX_LEVEL),
                "+ 10 boxes, full-map backward": (10, False, BOX_LEVEL),
                "+ 10 boxes at class_head_input": (10, True, "class_head_input"),
                "+ per-box Grad-CAM, 20 boxes": (20, True, BOX_LEVEL)}
    pipelines = {}
    for name, (k, windows, layer) in variants.items():
        cfg = DetectionPipelineConfig(model=args.model, backend=args.backend, threads=args.threads, explain_boxes=k,
                                      layer=layer)
        # windows on or off: an explain option the pipeline does not expose (off only to measure what they save)
        with mock.patch("hsi_xai_node.runtime.detection.DetectionExplainConfig",
                        lambda **kw: dataclasses.replace(DetectionExplainConfig(**kw), window_backward=windows)):
            pipelines[name] = DetectionPipeline(cfg)
    timings = {name: [] for name in pipelines}
    counts = []
    for p in pipelines.values():
        p.process(frames[0])  # warm-up
    for images in frames[1:]:
        for name, p in pipelines.items():
            time.sleep(PAUSE_S)
            r = p.process(images)
            timings[name].append(r.timings_ms)
        counts.append(len(r.detections))
    base = timings["detection only"]
    results = {"machine": platform.machine(), "cpu": machine_cpu(), "backend": args.backend, "frames": args.frames,
               "model": args.model, "median_detections": float(np.median(counts)), "pipelines": {}}
    print(f"{'pipeline':32s} {'frontend':>9s} {'engine':>9s} {'post':>8s} {'total':>9s} {'fps':>6s} {'engine x':>9s} "
          f"{'total x':>8s}")
    for name, rows in timings.items():
        med = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
        med["fps"] = 1000.0 / med["total"]
        # each frame against detection alone on the same frame, in the same round: the VM's speed drifts by tens of
        # percent over a run, and a ratio of two medians taken apart carries that drift
        for key in ("engine", "total"):
            med[f"{key}_ratio"] = float(np.median([r[key] / b[key] for r, b in zip(rows, base)]))
        results["pipelines"][name] = med
        print(f"{name:32s} {med['frontend']:9.1f} {med['engine']:9.1f} {med['post']:8.1f} {med['total']:9.1f} "
              f"{med['fps']:6.1f} {med['engine_ratio']:9.3f} {med['total_ratio']:8.3f}")
    print(f"median detections per frame: {results['median_detections']:.0f}; on {results['cpu']}")
    print("(median ms; engine x, total x: the median of each frame's ratio to detection alone on that frame)")
    if args.profile_rounds:
        print(f"\nONNX Runtime's profiler over each pipeline's graph ({args.profile_rounds} runs, {ORT_OPTIMIZATION}): "
              "mean kernel ms per call")
        for name, p in pipelines.items():
            x = p.frontend.stack(p.frontend.register_all(frames[1]))
            model = (p.graph.model if p.graph is not None else p.loaded.model).SerializeToString()
            t = kernel_split(only_outputs(model, p._outputs), {p.card.input.tensor: x}, p._outputs, args.threads,
                             args.profile_rounds)
            results["pipelines"][name]["profile"] = t
            print(f"{name:32s} detector nodes {t['forward_ms']:6.2f} ms, explain nodes {t['explain_ms']:5.2f} ms "
                  f"({t['explain_nodes']} nodes)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
