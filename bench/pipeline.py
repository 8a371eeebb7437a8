"""Whole-pipeline speed: per-stage median times, and the engine call against the plain forward pass.

    .venv/bin/python bench/pipeline.py [--frames 24] [--backend ort-cpu,openvino] [--no-references] [--json out.json]

Runs the same generated drive frames through the pipelines, interleaved frame by frame: the
bundled 25-band PN U-Net (`models/unet_bundled_25pn.onnx`) and an HSI-Drive-size U-Net (32 base
filters, 7.8M parameters; random weights, which do not change the cost) with a card copied from
the bundled one, on each backend asked for. Each pipeline computes the default explanations (the
activation maps and Seg-Grad-CAM at the layer before the final conv, all classes, the overlays).
Beside each pipeline, in the same round, an engine of the same backend and threads runs the model's
plain forward graph (the card's ONNX as it is) on that frame's model input: the ratios
engine / forward and total / forward are what the explanations and the host stages add. The pipelines
have the drive's dark and white reference frames (the front end reads a gain and an offset per cube
value each frame) unless --no-references.
Stages: frontend (raw -> model input), engine (model + explanations), post (labels, colour,
fused overlays, conservativeness residual, frame figures).

With --ingraph, each ONNX Runtime or OpenVINO pipeline also runs as `InGraphPipeline` (raw mosaic in,
uint8 images out, everything in one engine call: the GPU path), timed the same way: its "engine" is
the whole chain and its "frontend" the host's few steps around it; it computes neither the
conservativeness residual nor float maps (runtime/ingraph.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from hsi_xai_node.explain._graph import NODE_PREFIX
from hsi_xai_node.model_card import ModelCard, file_sha256, load_model
from hsi_xai_node.runtime import InGraphPipeline, Pipeline, PipelineConfig, open_engine
from hsi_xai_node.runtime.engine import ORT_OPTIMIZATION
from hsi_xai_node.runtime.pipeline import DEFAULT_MODEL
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.calibration import load_profile


def full_size_model(tmp: Path) -> Path:
    """An HSI-Drive-size U-Net ONNX + card (same input spec as the bundled 25pn card)."""
    import torch

    from hsi_xai_node.training.segmentation import export_onnx
    from hsi_xai_node.training.unet import UNet, UNetConfig, parameter_count

    card = ModelCard.load(DEFAULT_MODEL.with_suffix(".json"))
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=25, num_classes=5, base_filters=32)).eval()
    path = tmp / "unet_hsi_drive_25pn_random.onnx"
    export_onnx(net, path, card.input.shape)
    card = dataclasses.replace(card, name=path.stem, file=path.name, sha256=file_sha256(path),
                               architecture={"type": "unet", **net.config.to_dict(),
                                             "parameters": parameter_count(net)},
                               training={"note": "random weights: for timing only"}, metrics={})
    path.with_suffix(".json").write_text(card.to_json())
    return path


# untimed pause before every timed call: the engines' worker threads spin for a while after a run and would
# take the cores from the next engine's run (several engines share 2 cores here)
PAUSE_S = 0.05


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--threads", type=int, default=0, help="engine intra-op threads (0: all cores)")
    ap.add_argument("--backend", default="ort-cpu",
                    help="tensorrt, ort-trt, ort-cuda, openvino or ort-cpu (default); a comma list runs each, "
                         "interleaved, with the ratio to the first (e.g. ort-cpu,openvino)")
    ap.add_argument("--profile-rounds", type=int, default=20,
                    help="runs of each engine's profiler per graph (0: no profile)")
    ap.add_argument("--ingraph", action="store_true", help="also time each pipeline as InGraphPipeline")
    ap.add_argument("--no-references", action="store_true",
                    help="pipelines without dark/white reference frames (a camera before its references arrive, the "
                         "library's default): digital numbers scaled by the bit depth")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    profile = load_profile("hsi-drive")
    gen = DriveGenerator(profile, seed=2002, render_cameras=False)
    dark, white = (None, None) if args.no_references else gen.references()
    frames = [gen.frame(i * 5 % 120).raw for i in range(args.frames + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        models = {"bundled (25pn, 1.1M params)": DEFAULT_MODEL,
                  "hsi-drive size (25pn, 7.8M params)": full_size_model(Path(tmp))}
        backends = args.backend.split(",")
        pipelines = {(name, b): Pipeline(PipelineConfig(model=str(path), backend=b, threads=args.threads), dark, white)
                     for name, path in models.items() for b in backends}
        forwards = {key: open_engine(load_model(p.config.model, profile=profile).onnx_bytes, key[1], threads=args.threads)
                    for key, p in pipelines.items()}
        if args.ingraph:  # the same pipelines as one graph from the raw mosaic; their forward is the pipeline's
            ingraph = {(name + " in-graph", b): InGraphPipeline(p, raw_dtype="uint16" if b == "ort-cpu" else "int32",
                                                                backend=b)
                       for (name, b), p in pipelines.items() if b in ("ort-cpu", "openvino")}
            forwards |= {key: forwards[(key[0].removesuffix(" in-graph"), key[1])] for key in ingraph}
        timings = {name: [] for name in [*pipelines, *(ingraph if args.ingraph else {})]}

        def forward_ms(key, raw) -> float:
            p = pipelines[(key[0].removesuffix(" in-graph"), key[1])]
            x = p.card.model_input(p.frontend.process(raw).cube.data)
            time.sleep(PAUSE_S)
            t0 = time.perf_counter()
            forwards[key].run({p.card.input.tensor: x})
            return (time.perf_counter() - t0) * 1e3

        for key, p in pipelines.items():  # warm-up
            p.process(frames[0])
            forward_ms(key, frames[0])
        runners = {**pipelines, **(ingraph if args.ingraph else {})}
        for key, p in runners.items():  # warm-up of the in-graph ones
            p.process(frames[0])
        for raw in frames[1:]:
            for key, p in runners.items():  # the pipeline and its forward back to back: the same load on both
                time.sleep(PAUSE_S)
                t = p.process(raw).timings_ms
                if "host" in t:  # in-graph: the host's steps around the one engine call
                    t = {"frontend": t["host"], "engine": t["engine"], "post": 0.0, "total": t["total"]}
                timings[key].append({**t, "forward": forward_ms(key, raw)})
        graphs = {f"{name} on {b}": {"nodes": len(p.graph.model.graph.node), "outputs": sorted(p._plan)}
                  for (name, b), p in pipelines.items()}
        node_times = {f"{name} on {b}": node_time_split(p, frames[1], args.threads, args.profile_rounds)
                      for (name, b), p in pipelines.items() if b in ("ort-cpu", "openvino") and args.profile_rounds > 0}
    results = {"machine": platform.machine(), "cpu": machine_cpu(), "backends": backends, "frames": args.frames,
               "references": not args.no_references,
               "threads": args.threads, "pipelines": {}, "graphs": graphs, "node_times": node_times}
    print(f"{'pipeline':36s} {'backend':>9s} {'frontend':>9s} {'engine':>8s} {'post':>6s} {'total':>8s} {'forward':>8s} "
          f"{'engine/fwd':>10s} {'total/fwd':>9s} {'fps':>6s} {'x first':>8s}")
    for (name, backend), rows in timings.items():
        med = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
        # per-frame ratios (each frame's pipeline beside its own forward), then their median
        med["engine_over_forward"] = float(np.median([r["engine"] / r["forward"] for r in rows]))
        med["total_over_forward"] = float(np.median([r["total"] / r["forward"] for r in rows]))
        med["fps"] = 1000.0 / med["total"]
        results["pipelines"][f"{name} on {backend}"] = med
        first = results["pipelines"][f"{name} on {backends[0]}"]["total"]
        med["speedup_vs_first"] = first / med["total"]
        print(f"{name:36s} {backend:>9s} {med['frontend']:9.1f} {med['engine']:8.1f} {med['post']:6.1f} "
              f"{med['total']:8.1f} {med['forward']:8.1f} {med['engine_over_forward']:10.3f} "
              f"{med['total_over_forward']:9.3f} {med['fps']:6.2f} {med['speedup_vs_first']:8.2f}")
    print("(median ms; engine/fwd and total/fwd: medians of each frame's ratio to its own forward; x first: the first "
          "backend's total over this one's)")
    if node_times:
        print(f"\nEach engine's own per-node times over each pipeline graph ({args.profile_rounds} runs; "
              "ONNX Runtime's profiler, OpenVINO's PERF_COUNT): the explain graph's own nodes against the model's")
    for name, t in node_times.items():
        print(f"{name:48s} forward nodes {t['forward_ms']:7.2f} ms, explain nodes {t['explain_ms']:6.2f} ms: "
              f"{t['ratio']:.3f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


def node_time_split(pipeline, raw, threads: int, rounds: int) -> dict:
    """Mean kernel ms per call of the model's own nodes and of the explain nodes (named xai/...), from the
    pipeline's engine's own per-node times over its graph (ONNX Runtime's profiler, or OpenVINO's PERF_COUNT): what
    the explanations cost, free of the machine's noise between calls (the same way the issue measured 1.17x before
    the graph was pruned)."""
    p = pipeline
    x = p.card.model_input(p.frontend.process(raw).cube.data)
    split = openvino_split if p.engine.backend == "openvino" else kernel_split
    return split(p.graph.model.SerializeToString(), {p.card.input.tensor: x, **p.scale_feeds()}, None, threads, rounds)


def kernel_split(model: bytes, feeds: dict, outputs: list[str] | None, threads: int, rounds: int) -> dict:
    """Mean kernel ms per call of a graph's own nodes ("forward") and of the explain nodes (named xai/...) over
    `rounds` calls after a first one (allocations, first touches), from ONNX Runtime's profiler at the engines'
    level; and how many explain nodes the graph has."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.enable_profiling, opts.profile_file_prefix = True, str(Path(tmp) / "profile")
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{ORT_OPTIMIZATION.upper()}")
        session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        feeds = {k: v for k, v in feeds.items() if k in {i.name for i in session.get_inputs()}}
        for _ in range(rounds + 1):
            session.run(outputs, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    first_end = min(e["ts"] + e["dur"] for e in events if e.get("name") == "model_run")
    split = {"forward": 0.0, "explain": 0.0}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_end:
            split["explain" if e["name"].startswith(NODE_PREFIX) else "forward"] += e["dur"] / 1e3 / rounds
    return _split_row(model, split)


def openvino_split(model: bytes, feeds: dict, outputs: list[str] | None, threads: int, rounds: int) -> dict:
    """`kernel_split` from OpenVINO's CPU plugin: its per-node real times (PERF_COUNT) over `rounds` calls after a
    first one, the model compiled as the engine compiles it (f32, `threads`). The plugin fuses and renames nodes: a
    node counts as the explanation's where its name starts with xai/ (an element-wise chain fused into one of the
    model's own nodes counts as the model's)."""
    import openvino as ov

    from hsi_xai_node.runtime.engine import only_outputs
    from hsi_xai_node.runtime.openvino_backend import device_config

    core = ov.Core()
    compiled = core.compile_model(core.read_model(only_outputs(model, outputs) if outputs else model, b""), "CPU",
                                  {**device_config("CPU", "fp32", threads), "PERF_COUNT": "YES"})
    request = compiled.create_infer_request()
    names = {p.get_any_name(): p for p in compiled.inputs}
    feeds = {names[k]: v for k, v in feeds.items() if k in names}
    request.infer(feeds)
    split = {"forward": 0.0, "explain": 0.0}
    for _ in range(rounds):
        request.infer(feeds)
        for node in request.profiling_info:
            split["explain" if node.node_name.startswith(NODE_PREFIX) else "forward"] += \
                node.real_time.total_seconds() * 1e3 / rounds
    return _split_row(model, split)


def _split_row(model: bytes, split: dict[str, float]) -> dict:
    import onnx

    nodes = sum(n.name.startswith(NODE_PREFIX) for n in onnx.load_from_string(model).graph.node)
    return {"forward_ms": split["forward"], "explain_ms": split["explain"], "explain_nodes": nodes,
            "ratio": (split["forward"] + split["explain"]) / split["forward"]}


def machine_cpu() -> str:
    from hsi_xai_node.runtime.backend_choice import machine_description

    d = machine_description()
    return f"{d['cpu']} ({d['cores']} cores; {', '.join(d['instruction_sets'])})"


if __name__ == "__main__":
    main()
