"""`hsi-xai import-model --task detection`: a user's detector that ends in raw class logits and box regression
(NVIDIA's TensorRT EfficientDet sample cut before its NMS plugin, Google AutoML's export, a torch model) gets a
detector card on the raw-head path: `load_detector` then appends the score activation, the box decoding and
the NMS the runtime expects, and the per-box explanations run as on the bundled detector.

From the graph: the input (NCHW or NHWC, told by the stacked channel count), the logits (1, A, classes) and the
regression (1, A, 4) outputs, and the tensor the explanations target: the feature map the class head and the box
head both read at the finest level (the last tensor the two heads share, found by walking back from the finest
branch of the logits). From the user: the classes, the camera stack, the anchors (an .npy of (A, 4) in the
coding's layout, copied beside the card), the box coding and the score activation.
"""

from __future__ import annotations

import io
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from ..classes import DETECTION_CLASSES
from ..detection.card import DETECTOR_CARD_SCHEMA, DetectorCard, DetectorInput, RawOutputs, StackInput, load_detector
from ..detection.postprocess import BOX_CODINGS, SCORE_ACTIVATIONS
from ..model_card import ClassSpec, ModelError, file_sha256
from ..sensor.multispectral import ENCODINGS
from ._files import all_or_nothing, import_paths, load_source
from ._graph import checked_static_shapes, static_graph

DETECTION_CLASS_SETS = {"mods": DETECTION_CLASSES}  # the Multispectral Object Detection dataset's five
# per camera encoding the stack takes: its channels, and its full scale (the default scale: 0..1 inputs)
_CHANNELS = {encoding: channels for encoding, (_, channels) in ENCODINGS.items()}
_FULL_SCALE = {encoding: float(np.iinfo(dtype).max) for encoding, (dtype, _) in ENCODINGS.items()}


@dataclass(frozen=True)
class DetectionImportOptions:
    classes: str
    stack: str  # camera:encoding,... in input channel order, e.g. "rgb:bgr8,mir:mono16"
    anchors: str | None = None  # (A, 4) .npy in the coding's layout; not needed for "xyxy"
    coding: str = "tf_yxhw_deltas"
    activation: str = "sigmoid"
    offset: tuple[float, ...] = ()  # per stacked channel (or one for all): input = (value - offset) / scale
    scale: tuple[float, ...] = ()  # default: each encoding's full scale (0..1 inputs)
    input_size: tuple[int, int] | None = None
    logits: str | None = None
    deltas: str | None = None
    class_head_input: str | None = None
    score_threshold: float = 0.3
    max_detections: int = 20
    name: str | None = None
    out: str | None = None
    self_check: bool = True


@dataclass
class DetectionImportResult:
    model: Path
    card: Path
    changes: list[str]
    layers: dict[str, str]
    why: dict[str, str]
    anchors: int


def detection_classes(spec: str, count: int) -> tuple[ClassSpec, ...]:
    if spec in DETECTION_CLASS_SETS:
        table = DETECTION_CLASS_SETS[spec]
        if len(table) != count:
            raise ModelError(f"the logits have {count} classes; class set {spec!r} has {len(table)}")
        return tuple(ClassSpec(i, c.id, c.name, c.bgr) for i, c in enumerate(table))
    names = [n.strip() for n in spec.split(",")]
    if len(names) != count or "" in names:
        raise ModelError(f"--classes names {len(names)} classes but the logits have {count} (or give a class set: "
                         f"{', '.join(DETECTION_CLASS_SETS)})")
    import matplotlib

    colours = matplotlib.colormaps["tab10"].colors
    return tuple(ClassSpec(i, i, n, tuple(int(round(255 * v)) for v in colours[i % 10][::-1]))
                 for i, n in enumerate(names))


def parse_stack(spec: str, offset: tuple[float, ...], scale: tuple[float, ...]) -> tuple[StackInput, ...]:
    cameras = []
    for part in spec.split(","):
        camera, _, encoding = part.strip().partition(":")
        if not camera or encoding not in _CHANNELS:
            raise ModelError(f"--stack {spec!r}: give camera:encoding pairs in channel order, encodings "
                             f"{list(_CHANNELS)} (e.g. rgb:bgr8,mir:mono16)")
        cameras.append((camera, encoding))
    total = sum(_CHANNELS[e] for _, e in cameras)
    for values, what in ((offset, "--stack-offset"), (scale, "--stack-scale")):
        if values and len(values) not in (1, total):
            raise ModelError(f"{what} gives {len(values)} values for {total} stacked channels (give 1 or {total})")
    if scale and any(not v > 0 for v in scale):
        raise ModelError("--stack-scale values must be positive")
    out, k = [], 0
    for camera, encoding in cameras:
        n = _CHANNELS[encoding]
        off = tuple(offset[k:k + n]) if len(offset) > 1 else tuple(offset) * n if offset else (0.0,) * n
        sc = tuple(scale[k:k + n]) if len(scale) > 1 else tuple(scale) * n if scale else (_FULL_SCALE[encoding],) * n
        out.append(StackInput(camera, encoding, off, sc))
        k += n
    return tuple(out)


def _ancestors(model: onnx.ModelProto, tensor: str) -> set[str]:
    producers = {o: n for n in model.graph.node for o in n.output}
    seen, todo = set(), [tensor]
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in producers:
            todo.extend(i for i in producers[t].input if i)
    return seen


def refuse_own_nms(model: onnx.ModelProto) -> None:
    """A detector must end before its NMS (the loader appends the runtime's); checked before the shapes, which an
    NMS makes depend on the values."""
    if any(n.op_type in ("NonMaxSuppression", "EfficientNMS_TRT", "BatchedNMS_TRT") for n in model.graph.node):
        raise ModelError("the graph runs its own NMS: export it cut before the NMS (raw class logits and box "
                         "regression; the TensorRT EfficientDet sample's create_onnx.py builds the graph in stages)")


def find_raw_outputs(model, shapes, classes_hint: int | None, logits: str | None, deltas: str | None):
    """(logits, deltas, anchors A): outputs (1, A, C) and (1, A, 4); ambiguity is one error naming them."""
    outs = [(o.name, shapes.get(o.name, ())) for o in model.graph.output]
    described = "; ".join(f"{n} {s}" for n, s in outs)
    three = [(n, s) for n, s in outs if len(s) == 3 and s[0] == 1]
    box = [n for n, s in three if s[2] == 4]
    cls = [n for n, s in three if s[2] != 4 or (classes_hint == 4 and n not in box[:1])]
    if deltas is None:
        if len(box) != 1:
            raise ModelError(f"no single (1, anchors, 4) box regression output ({described}): name it with --deltas")
        deltas = box[0]
    if logits is None:
        cls = [n for n in cls if n != deltas]
        if len(cls) != 1:
            raise ModelError(f"no single (1, anchors, classes) logits output ({described}): name it with --logits")
        logits = cls[0]
    for name in (logits, deltas):
        if name not in dict(outs):
            raise ModelError(f"{name!r} is not an output of the graph ({described})")
    a_logits, a_deltas = dict(outs)[logits][1], dict(outs)[deltas][1]
    if a_logits != a_deltas:
        raise ModelError(f"logits {logits!r} have {a_logits} anchors, deltas {deltas!r} {a_deltas}")
    return logits, deltas, a_logits


def find_class_head_input(model: onnx.ModelProto, shapes: dict, logits: str, deltas: str) -> tuple[str, str]:
    """The finest-level feature map both heads read: walking back from the logits breadth-first (the nearest
    first), the first 4-D tensor the deltas also depend on, on the branch holding the most anchors."""
    producers = {o: n for n in model.graph.node for o in n.output}
    box_side = _ancestors(model, deltas)
    start = logits
    node = producers.get(logits)
    hops = 0
    while node is not None and node.op_type in ("Sigmoid", "Identity", "Reshape", "Transpose") and hops < 8:
        start, node, hops = node.input[0], producers.get(node.input[0]), hops + 1
    why = "shared by the class and box heads"
    if node is not None and node.op_type == "Concat":  # one branch per pyramid level: the one with most anchors
        def anchors_of(t):
            s = shapes.get(t, ())
            return int(np.prod(s[1:-1])) if len(s) >= 3 else 0
        start = max(node.input, key=anchors_of)
        why = f"the finest of {len(node.input)} pyramid levels, {why}"
    seen, queue = {start}, deque([start])
    while queue:
        t = queue.popleft()
        if t in box_side and len(shapes.get(t, ())) == 4 and t in producers:
            s = shapes[t]
            return t, f"{why} ({'x'.join(map(str, s))})"
        if t in producers:
            for i in producers[t].input:
                if i and i not in seen:
                    seen.add(i)
                    queue.append(i)
    raise ModelError(f"no feature map is shared by the logits {logits!r} and the deltas {deltas!r}: name the layer "
                     "to explain with --class-head-input TENSOR")


def import_detection(model_path: str | Path, options: DetectionImportOptions, log=print) -> DetectionImportResult:
    source_path = Path(model_path)
    if options.coding not in BOX_CODINGS:
        raise ModelError(f"--coding {options.coding!r}: one of {list(BOX_CODINGS)}")
    if options.activation not in SCORE_ACTIVATIONS:
        raise ModelError(f"--score-activation {options.activation!r}: one of {list(SCORE_ACTIVATIONS)}")
    stack = parse_stack(options.stack, options.offset, options.scale)
    channels = sum(len(s.offset) for s in stack)
    source, embedded = load_source(source_path)
    try:
        g = static_graph(source, channels, options.input_size, None, "the detector takes one stacked image")
        g.note_folding()
        model, name_in, layout, changes = g.model, g.input, g.layout, g.changes + embedded
        refuse_own_nms(model)
        shapes = checked_static_shapes(model)
        logits, deltas, count = find_raw_outputs(model, shapes, None, options.logits, options.deltas)
        classes = detection_classes(options.classes, shapes[logits][2])
        if options.class_head_input:
            if options.class_head_input not in shapes:
                raise ModelError(f"--class-head-input {options.class_head_input!r} is not a tensor of the graph")
            head, why = options.class_head_input, "given with --class-head-input"
        else:
            head, why = find_class_head_input(model, shapes, logits, deltas)
    except ModelError as exc:
        raise ModelError(f"model {source_path}: {exc}") from None
    anchors = None
    if options.coding != "xyxy":
        if not options.anchors:
            raise ModelError(f"--coding {options.coding} decodes against anchors: give --anchors ANCHORS.npy "
                             f"({count} x 4, in the coding's layout)")
        try:
            anchors = np.load(options.anchors, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModelError(f"--anchors {options.anchors}: not a readable .npy ({str(exc).splitlines()[0]})") from None
        if anchors.shape != (count, 4) or not np.isfinite(anchors).all():
            raise ModelError(f"--anchors {options.anchors}: shape {anchors.shape}, the outputs have {count} anchors "
                             "(need finite values, shape (anchors, 4))")

    paths = import_paths(source_path, options.out, options.name, bool(changes))
    name, model_out = paths.name, paths.model
    card_out, anchors_out = paths.beside(".json"), paths.beside("_anchors.npy")
    shape = tuple(int(d) for d in shapes[name_in])
    card = DetectorCard(
        name=name, file=model_out.name, sha256="0" * 64, input=DetectorInput(name_in, shape, layout, stack),
        classes=classes, layers={"class_head_input": head},
        raw=RawOutputs(logits, options.activation, deltas, options.coding,
                       anchors_out.name if anchors is not None else None),
        postprocess={"in_graph": False, "score_threshold": options.score_threshold, "iou_threshold": 0.5,
                     "max_detections": options.max_detections, "max_per_class": 100},
        architecture={"type": "imported", "source": {"file": source_path.name, "sha256": file_sha256(source_path)},
                      "changes": changes}, schema=DETECTOR_CARD_SCHEMA)
    with all_or_nothing() as written:
        if not paths.in_place:
            written.file(model_out, model.SerializeToString() if changes else source_path.read_bytes())
        if anchors is not None:
            buffer = io.BytesIO()
            np.save(buffer, anchors)
            written.file(anchors_out, buffer.getvalue())
        card = replace(card, sha256=file_sha256(model_out))
        written.file(card_out, card.to_json().encode())
        loaded = load_detector(model_out, card_out)  # the loader every command uses: activation, decoding, NMS
        if options.self_check:
            _self_check(loaded, log)
    return DetectionImportResult(model_out, card_out, changes, {"class_head_input": head},
                                 {"class_head_input": why}, count)


def _self_check(loaded, log) -> None:
    """The per-box explanation graph built on the loaded detector and run on a mid-grey input."""
    from ..explain import DetectionExplainConfig, build_detection_explainer
    from ..runtime.engine import open_engine

    card = loaded.card
    graph = build_detection_explainer(loaded.model, card.input.tensor, card.scores, card.layers,
                                      DetectionExplainConfig(layers=("class_head_input",)), pairs="det_pairs",
                                      layout=card.input.layout)
    engine = open_engine(graph.model.SerializeToString(), "ort-cpu", "fp32")
    x = np.full(card.input.shape, 0.5, np.float32)
    out = engine.run({card.input.tensor: x}, list(graph.outputs)[:1] + ["det_pairs"])
    kept = int((out["det_pairs"] >= 0).sum())
    log(f"self-check: detection, NMS and per-box Grad-CAM ran on a grey input ({kept} boxes kept)")
