"""Cost of in-graph explanations on ONNX Runtime CPU, beside the forward pass and a hook-based baseline.

    .venv/bin/python bench/explain.py [--sizes bundled,hsi-drive] [--repeats 5] [--json out.json]

For each U-Net size (bundled: 12 base filters; hsi-drive: HSI-Drive's 32, 7.8M
parameters) at the model input 1x25x208x400 (the largest multiple of 16 inside the
25x216x409 cube), all 5 classes at once, it times in one run, interleaved:

* the forward-only graph;
* activation maps (paper 000, no backward): the per-class maps alone, and with the top-3
  channel maps per class and the second conv block's activations as extra outputs;
* HiRes + Seg-Grad-CAM at the layer before the final 1x1 conv (dec1);
* HiRes + Seg-Grad-CAM at the bottleneck;
* the same Grad-CAMs the way hook-based CAM libraries compute them: PyTorch autograd,
  one forward + backward per class, same CPU threads;
* every other method of the CAM family alone (Grad-CAM++, XGrad-CAM, LayerCAM, Seg-XRes-CAM,
  EigenCAM, FEM) at both layers, and Score-CAM at the layer before the final conv, beside RISE (500
  masks) on the same model: cost per map;
* the bundled detector (`--detector`): detection only, and each per-box method for 10 boxes (the CAM family,
  box_spectral and paper 003's input attributions) at bifpn_p2 for every box, and Grad-CAM at each box's own
  pyramid level (box_level, the pipeline's default);
* with `--openvino`, some of those graphs also on OpenVINO (CPU, f32, same threads), interleaved,
  with ONNX Runtime's time over OpenVINO's.

It also prints the lower bound arithmetic sets: multiply-adds of the explain graph
(forward + the backward sub-graph at batch = classes) over those of the forward.
Weights are random (cost does not depend on their values); the graphs are the ones
`build_segmentation_explainer` makes for any U-Net of this shape.
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
import torch

from hsi_xai_node.explain import SegmentationExplainConfig, build_segmentation_explainer
from hsi_xai_node.explain import multiply_adds
from hsi_xai_node.runtime.engine import ORT_OPTIMIZATION
from hsi_xai_node.training.unet import UNet, parameter_count
from common import interleaved_medians, over_forward, random_unet  # bench/common.py: the script's folder

SHAPE = (1, 25, 208, 400)
FAMILY = ("gradcam_pp", "xgradcam", "layercam", "seg_xres", "eigencam", "fem", "scorecam")
BOX_FAMILY = ("box_gradcam", "box_hires", "box_gradcam_pp", "box_xgradcam", "box_layercam", "box_xres", "box_eigencam",
              "box_fem", "box_spectral",
              # paper 003's input attributions per box (PathOptions defaults: SmoothGrad 8 samples, 17 IG points)
              "box_gradient", "box_deeplift", "box_lrp_epsilon", "box_lrp_epsilon_plus_flat", "box_smoothgrad",
              "box_integrated_gradients")
CLASSES = 5
LAYERS = {"penultimate": "dec1", "second_conv_block": "enc1", "bottleneck": "bottleneck"}


def openvino_runs(graphs: dict, names: list[str], threads: int, feed: dict) -> dict:
    """OpenVINO (CPU, f32) runs of some of the graphs, named "<graph> [openvino]"."""
    from hsi_xai_node.runtime.openvino_backend import OpenVinoEngine

    runs = {}
    for k in names:
        engine = OpenVinoEngine(graphs[k].SerializeToString(), threads=threads)
        runs[f"{k} [openvino]"] = lambda e=engine: e.run(feed)
    return runs


# ONNX Runtime's optimisation level of the sessions timed here: the engines' own (runtime/engine.py) unless
# --ort-level says otherwise (the tables before 2026-12-05 were measured at "extended")
ORT_LEVEL = {"level": ORT_OPTIMIZATION}


def ort_level():
    return getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{ORT_LEVEL['level'].upper()}")


def ort_session(model: onnx.ModelProto, threads: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort_level()
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def hook_gradcams(model: UNet, x: torch.Tensor, layer: str) -> list:
    """What hook-based libraries do: per class, a forward with a hook, a backward of the region score."""
    cams = []
    for c in range(CLASSES):
        store = {}

        def keep(module, inputs, output):  # returns None: a forward hook's return value replaces the output
            output.retain_grad()
            store["a"] = output
        handle = getattr(model, layer).register_forward_hook(keep)
        logits = model(x)
        region = (logits.argmax(1) == c).float()
        model.zero_grad(set_to_none=True)
        (logits[:, c] * region).sum().backward()
        handle.remove()
        a, g = store["a"], store["a"].grad
        cams.append(torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1)).detach())  # Seg-Grad-CAM
        cams.append((g * a).sum(1).detach())  # HiRes
    return cams


OPENVINO_ROWS = ("forward", "activation maps", "gradcam+hires@penultimate", "gradcam+hires@bottleneck",
                 "gradcam_pp@penultimate", "eigencam@penultimate")


def bench_size(size: str, repeats: int, threads: int, openvino: bool = False) -> dict:
    net, forward = random_unet(size, SHAPE, CLASSES)
    graphs = {"forward": forward}
    graphs["activation maps"] = build_segmentation_explainer(
        forward, "input", "logits", LAYERS, SegmentationExplainConfig(methods=("activation",), top_k=0,
                                                                       second_block=False, upsample=False,
                                                                       uint8=False)).model
    graphs["+ top-3 + second block"] = build_segmentation_explainer(
        forward, "input", "logits", LAYERS, SegmentationExplainConfig(methods=("activation",), upsample=False,
                                                                       uint8=False)).model
    for layer in ("penultimate", "bottleneck"):
        graphs[f"gradcam+hires@{layer}"] = build_segmentation_explainer(
            forward, "input", "logits", LAYERS,
            SegmentationExplainConfig(methods=("seg_gradcam", "hires"), layers=(layer,), upsample=False,
                                      uint8=False)).model
    for method in FAMILY:
        for layer in ("penultimate", "bottleneck"):
            if method == "scorecam" and layer == "bottleneck":
                continue  # a forward per channel: 96 / 256 of them at the bottleneck
            graphs[f"{method}@{layer}"] = build_segmentation_explainer(
                forward, "input", "logits", LAYERS,
                SegmentationExplainConfig(methods=(method,), layers=(layer,), upsample=False, uint8=False)).model
    sessions = {k: ort_session(g, threads) for k, g in graphs.items()}
    macs = {k: multiply_adds(g) for k, g in graphs.items()}
    x = np.random.default_rng(0).uniform(0.5, 1.5, SHAPE).astype(np.float32)
    torch.set_num_threads(threads)
    xt = torch.from_numpy(x)
    hooks = {"hooks@penultimate": lambda: hook_gradcams(net, xt, "dec1"),
             "hooks@bottleneck": lambda: hook_gradcams(net, xt, "bottleneck")}
    if size == "bundled":  # RISE, the perturbation baseline, for Score-CAM's cost per map beside it
        from hsi_xai_node.reliability import BaselineModel, rise, segmentation_scores

        runner = BaselineModel(forward, batch=16, threads=threads)
        logits = sessions["forward"].run(None, {"input": x})[0]
        score = segmentation_scores(list(range(CLASSES)), logits[0].argmax(0))
        hooks["rise (500 masks)"] = lambda: rise(runner, x, score, n_masks=500)
    runs = {k: (lambda s=s: s.run(None, {"input": x})) for k, s in sessions.items()} | hooks
    if openvino:
        runs |= openvino_runs(graphs, list(OPENVINO_ROWS), threads, {"input": x})
    med = interleaved_medians(runs, repeats)
    rows = over_forward(med, macs)
    for layer in ("penultimate", "bottleneck"):
        rows[f"hooks@{layer}"]["ours_speedup"] = med[f"hooks@{layer}"] / med[f"gradcam+hires@{layer}"]
    for k in list(rows):
        if k.endswith(" [openvino]"):  # ONNX Runtime's time over OpenVINO's for the same graph
            rows[k]["ort_over_openvino"] = med[k.removesuffix(" [openvino]")] / med[k]
    for k in rows:
        rows[k]["ms_per_map"] = rows[k]["median_ms"] / CLASSES
    return {"size": size, "parameters": parameter_count(net), "shape": SHAPE, "classes": CLASSES,
            "repeats": repeats, "threads": threads, "rows": rows}


DETECTOR_PAUSE_S = 0.05  # before each timed detector call: the other sessions' spinning threads go idle first


def bench_detector(repeats: int, threads: int, openvino: bool = False) -> dict:
    """The bundled RGB+MIR EfficientDet: detection only, and each per-box method for 10 boxes, interleaved (a
    50 ms untimed pause before each call: 17 ONNX Runtime sessions' worker threads spin after their calls)."""
    from hsi_xai_node.detection.card import load_detector
    from hsi_xai_node.explain import BOX_LEVEL, DetectionExplainConfig, build_detection_explainer
    from hsi_xai_node.runtime.detection import DEFAULT_DETECTOR, DetectionPipeline, DetectionPipelineConfig
    from hsi_xai_node.scenes.drive import DriveGenerator
    from hsi_xai_node.sensor.calibration import load_profile

    loaded = load_detector(DEFAULT_DETECTOR)
    card = loaded.card
    x = DetectionPipeline(DetectionPipelineConfig(backend="ort-cpu", explain_boxes=0)).frontend(
        {n: c.image for n, c in DriveGenerator(load_profile("hsi-drive"), seed=3005, render_hsi=False)
         .frame(20).cameras.items()})
    graphs = {"detection only": loaded.model}
    for method in BOX_FAMILY:
        graphs[method] = build_detection_explainer(
            loaded.model, card.input.tensor, card.scores, card.layers,
            DetectionExplainConfig(layers=("class_head_input",), top_k=10, methods=(method,), uint8=False),
            pairs="det_pairs", boxes="det_boxes").model
    # the pipeline's default layer: each box at its own pyramid level (the rows above: bifpn_p2 for every box)
    graphs["box_gradcam@box_level"] = build_detection_explainer(
        loaded.model, card.input.tensor, card.scores, card.layers,
        DetectionExplainConfig(layers=(BOX_LEVEL,), top_k=10, methods=("box_gradcam",), uint8=False),
        pairs="det_pairs", boxes="det_boxes").model
    feed = {card.input.tensor: x}
    macs = {k: multiply_adds(g) for k, g in graphs.items()}
    runs = {k: (lambda s=ort_session(g, threads): s.run(None, feed)) for k, g in graphs.items()}
    if openvino:
        runs |= openvino_runs(graphs, ["detection only", "box_gradcam"], threads, feed)
    times = {k: [] for k in runs}
    for fn in runs.values():
        fn()
    for _ in range(repeats):
        for k, fn in runs.items():
            time.sleep(DETECTOR_PAUSE_S)
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    base = {k: med[k.removesuffix(" [openvino]")] if k.endswith(" [openvino]") else None for k in med}
    only = {k: med["detection only [openvino]" if k.endswith(" [openvino]") else "detection only"] for k in med}
    rows = {k: {"median_ms": t, "x_detection": t / only[k], "ms_per_box": (t - only[k]) / 10}
            | ({"ort_over_openvino": base[k] / t} if base[k] else {}) for k, t in med.items()}
    for k, row in rows.items():  # the arithmetic bound: the graph's multiply-adds over the detector's
        if k in macs:
            row |= {"bound_x_detection": macs[k] / macs["detection only"],
                    "x_bound": row["x_detection"] / (macs[k] / macs["detection only"])}
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="bundled,hsi-drive")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ort-level", default=ORT_OPTIMIZATION, choices=("basic", "extended", "all"),
                    help=f"ONNX Runtime's graph optimisation level (default: the engines', {ORT_OPTIMIZATION!r})")
    ap.add_argument("--detector", action="store_true", help="also the bundled detector's per-box methods")
    ap.add_argument("--openvino", action="store_true",
                    help="also run the forward, activation, Grad-CAM + HiRes, Grad-CAM++ and EigenCAM graphs (and the "
                         "detector's detection-only and box_gradcam graphs) on OpenVINO CPU, interleaved")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    ORT_LEVEL["level"] = args.ort_level
    results = {"ort_level": args.ort_level, "machine": platform.machine(), "onnxruntime": ort.__version__,
               "torch": torch.__version__,
               "sizes": [bench_size(s, args.repeats, args.threads, args.openvino)
                         for s in args.sizes.split(",") if s]}
    if args.detector:
        results["detector"] = bench_detector(args.repeats, args.threads, args.openvino)
        print(f"\nbundled RGB+MIR EfficientDet, 10 boxes explained, ONNX Runtime at {args.ort_level}, ms (x detection "
              "only; ms per box; bound; x bound)")
        for k, row in results["detector"].items():
            print(f"{k:28s} {row['median_ms']:9.1f} {row['x_detection']:7.2f} {row['ms_per_box']:8.1f}"
                  + (f" {row['bound_x_detection']:7.2f} {row['x_bound']:7.2f}" if "x_bound" in row else "")
                  + (f"   ONNX Runtime / OpenVINO {row['ort_over_openvino']:.2f}" if "ort_over_openvino" in row else ""))
    for r in results["sizes"]:
        print(f"\n{r['size']} U-Net ({r['parameters'] / 1e6:.2f}M parameters), input {r['shape']}, "
              f"{r['classes']} classes, median of {r['repeats']}, {r['threads']} threads, ONNX Runtime at {args.ort_level}")
        print(f"{'graph':28s} {'ms':>9s} {'x fwd':>7s} {'GMAC':>7s} {'bound':>7s} {'x bound':>8s} {'speed-up':>9s}")
        for k, row in r["rows"].items():
            print(f"{k:28s} {row['median_ms']:9.1f} {row['x_forward']:7.2f} "
                  + (f"{row['gmacs']:7.2f} {row['bound_x_forward']:7.2f} {row['x_bound']:8.2f}" if "gmacs" in row
                     else " " * 24)
                  + (f" {row['ours_speedup']:8.1f}x" if "ours_speedup" in row else "")
                  + (f"   ONNX Runtime / OpenVINO {row['ort_over_openvino']:.2f}" if "ort_over_openvino" in row else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
