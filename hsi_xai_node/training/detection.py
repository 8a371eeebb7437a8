"""Train, evaluate and export the multispectral EfficientDet on generated drives.

Data: generated drives split by seed (train / val / test never share a drive). Every
frame's four cameras are registered once into the 320x256 network view with the
multispectral front end and kept as six channels (R, G, B, NIR, MIR, FIR); each input
stack (paper 001's comparison: RGB, NIR, MIR, FIR, RGB+MIR) is a channel subset, so
all stacks see the same frames and boxes.

Objects lower than `MIN_HEIGHT_PX` in the network view are still trained on, but
evaluation treats them as "ignore" regions (like KITTI's minimum height): they count
neither as misses nor, when detected, as false positives.

Loss: EfficientDet's. Anchors with IoU >= 0.5 to a box are positive, < 0.4 negative,
in between ignored; every box's best anchor is positive as well (small boxes would
otherwise have none). Sigmoid focal loss (alpha 0.25, gamma 2) plus 50 x Huber
(delta 0.1) on the box deltas of positives, both over the number of positives.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import multiprocessing
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..classes import DETECTION_CLASSES
from ..detection.anchors import generate_anchors
from ..detection.boxes import encode, iou_matrix
from ..detection.evaluation import MIN_HEIGHT_PX, Detections, GroundTruth, evaluate_map
from ..detection.postprocess import PostprocessConfig, append_postprocess
from ..sensor.calibration import load_profile
from ..sensor.multispectral import StackConfig, MultispectralFrontEnd, boxes_to_network, stack_config
from ..scenes.drive import DriveGenerator
from .config import DetectionTrainConfig
from .data import Split
from .efficientdet import DetectorExport, EfficientDet, EfficientDetConfig, parameter_count

ALL_CAMERAS = ("rgb", "nir", "mir", "fir")   # the cached six channels: R, G, B, NIR, MIR, FIR
CHANNELS = {"rgb": (0, 1, 2), "nir": (3,), "mir": (4,), "fir": (5,)}
INPUT_SIZE = (320, 256)  # width, height: the dataset's registered size (Takumi 2017)

DETECTION_SPLITS = {
    "train": Split(tuple(range(0, 160)), 12, 9),
    "val": Split(tuple(range(1000, 1012)), 6, 20),
    "test": Split(tuple(range(3000, 3010)), 6, 20),
}


@dataclass
class DetectionSet:
    """Registered six-channel images (n, 6, H, W) float16 and per-image boxes in network pixels."""

    images: np.ndarray
    boxes: list = field(default_factory=list)    # (m, 4) float32
    classes: list = field(default_factory=list)  # (m,) int64

    def __len__(self) -> int:
        return len(self.images)

    def ignore(self, i: int) -> np.ndarray:
        b = self.boxes[i]
        return (b[:, 3] - b[:, 1]) < MIN_HEIGHT_PX


def from_dataset(dataset, input_size=INPUT_SIZE, log=print) -> DetectionSet:
    """The Multispectral Object Detection dataset's registered frames (all four cameras) as a DetectionSet: each
    camera normalised as the full stack does, boxes in network pixels; objects of other classes and VOC 'difficult'
    ones are left out, unreadable frames skipped and reported."""
    from ..classes import DETECTION_CLASSES
    from ..datasets import DatasetError, stack_registered

    ids = {c.name: c.id for c in DETECTION_CLASSES}
    cams = [(c.name, c.encoding, c.offset, c.scale) for c in full_stack(input_size).cameras]
    w, h = input_size
    images, boxes, classes, skipped = [], [], [], []
    for sample in dataset:
        if isinstance(sample, DatasetError):
            skipped.append(str(sample))
            continue
        try:
            images.append(stack_registered(sample.images, cams, (h, w)).astype(np.float16))
        except DatasetError as exc:
            skipped.append(f"{sample.name}: {exc}")
            continue
        keep = np.array([n in ids for n in sample.classes], bool) & ~sample.ignore
        boxes.append((sample.boxes[keep] * np.array([w, h, w, h])).astype(np.float32))
        classes.append(np.array([ids[n] for n, k in zip(sample.classes, keep) if k], np.int64))
    if skipped:
        log(f"  {dataset.describe()}: skipped {len(skipped)} frame(s), first: {skipped[0]}")
    if not images:
        raise DatasetError(f"{dataset.describe()}: no readable frame")
    return DetectionSet(np.stack(images), boxes, classes)


def full_stack(input_size=INPUT_SIZE) -> StackConfig:
    cams = tuple(c for name in ALL_CAMERAS for c in stack_config(name, input_size=input_size).cameras)
    return StackConfig(cameras=cams, input_size=input_size)


def stack_channels(stack: str) -> list[int]:
    return [c for cam in stack.split("+") for c in CHANNELS[cam]]


def _generate_seed(args) -> tuple:
    seed, split, input_size = args
    gen = DriveGenerator(load_profile("hsi-drive"), seed=seed, render_hsi=False)
    fe = MultispectralFrontEnd(full_stack(input_size))
    images, boxes, classes = [], [], []
    for k in range(split.frames_per_seed):
        frame = gen.frame(k * split.stride)
        images.append(fe({n: c.image for n, c in frame.cameras.items()})[0].astype(np.float16))
        obj = frame.camera_objects
        b = np.array([o.box for o in obj], np.float32).reshape(-1, 4)
        boxes.append(boxes_to_network(b, fe.config).astype(np.float32))
        classes.append(np.array([o.class_id for o in obj], np.int64))
    return images, boxes, classes


def generate(split: Split, cache: Path | None = None, workers: int = 2, input_size=INPUT_SIZE) -> DetectionSet:
    """Render and register a split (cached as .npz keyed by the split, since ~0.15 s per frame)."""
    key = hashlib.sha256(json.dumps([asdict(split), input_size, ALL_CAMERAS, "v1"]).encode()).hexdigest()[:16]
    path = cache / f"detection_{key}.npz" if cache else None
    if path and path.is_file():
        z = np.load(path)
        n = len(z["images"])
        return DetectionSet(z["images"], [z[f"b{i}"] for i in range(n)], [z[f"c{i}"] for i in range(n)])
    jobs = [(s, split, input_size) for s in split.seeds]
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_generate_seed, jobs))
    data = DetectionSet(np.stack([im for p in parts for im in p[0]]),
                        [b for p in parts for b in p[1]], [c for p in parts for c in p[2]])
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"b{i}": b for i, b in enumerate(data.boxes)} | {f"c{i}": c for i, c in enumerate(data.classes)}
        np.savez(path, images=data.images, **arrays)
    return data


# --- targets and loss ---------------------------------------------------------------------------

def match(anchors: np.ndarray, boxes: np.ndarray, ignore: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per anchor: state (1 positive, 0 negative, -1 ignored) and the index of its box.

    `ignore` marks boxes that are neither learnt nor background (cut by the crop's edge, or too small
    to see): anchors whose best box is one of them, at IoU >= 0.4, are ignored, and those boxes get
    no forced anchor."""
    a = len(anchors)
    state = np.zeros(a, np.int8)
    if len(boxes) == 0:
        return state, np.zeros(a, np.int64)
    iou = iou_matrix(anchors, boxes)
    best_box = iou.argmax(1)
    best_iou = iou[np.arange(a), best_box]
    state[best_iou >= 0.4] = -1
    state[best_iou >= 0.5] = 1
    kept = np.ones(len(boxes), bool) if ignore is None else ~np.asarray(ignore, bool)
    forced = iou.argmax(0)[kept]  # every learnt box's best anchor
    state[forced] = 1
    best_box[forced] = np.flatnonzero(kept)
    if ignore is not None:
        state[(state == 1) & ~kept[best_box]] = -1
    return state, best_box


def targets(anchors, boxes, classes, num_classes, state, best_box):
    """Class targets (A, C) in {0, 1} and box deltas (A, 4) of positives, from a match."""
    pos = state == 1
    cls_t = np.zeros((len(anchors), num_classes), np.float32)
    box_t = np.zeros((len(anchors), 4), np.float32)
    cls_t[pos, classes[best_box[pos]]] = 1.0
    box_t[pos] = encode(boxes[best_box[pos]], anchors[pos])
    return cls_t, box_t


def assign(anchors: np.ndarray, boxes: np.ndarray, classes: np.ndarray, num_classes: int,
           ignore: np.ndarray | None = None):
    """Per anchor: class target (A, C) in {0, 1}, box deltas (A, 4), state 1 pos / 0 neg / -1 ignored."""
    state, best_box = match(anchors, boxes, ignore)
    return (*targets(anchors, boxes, classes, num_classes, state, best_box), state)


def flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    out = boxes.copy()
    out[:, [0, 2]] = width - boxes[:, [2, 0]]
    return out


def loss_fn(logits, deltas, cls_t, box_t, state):
    pos = state == 1
    n_pos = pos.sum().clamp(min=1).float()
    keep = (state >= 0).unsqueeze(-1).float()
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, cls_t, reduction="none")
    p_t = p * cls_t + (1 - p) * (1 - cls_t)
    alpha = 0.25 * cls_t + 0.75 * (1 - cls_t)
    focal = (alpha * (1 - p_t) ** 2 * ce * keep).sum() / n_pos
    box = F.huber_loss(deltas[pos], box_t[pos], delta=0.1, reduction="sum") / (4 * n_pos)
    return focal + 50.0 * box, focal.detach(), box.detach()


def crop_boxes(boxes: np.ndarray, classes: np.ndarray, zoom: float, oy: float, ox: float,
               crop_hw: tuple[int, int], min_visible: float = 0.5,
               ignore_below_px: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes of the full frame in a crop taken at (oy, ox) and magnified `zoom` times: (boxes clipped to
    the crop, their classes, ignore flags). Ignored: boxes with less than `min_visible` of their area
    inside, and boxes lower than `ignore_below_px` in the crop. Boxes wholly outside are dropped."""
    b = (boxes.astype(np.float64) - [ox, oy, ox, oy]) * zoom
    h, w = crop_hw
    clipped = np.stack([b[:, 0].clip(0, w), b[:, 1].clip(0, h), b[:, 2].clip(0, w), b[:, 3].clip(0, h)], 1)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = inside > 0
    ignore = (inside < min_visible * np.maximum(area, 1e-9)) | ((clipped[:, 3] - clipped[:, 1]) < ignore_below_px)
    return clipped[keep].astype(np.float32), np.asarray(classes)[keep], ignore[keep]


def repeat_factors(data: DetectionSet, threshold: float = 0.3) -> np.ndarray:
    """LVIS repeat-factor sampling weights: a frame is drawn max(1, sqrt(threshold / f_c)) times as often,
    with f_c the share of frames holding a (non-ignored) object of its rarest class c."""
    n = len(data)
    holds = [set(data.classes[i][~data.ignore(i)].tolist()) for i in range(n)]
    share = {c: sum(c in h for h in holds) / n for c in set().union(*holds)}
    r = np.array([max([1.0] + [np.sqrt(threshold / share[c]) for c in h]) for h in holds])
    return r / r.sum()


def _batch(data: DetectionSet, idx, channels, crop_anchors, config: EfficientDetConfig, cfg: DetectionTrainConfig,
           rng):
    """An augmented batch of crops: left-right flips, a zoom drawn log-uniformly in cfg.zoom (multi-scale
    training: small objects are seen larger, large ones smaller), per-channel gain and offset; targets
    matched afresh on the crop's anchors (boxes cut by the crop or too small to learn are ignored)."""
    import cv2

    h, w = data.images.shape[2:]
    ch, cw = cfg.crop
    x = np.empty((len(idx), len(channels), ch, cw), np.float32)
    cls_t, box_t, state = [], [], []
    for j, i in enumerate(idx):
        flip = bool(rng.random() < 0.5)
        zoom = float(np.exp(rng.uniform(np.log(cfg.zoom[0]), np.log(cfg.zoom[1]))))
        zoom = max(zoom, ch / h, cw / w)  # the source window must fit in the frame
        oy = float(rng.uniform(0, h - ch / zoom))
        ox = float(rng.uniform(0, w - cw / zoom))
        img = data.images[i, channels].astype(np.float32)
        img = img[:, :, ::-1] if flip else img
        warp = np.array([[zoom, 0.0, -ox * zoom], [0.0, zoom, -oy * zoom]])
        for k in range(len(channels)):
            x[j, k] = cv2.warpAffine(np.ascontiguousarray(img[k]), warp, (cw, ch), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT)
        x[j] = x[j] * rng.uniform(0.85, 1.15, (len(channels), 1, 1)) + rng.normal(0, 0.1, (len(channels), 1, 1))
        boxes = flip_boxes(data.boxes[i], w) if flip else data.boxes[i]
        b, classes, ignore = crop_boxes(boxes, data.classes[i], zoom, oy, ox, cfg.crop,
                                        ignore_below_px=cfg.ignore_below_px)
        c, t, st = assign(crop_anchors, b, classes, config.num_classes, ignore)
        cls_t.append(c), box_t.append(t), state.append(st)
    return (torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.stack(cls_t)),
            torch.from_numpy(np.stack(box_t)), torch.from_numpy(np.stack(state)))


# --- evaluation ----------------------------------------------------------------------------------

class Postprocessor:
    """The exported model's NMS graph, on its own, run by ONNX Runtime on (scores, boxes)."""

    def __init__(self, anchors: int, classes: int, config: PostprocessConfig):
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper

        g = helper.make_graph(
            [helper.make_node("Identity", ["in_scores"], ["scores"]), helper.make_node("Identity", ["in_boxes"], ["boxes"])],
            "nms", [helper.make_tensor_value_info("in_scores", TensorProto.FLOAT, [1, anchors, classes]),
                    helper.make_tensor_value_info("in_boxes", TensorProto.FLOAT, [1, anchors, 4])],
            [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, anchors, classes]),
             helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, anchors, 4])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        m = append_postprocess(m, "boxes", "scores", config)
        onnx.checker.check_model(m)
        self.session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])

    def __call__(self, scores: np.ndarray, boxes: np.ndarray):
        b, s, c = self.session.run(["det_boxes", "det_scores", "det_classes"],
                                   {"in_scores": scores[None].astype(np.float32), "in_boxes": boxes[None].astype(np.float32)})
        keep = c[0] >= 0
        return b[0][keep], s[0][keep], c[0][keep]


def detect(model: EfficientDet, data: DetectionSet, channels, anchors: np.ndarray, post: Postprocessor, batch=8):
    wrapped = DetectorExport(model, data.images.shape[2:]).eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(data), batch):
            x = torch.from_numpy(data.images[s:s + batch][:, channels].astype(np.float32))
            scores, boxes = wrapped(x)
            out += [post(sc, bx) for sc, bx in zip(scores.numpy(), boxes.numpy())]
    return out


def evaluate(detections, data: DetectionSet) -> dict:
    """mAP@0.5 and per-class AP (by class name), objects and TP/FP counts."""
    truth = [GroundTruth(data.boxes[i], data.classes[i], data.ignore(i)) for i in range(len(data))]
    r = evaluate_map([Detections(*d) for d in detections], truth, len(DETECTION_CLASSES), iou_threshold=0.5)
    names = [c.name for c in DETECTION_CLASSES]
    return {"map": r.mean_ap or 0.0, "ap": dict(zip(names, r.ap)), "objects": dict(zip(names, r.num_gt)),
            "tp": dict(zip(names, r.tp)), "fp": dict(zip(names, r.fp)), "iou_threshold": r.iou_threshold}


# --- training -------------------------------------------------------------------------------------

@dataclass
class DetectionResult:
    model: EfficientDet
    stack: str
    best_val_map: float
    steps: int
    seconds: float
    history: list


def train(stack: str, train_set: DetectionSet, val_set: DetectionSet, config: EfficientDetConfig,
          cfg: DetectionTrainConfig, log=print) -> DetectionResult:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    channels = stack_channels(stack)
    config = EfficientDetConfig(**{**asdict(config), "in_channels": len(channels), "anchors": config.anchors})
    model = EfficientDet(config)
    anchors = generate_anchors(config.anchors, train_set.images.shape[2:])
    crop_anchors = generate_anchors(config.anchors, cfg.crop)
    post = Postprocessor(len(anchors), config.num_classes, PostprocessConfig(score_threshold=0.05, max_detections=50))
    weights = repeat_factors(train_set) if cfg.balance else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    best, best_state, history, t0 = -1.0, None, [], time.perf_counter()
    for step in range(1, cfg.steps + 1):
        model.train()
        idx = rng.choice(len(train_set), cfg.batch, replace=False, p=weights)
        x, cls_t, box_t, state = _batch(train_set, idx, channels, crop_anchors, config, cfg, rng)
        logits, deltas = model(x)
        loss, focal, box = loss_fn(logits, deltas, cls_t, box_t, state)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            model.eval()
            val = evaluate(detect(model, val_set, channels, anchors, post), val_set)
            history.append({"step": step, "loss": loss.item(), "focal": float(focal), "box": float(box),
                            "val_map": val["map"]})
            log(f"  [{stack}] step {step}: loss {loss.item():.3f} (focal {float(focal):.3f}, box {float(box):.4f}) "
                f"val mAP@0.5 {val['map']:.3f} ({time.perf_counter() - t0:.0f} s)")
            if val["map"] > best:
                best, best_state = val["map"], copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return DetectionResult(model, stack, best, cfg.steps, time.perf_counter() - t0, history)


def choose_postprocess(model: EfficientDet, val_set: DetectionSet, channels, max_fp_per_frame: float = 1.0,
                       iou_thresholds=(0.4, 0.5, 0.6), score_thresholds=tuple(np.round(np.arange(0.2, 0.81, 0.05), 2)),
                       max_detections: int = 50) -> tuple[PostprocessConfig, dict]:
    """The NMS IoU threshold with the best validation mAP, then the lowest score threshold whose false
    positives stay under `max_fp_per_frame` on the validation frames (detections on ignore regions are
    not false positives): what the node keeps is then what validation says is worth believing."""
    anchors = generate_anchors(model.config.anchors, val_set.images.shape[2:])
    wrapped = DetectorExport(model, val_set.images.shape[2:]).eval()
    with torch.no_grad():
        raw = [tuple(t[0].numpy() for t in wrapped(torch.from_numpy(val_set.images[i:i + 1][:, channels]
                                                                    .astype(np.float32))))
               for i in range(len(val_set))]
    by_iou = {}
    for iou in iou_thresholds:
        post = Postprocessor(len(anchors), model.config.num_classes,
                             PostprocessConfig(score_threshold=0.05, iou_threshold=iou, max_detections=100))
        dets = [post(sc, bx) for sc, bx in raw]
        by_iou[iou] = (evaluate(dets, val_set)["map"], dets)
    iou = max(by_iou, key=lambda k: by_iou[k][0])
    dets = by_iou[iou][1]
    rows = []
    for thr in score_thresholds:
        kept = [(b[s > thr], s[s > thr], c[s > thr]) for b, s, c in dets]
        r = evaluate(kept, val_set)
        rows.append({"score_threshold": float(thr), "map": r["map"], "fp_per_frame": sum(r["fp"].values()) / len(kept),
                     "recall": sum(r["tp"].values()) / max(sum(r["objects"].values()), 1)})
    fine = [r for r in rows if r["fp_per_frame"] < max_fp_per_frame]
    chosen = fine[0] if fine else rows[-1]
    config = PostprocessConfig(score_threshold=chosen["score_threshold"], iou_threshold=float(iou),
                               max_detections=max_detections)
    return config, {"iou_map": {str(k): v[0] for k, v in by_iou.items()}, "score_sweep": rows, "chosen": chosen,
                    "max_fp_per_frame": max_fp_per_frame}


# --- export -----------------------------------------------------------------------------------------

def export_onnx(model: EfficientDet, path: Path, input_hw: tuple[int, int], post: PostprocessConfig,
                opset: int = 17) -> None:
    """image -> scores, boxes (anchors decoded in the graph) -> NMS in the graph (det_* outputs).

    The last BiFPN layer's outputs are renamed bifpn_p2 .. bifpn_p5 (the class-head inputs).
    """
    import onnx

    wrapped = DetectorExport(model.eval(), input_hw).eval()
    shape = (1, model.config.in_channels, *input_hw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (torch.zeros(shape),), str(path), dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=["scores", "boxes"], do_constant_folding=True)
    m = onnx.load(str(path))
    last = len(model.bifpn) - 1
    rename = {}
    for level in range(len(model.config.anchors.strides)):
        # the last node of each output fusion (the BN of its separable conv)
        where = f"/model/bifpn.{last}/" + (f"top_down.{len(model.config.anchors.strides) - 2}" if level == 0 else f"bottom_up.{level - 1}") + "/"
        nodes = [n for n in m.graph.node if n.name.startswith(where)]
        rename[nodes[-1].output[0]] = f"bifpn_p{level + 2}"
    for node in m.graph.node:
        node.input[:] = [rename.get(t, t) for t in node.input]
        node.output[:] = [rename.get(t, t) for t in node.output]
    m = append_postprocess(m, "boxes", "scores", post)
    m.producer_name = "hsi_xai_node"
    m.ir_version = min(m.ir_version, 8)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


# --- study: one model per input stack, test mAP on the exported graph -----------------------------

EVAL_POST = PostprocessConfig(score_threshold=0.05, iou_threshold=0.5, max_detections=100)


def evaluate_onnx(path: Path, data: DetectionSet, channels, post: PostprocessConfig = EVAL_POST) -> dict:
    """mAP@0.5 of an exported detector, run by ONNX Runtime (the graph users get); its pre-NMS
    outputs go through the same NMS graph, with a low score threshold as mAP needs (or `post`'s)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    first = session.run(["scores"], {"image": data.images[:1][:, channels].astype(np.float32)})[0]
    post = Postprocessor(first.shape[1], first.shape[2], dataclasses.replace(post, max_detections=100))
    detections = []
    for i in range(len(data)):
        scores, boxes = session.run(["scores", "boxes"], {"image": data.images[i:i + 1][:, channels].astype(np.float32)})
        detections.append(post(scores[0], boxes[0]))
    return evaluate(detections, data)


def write_model(result: DetectionResult, out_dir: Path, name: str, metrics: dict, training: dict,
                post: PostprocessConfig = PostprocessConfig()):
    """ONNX file (decoding + NMS in the graph) and its detector card."""
    from ..detection.card import DetectorCard, DetectorInput, StackInput
    from ..model_card import ClassSpec, file_sha256

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.onnx"
    model = result.model
    export_onnx(model, path, INPUT_SIZE[::-1], post)
    stack = stack_config(result.stack, input_size=INPUT_SIZE)
    levels = {f"bifpn_p{lv}": f"bifpn_p{lv}" for lv in range(2, 2 + len(model.config.anchors.strides))}
    card = DetectorCard(
        name=name, file=path.name, sha256=file_sha256(path),
        input=DetectorInput("image", (1, model.config.in_channels, INPUT_SIZE[1], INPUT_SIZE[0]), "nchw",
                            tuple(StackInput(c.name, c.encoding, tuple(np.atleast_1d(c.offset).astype(float).tolist()),
                                             tuple(np.atleast_1d(c.scale).astype(float).tolist()))
                                  for c in stack.cameras)),
        classes=tuple(ClassSpec(i, c.id, c.name, tuple(int(v) for v in c.bgr)) for i, c in enumerate(DETECTION_CLASSES)),
        layers={"class_head_input": "bifpn_p2", **levels},
        postprocess={"in_graph": True, **asdict(post)},
        architecture={"type": "efficientdet", **model.config.to_dict(), "parameters": parameter_count(model),
                      "blocks": "MBConv (SE, SiLU) backbone, BiFPN with fast normalised fusion over P2-P5, "
                                "class and box nets shared across levels (BN per level, folded at export)"},
        training=training, metrics=metrics)
    (out_dir / f"{name}.json").write_text(card.to_json())
    return path, card


def summary_table(results: dict) -> str:
    """Per stack: AP per class and mAP over all scores (the AP curve), then mAP and false positives per
    frame at the score threshold chosen for it on the validation drives (what the node would publish)."""
    names = [c.name for c in DETECTION_CLASSES]
    lines = ["| input stack | channels | " + " | ".join(names) + " | mAP@0.5 | threshold | mAP at threshold | "
             "false positives per frame |", "| --- | --- |" + " --- |" * (len(names) + 4)]
    for stack, r in results.items():
        ap, at = r["test"]["ap"], r["test"]["at_node_threshold"]
        cells = ["-" if ap.get(n) is None else f"{ap[n]:.3f}" for n in names]
        lines.append(f"| {stack} | {len(stack_channels(stack))} | " + " | ".join(cells) + f" | **{r['test']['map']:.3f}** | "
                     f"{at['score_threshold']:g} | {at['map']:.3f} | {at['fp_per_frame']:.2f} |")
    return "\n".join(lines)


def study_stack(stack: str, data: dict, out_dir: Path, cfg: DetectionTrainConfig, *, bundle: tuple[str, ...],
                command: str, splits: dict, model_config: EfficientDetConfig, log=print,
                sources: dict | None = None) -> dict:
    """Train, choose the post-processing of and test one stack; keep its ONNX + card if it is bundled. `sources`
    (split -> the dataset it was read from) marks a study on a dataset instead of generated drives."""
    result = train(stack, data["train"], data["val"], model_config, cfg, log)
    post, chosen = choose_postprocess(result.model, data["val"], stack_channels(stack))
    name = f"efficientdet_{stack.replace('+', '_')}"
    where = {"data": sources} if sources else {"data": "generated drives (hsi_xai_node.scenes), split by seed",
                                               "splits": {k: asdict(v) for k, v in splits.items()}}
    training = {**where, "config": asdict(cfg),
                "steps_run": result.steps, "seconds": round(result.seconds, 1), "best_val_map": result.best_val_map,
                "command": command, "torch": torch.__version__, "min_height_px": MIN_HEIGHT_PX,
                "augmentation": (f"{cfg.crop[0]}x{cfg.crop[1]} crops magnified {cfg.zoom[0]:g}-{cfg.zoom[1]:g}x "
                                 "(log-uniform); left-right flips; per-channel gain U(0.85, 1.15) and offset "
                                 "N(0, 0.1)" + ("; repeat-factor sampling of rare classes" if cfg.balance else "")),
                "loss": "sigmoid focal (alpha 0.25, gamma 2) + 50 x Huber(0.1) box deltas",
                "postprocess_choice": chosen}
    path, card = write_model(result, out_dir, name, {}, training, post)
    test = evaluate_onnx(path, data["test"], stack_channels(stack))
    at = evaluate_onnx(path, data["test"], stack_channels(stack), post)
    test["at_node_threshold"] = {"score_threshold": post.score_threshold, "map": at["map"], "ap": at["ap"],
                                 "fp_per_frame": sum(at["fp"].values()) / len(data["test"]),
                                 "tp": at["tp"], "fp": at["fp"], "objects": at["objects"]}
    log(f"[{stack}] test mAP@0.5 {test['map']:.3f}; at the card's threshold {post.score_threshold}: mAP "
        f"{at['map']:.3f}, {test['at_node_threshold']['fp_per_frame']:.2f} false positives per frame "
        f"({result.seconds:.0f} s)")
    if stack in bundle:
        from ..overlay_calibration import detection_overlay_scales

        card.metrics = {"test_dataset" if sources else "test_generated": test}
        (out_dir / f"{name}.json").write_text(card.to_json())
        if sources:  # the calibration runs the rig's cameras; a dataset's registered frames have no rig
            log(f"[{stack}] no overlay scales in the card (trained on a dataset): the node uses running scales")
        else:
            card.overlay_scales = detection_overlay_scales(path)  # on the validation drives
            (out_dir / f"{name}.json").write_text(card.to_json())
    else:
        path.unlink(), (out_dir / f"{name}.json").unlink()
    return {"test": test, "val_map": result.best_val_map, "seconds": result.seconds, "history": result.history,
            "parameters": parameter_count(result.model), "postprocess": asdict(post)}


def _study_stack_in_worker(stack: str, cache: Path, log_queue, kwargs: dict) -> dict:
    """study_stack in a worker process: the datasets come from the cache the parent filled."""
    data = {split: generate(kwargs["splits"][split], cache) for split in ("train", "val", "test")}
    return study_stack(stack, data, log=log_queue.put, **kwargs)


def _study_in_parallel(stacks: list[str], jobs: int, cache: Path, log, kwargs: dict) -> dict:
    """Stacks `jobs` at a time in spawned processes (torch must not be forked); their log lines are relayed."""
    with multiprocessing.Manager() as manager, \
            ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        log_queue = manager.Queue()
        futures = [pool.submit(_study_stack_in_worker, stack, cache, log_queue, kwargs) for stack in stacks]
        pending = set(futures)
        while pending:  # a worker's lines are queued before its result, so the last pass relays them all
            _, pending = wait(pending, timeout=0.5)
            while not log_queue.empty():
                log(log_queue.get())
        return {stack: f.result() for stack, f in zip(stacks, futures)}


def run_study(stacks: list[str], out_dir: Path, cfg: DetectionTrainConfig, *, bundle: tuple[str, ...] = ("rgb+mir",),
              cache: Path | None = None, command: str = "", log=print, splits=DETECTION_SPLITS,
              model_config: EfficientDetConfig = EfficientDetConfig(), jobs: int = 1,
              datasets: dict | None = None) -> dict:
    """Train one detector per stack (`jobs` stacks at a time, each in its own process); test mAP of each on
    the exported graph; bundle some. A stack's result does not depend on `jobs` (same seed, same batches).
    `datasets` (split -> a ModsDataset reader) trains on the Multispectral Object Detection dataset instead, one
    stack at a time."""
    t0 = time.perf_counter()
    kwargs = {"out_dir": out_dir, "cfg": cfg, "bundle": bundle, "command": command, "splits": splits,
              "model_config": model_config}
    if datasets:
        jobs, kwargs["sources"] = 1, {k: d.describe() for k, d in datasets.items()}
    with tempfile.TemporaryDirectory() as scratch:
        if jobs > 1 and cache is None:
            cache = Path(scratch)  # the workers read the rendered splits back instead of rendering them again
        data = {}
        for split in ("train", "val", "test"):
            data[split] = from_dataset(datasets[split], log=log) if datasets else generate(splits[split], cache)
            log(f"{split}: {len(data[split])} frames, {sum(len(b) for b in data[split].boxes)} objects "
                f"({time.perf_counter() - t0:.0f} s)")
        test_frames = len(data["test"])
        if jobs > 1:
            del data  # each worker loads its own copy
            results = _study_in_parallel(stacks, jobs, cache, log, kwargs)
        else:
            results = {stack: study_stack(stack, data, log=log, **kwargs) for stack in stacks}
    (out_dir / "detection_study_bundled.json").write_text(json.dumps(results, indent=1))
    held_out = (datasets["test"].describe() if datasets else
                f"{test_frames} held-out frames of {len(splits['test'].seeds)} drives")
    (out_dir / "detection_study_bundled.md").write_text(
        f"# Detection study: input stacks (paper 001's comparison)\n\nCommand: `{command}`\n\n"
        f"Test mAP@0.5 (Pascal VOC all-point AP) on {held_out}; objects lower than {MIN_HEIGHT_PX:g} px in the "
        "320x256 network view are ignore regions.\n\n" + summary_table(results) + "\n")
    return results
