"""How much the overlays' colours flicker over a drive, per overlay scale, and whether scaling changes rankings.

    .venv/bin/python bench/overlay_flicker.py [--frames 25] [--seed 4000] [--auc-frames 2] [--json out.json]

Flicker: over consecutive frames of the demo drive (25 fps, a drive no model was trained or
validated on), for every class with at least 500 predicted pixels in both frames, the colour index
(0..255) the overlay gives the median of that class's map over its predicted region; the figure is
the mean absolute frame-to-frame change of that index, per overlay (Grad-CAM, activation) and per
`overlay_scale` (frame: per-frame min-max; running; card). The map values themselves are the same in
every mode, so any difference between modes is the scaling's alone.

Rankings: insertion and deletion AUCs (16 steps) of the Grad-CAM overlay's uint8 maps under frame and
card scaling, for every predicted class of `--auc-frames` frames. A per-row scale is monotone, so
the only change can come from values clipped at 255 (above the card's reference) becoming ties.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hsi_xai_node.runtime import Pipeline, PipelineConfig
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.calibration import load_profile

MODES = ("frame", "running", "card")
KINDS = {"gradcam_u8": "Grad-CAM", "activation_u8": "activation"}
MIN_PIXELS = 500


def colour_indices(pipeline: Pipeline, raw: np.ndarray) -> dict[str, dict[int, int]]:
    """overlay -> class channel -> the colour index of the median map value over the class's region."""
    fe = pipeline.frontend.process(raw)
    x = pipeline.card.model_input(fe.cube.data)
    plan = {k: v for k, v in pipeline._plan.items() if k in KINDS}
    out = pipeline.engine.run({pipeline.card.input.tensor: x, **pipeline.scale_feeds()},
                              [pipeline.graph.logits, *plan.values(),
                               *[p for _, p in pipeline.graph.scale_inputs.values()]])
    for u8, (_, peak) in pipeline.graph.scale_inputs.items():
        pipeline.scales.update(u8, out[peak])  # as Pipeline.process does
    channel = out[pipeline.graph.logits][0].argmax(0)
    result = {}
    for kind, name in plan.items():
        maps = out[name][:, 0]  # per class, or (the pipeline's default) each pixel's predicted class's already
        result[kind] = {c: int(np.median(maps[c if len(maps) > 1 else 0][channel == c]))
                        for c in range(pipeline.graph.classes) if (channel == c).sum() >= MIN_PIXELS}
    return result


def flicker(indices: list[dict[str, dict[int, int]]]) -> dict[str, float]:
    out = {}
    for kind in KINDS:
        steps = [abs(b[kind][c] - a[kind][c]) for a, b in zip(indices, indices[1:]) for c in a[kind] if c in b[kind]]
        out[kind] = float(np.mean(steps)) if steps else float("nan")
    return out


def aucs(pipelines: dict[str, Pipeline], raws: list[np.ndarray]) -> dict[str, dict[str, float]]:
    from hsi_xai_node.reliability import PerturbationConfig, segmentation_insertion_deletion

    import onnx
    from hsi_xai_node.model_card import load_model

    p0 = pipelines["frame"]
    model = onnx.load_model_from_string(load_model(p0.config.model).onnx_bytes)
    result = {}
    for mode in ("frame", "card"):
        p = pipelines[mode]
        rows = []
        for raw in raws:
            fe = p.frontend.process(raw)
            x = p.card.model_input(fe.cube.data)
            u8 = p.engine.run({p.card.input.tensor: x, **p.scale_feeds()}, [p._plan["gradcam_u8"]])
            maps = {"gradcam_u8": u8[p._plan["gradcam_u8"]][:, 0].astype(np.float32)}
            r = segmentation_insertion_deletion(model, x, maps, p.card.logits, config=PerturbationConfig(steps=16))
            rows.append(r["gradcam_u8"])
        result[mode] = {k: float(np.mean([r[k] for r in rows])) for k in ("deletion", "insertion")}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--seed", type=int, default=4000)
    ap.add_argument("--auc-frames", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    gen = DriveGenerator(load_profile("hsi-drive"), seed=args.seed, render_cameras=False)
    dark, white = gen.references()
    pipelines = {m: Pipeline(PipelineConfig(backend="ort-cpu", methods=("activation", "seg_gradcam"),
                                            overlay_scale=m), dark, white) for m in MODES}
    indices = {m: [] for m in MODES}
    raws = []
    for k in range(args.frames):
        raw = gen.frame(k).raw
        if k < args.auc_frames:
            raws.append(raw)
        for m, p in pipelines.items():
            indices[m].append(colour_indices(p, raw))
    report = {"frames": args.frames, "seed": args.seed, "flicker": {m: flicker(v) for m, v in indices.items()},
              "auc": aucs(pipelines, raws)}
    print(f"drive seed {args.seed}, {args.frames} frames at 25 fps; mean |change| of a class region's median "
          "colour index (0..255) from one frame to the next:")
    print("| overlay | " + " | ".join(MODES) + " |\n| --- |" + " --- |" * len(MODES))
    for kind, title in KINDS.items():
        print(f"| {title} | " + " | ".join(f"{report['flicker'][m][kind]:.2f}" for m in MODES) + " |")
    print("insertion / deletion AUC of the Grad-CAM overlay's uint8 maps (mean over classes and frames):")
    for mode, v in report["auc"].items():
        print(f"  {mode}: deletion {v['deletion']:.4f}, insertion {v['insertion']:.4f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
