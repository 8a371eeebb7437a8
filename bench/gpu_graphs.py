"""The explain graphs on an NVIDIA GPU: what TF32 does to them, and what they cost over the forward there.

    python3 bench/gpu_graphs.py [--sizes bundled,hsi-drive] [--methods gradient,...] [--detector] [--repeats 30]
        [--device cuda] [--json out.json]

Neither TensorRT nor onnxruntime-gpu installs where this project is developed, but a GPU machine with PyTorch is
sometimes lent (DESIGN.md, section 5). There, each ONNX graph is converted to PyTorch modules by onnx2torch (one
module per ONNX node, no fusion: a lower bound on what an engine such as TensorRT makes of the same graph) and run
on the GPU in each of these modes:

* **strict float32** (cuDNN and cuBLAS told to keep IEEE float32 products), and
* **TF32**: convolutions and matrix products round their inputs to 10-bit mantissas and accumulate in float32, the
  default of TensorRT (`BuilderFlag.TF32`), of ONNX Runtime's CUDA provider (`use_tf32`) and of cuDNN convolutions
  in PyTorch on Ampere and newer GPUs, every Jetson Orin included;
* **fp16**: PyTorch's autocast to float16 over the whole graph (convolutions and matrix products in float16, what
  autocast keeps in float32 in float32): an fp16 engine that leaves the explanations to FP16 too;
* **fp16-forward**: the model's own nodes under that autocast, the explanations' nodes (named NODE_PREFIX...) in
  float32 on float32 copies of their inputs: what the TensorRT backend's fp16 build does (its FP32 plan keeps every
  explanation layer, comparison and selection in FP32); the node's default `precision`.

Each output is compared with ONNX Runtime's CPU float32 run of the same graph on the same input: float outputs as
max |GPU - CPU| over max |CPU| (what an overlay's colour scale divides by), integer outputs (labels, uint8 maps) as
the share of elements that differ. Then each graph is timed on the GPU by CUDA events, median of `--repeats` calls,
in each mode: eagerly (one kernel launch or more per ONNX node, from Python: for graphs of hundreds of small nodes
this measures the launches, not the arithmetic, so these times bound an engine's from above and their ratios say
little about TensorRT's), and, where PyTorch can capture the call as a CUDA graph, its replay (no Python, no launch
overhead). onnx2torch's modules of some ops copy host tensors to the GPU during the call, which a capture refuses;
the table then shows no replay for that graph.

Graphs: the segmentation pipeline's default explain graph (the bundled U-Net and an HSI-Drive-size one, 7.8M
parameters, random weights, as in bench/pipeline.py) with its plain forward, and the in-graph pipeline (raw mosaic
in, uint8 labels and images out: runtime/ingraph.py, the GPU path); each white-box method of `--methods`
for all 5 classes (as in bench/attributions.py); with --detector the bundled detector alone, with 10 boxes' Grad-CAM
at each box's level and with 10 boxes' input gradient (as in bench/detection.py).

Needs PyTorch with CUDA, onnx2torch (and torchvision, for its non-maximum suppression) and this package's runtime
dependencies; `--device cpu` runs the same steps on the CPU (a dry run: no TF32 there, timings meaningless). On the
lent machine, which has PyTorch, torchvision, onnx, onnxruntime and OpenCV but no network, the rest travels as wheels
(pydantic 2.14.4, pydantic-core 2.50.5, annotated-types 0.8.0, typing-inspection 0.4.5, onnx2torch 1.5.15, for
CPython 3.12, installed with `pip install --no-deps --target /tmp/site` and PYTHONPATH=/tmp/site:.).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, pipeline.py, attributions.py

from hsi_xai_node.explain import PathOptions, SegmentationExplainConfig, build_segmentation_explainer  # noqa: E402
from hsi_xai_node.explain._graph import NODE_PREFIX  # noqa: E402
from attributions import ort_session  # noqa: E402 (bench/attributions.py)

SHAPE = (1, 25, 208, 400)
CLASSES = 5
LAYERS = {"penultimate": "dec1", "second_conv_block": "enc1", "bottleneck": "bottleneck"}
DEFAULT_METHODS = ("gradient", "guided_backprop", "lrp_epsilon", "lrp_epsilon_plus_flat", "lrp_alpha2_beta1",
                   "deeplift", "smoothgrad", "integrated_gradients")


# mode -> (TF32 allowed, autocast to float16: everything, or the model's forward only)
MODES = {"fp32": (False, False), "tf32": (True, False), "fp16": (False, "all"), "fp16-forward": (False, "forward")}


class ForwardInHalf(torch.fx.Interpreter):
    """Runs an onnx2torch module with the model's own nodes under autocast to float16 and the explanations' nodes
    (NODE_PREFIX) in float32 on float32 copies of their inputs: what a TensorRT fp16 build of the project does."""

    def call_module(self, target, args, kwargs):
        if not target.startswith(NODE_PREFIX):
            with torch.autocast("cuda", dtype=torch.float16):
                return super().call_module(target, args, kwargs)
        args = tuple(a.float() if isinstance(a, torch.Tensor) and a.dtype == torch.float16 else a for a in args)
        with torch.autocast("cuda", enabled=False):
            return super().call_module(target, args, kwargs)


def set_tf32(enabled: bool) -> None:
    """TF32 in cuDNN convolutions and cuBLAS matrix products on or off."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # PyTorch 2.9 on: the old flags must not be mixed in
        conv.fp32_precision = torch.backends.cuda.matmul.fp32_precision = "tf32" if enabled else "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled


def register_missing_converters() -> None:
    """ONNX ops our graphs use that onnx2torch 1.5 has no converter for, through its own registry."""
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, onnx_mapping_from_node

    class ScatterElements(torch.nn.Module):
        def __init__(self, axis: int, reduction: str):
            super().__init__()
            self.axis, self.reduction = axis, reduction

        def forward(self, data, indices, updates):
            index = torch.where(indices < 0, indices + data.shape[self.axis], indices).long()
            if self.reduction == "none":
                return data.scatter(self.axis, index, updates)
            return data.scatter_reduce(self.axis, index, updates, {"add": "sum", "mul": "prod"}.get(
                self.reduction, self.reduction), include_self=True)

    class DynamicClip(torch.nn.Module):  # onnx2torch's Clip takes its bounds from initializers only
        def __init__(self, has_min: bool, has_max: bool):
            super().__init__()
            self.has_min, self.has_max = has_min, has_max

        def forward(self, x, *bounds):
            bounds = list(bounds)
            low = bounds.pop(0) if self.has_min else None
            return torch.clamp(x, low, bounds.pop(0) if self.has_max else None)

    for version in (11, 12, 13):
        static = _CONVERTER_REGISTRY[OperationDescription(domain="", operation_type="Clip", version=version)]

        def clip(node, graph, static=static):
            try:
                return static(node, graph)
            except NotImplementedError:  # a bound computed in the graph
                names = list(node.input_values) + ["", ""]
                return OperationConverterResult(
                    torch_module=DynamicClip(bool(names[1]), bool(names[2])),
                    onnx_mapping=OnnxMapping(inputs=tuple(n for n in names[:3] if n), outputs=node.output_values))

        _CONVERTER_REGISTRY[OperationDescription(domain="", operation_type="Clip", version=version)] = clip

    for version in (11, 13, 16, 18):
        if OperationDescription(domain="", operation_type="ScatterElements", version=version) in _CONVERTER_REGISTRY:
            continue

        @add_converter(operation_type="ScatterElements", version=version)
        def _(node, graph):  # noqa: ARG001 - onnx2torch's converter signature
            return OperationConverterResult(
                torch_module=ScatterElements(node.attributes.get("axis", 0), node.attributes.get("reduction", "none")),
                onnx_mapping=onnx_mapping_from_node(node))


def alias_newer_versions(model: onnx.ModelProto) -> None:
    """Where the model's opset gives an op a newer version than onnx2torch 1.5 registers (GreaterOrEqual 16, ...),
    that op's latest registered converter: those versions added element types, not semantics. Every output is
    compared with ONNX Runtime's, which would show a converter that computes something else."""
    from onnx import defs
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription

    opset = {o.domain or "": o.version for o in model.opset_import}
    for op in {n.op_type for n in model.graph.node if not n.domain}:
        since = defs.get_schema(op, max_inclusive_version=opset[""]).since_version
        wanted = OperationDescription(domain="", operation_type=op, version=since)
        earlier = sorted(d.version for d in _CONVERTER_REGISTRY if d.operation_type == op and not d.domain
                         and d.version < since)
        if wanted not in _CONVERTER_REGISTRY and earlier:
            _CONVERTER_REGISTRY[wanted] = _CONVERTER_REGISTRY[wanted._replace(version=earlier[-1])]


def ort_outputs(model: onnx.ModelProto, feeds: dict, threads: int) -> dict[str, np.ndarray]:
    session = ort_session(model, threads)  # bench/attributions.py's: the engines' optimisation level
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def constants_as_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with each tensor-valued Constant node, and each Identity of an initializer, as an initializer:
    onnx2torch reads a convolution's weights and bias, and some ops' parameters, only from initializers (PyTorch's
    exporter writes some as Constant nodes, and shared weights as Identity nodes)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    initializers = {t.name: t for t in out.graph.initializer}
    kept = []
    for node in out.graph.node:  # in topological order: an Identity's initializer is made before it is read
        value = next((a for a in node.attribute if a.name == "value"), None)
        source = None
        if node.op_type == "Constant" and value is not None and len(node.attribute) == 1:
            source = value.t
        elif node.op_type == "Identity" and node.input[0] in initializers:
            source = initializers[node.input[0]]
        if source is not None:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(source)
            tensor.name = node.output[0]
            out.graph.initializer.append(tensor)
            initializers[tensor.name] = tensor
        else:
            kept.append(node)
    del out.graph.node[:]
    out.graph.node.extend(kept)
    return out


class GpuGraph:
    """An ONNX graph as onnx2torch modules on `device`, its inputs held in fixed buffers (a CUDA graph replays on
    the same memory)."""

    def __init__(self, model: onnx.ModelProto, feeds: dict, device: str):
        from onnx2torch import convert

        self.names = [o.name for o in model.graph.output]
        alias_newer_versions(model)
        self.module = convert(constants_as_initializers(model)).to(device).eval()
        inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        self.inputs = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(device) for n in inputs]
        self.device = device
        self.captured = None
        self.eager_reason = ""
        self.half = False  # autocast to float16: False, "all" or "forward" (MODES)

    def __call__(self):
        with torch.inference_mode():
            if self.half == "forward":
                out = ForwardInHalf(self.module).run(*self.inputs)
            else:
                with torch.autocast(self.device, dtype=torch.float16, enabled=self.half == "all"):
                    out = self.module(*self.inputs)
        return out if isinstance(out, (tuple, list)) else (out,)

    def outputs(self) -> dict[str, np.ndarray]:
        return {n: t.detach().cpu().numpy() for n, t in zip(self.names, self())}

    def capture(self) -> None:
        """A CUDA graph of one call, replayed by `timed`; eager (with the reason) where the graph cannot be captured."""
        if self.device != "cuda":
            self.eager_reason = "not on a GPU"
            return
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                self()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._static = self()  # held: the graph's outputs live in this memory
            self.captured = graph
        except Exception as exc:  # data-dependent shapes, host synchronisation: run eagerly, say why
            self.eager_reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            torch.cuda.synchronize()
            self.captured = None

    def timed(self, repeats: int, replay: bool) -> float:
        """Median ms of `repeats` replays of the captured graph, or of eager calls."""
        run = self.captured.replay if replay else self
        if self.device != "cuda":
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                run()
                times.append((time.perf_counter() - t0) * 1e3)
            return float(np.median(times))
        for _ in range(3):
            run()
        torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return float(np.median(times))


def compare(gpu: dict[str, np.ndarray], cpu: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Output name -> its difference from the CPU's. Float outputs: the norm of the difference over the CPU output's
    norm ("l2"), and the largest difference over the CPU output's peak ("peak"; one ReLU whose pre-activation is
    within rounding of zero and falls on the other side moves a gradient at a few pixels by a lot, so this one
    measures where the rounding decided a mask, "l2" how far the whole map moved); both infinite, and "nonfinite" the
    share of such elements, where the GPU gave NaN or inf for a number. Other outputs: the share of elements that
    differ ("share")."""
    diffs = {}
    for name, ref in cpu.items():
        got = gpu[name].reshape(ref.shape)
        if np.issubdtype(ref.dtype, np.floating) and not np.isfinite(got[np.isfinite(ref)]).all():
            diffs[name] = {"l2": float("inf"), "peak": float("inf"),  # NaN or inf where the CPU has a number
                           "nonfinite": float(np.mean(~np.isfinite(got) & np.isfinite(ref)))}
        elif np.issubdtype(ref.dtype, np.floating):
            ref64, d = ref.astype(np.float64), got.astype(np.float64) - ref
            norm, peak = float(np.linalg.norm(ref64)), float(np.abs(ref64).max())
            diffs[name] = {"l2": float(np.linalg.norm(d)) / norm if norm > 0 else float(np.linalg.norm(d)),
                           "peak": float(np.abs(d).max()) / peak if peak > 0 else float(np.abs(d).max())}
        else:
            diffs[name] = {"share": float(np.mean(got != ref))}
    return diffs


def progress(row: dict, mode: str) -> str:
    r = row[mode]
    replay = f", {r['replay_ms']:.3f} replayed" if r["replay_ms"] is not None else ""
    return (f"{mode} {r['ms']:.3f} ms eager{replay} (l2 {r['worst_l2']:.1e}, peak {r['worst_peak']:.1e}, "
            f"share {r['worst_share']:.1e})")


def measure(graphs: dict[str, tuple[onnx.ModelProto, dict]], device: str, repeats: int, threads: int,
            baseline: str) -> dict:
    """Each graph's outputs in both modes against ONNX Runtime's, and its times over the `baseline` graph's."""
    rows = {}
    for name, (model, feeds) in graphs.items():
        t0 = time.perf_counter()
        cpu = ort_outputs(model, feeds, threads)
        gpu = GpuGraph(model, feeds, device)
        row = {"nodes": len(model.graph.node)}
        for mode, (tf32, half) in MODES.items():
            set_tf32(tf32)
            gpu.half = half if device == "cuda" else False
            try:
                diffs = compare(gpu.outputs(), cpu)
            except RuntimeError as exc:  # an onnx2torch module that cannot take this mode's types: say so, go on
                print(f"  {name}: {mode} failed: {str(exc).splitlines()[0][:160]}", flush=True)
                nan = float("nan")
                row[mode] = {"ms": nan, "replay_ms": None, "diff": {}, "error": str(exc)[:400],
                             **{f"worst_{k}": nan for k in ("l2", "peak", "share")}}
                continue
            gpu.capture()
            row[mode] = {"ms": gpu.timed(repeats, replay=False), "diff": diffs,
                         "replay_ms": gpu.timed(repeats, replay=True) if gpu.captured is not None else None,
                         **{f"worst_{k}": max((d[k] for d in diffs.values() if k in d), default=0.0)
                            for k in ("l2", "peak", "share")}}
            gpu.captured = None
        row["replayed"] = not gpu.eager_reason
        row["eager_reason"] = gpu.eager_reason
        rows[name] = row
        del gpu
        if device == "cuda":
            torch.cuda.empty_cache()
        print(f"  {name}: " + "; ".join(progress(row, mode) for mode in MODES) +
              f"{'' if row['replayed'] else ' [not captured: ' + row['eager_reason'] + ']'} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    for row in rows.values():  # eager over eager; replayed over replayed where both were captured
        for mode in MODES:
            base = rows[baseline][mode]
            row[mode]["x_" + baseline.replace(" ", "_")] = row[mode]["ms"] / base["ms"]
            if row[mode]["replay_ms"] is not None and base["replay_ms"] is not None:
                row[mode]["replay_x_" + baseline.replace(" ", "_")] = row[mode]["replay_ms"] / base["replay_ms"]
    return rows


def segmentation_graphs(size: str, methods, tmp: Path) -> dict[str, tuple[onnx.ModelProto, dict]]:
    """The pipeline's default graph and forward of `size` on a generated frame, and each method's graph."""
    from common import random_unet
    from pipeline import full_size_model

    from hsi_xai_node.model_card import load_model
    from hsi_xai_node.runtime import Pipeline, PipelineConfig
    from hsi_xai_node.runtime.ingraph import build_ingraph_pipeline
    from hsi_xai_node.runtime.pipeline import DEFAULT_MODEL
    from hsi_xai_node.scenes.drive import DriveGenerator
    from hsi_xai_node.sensor.calibration import load_profile

    profile = load_profile("hsi-drive")
    gen = DriveGenerator(profile, seed=2002, render_cameras=False)
    dark, white = gen.references()
    path = DEFAULT_MODEL if size == "bundled" else full_size_model(tmp)
    p = Pipeline(PipelineConfig(model=str(path), backend="ort-cpu"), dark, white)
    raw = gen.frame(15).raw
    x = p.card.model_input(p.frontend.process(raw).cube.data)
    feeds = {p.card.input.tensor: x, **p.scale_feeds()}
    forward = onnx.load_model_from_string(load_model(str(path), profile=profile).onnx_bytes)
    ingraph = build_ingraph_pipeline(p, "int32")  # TensorRT's raw input type (it has no UINT16)
    graphs = {"forward": (forward, {p.card.input.tensor: x}),
              "default pipeline graph": (p.graph.model, {i.name: feeds[i.name] for i in p.graph.model.graph.input
                                                         if i.name in feeds}),
              "in-graph pipeline (raw in, images out)": (ingraph.model, {ingraph.raw_input: raw.astype(np.int32),
                                                                          **p.scale_feeds()})}
    _, unet = random_unet(size, SHAPE, CLASSES)
    xr = np.random.default_rng(0).uniform(0.5, 1.5, SHAPE).astype(np.float32)
    graphs["forward (random weights)"] = (unet, {"input": xr})
    for method in methods:
        graphs[method] = (build_segmentation_explainer(
            unet, "input", "logits", LAYERS,
            SegmentationExplainConfig(methods=(method,), upsample=False, uint8=False, paths=PathOptions())).model,
            {"input": xr})
    return graphs


def detector_graphs() -> dict[str, tuple[onnx.ModelProto, dict]]:
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
    feeds = {card.input.tensor: x}
    graphs = {"detection only": (loaded.model, feeds)}
    for method, layer in (("box_gradcam", BOX_LEVEL), ("box_gradient", "class_head_input")):
        graphs[f"{method}, 10 boxes"] = (build_detection_explainer(
            loaded.model, card.input.tensor, card.scores, card.layers,
            DetectionExplainConfig(layers=(layer,), top_k=10, methods=(method,), uint8=False),
            pairs="det_pairs", boxes="det_boxes").model, feeds)
    return graphs


def gpu_description(device: str) -> str:
    if device != "cuda":
        return platform.processor() or platform.machine()
    props = torch.cuda.get_device_properties(0)
    return f"{props.name} (sm_{props.major}{props.minor}, {props.multi_processor_count} SMs)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="bundled,hsi-drive")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    ap.add_argument("--detector", action="store_true")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime's threads for the CPU reference (0: all)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--modes", default=",".join(MODES), help=f"of {list(MODES)}")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_graphs: PyTorch sees no CUDA GPU here (--device cpu for a dry run)")
    try:
        register_missing_converters()
    except ImportError as exc:
        sys.exit(f"gpu_graphs: needs onnx2torch and torchvision ({exc}); pip install --no-deps onnx2torch==1.5.15")
    methods = [m for m in args.methods.split(",") if m]
    for mode in [m for m in MODES if m not in args.modes.split(",")]:
        del MODES[mode]
    results = {"gpu": gpu_description(args.device), "torch": torch.__version__, "onnxruntime": ort.__version__,
               "repeats": args.repeats, "sections": {}}
    print(f"{results['gpu']}, torch {torch.__version__}, onnxruntime {ort.__version__} (CPU reference)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for size in [s for s in args.sizes.split(",") if s]:
            graphs = segmentation_graphs(size, methods, Path(tmp))
            pipeline = {k: graphs[k] for k in ("forward", "default pipeline graph",
                                               "in-graph pipeline (raw in, images out)")}
            methods_graphs = {k: v for k, v in graphs.items() if k not in pipeline}
            print(f"{size}:", flush=True)
            results["sections"][f"{size} pipeline"] = measure(pipeline, args.device, args.repeats, args.threads,
                                                              "forward")
            results["sections"][f"{size} methods"] = measure(methods_graphs, args.device,
                                                             max(3, args.repeats // 3), args.threads,
                                                             "forward (random weights)")
    if args.detector:
        print("detector:", flush=True)
        results["sections"]["detector"] = measure(detector_graphs(), args.device, args.repeats, args.threads,
                                                  "detection only")
    for section, rows in results["sections"].items():
        base = next(iter(rows))
        key = "x_" + base.replace(" ", "_")
        print(f"\n{section}: median ms of eager calls, x {base}'s; replay: of the captured CUDA graph, where both "
              "could be captured")
        print(f"{'graph':40s}" + "".join(f" {m + ' ms':>9s} {'x':>6s} {'replay':>7s} {'x':>6s}" for m in MODES))
        for name, row in rows.items():
            cells = []
            for m in MODES:
                r = row[m]
                replay = (f"{r['replay_ms']:7.3f} {r['replay_' + key]:6.2f}" if "replay_" + key in r
                          else f"{'-':>7s} {'-':>6s}")
                cells.append(f" {r['ms']:9.3f} {r[key]:6.2f} {replay}")
            print(f"{name:40s}" + "".join(cells))
        print(f"{section}: the outputs' worst difference from ONNX Runtime CPU: float |d|/|CPU| (l2) and max|d|/peak "
              "(peak), integer outputs the share that differs (int)")
        print(f"{'graph':40s}" + "".join(f" {m + ' ' + k:>10s}" for m in MODES for k in ("l2", "peak", "int")))
        for name, row in rows.items():
            print(f"{name:40s}" + "".join(f" {row[m]['worst_' + k]:10.1e}" for m in MODES
                                          for k in ("l2", "peak", "share")))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
