"""`hsi-xai evaluate`: a segmentation model's per-class figures on a labelled dataset, named by dataset and split.

The model runs as the node runs it (its card's bands, window, normalisation and scale; the engine of
`--backend`), on each cube of the dataset; its class ids are compared with the annotation inside the
model's window. Unlabelled ground truth (id 0) is not counted; a pixel the model calls unlabelled (a
model with an 'unlabelled' channel, as mmsegmentation trains HSI-Drive v2.0) counts as missed.

Cube values: `reflectance` cubes get the card's normalisation (PN, max, mean/std) and scale, as the node
gives the model its front end's reflectance; `model` cubes are already the model's input values
(mmsegmentation's HSI-Drive v2.0 layout: its config feeds the stored cubes to the network unchanged),
so only the window and the bands are taken. A sample that cannot be read or does not fit the model is
skipped and counted, with the first reason, as a replay does with a bad message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .datasets import VALUES, DatasetError, dataset_model_input, default_values, open_segmentation_dataset
from .errors import InputError, count_skipped
from .files import read_json, write_atomic
from .metrics import confusion, percent, scores
from .model_card import ModelCard, load_model
from .sensor.calibration import load_profile


@dataclass
class SegmentationEvaluation:
    dataset: str  # what the dataset is: layout, root, split, count
    model: str
    values: str
    frames: int = 0
    skipped: dict = field(default_factory=dict)  # reason -> {"count", "first"}
    cm: np.ndarray | None = None
    names: dict = field(default_factory=dict)  # label id -> class name
    per_frame: list = field(default_factory=list)  # {"image", "pixel_accuracy", "labelled_pixels"}

    def figures(self) -> dict:
        return scores(self.cm, self.names) if self.cm is not None else {}

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "model": self.model, "values": self.values, "frames": self.frames,
                "skipped": self.skipped, "scores": self.figures(),
                "confusion": {"labels": sorted(range(len(self.cm))) if self.cm is not None else [],
                              "counts_truth_by_prediction": self.cm.tolist() if self.cm is not None else []},
                "per_frame": self.per_frame}

    def text(self) -> str:
        lines = [f"dataset  {self.dataset}", f"model    {self.model}", f"values   {self.values}",
                 f"frames   {self.frames} evaluated" + (f", {sum(v['count'] for v in self.skipped.values())} "
                                                       "skipped" if self.skipped else "")]
        for reason, v in self.skipped.items():
            lines.append(f"skipped  {reason}: {v['count']}, first: {v['first']}")
        s = self.figures()
        if not s:
            return "\n".join(lines)
        lines.append(f"{'class':18s} {'accuracy':>9s} {'IoU':>7s} {'pixels':>10s}")
        for name in s["iou"]:
            acc, iou = s["accuracy"][name], s["iou"][name]
            lines.append(f"{name:18s} {percent(acc):>9s} {percent(iou):>7s} {s['pixels'][name]:10d}")
        lines.append(f"{'mean':18s} {percent(s['mean_accuracy']):>9s} {percent(s['miou']):>7s}   "
                     f"pixel accuracy {percent(s['pixel_accuracy'])} (labelled pixels only)")
        ids = list(range(len(self.cm)))
        head = "truth \\ predicted"
        lines.append(f"confusion (rows: truth, columns: predicted; ids {ids})")
        lines.append(f"{head:18s} " + " ".join(f"{i:>8d}" for i in ids))
        for i in ids[1:]:
            if self.cm[i].sum():
                lines.append(f"{self.names.get(i, str(i)):18s} " + " ".join(f"{v:8d}" for v in self.cm[i]))
        return "\n".join(lines)


def _with_progress(dataset, progress: bool, unit: str):
    if not progress:
        return dataset
    from tqdm import tqdm

    return tqdm(dataset, total=len(dataset), unit=unit, desc="evaluate")


def evaluate_segmentation(model: str | Path, dataset, values: str = "reflectance", backend: str = "ort-cpu",
                          threads: int = 0, profile: str | None = None, progress: bool = False,
                          keep_per_frame: bool = True) -> SegmentationEvaluation:
    """Run `model` over `dataset` (an iterable of SegmentationSample or DatasetError) and count."""
    from .runtime.engine import open_engine

    if values not in VALUES:
        raise InputError(f"values must be one of {list(VALUES)}, got {values!r}")
    # the card alone first, for its sensor profile; then the model, checked against that sensor (bands, window)
    sensor = load_profile(profile or ModelCard.load(Path(model).with_suffix(".json")).sensor_profile)
    loaded = load_model(model, profile=sensor)
    card = loaded.card
    wavelengths = sensor.band_wavelengths_nm
    engine = open_engine(loaded.onnx_bytes, backend, "fp32", threads=threads, outputs_to_copy=[card.logits])
    lut = card.label_ids()
    names = {c.id: c.name for c in card.classes if c.id != 0}
    i = card.input
    result = SegmentationEvaluation(dataset=dataset.describe(), model=f"{card.name} (card sha256 {card.sha256[:12]})",
                                    values=values, names=names)
    n_labels = 256
    cm = np.zeros((n_labels, n_labels), np.int64)
    for sample in _with_progress(dataset, progress, "cube"):
        try:
            if isinstance(sample, DatasetError):
                raise sample
            if sample.labels is None:
                raise DatasetError(f"{sample.name}: no annotation")
            x = dataset_model_input(card, sample, wavelengths, values)
            logits = engine.run({i.tensor: x}, [card.logits])[card.logits]
            predicted = lut[logits[0].argmax(0)]
            truth = sample.labels[i.crop_top:i.crop_top + i.height, i.crop_left:i.crop_left + i.width]
        except DatasetError as exc:
            count_skipped(result.skipped, "unreadable or wrong-shaped file" if "no annotation" not in str(exc)
                          else "no annotation", str(exc))
            continue
        frame_cm = confusion(truth, predicted, n_labels)
        cm += frame_cm
        result.frames += 1
        if keep_per_frame:
            labelled = int(frame_cm.sum())
            result.per_frame.append({"image": sample.name, **sample.meta, "labelled_pixels": labelled,
                                     "pixel_accuracy": float(np.trace(frame_cm[1:, 1:]) / labelled) if labelled
                                     else None})
    used = max([0, *names, *np.nonzero(cm.sum(0) + cm.sum(1))[0].tolist()]) + 1
    result.cm = cm[:used, :used] if result.frames else None
    return result


@dataclass
class DetectionEvaluation:
    dataset: str
    model: str
    threshold: float
    frames: int = 0
    skipped: dict = field(default_factory=dict)
    result: object = None  # detection.evaluation.MapResult
    names: list = field(default_factory=list)  # class index -> name
    not_model_classes: dict = field(default_factory=dict)  # label name the model lacks -> count (ignored)
    false_positives: int = 0

    def to_dict(self) -> dict:
        r = self.result
        per_class = {} if r is None else {n: {"ap": r.ap[c], "objects": r.num_gt[c], "tp": r.tp[c], "fp": r.fp[c]}
                                          for c, n in enumerate(self.names)}
        return {"dataset": self.dataset, "model": self.model, "score_threshold": self.threshold,
                "frames": self.frames, "skipped": self.skipped, "map": None if r is None else r.mean_ap,
                "per_class": per_class, "false_positives_per_frame": self.false_positives / self.frames
                if self.frames else None, "labels_of_other_classes": self.not_model_classes,
                "iou_threshold": None if r is None else r.iou_threshold}

    def text(self) -> str:
        d = self.to_dict()
        lines = [f"dataset  {self.dataset}", f"model    {self.model}",
                 f"frames   {self.frames} evaluated" + (f", {sum(v['count'] for v in self.skipped.values())} "
                                                       "skipped" if self.skipped else "")]
        for reason, v in self.skipped.items():
            lines.append(f"skipped  {reason}: {v['count']}, first: {v['first']}")
        if self.not_model_classes:
            lines.append("ignored  labels of classes the model lacks: "
                         + ", ".join(f"{k} {v}" for k, v in self.not_model_classes.items()))
        if self.result is None:
            return "\n".join(lines)
        lines.append(f"AP at IoU {d['iou_threshold']} over the boxes kept at the card's score threshold "
                     f"{self.threshold}:")
        lines.append(f"{'class':14s} {'AP':>6s} {'objects':>8s} {'TP':>5s} {'FP':>5s}")
        for name, v in d["per_class"].items():
            lines.append(f"{name:14s} {percent(v['ap']):>6s} {v['objects']:8d} {v['tp']:5d} {v['fp']:5d}")
        lines.append(f"{'mAP':14s} {percent(d['map']):>6s}   false positives per frame "
                     f"{d['false_positives_per_frame']:.2f}")
        return "\n".join(lines)


def detector_input(card, images: dict) -> np.ndarray:
    """The card's stack from one frame's registered camera images, in the card's layout."""
    from .datasets import stack_registered

    x = stack_registered(images, [(s.camera, s.encoding, s.offset, s.scale) for s in card.input.stack],
                         card.input.hw)[None]
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if card.input.layout == "nhwc" else x


def evaluate_detection(model: str | Path, dataset, backend: str = "ort-cpu", threads: int = 0,
                       iou_threshold: float = 0.5, progress: bool = False) -> DetectionEvaluation:
    """Per-class AP and false positives per frame of a detector (its NMS at the card's threshold) on `dataset`
    (a datasets.ModsDataset). Ground truth lower than the project's protocol height (MIN_HEIGHT_PX of 256 rows)
    and VOC 'difficult' objects are ignore regions; labels of classes the model lacks are ignored and counted."""
    from .detection.card import NMS_OUTPUTS, load_detector
    from .detection.evaluation import MIN_HEIGHT_PX, Detections, GroundTruth, evaluate_map
    from .runtime.engine import open_engine

    loaded = load_detector(model)
    card = loaded.card
    engine = open_engine(loaded.model.SerializeToString(), backend, "fp32", threads=threads,
                         outputs_to_copy=list(NMS_OUTPUTS))
    names = [c.name for c in sorted(card.classes, key=lambda c: c.channel)]
    index = {n: k for k, n in enumerate(names)}
    h, w = card.input.hw
    result = DetectionEvaluation(dataset.describe(), f"{card.name} (card sha256 {card.sha256[:12]})",
                                 float(card.postprocess["score_threshold"]), names=names)
    dets, gts = [], []
    for sample in _with_progress(dataset, progress, "frame"):
        try:
            if isinstance(sample, DatasetError):
                raise sample
            x = detector_input(card, sample.images)
        except DatasetError as exc:
            count_skipped(result.skipped, "unreadable or wrong-shaped file", str(exc))
            continue
        out = engine.run({card.input.tensor: x}, ["det_boxes", "det_scores", "det_classes"])
        kept = out["det_classes"].reshape(-1) >= 0
        dets.append(Detections(out["det_boxes"].reshape(-1, 4)[kept], out["det_scores"].reshape(-1)[kept],
                               out["det_classes"].reshape(-1)[kept]))
        known = np.array([n in index for n in sample.classes], bool)
        for n in sample.classes:
            if n not in index:
                result.not_model_classes[n] = result.not_model_classes.get(n, 0) + 1
        boxes = sample.boxes[known] * np.array([w, h, w, h], np.float64)
        small = (boxes[:, 3] - boxes[:, 1]) < MIN_HEIGHT_PX * h / 256.0
        gts.append(GroundTruth(boxes, np.array([index[n] for n in sample.classes if n in index], np.int64),
                               sample.ignore[known] | small))
        result.frames += 1
    if result.frames:
        result.result = evaluate_map(dets, gts, num_classes=len(names), iou_threshold=iou_threshold)
        result.false_positives = int(sum(result.result.fp))
    return result


def cmd_evaluate(args) -> int:
    card_path = Path(args.model).with_suffix(".json")
    doc = read_json(card_path, "model card", InputError) if card_path.is_file() else {}
    if isinstance(doc, dict) and doc.get("task") == "detection" or args.layout == "mods":
        from .datasets import ModsDataset

        if not isinstance(doc, dict) or doc.get("task") != "detection":
            raise InputError(f"--layout mods evaluates a detector; {args.model} is not one (its card {card_path})")
        from .detection.card import DetectorCard

        cameras = tuple(s.camera for s in DetectorCard.load(card_path).input.stack)  # the card checked first
        dataset = ModsDataset(args.dataset, cameras, images=args.images, labels=args.labels,
                              class_map=tuple(args.class_map.split(",")) if args.class_map else None, limit=args.limit)
        result = evaluate_detection(args.model, dataset, backend=args.backend, threads=args.threads,
                                    progress=not args.no_progress)
    else:
        dataset = open_segmentation_dataset(args.dataset, args.layout, split=args.split, axes=args.mat_axes,
                                            limit=args.limit)
        values = args.values or default_values(dataset)
        result = evaluate_segmentation(args.model, dataset, values=values, backend=args.backend,
                                       threads=args.threads, profile=args.profile, progress=not args.no_progress)
    print(result.text())
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, json.dumps(result.to_dict(), indent=1).encode())
        print(f"written  {args.out}")
    return 0 if result.frames else 1
