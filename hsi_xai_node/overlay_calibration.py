"""Overlay scales for a model card: what value of each map is "high" for each class, measured once.

    scales = segmentation_overlay_scales("models/unet_bundled_25pn.onnx")     # validation drives of its card
    write_overlay_scales("models/unet_bundled_25pn.json", scales)

For every method and layer the pipelines can overlay, the reference value of class c is the
REFERENCE_PERCENTILE (99th) percentile of the map's magnitude (|v| for signed maps, max(v, 0)
for one-sided ones) over the pixels where the model predicts c (segmentation), or over each
kept box of class c grown by the overlay margin (detection), on the validation drives the
card lists (`training.splits.val`: never the test drives, so test figures stay clean). The
pipelines then show v / reference: the same value, the same colour, in every frame.

`hsi-xai calibrate-overlays MODEL` runs this and writes the card; the training commands call
it when they export a model. Runtime code: numpy and the engines, no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import InputError, count_skipped
from .files import read_json
from .runtime.overlay import REFERENCE_PERCENTILE, unit_of

SEGMENTATION_METHODS = ("activation", "seg_gradcam", "seg_gradcam_signed", "hires", "gradcam_pp", "xgradcam",
                        "layercam", "seg_xres", "eigencam")  # the family (Score-CAM: too costly to calibrate)
SEGMENTATION_LAYERS = ("penultimate", "bottleneck")
DETECTION_METHODS = ("box_gradcam", "box_gradcam_signed", "box_hires", "box_gradcam_pp", "box_xgradcam",
                     "box_layercam", "box_xres", "box_eigencam")
DETECTION_LAYERS = ("box_level", "class_head_input")


def _val_frames(card_path: Path, frames_per_drive: int | None):
    """(seed, frame index) pairs of the card's validation split."""
    splits = read_json(card_path, "model card", InputError).get("training", {}).get("splits", {})
    val = splits.get("val")
    if not val or not val.get("seeds"):
        raise InputError(f"card {card_path} lists no validation drives (training.splits.val): cannot calibrate "
                         "overlay scales without touching the test drives")
    n = frames_per_drive or int(val.get("frames_per_seed", 4))
    stride = int(val.get("stride", 15))
    return [(int(seed), k * stride) for seed in val["seeds"] for k in range(n)]


def _reference(values: list[np.ndarray]) -> tuple[float, int]:
    """(the REFERENCE_PERCENTILE of the values, how many there are); NaN when there are none."""
    flat = np.concatenate(values) if values else np.zeros(0, np.float32)
    return (float(np.percentile(flat, REFERENCE_PERCENTILE)) if flat.size else float("nan")), int(flat.size)


def segmentation_overlay_scales(model: str | Path, card: str | Path | None = None, profile: str = "hsi-drive",
                                frames_per_drive: int | None = None, backend: str = "ort-cpu",
                                layers=SEGMENTATION_LAYERS, methods=SEGMENTATION_METHODS, dataset=None,
                                values: str | None = None) -> dict:
    """card `overlay_scales` of a segmentation model: "<method>@<layer tensor>" -> reference per class.

    Measured on the card's validation drives, or on `dataset` (a datasets reader: its cubes, skipping the unreadable
    ones) when given; `activation` is left out for a model without a final 1x1 conv."""
    import onnx

    from .explain import SegmentationExplainConfig, build_segmentation_explainer, has_activation_map
    from .model_card import load_model
    from .runtime.engine import open_engine
    from .sensor.calibration import load_profile

    card_path = Path(card) if card else Path(model).with_suffix(".json")
    sensor = load_profile(profile)
    loaded = load_model(model, card_path, profile=sensor)
    card = loaded.card
    onnx_model = onnx.load_model_from_string(loaded.onnx_bytes)
    if not has_activation_map(onnx_model, card.logits):
        methods = tuple(m for m in methods if m != "activation")
    # the maps at the input's size, float, every class: not the node's pruned graph (it keeps only uint8 overlays)
    graph = build_segmentation_explainer(onnx_model, card.input.tensor, card.logits, card.layers,
                                         SegmentationExplainConfig(methods=tuple(methods), layers=tuple(layers),
                                                                   top_k=0, second_block=False, upsample=True,
                                                                   uint8=False))
    names = [c.name for c in card.classes]
    hw = tuple(card.input.shape[2:])
    full = {}  # output name -> (method, layer tensor, signed): each map at the model input's size
    for name, o in graph.outputs.items():
        method = o.method.removesuffix("_full")
        if method in methods and o.dtype == "float32" and tuple(o.shape[2:]) == hw:
            full[name] = (method, o.layer, o.signed)
    engine = open_engine(graph.model.SerializeToString(), backend, "fp32", outputs_to_copy=[graph.logits, *full])
    values_by_key = {key: {c: [] for c in range(len(names))} for key in full}
    skipped: dict = {}  # reason -> {"count", "first"}: a dataset's cubes that could not be read
    if dataset is not None:
        inputs, source = _dataset_inputs(card, sensor, dataset, values, skipped), {"dataset": dataset.describe()}
    else:
        frames = _val_frames(card_path, frames_per_drive)
        inputs = _drive_inputs(card, sensor, frames)
        source = {"drives": sorted({s for s, _ in frames}), "frames": len(frames)}
    count = 0
    for x in inputs:
        count += 1
        out = engine.run({card.input.tensor: x}, [graph.logits, *full])
        predicted = out[graph.logits][0].argmax(0)
        for key, (method, layer, signed) in full.items():
            m = out[key][:, 0]
            for c in range(len(names)):
                region = predicted == c
                if region.any():
                    v = m[c][region]
                    values_by_key[key][c].append(np.abs(v) if signed else np.maximum(v, 0))
    if not count:
        raise InputError(f"no frame to calibrate on: {source}{_skipped_text(skipped)}")
    scales = {}
    for key, (method, layer, signed) in full.items():
        per_class, pixels = {}, {}
        for c, name in enumerate(names):
            ref, n = _reference(values_by_key[key][c])
            if np.isfinite(ref) and ref > 0:
                per_class[name], pixels[name] = ref, n
        scales[f"{method}@{layer}"] = {"classes": per_class, "pixels": pixels, "signed": signed,
                                       "unit": unit_of(method), "percentile": REFERENCE_PERCENTILE,
                                       "region": "pixels predicted as the class", **source,
                                       **({"frames": count, "skipped": skipped} if dataset is not None else {})}
    return scales


def _drive_inputs(card, sensor, frames: list[tuple[int, int]]):
    """Model inputs of the (seed, frame) pairs, through the node's front end for this card."""
    from .scenes.drive import DriveGenerator
    from .sensor.frontend import FrontEnd

    for seed in sorted({s for s, _ in frames}):
        gen = DriveGenerator(sensor, seed=seed, render_cameras=False)
        frontend = FrontEnd(sensor, *gen.references(), card.frontend_config())
        for _, index in [f for f in frames if f[0] == seed]:
            yield card.model_input(frontend.process(gen.frame(index).raw).cube.data)


def _skipped_text(skipped: dict) -> str:
    """"; 2 skipped (unreadable or wrong-shaped file), first: ..." per reason, or "" when nothing was skipped."""
    return "".join(f"; {v['count']} skipped ({reason}), first: {v['first']}" for reason, v in skipped.items())


def _dataset_inputs(card, sensor, dataset, values: str | None, skipped: dict):
    """Model inputs of a dataset's readable cubes; an unreadable or wrong-shaped one is skipped and counted in
    `skipped` with the first reason, as `hsi-xai evaluate` does."""
    from .datasets import DatasetError, dataset_model_input, default_values

    values = values or default_values(dataset)
    for sample in dataset:
        try:
            if isinstance(sample, DatasetError):
                raise sample
            x = dataset_model_input(card, sample, sensor.band_wavelengths_nm, values)
        except DatasetError as exc:
            count_skipped(skipped, "unreadable or wrong-shaped file", str(exc))
            continue
        yield x


def detection_overlay_scales(model: str | Path, card: str | Path | None = None, frames_per_drive: int | None = None,
                             backend: str = "ort-cpu", margin: float = 0.25, layers=DETECTION_LAYERS) -> dict:
    """card `overlay_scales` of a detector: "<method>@<layer>" -> reference per class, over each kept box's map
    within the box grown by `margin` (as the detection overlay shows it), for each of `layers` (box_level, each box
    at its own pyramid level, the pipeline's default; class_head_input, the finest level's, for every box)."""
    from .scenes.drive import DriveGenerator
    from .sensor.calibration import load_profile
    from .runtime.detection import DetectionPipeline, DetectionPipelineConfig

    card_path = Path(card) if card else Path(model).with_suffix(".json")
    frames = _val_frames(card_path, frames_per_drive)
    profile = load_profile("hsi-drive")
    scales = {}
    for method, layer_name in ((m, la) for la in layers for m in DETECTION_METHODS):
        p = DetectionPipeline(DetectionPipelineConfig(model=str(model), card=str(card_path), backend=backend,
                                                      overlay_method=method, overlay_scale="frame", box_maps=True,
                                                      overlay_margin=margin, layer=layer_name))
        signed = p._signed
        values: dict[str, list] = {}
        seeds = sorted({s for s, _ in frames})
        for seed in seeds:
            gen = DriveGenerator(profile, seed=seed, render_hsi=False)
            for _, index in [f for f in frames if f[0] == seed]:
                r = p.process({n: c.image for n, c in gen.frame(index).cameras.items()})
                if r.box_maps is None:
                    continue
                h, w = r.box_maps.shape[1:]
                for d in r.detections:
                    if d.slot >= len(r.box_maps):
                        continue
                    x0, y0, x1, y1 = d.box
                    mx, my = margin * (x1 - x0) + 2.0, margin * (y1 - y0) + 2.0
                    patch = r.box_maps[d.slot, max(int(np.floor(y0 - my)), 0):min(int(np.ceil(y1 + my)), h),
                                       max(int(np.floor(x0 - mx)), 0):min(int(np.ceil(x1 + mx)), w)]
                    # box_level: per class and level (the pipeline's rows of scales, "car@bifpn_p3")
                    name = d.class_name if d.level is None else f"{d.class_name}@{d.level}"
                    values.setdefault(name, []).append((np.abs(patch) if signed else np.maximum(patch, 0)).ravel())
        layer = p.card.layers.get(p.config.layer, p.config.layer)
        per_class = {}
        for name, v in values.items():
            ref, _ = _reference(v)
            if np.isfinite(ref) and ref > 0:
                per_class[name] = ref
        scales[f"{method}@{layer}"] = {"classes": per_class, "boxes": {n: len(v) for n, v in values.items()},
                                       "signed": signed, "unit": unit_of(method), "percentile": REFERENCE_PERCENTILE,
                                       "region": f"each kept box grown by {margin:g} of its size",
                                       "drives": sorted({s for s, _ in frames}), "frames": len(frames)}
    return scales


def write_overlay_scales(card_path: str | Path, scales: dict) -> None:
    """Put `scales` into the card file as `overlay_scales` (the rest of the card unchanged)."""
    path = Path(card_path)
    doc = read_json(path, "model card", InputError)
    doc["overlay_scales"] = scales
    path.write_text(json.dumps(doc, indent=1))


def calibrate(model: str | Path, card: str | Path | None = None, frames_per_drive: int | None = None,
              backend: str = "ort-cpu", dataset=None, values: str | None = None) -> dict:
    """Measure and write the overlay scales of a segmentation model or a detector (by its card's schema)."""
    from .detection.card import DETECTOR_CARD_SCHEMA

    card_path = Path(card) if card else Path(model).with_suffix(".json")
    doc = read_json(card_path, "model card", InputError)
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema == DETECTOR_CARD_SCHEMA:
        if dataset is not None:
            raise InputError("calibrate-overlays --dataset reads segmentation datasets; a detector is calibrated on "
                             "the generated validation drives its card lists")
        scales = detection_overlay_scales(model, card_path, frames_per_drive, backend)
    else:
        scales = segmentation_overlay_scales(model, card_path, frames_per_drive=frames_per_drive, backend=backend,
                                             dataset=dataset, values=values)
    write_overlay_scales(card_path, scales)
    return scales


def cmd_calibrate_overlays(args) -> int:
    dataset = None
    if args.dataset:
        from .datasets import open_segmentation_dataset

        dataset = open_segmentation_dataset(args.dataset, args.layout, split=args.split, axes=args.mat_axes,
                                            limit=args.limit)
    scales = calibrate(args.model, args.card, args.frames_per_drive, args.backend, dataset, args.values)
    for key, entry in scales.items():
        values = ", ".join(f"{n} {v:.3g}" for n, v in entry["classes"].items())
        where = entry["dataset"] if "dataset" in entry else f"drives {entry['drives']}"
        print(f"{key}: {values} ({entry['frames']} frames of {where}{_skipped_text(entry.get('skipped', {}))})")
    print(f"wrote overlay_scales into {Path(args.card) if args.card else Path(args.model).with_suffix('.json')}")
    return 0

