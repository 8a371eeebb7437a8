"""Cost of paper 003's white-box input attributions in the graph, beside the forward, each method's arithmetic
bound, and Captum and Zennit on the same model, same machine, same threads, interleaved in one run.

    PYTHONPATH=. .venv/bin/python bench/attributions.py [--sizes bundled] [--repeats 3] [--threads 2]
        [--no-libraries] [--methods gradient,deeplift,...] [--profile] [--openvino] [--json out.json]

Every graph of a run holds its session at once. At HSI-Drive size (`--sizes hsi-drive`) all methods together need
more than the development VM's 23 GB (the kernel kills the run at SmoothGrad's session): run them in groups, e.g.
every method but SmoothGrad and integrated gradients, then each of those two alone.

For each U-Net size (bundled: 12 base filters; hsi-drive: HSI-Drive's 32) at the model input 1x25x208x400, all
5 classes in one ONNX Runtime CPU call per method (float32, the PathOptions defaults: SmoothGrad 8 samples,
integrated gradients 16 trapezoid intervals = 17 points, zero baseline), it times:

* the forward graph, and each method's explain graph (only that method's outputs, maps not resized or quantised);
* each call right after a call of the forward, also timed: a method's (or a library's) x forward is the median over
  the rounds of its time over that forward's (the speed-ups against the libraries, calls of seconds each, are the
  ratios of their medians);
* each method's bound: the graph's multiply-adds (Conv, ConvTranspose, MatMul, Gemm) over the forward's. LRP-epsilon
  and DeepLIFT: one modified backward to the input per row (DeepLIFT: and the reference forward); z+, gamma and the
  composites: also their modified forward convolutions, once per frame; SmoothGrad and integrated gradients: n or m
  forwards and backwards of every row. Element-wise work (masks, divisions, the sums of the maps) is not in the
  bound: x bound above 1 is what it costs. "by state": x bound over the rounds whose forward ran in each of the VM's
  two speeds, when it switched during the run (common.by_state), with how many rounds each;
* the libraries, float32 PyTorch on the same weights: per class, as they are usually called (one attribution call
  per target), and batched over the classes where they allow it (the frame repeated once per class, one target per
  row, one call): Captum Saliency / GuidedBackprop / DeepLift / IntegratedGradients (per class: its n_steps points
  in one batch; batched: the classes in one call, one class's points per internal batch) / NoiseTunnel(Saliency)
  (per class: its samples in one batch; batched: the classes in one batch per sample); Zennit Gradient,
  EpsilonPlusFlat, SmoothGrad, IntegratedGradients (Zennit 0.5.1, `pip install --no-deps zennit==0.5.1`, torchvision
  stand-ins as in the tests).

With --openvino, every graph also runs on OpenVINO (CPU, f32, the same threads, the engine the node opens), after
ONNX Runtime's rounds, each call beside OpenVINO's own forward: its rows are "openvino <graph>", x forward over that
forward.

The libraries' settings match ours where they have one (same samples, same steps: riemann_right for both libraries'
integrated gradients, n + 1 = 17 points for Captum's trapezoid).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from hsi_xai_node.explain import PathOptions, SegmentationExplainConfig, build_segmentation_explainer, multiply_adds
from hsi_xai_node.runtime.engine import ORT_OPTIMIZATION
from hsi_xai_node.training.unet import parameter_count
from common import by_state, interleaved_medians, over_forward, random_unet  # bench/common.py: the script's folder

SHAPE = (1, 25, 208, 400)
CLASSES = 5
LAYERS = {"penultimate": "dec1", "second_conv_block": "enc1", "bottleneck": "bottleneck"}
METHODS = ("gradient", "input_x_gradient", "guided_backprop", "deconvnet", "lrp_epsilon", "lrp_epsilon_nobias",
           "lrp_zplus", "lrp_alpha2_beta1", "lrp_gamma", "lrp_epsilon_plus_flat", "lrp_epsilon_gamma_box",
           "lrp_deep_taylor", "deeplift", "smoothgrad", "integrated_gradients")
PATHS = PathOptions()


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


def zennit():
    """Zennit imports torchvision's ResNet blocks for its canonizers only: inert stand-ins (as in the tests)."""
    for name in ("torchvision", "torchvision.models", "torchvision.models.resnet"):
        sys.modules.setdefault(name, types.ModuleType(name))
    for cls in ("Bottleneck", "BasicBlock"):
        setattr(sys.modules["torchvision.models.resnet"], cls, type(cls, (), {}))
    import zennit as z
    import zennit.attribution
    import zennit.composites
    return z


def library_runs(net, x: np.ndarray, region: np.ndarray) -> dict:
    """name -> callable: the libraries' attributions of all classes, per class and batched."""
    import captum.attr as ca

    z = zennit()
    reg = torch.from_numpy(region)
    xt = torch.from_numpy(x)
    onehots = torch.zeros((CLASSES, CLASSES, *SHAPE[2:]))
    for c in range(CLASSES):
        onehots[c, c] = reg[c]

    class Logit(torch.nn.Module):  # one class's region score: Captum calls it once per target
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, v):
            logits = self.net(v)
            return (logits * reg.unsqueeze(0)[:, :CLASSES]).sum((2, 3))  # (n, classes): class c over its region

    scores = Logit()
    batch = xt.repeat(CLASSES, 1, 1, 1)
    targets = list(range(CLASSES))
    x0 = torch.zeros_like(xt)
    sigma = PATHS.smoothgrad_noise * float(x.max() - x.min())
    runs = {}

    def per_class(fn):
        return lambda: [fn(xt.clone().requires_grad_(True), c) for c in targets]

    def batched(fn):
        return lambda: fn(batch.clone().requires_grad_(True), targets)

    saliency = ca.Saliency(scores)
    runs["captum gradient per class"] = per_class(lambda v, c: saliency.attribute(v, target=c, abs=False))
    runs["captum gradient batched"] = batched(lambda v, t: saliency.attribute(v, target=t, abs=False))
    guided = ca.GuidedBackprop(scores)
    runs["captum guided_backprop per class"] = per_class(lambda v, c: guided.attribute(v, target=c))
    runs["captum guided_backprop batched"] = batched(lambda v, t: guided.attribute(v, target=t))
    deeplift = ca.DeepLift(scores, eps=1e-10)
    runs["captum deeplift per class"] = per_class(lambda v, c: deeplift.attribute(v, baselines=x0, target=c))
    runs["captum deeplift batched"] = batched(lambda v, t: deeplift.attribute(v, baselines=x0.repeat(CLASSES, 1, 1, 1),
                                                                              target=t))
    ig = ca.IntegratedGradients(scores)
    m = PATHS.ig_steps
    runs["captum integrated_gradients per class"] = per_class(
        lambda v, c: ig.attribute(v, baselines=x0, target=c, n_steps=m + 1, method="riemann_trapezoid"))
    # batched over the classes, the path's points in batches of one class's (all 5 x 17 at once: over 20 GB)
    runs["captum integrated_gradients batched"] = batched(
        lambda v, t: ig.attribute(v, baselines=x0.repeat(CLASSES, 1, 1, 1), target=t, n_steps=m + 1,
                                  method="riemann_trapezoid", internal_batch_size=m + 1))
    tunnel = ca.NoiseTunnel(saliency)
    n = PATHS.smoothgrad_samples
    runs["captum smoothgrad per class"] = per_class(
        lambda v, c: tunnel.attribute(v, nt_type="smoothgrad", nt_samples=n, stdevs=sigma, target=c, abs=False))
    runs["captum smoothgrad batched"] = batched(
        lambda v, t: tunnel.attribute(v, nt_type="smoothgrad", nt_samples=n, stdevs=sigma, target=t, abs=False,
                                      nt_samples_batch_size=1))  # classes x 1 sample per batch: memory as above

    def zennit_runs(key, make):
        def one(v, out):
            with make() as attributor:
                return attributor(v, out)[1]
        runs[f"zennit {key} per class"] = lambda: [one(xt.clone(), onehots[c:c + 1]) for c in targets]
        runs[f"zennit {key} batched"] = lambda: one(batch.clone(), onehots)

    zennit_runs("gradient", lambda: z.attribution.Gradient(model=net))
    zennit_runs("lrp_epsilon_plus_flat", lambda: z.attribution.Gradient(
        model=net, composite=z.composites.EpsilonPlusFlat(epsilon=0.01)))
    zennit_runs("smoothgrad", lambda: z.attribution.SmoothGrad(model=net, noise_level=PATHS.smoothgrad_noise,
                                                                n_iter=n))
    zennit_runs("integrated_gradients", lambda: z.attribution.IntegratedGradients(model=net, n_iter=m))
    return runs


# at ORT_ENABLE_ALL a convolution runs as NchwcConv (blocked layout), a Gemm with its activation as FusedGemm
MULTIPLY_ADD_OPS = ("Conv", "FusedConv", "NchwcConv", "ConvTranspose", "Gemm", "FusedGemm", "MatMul", "FusedMatMul")


def profile_split(model: onnx.ModelProto, x: np.ndarray, threads: int, runs: int = 5) -> dict[str, float]:
    """ONNX Runtime's own node times of `runs` calls, ms per call: in the ops the bound counts (convolutions and
    matrix products) and in everything else (element-wise ops, reductions, shape ops): where a graph's time over
    its bound goes."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort_level()
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        s.run(None, {"input": x})  # warm-up, in the profile too: dropped below
        for _ in range(runs):
            # the pause the timed calls have: the other sessions' ONNX Runtime threads spin after their runs, and
            # without it each node's time here came out up to twice the wall clock's
            time.sleep(0.1)
            s.run(None, {"input": x})
        events = json.loads(Path(s.end_profiling()).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_call = len(nodes) // (runs + 1)
    split = {"multiply_add_ops_ms": 0.0, "other_ops_ms": 0.0}
    for e in nodes[per_call:]:
        key = "multiply_add_ops_ms" if e["args"]["op_name"] in MULTIPLY_ADD_OPS else "other_ops_ms"
        split[key] += e["dur"] / 1e3 / runs
    return split


def add_states(rows: dict, pairs: dict) -> None:
    """x bound in each of the VM's states (common.by_state) into each row with a bound."""
    for k, states in by_state(pairs).items():
        if "bound_x_forward" in rows.get(k, {}):
            rows[k]["x_bound_by_state"] = {s: {"x_bound": r / rows[k]["bound_x_forward"], "rounds": n}
                                           for s, (r, n) in states.items()}


def bench_size(size: str, repeats: int, threads: int, libraries: bool, methods=METHODS,
               profile: bool = False, openvino: bool = False) -> dict:
    net, forward = random_unet(size, SHAPE, CLASSES)
    graphs = {"forward": forward}
    for method in methods:
        graphs[method] = build_segmentation_explainer(
            forward, "input", "logits", LAYERS,
            SegmentationExplainConfig(methods=(method,), upsample=False, uint8=False, paths=PATHS)).model
    macs = {k: multiply_adds(g) for k, g in graphs.items()}
    sessions = {k: ort_session(g, threads) for k, g in graphs.items()}
    x = np.random.default_rng(0).uniform(0.5, 1.5, SHAPE).astype(np.float32)
    torch.set_num_threads(threads)
    runs = {k: (lambda s=s: s.run(None, {"input": x})) for k, s in sessions.items()}
    if libraries:
        # the libraries' hooks need each layer used once (the training U-Net reuses its ReLU and pool modules):
        # the exported graph as real torch layers, the ones the tests compare against
        from test.explain.torch_modules import OnnxModule

        layers = OnnxModule(forward).float().eval()
        with torch.no_grad():
            labels = layers(torch.from_numpy(x)).argmax(1)[0].numpy()
        region = (labels[None] == np.arange(CLASSES)[:, None, None]).astype(np.float32)
        # only the libraries' calls of the methods asked for (their integrated gradients and SmoothGrad take minutes
        # a round at HSI-Drive size)
        runs |= {k: run for k, run in library_runs(layers, x, region).items() if k.split()[1] in methods}
    # each call right after a forward's: x forward and x bound from neighbouring calls (common.interleaved_medians)
    pairs = {}
    med, ratios = interleaved_medians(runs, repeats, lambda k, t: print(f"  {size} {k}: {t:.2f} s", flush=True),
                                      reference="forward", pairs=pairs)
    rows = over_forward(med, macs, ratios)
    add_states(rows, pairs)
    if openvino:  # the same graphs on OpenVINO, each beside OpenVINO's forward (its own, faster or slower, speed)
        from hsi_xai_node.runtime.engine import open_engine

        engines = {k: open_engine(g.SerializeToString(), "openvino", precision="fp32", threads=threads)
                   for k, g in graphs.items()}
        ov_runs = {k: (lambda e=e: e.run({"input": x})) for k, e in engines.items()}
        ov_pairs = {}
        ov_med, ov_ratios = interleaved_medians(
            ov_runs, repeats, lambda k, t: print(f"  {size} openvino {k}: {t:.2f} s", flush=True), reference="forward",
            pairs=ov_pairs)
        ov_rows = over_forward(ov_med, macs, ov_ratios)
        add_states(ov_rows, ov_pairs)  # OpenVINO's rounds split by its own forward's times
        rows |= {f"openvino {k}": row for k, row in ov_rows.items()}
        del engines, ov_runs
    if profile:
        # the timed sessions (and the libraries' models) closed first: with them still open the profiled node
        # times came out 2-3x the wall clock's on the 2-vCPU VM
        del runs, sessions
        gc.collect()
        for k, g in graphs.items():
            rows[k] |= profile_split(g, x, threads)
    for method in methods:  # ours against each library's per-class and batched call of the same method
        for lib in ("captum", "zennit"):
            for how in ("per class", "batched"):
                key = f"{lib} {method} {how}"
                if key in med:  # calls of seconds each: the ratio of their medians. Through each one's paired
                    # forward, that single 40 ms call's noise entered twice (SmoothGrad against Captum per class came
                    # out 1.53x that way, 2.05x by the medians of the same run)
                    rows[method][f"speedup_vs_{lib}_{how.replace(' ', '_')}"] = med[key] / med[method]
    return {"size": size, "parameters": parameter_count(net), "shape": SHAPE, "classes": CLASSES, "repeats": repeats,
            "threads": threads, "paths": PATHS.__dict__, "rows": rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="bundled", help="bundled, hsi-drive or both, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ort-level", default=ORT_OPTIMIZATION, choices=("basic", "extended", "all"),
                    help=f"ONNX Runtime's graph optimisation level (default: the engines', {ORT_OPTIMIZATION!r})")
    ap.add_argument("--no-libraries", action="store_true", help="only our graphs (no Captum / Zennit rows)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="our methods to time, comma-separated (each run holds every graph's session at once: at "
                         "HSI-Drive size all of them need more than 23 GB, so run them a few at a time)")
    ap.add_argument("--profile", action="store_true",
                    help="also split each graph's time (ONNX Runtime's profiler, 5 calls) into the convolutions and "
                         "matrix products the bound counts and all other ops")
    ap.add_argument("--openvino", action="store_true",
                    help="also every graph on OpenVINO (CPU, f32), each call beside OpenVINO's forward")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    ORT_LEVEL["level"] = args.ort_level
    import captum
    results = {"ort_level": args.ort_level, "machine": platform.machine(), "processor": platform.processor(),
               "onnxruntime": ort.__version__, "torch": torch.__version__, "captum": captum.__version__,
               "sizes": [bench_size(s, args.repeats, args.threads, not args.no_libraries,
                                    tuple(m for m in args.methods.split(",") if m), args.profile, args.openvino)
                         for s in args.sizes.split(",") if s]}
    for r in results["sizes"]:
        print(f"\n{r['size']} U-Net ({r['parameters'] / 1e6:.2f}M parameters), input {r['shape']}, "
              f"{r['classes']} classes in one call, median of {r['repeats']}, {r['threads']} threads, ONNX Runtime at "
              f"{args.ort_level}")
        print(f"{'graph':40s} {'ms':>9s} {'x fwd':>7s} {'bound':>7s} {'x bound':>8s} {'by state (rounds)':>24s}  "
              "speed-up against the libraries")
        for k, row in r["rows"].items():
            vs = "  ".join(f"{name.removeprefix('speedup_vs_')} {v:.1f}x" for name, v in row.items()
                           if name.startswith("speedup_vs_"))
            states = " ".join(f"{s} {v['x_bound']:.2f} ({v['rounds']})"
                              for s, v in row.get("x_bound_by_state", {}).items())
            print(f"{k:40s} {row['median_ms']:9.1f} {row['x_forward']:7.2f} "
                  + (f"{row['bound_x_forward']:7.2f} {row['x_bound']:8.2f} {states:>24s}" if "gmacs" in row
                     else " " * 41)
                  + (f"  {vs}" if vs else ""))
        if args.profile:
            print(f"\n{'ONNX Runtime profile, ms per call':40s} {'conv/matmul':>12s} {'other ops':>10s} {'other share':>12s}")
            for k, row in r["rows"].items():
                if "other_ops_ms" in row:
                    total = row["multiply_add_ops_ms"] + row["other_ops_ms"]
                    print(f"{k:40s} {row['multiply_add_ops_ms']:12.1f} {row['other_ops_ms']:10.1f} "
                          f"{row['other_ops_ms'] / total:12.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
