"""Whole-pipeline speed on ONNX Runtime CPU: per-stage median times and frames per second.

    .venv/bin/python bench/pipeline.py [--frames 12] [--json out.json]

Runs the same generated drive frames through two pipelines, interleaved frame by frame:
the bundled 25-band PN U-Net (`models/unet_bundled_25pn.onnx`) and an HSI-Drive-size
U-Net (32 base filters, 7.8M parameters; random weights, which do not change the cost)
with a card copied from the bundled one. Both compute the default explanations (the
activation maps and Seg-Grad-CAM + HiRes at the layer before the final conv) for all
classes, and the overlays. Stages: frontend (raw -> model input), engine (model +
explanations), post (labels, colour, fused overlays, conservativeness residual).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
from pathlib import Path

import numpy as np

from hsi_xai_node.model_card import ModelCard, file_sha256
from hsi_xai_node.runtime import Pipeline, PipelineConfig
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    ap.add_argument("--backend", default="ort-cpu",
                    help="tensorrt, ort-trt, ort-cuda, openvino or ort-cpu (default); a comma list runs each, "
                         "interleaved, with the ratio to the first (e.g. ort-cpu,openvino)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    profile = load_profile("hsi-drive")
    gen = DriveGenerator(profile, seed=2002, render_cameras=False)
    dark, white = gen.references()
    frames = [gen.frame(i * 5).raw for i in range(args.frames + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        models = {"bundled (25pn, 1.1M params)": DEFAULT_MODEL,
                  "hsi-drive size (25pn, 7.8M params)": full_size_model(Path(tmp))}
        backends = args.backend.split(",")
        pipelines = {(name, b): Pipeline(PipelineConfig(model=str(path), backend=b, threads=args.threads), dark, white)
                     for name, path in models.items() for b in backends}
        timings = {name: [] for name in pipelines}
        for p in pipelines.values():
            p.process(frames[0])  # warm-up
        for raw in frames[1:]:
            for name, p in pipelines.items():
                timings[name].append(p.process(raw).timings_ms)
    results = {"machine": platform.machine(), "backends": backends, "frames": args.frames, "threads": args.threads,
               "pipelines": {}}
    print(f"{'pipeline':36s} {'backend':>9s} {'frontend':>9s} {'engine':>9s} {'post':>8s} {'total':>9s} {'fps':>6s} "
          f"{'x first':>8s}   (median ms; x first: the first backend's total over this one's)")
    for (name, backend), rows in timings.items():
        med = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
        med["fps"] = 1000.0 / med["total"]
        results["pipelines"][f"{name} on {backend}"] = med
        first = results["pipelines"][f"{name} on {backends[0]}"]["total"]
        med["speedup_vs_first"] = first / med["total"]
        print(f"{name:36s} {backend:>9s} {med['frontend']:9.1f} {med['engine']:9.1f} {med['post']:8.1f} "
              f"{med['total']:9.1f} {med['fps']:6.2f} {med['speedup_vs_first']:8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
