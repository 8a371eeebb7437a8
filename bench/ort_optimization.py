"""ONNX Runtime's graph optimisation levels on the bundled models' plain forwards: EXTENDED against ALL.

    .venv/bin/python bench/ort_optimization.py [--repeats 12] [--threads 2]

The engines run at ORT_ENABLE_ALL (runtime/engine.py: ORT_OPTIMIZATION); the tests that compare graphs with float64
autograd element by element run their sessions at EXTENDED. This times each bundled model's forward at both levels,
interleaved call by call (a 50 ms untimed pause before each, so the other session's spinning threads are idle), and
prints the largest difference of the outputs over their largest magnitude: what ALL's layout rewrites change.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import onnx
import onnxruntime as ort

from hsi_xai_node.resources import share_path

MODELS = ("models/unet_bundled_25pn.onnx", "models/efficientdet_rgb_mir.onnx")
PAUSE_S = 0.05


def session(path: str, level: str, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{level}")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    print(f"{platform.processor() or platform.machine()}, onnxruntime {ort.__version__}, {args.threads} threads, "
          f"median of {args.repeats}")
    for name in MODELS:
        path = str(share_path(name))
        model = onnx.load(path)
        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        x = {model.graph.input[0].name: np.random.default_rng(0).normal(size=shape).astype(np.float32)}
        sessions = {level: session(path, level, args.threads) for level in ("EXTENDED", "ALL")}
        times = {level: [] for level in sessions}
        outputs = {level: s.run(None, x) for level, s in sessions.items()}  # warm-up
        for _ in range(args.repeats):
            for level, s in sessions.items():
                time.sleep(PAUSE_S)
                t0 = time.perf_counter()
                s.run(None, x)
                times[level].append(time.perf_counter() - t0)
        med = {level: 1e3 * float(np.median(t)) for level, t in times.items()}
        first = outputs["EXTENDED"][0]
        diff = float(np.abs(outputs["ALL"][0] - first).max() / np.abs(first).max())
        print(f"{name:36s} input {shape}: EXTENDED {med['EXTENDED']:6.1f} ms, ALL {med['ALL']:6.1f} ms "
              f"({med['EXTENDED'] / med['ALL']:.2f}x faster); first output differs by {diff:.1e} of its peak")


if __name__ == "__main__":
    main()
