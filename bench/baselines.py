"""Cost per map of RISE and SIDU (paper 001's offline baselines) beside the in-graph Grad-CAM, in one run.

    .venv/bin/python bench/baselines.py [--rise-masks 500] [--grid 8] [--p 0.5] [--batch 10]
        [--sidu-layers penultimate,bottleneck] [--threads 1] [--repeats 5] [--baseline-repeats 1]
        [--detector models/efficientdet_rgb_mir.onnx] [--json out.json]

Segmentation: the bundled 25-band PN U-Net on frame 30 of generated drive 2003 (front end
and model input as the pipeline builds them), all 5 classes explained at once:

* forward only;
* Grad-CAM in the graph: the pipeline's explain graph (activation maps + Seg-Grad-CAM +
  HiRes at the layer before the final 1x1 conv, closed form there, upsampled + uint8), and
  Seg-Grad-CAM at the bottleneck (a real backward pass through the decoder);
* RISE (`--rise-masks` masks of `--grid` x `--grid` cells, p `--p`), `--batch` masked
  inputs per engine call, scores: each class's mean softmax probability over its
  predicted region (reliability._baselines.segmentation_scores);
* SIDU at each `--sidu-layers` layer (card roles or tensor names): one mask per channel.

Detection (when `--detector` exists): the same on the detector's first generated frame
(drive 3005, every 7th frame) with at least one kept box: Grad-CAM is the detection
pipeline's explain graph (per-box Grad-CAM at the class-head input for a fixed batch of
`--boxes` rows); RISE and SIDU explain the kept boxes (up to `--boxes`) at once, scored by
each box's class score at its anchor; SIDU's layer is the card's class-head input. The
detector's batch is hard-coded (its head reshapes to batch 1), so its masked inputs loop.

Cost per map = the call's time / the maps it makes (5 classes, or the boxes). Times are
medians of `--repeats` calls (Grad-CAM, forward) and `--baseline-repeats` (RISE, SIDU),
interleaved. ONNX Runtime CPU with `--threads` intra-op threads; set OMP_NUM_THREADS and
OPENBLAS_NUM_THREADS too for numpy's share. Paper 001's numbers (i9-9980XE + Quadro RTX
6000, EfficientDet-D0 at 512 x 512): Grad-CAM 0.1 s, SIDU 8.5 s, RISE 32 s (5000 masks,
batch 24) per map.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from hsi_xai_node.explain import SegmentationExplainConfig, build_segmentation_explainer
from hsi_xai_node.reliability._baselines import (BaselineModel, detection_scores, rise, segmentation_scores,
                                                 sidu)
from hsi_xai_node.runtime import Pipeline, PipelineConfig
from hsi_xai_node.runtime.detection import DEFAULT_DETECTOR, DetectionPipeline, DetectionPipelineConfig
from hsi_xai_node.runtime.engine import open_engine
from hsi_xai_node.runtime.pipeline import DEFAULT_MODEL
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.calibration import load_profile

PAPER_001_S_PER_MAP = {"Grad-CAM": 0.1, "SIDU": 8.5, "RISE (5000 masks)": 32.0}


def timed(runs: dict, repeats: dict) -> dict:
    """Median seconds per entry; entries interleaved, each after one untimed warm-up (cheap ones only)."""
    times = {k: [] for k in runs}
    for k, fn in runs.items():
        if repeats[k] > 1:
            fn()
    for r in range(max(repeats.values())):
        for k, fn in runs.items():
            if r < repeats[k]:
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def warm(runner: BaselineModel, x: np.ndarray) -> None:
    """One untimed call of each of the runner's engines (first-call allocations)."""
    runner.reference(x)
    runner.run_rows(np.repeat(x, runner.batch if runner.batched else 1, axis=0))


def segmentation(args) -> dict:
    profile = load_profile("hsi-drive")
    gen = DriveGenerator(profile, seed=2003, render_cameras=False)
    dark, white = gen.references()
    pipe = Pipeline(PipelineConfig(model=str(DEFAULT_MODEL), backend=args.backend, precision="fp32",
                                   threads=args.threads), dark, white)
    card = pipe.card
    x = card.model_input(pipe.frontend.process(gen.frame(30).raw).cube.data)
    model = onnx.load(str(DEFAULT_MODEL))
    feed = {card.input.tensor: x}
    forward = open_engine(model.SerializeToString(), args.backend, "fp32", threads=args.threads)
    bottleneck = build_segmentation_explainer(
        model, card.input.tensor, card.logits, card.layers,
        SegmentationExplainConfig(methods=("seg_gradcam",), layers=("bottleneck",), upsample=True, uint8=False))
    gc_bottleneck = open_engine(bottleneck.model.SerializeToString(), args.backend, "fp32", threads=args.threads)
    logits = forward.run(feed, [card.logits])[card.logits]
    classes = list(range(logits.shape[1]))
    score = segmentation_scores(classes, logits[0].argmax(0), card.logits, args.score)
    rise_runner = BaselineModel(model, args.batch, backend=args.backend, threads=args.threads)
    layers = {name: card.layers.get(name, name) for name in args.sidu_layers.split(",") if name}
    sidu_runners = {name: BaselineModel(model, args.batch, [t], backend=args.backend, threads=args.threads)
                    for name, t in layers.items()}
    for r in (rise_runner, *sidu_runners.values()):
        warm(r, x)
    info = {}

    def run_sidu(name):
        d = {}
        sidu(sidu_runners[name], x, score, layers[name], details=d)
        info[name] = d

    runs = {"forward only": lambda: forward.run(feed),
            "Grad-CAM, pipeline explain graph": lambda: pipe.engine.run(feed),
            "Seg-Grad-CAM @bottleneck (backward)": lambda: gc_bottleneck.run(feed),
            "RISE": lambda: rise(rise_runner, x, score, n_masks=args.rise_masks, grid=args.grid, p=args.p,
                                 seed=0, details=info.setdefault("RISE", {}))}
    runs |= {f"SIDU @{name}": (lambda n=name: run_sidu(n)) for name in layers}
    cheap = ("forward only", "Grad-CAM, pipeline explain graph", "Seg-Grad-CAM @bottleneck (backward)")
    med = timed(runs, {k: args.repeats if k in cheap else args.baseline_repeats for k in runs})
    k = len(classes)
    rows = {"forward only": {"s": med["forward only"], "maps": None, "passes": 1},
            "Grad-CAM, pipeline explain graph": {"s": med["Grad-CAM, pipeline explain graph"], "maps": k,
                                                 "passes": 1, "note": "activation + Seg-Grad-CAM + HiRes @dec1"},
            "Seg-Grad-CAM @bottleneck (backward)": {"s": med["Seg-Grad-CAM @bottleneck (backward)"], "maps": k,
                                                    "passes": 1},
            f"RISE ({args.rise_masks} masks)": {"s": med["RISE"], "maps": k, "passes": args.rise_masks,
                                                "calls": info["RISE"]["calls"]}}
    for name in layers:
        d = info[name]
        rows[f"SIDU @{name} ({d['masks']} masks)"] = {
            "s": med[f"SIDU @{name}"], "maps": k, "passes": d["masks"] + 1, "calls": d["calls"],
            "mask_fraction": float(np.mean(d["mask_fraction"])),
            "empty_masks": int(np.sum(d["mask_fraction"] == 0))}
    return {"model": card.name, "input": list(x.shape), "targets": k, "batched": rise_runner.batched,
            "rows": _per_map(rows, "Grad-CAM, pipeline explain graph")}


def first_frame_with_boxes(pipe: DetectionPipeline, forward, max_frames: int = 12):
    gen = DriveGenerator(load_profile("hsi-drive"), seed=3005, render_hsi=False)
    for i in range(max_frames):
        x = pipe.frontend({n: c.image for n, c in gen.frame(i * 7).cameras.items()})
        if pipe.card.input.layout == "nhwc":
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        out = forward.run({pipe.card.input.tensor: x}, ["det_pairs", "det_scores"])
        kept = [int(p) for p, s in zip(out["det_pairs"][0], out["det_scores"][0])
                if p >= 0 and s > pipe.score_threshold]
        if kept:
            return i * 7, x, kept
    return None, None, []


def detection(args) -> dict | None:
    path = Path(args.detector)
    if not path.exists():
        print(f"\n(no detector at {path}: detection part skipped)")
        return None
    pipe = DetectionPipeline(DetectionPipelineConfig(model=str(path), backend=args.backend, precision="fp32",
                                                     threads=args.threads, explain_boxes=args.boxes))
    card, model = pipe.card, pipe.loaded.model
    forward = open_engine(model.SerializeToString(), args.backend, "fp32", threads=args.threads)
    frame, x, kept = first_frame_with_boxes(pipe, forward)
    if not kept:
        print("\n(the detector keeps no box on the first generated frames: detection part skipped)")
        return None
    pairs = kept[:args.boxes]
    k = len(pairs)
    rows_gradcam = pipe.graph.outputs[next(iter(pipe.graph.outputs))].shape[0]
    feed = {card.input.tensor: x}
    score = detection_scores(pairs, card.scores)
    layout = card.input.layout.upper()
    layer = card.layers.get("class_head_input", "class_head_input")
    rise_runner = BaselineModel(model, args.batch, backend=args.backend, threads=args.threads)
    sidu_runner = BaselineModel(model, args.batch, [layer], backend=args.backend, threads=args.threads)
    for r in (rise_runner, sidu_runner):
        warm(r, x)
    info, rise_info = {}, {}

    def run_sidu():
        sidu(sidu_runner, x, score, layer, layout=layout, details=info)

    runs = {"forward only": lambda: forward.run(feed),
            "Grad-CAM, pipeline explain graph": lambda: pipe.engine.run(feed),
            "RISE": lambda: rise(rise_runner, x, score, n_masks=args.rise_masks, grid=args.grid, p=args.p, seed=0,
                                 layout=layout, details=rise_info),
            "SIDU": run_sidu}
    cheap = ("forward only", "Grad-CAM, pipeline explain graph")
    med = timed(runs, {n: args.repeats if n in cheap else args.baseline_repeats for n in runs})
    rows = {"forward only": {"s": med["forward only"], "maps": None, "passes": 1},
            "Grad-CAM, pipeline explain graph": {"s": med["Grad-CAM, pipeline explain graph"], "maps": rows_gradcam,
                                                 "passes": 1, "note": f"per-box Grad-CAM @{layer}, "
                                                                      f"{rows_gradcam} rows"},
            f"RISE ({args.rise_masks} masks)": {"s": med["RISE"], "maps": k, "passes": args.rise_masks,
                                                "calls": rise_info["calls"]},
            f"SIDU @{layer} ({info['masks']} masks)": {
                "s": med["SIDU"], "maps": k, "passes": info["masks"] + 1, "calls": info["calls"],
                "mask_fraction": float(np.mean(info["mask_fraction"])),
                "empty_masks": int(np.sum(info["mask_fraction"] == 0))}}
    return {"model": card.name, "input": list(x.shape), "frame": frame, "targets": k, "pairs": pairs,
            "batched": rise_runner.batched, "rows": _per_map(rows, "Grad-CAM, pipeline explain graph")}


def _per_map(rows: dict, reference: str) -> dict:
    ref = rows[reference]["s"] / rows[reference]["maps"]
    for r in rows.values():
        if r["maps"]:
            r["s_per_map"] = r["s"] / r["maps"]
            r["x_gradcam"] = r["s_per_map"] / ref
    return rows


def show(title: str, res: dict, args) -> None:
    print(f"\n{title}: {res['model']}, input {tuple(res['input'])}, {res['targets']} maps per RISE/SIDU call, "
          f"{args.threads} thread(s), {args.backend}; masked inputs {'batched' if res['batched'] else 'looped'}, "
          f"batch {args.batch}")
    print(f"{'method':44s} {'passes':>7s} {'calls':>6s} {'total s':>9s} {'maps':>5s} {'s/map':>9s} {'x Grad-CAM':>11s}")
    for name, r in res["rows"].items():
        maps = r["maps"] or "-"
        per = f"{r['s_per_map']:9.4f} {r['x_gradcam']:11.1f}" if r["maps"] else f"{'-':>9s} {'-':>11s}"
        print(f"{name:44s} {r['passes']:7d} {r.get('calls', 1):6d} {r['s']:9.3f} {maps!s:>5s} {per}")
    for name, r in res["rows"].items():
        if "mask_fraction" in r:
            print(f"  {name}: mean mask fraction {r['mask_fraction']:.2f}, empty masks {r['empty_masks']}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rise-masks", type=int, default=500)
    ap.add_argument("--grid", type=int, default=8, help="RISE cells per side")
    ap.add_argument("--p", type=float, default=0.5, help="RISE: probability a cell is kept")
    ap.add_argument("--batch", type=int, default=10, help="masked inputs per engine call")
    ap.add_argument("--sidu-layers", default="penultimate,bottleneck", help="U-Net card roles or tensor names")
    ap.add_argument("--score", default="prob", choices=("prob", "logit"), help="segmentation score")
    ap.add_argument("--boxes", type=int, default=10, help="detector: boxes explained (Grad-CAM rows)")
    ap.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    ap.add_argument("--backend", default="ort-cpu")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls of the forward and Grad-CAM graphs")
    ap.add_argument("--baseline-repeats", type=int, default=1, help="timed calls of RISE and SIDU")
    ap.add_argument("--skip-segmentation", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    results = {"machine": platform.machine(), "processor": platform.processor(), "onnxruntime": ort.__version__,
               "settings": vars(args), "paper_001_s_per_map": PAPER_001_S_PER_MAP}
    if not args.skip_segmentation:
        results["segmentation"] = segmentation(args)
        show("segmentation", results["segmentation"], args)
    results["detection"] = detection(args)
    if results["detection"]:
        show("detection", results["detection"], args)
    print("\npaper 001 (i9-9980XE + Quadro RTX 6000, EfficientDet-D0 512x512), s per map: "
          + ", ".join(f"{k} {v}" for k, v in PAPER_001_S_PER_MAP.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
