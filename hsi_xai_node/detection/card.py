"""Detector cards and the detector loader: what an EfficientDet ONNX file expects and gives.

A detector card (`<model>.json` beside `<model>.onnx`, schema `hsi_xai_node/detector-card/1`)
names the input tensor and its layout, the camera stack (camera name, encoding and
per-channel normalisation, in channel order; where the cameras sit is the rig's
business, see `sensor.multispectral`), the classes, the score and box tensors and
the class-head input tensors explanations target.

Our own exported models carry anchor decoding and NMS in the graph. A user's detector
(for example one exported by NVIDIA's TensorRT EfficientDet sample, cut before its
EfficientNMS_TRT plugin) can instead give its raw tensors in `raw`: class logits with
their activation, and box regression with its coding and anchors (an .npy file beside
the card). `load_detector` then appends activation, decoding and NMS with the same
graph builders, so every detector reaches the runtime in one shape:
outputs `scores` (1, A, C), `boxes` (1, A, 4) and det_boxes / det_scores / det_classes / det_pairs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ..model_card import (ClassSchema, ClassSpec, ModelError, OverlayScaleSchema, check_classes, class_specs,
                          read_card_json, validate_card)
from ..schema import Finite, Fraction, Name, PixelCount, PositiveFinite, _finite

DETECTOR_CARD_SCHEMA = "hsi_xai_node/detector-card/1"
NMS_OUTPUTS = ("det_boxes", "det_scores", "det_classes", "det_pairs")


@dataclass(frozen=True)
class StackInput:
    camera: str                     # rig camera name (rgb, nir, mir, fir, ...)
    encoding: str                   # sensor_msgs/Image encoding the camera delivers
    offset: tuple[float, ...]       # per channel: model input = (value - offset) / scale
    scale: tuple[float, ...]


@dataclass(frozen=True)
class DetectorInput:
    tensor: str
    shape: tuple[int, ...]          # as the graph declares it: (1, C, H, W) or (1, H, W, C)
    layout: str                     # "nchw" or "nhwc"
    stack: tuple[StackInput, ...]

    @property
    def hw(self) -> tuple[int, int]:
        return tuple(self.shape[2:4]) if self.layout == "nchw" else tuple(self.shape[1:3])

    @property
    def channels(self) -> int:
        return self.shape[1] if self.layout == "nchw" else self.shape[3]


@dataclass(frozen=True)
class RawOutputs:
    """Pre-NMS tensors of a detector without decoding/NMS in its graph."""

    logits: str                     # (1, A, C)
    activation: str                 # "sigmoid" or "none" (already probabilities)
    deltas: str                     # (1, A, 4)
    coding: str                     # see detection.postprocess.append_box_decoding
    anchors: str | None             # .npy file (A, 4) beside the card, in the coding's layout (None for "xyxy")


@dataclass
class DetectorCard:
    name: str
    file: str
    sha256: str
    input: DetectorInput
    classes: tuple[ClassSpec, ...]
    layers: dict[str, str]          # role -> tensor; "class_head_input" is the default explain layer
    scores: str = "scores"
    boxes: str = "boxes"
    raw: RawOutputs | None = None
    postprocess: dict = field(default_factory=lambda: {"in_graph": True, "score_threshold": 0.3,
                                                       "iou_threshold": 0.5, "max_detections": 20})
    architecture: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    # "<method>@<layer>" -> {"classes": {name: value}, ...}; at layer box_level per class and level, "car@bifpn_p3"
    overlay_scales: dict = field(default_factory=dict)
    task: str = "detection"
    schema: str = DETECTOR_CARD_SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, d, source: str = "card") -> "DetectorCard":
        """A card from its JSON object, checked against DetectorCardSchema (a ModelError names the field)."""
        c = validate_card(DetectorCardSchema, d, source)
        i = c.input
        stack = tuple(StackInput(s.camera, s.encoding, tuple(s.offset), tuple(s.scale)) for s in i.stack)
        raw = RawOutputs(**c.raw.model_dump()) if c.raw is not None else None
        return cls(name=c.name, file=c.file, sha256=c.sha256,
                   input=DetectorInput(i.tensor, tuple(i.shape), i.layout, stack), classes=class_specs(c.classes),
                   layers=dict(c.layers), scores=c.scores, boxes=c.boxes, raw=raw,
                   postprocess=c.postprocess.model_dump(), architecture=c.architecture, training=c.training,
                   metrics=c.metrics, overlay_scales={k: v.model_dump() for k, v in c.overlay_scales.items()})

    @classmethod
    def load(cls, path: str | Path) -> "DetectorCard":
        return cls.from_dict(read_card_json(path, "detector card"), f"detector card {path}")


# --- the card's schema ------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class StackSchema(_Strict):
    camera: Name
    encoding: Literal["bgr8", "rgb8", "mono8", "mono16"]
    offset: list[Finite] = Field(min_length=1, max_length=4)
    scale: list[PositiveFinite] = Field(min_length=1, max_length=4)

    @model_validator(mode="after")
    def _channels(self):
        channels = 3 if self.encoding in ("bgr8", "rgb8") else 1
        for key in ("offset", "scale"):
            if len(getattr(self, key)) not in (1, channels):
                raise ValueError(f"{key} gives {len(getattr(self, key))} values for a {channels}-channel "
                                 f"{self.encoding} camera (give 1 or {channels})")
        return self


class DetectorInputSchema(_Strict):
    tensor: Name
    shape: list[PixelCount] = Field(min_length=4, max_length=4)
    layout: Literal["nchw", "nhwc"] = "nchw"
    stack: list[StackSchema] = Field(min_length=1, max_length=8)


class RawSchema(_Strict):
    logits: Name
    activation: Literal["sigmoid", "none"]
    deltas: Name
    coding: Literal["xyxy", "cxcywh_deltas", "tf_yxhw_deltas"]
    anchors: Name | None = None

    @model_validator(mode="after")
    def _anchors(self):
        if self.anchors is None and self.coding != "xyxy":
            raise ValueError(f"coding {self.coding!r} decodes against anchors: give raw.anchors (an .npy beside the "
                             "card)")
        return self


class PostprocessSchema(_Strict):
    in_graph: bool = False
    score_threshold: Annotated[float, Field(ge=0, lt=1), AfterValidator(_finite)] = 0.3
    iou_threshold: Fraction = 0.5
    max_detections: int = Field(default=20, ge=1, lt=3840)
    max_per_class: int = Field(default=100, ge=1, le=100_000)


class DetectorCardSchema(_Strict):
    schema_: Literal["hsi_xai_node/detector-card/1"] = Field(alias="schema")
    name: Name
    file: Name
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    task: Literal["detection"] = "detection"
    input: DetectorInputSchema
    classes: list[ClassSchema] = Field(min_length=1, max_length=256)
    layers: dict[Name, Name]
    scores: Name = "scores"
    boxes: Name = "boxes"
    raw: RawSchema | None = None
    postprocess: PostprocessSchema = PostprocessSchema(in_graph=True)
    architecture: dict = {}
    training: dict = {}
    metrics: dict = {}
    overlay_scales: dict[Name, OverlayScaleSchema] = {}

    @model_validator(mode="after")
    def _consistent(self):
        check_classes(self.classes)
        if self.input.shape[0] != 1:
            raise ValueError(f"input.shape {self.input.shape}: the batch must be 1")
        return self


@dataclass
class LoadedDetector:
    path: Path
    card: DetectorCard
    model: object  # onnx.ModelProto with scores, boxes and the det_* outputs


def _check(card: DetectorCard, model, where: str) -> None:
    from ..model_card import _value_shape

    g = model.graph
    inits = {t.name for t in g.initializer}
    inputs = {v.name: _value_shape(v) for v in g.input if v.name not in inits}
    i = card.input
    if i.layout not in ("nchw", "nhwc"):
        raise ModelError(f"{where}: card input layout {i.layout!r} is not 'nchw' or 'nhwc'")
    if i.tensor not in inputs:
        raise ModelError(f"{where}: card input tensor {i.tensor!r} is not a graph input (inputs: {sorted(inputs)})")
    if inputs[i.tensor] != i.shape:
        raise ModelError(f"{where}: graph input {i.tensor!r} has shape {inputs[i.tensor]}, card says {i.shape}")
    uneven = [s for s in i.stack if len(s.offset) != len(s.scale)]
    if uneven:
        raise ModelError(f"{where}: card stack camera(s) {[s.camera for s in uneven]} give "
                         f"{len(uneven[0].offset)} offsets but {len(uneven[0].scale)} scales")
    stacked = sum(len(s.offset) for s in i.stack)
    if stacked != i.channels:
        raise ModelError(f"{where}: card stack gives {stacked} channels for an input of {i.channels}")
    if sorted(c.channel for c in card.classes) != list(range(len(card.classes))):
        raise ModelError(f"{where}: card class channels {[c.channel for c in card.classes]} are not 0..n-1")
    produced = {o for n in g.node for o in n.output}
    missing = {role: t for role, t in card.layers.items() if t not in produced}
    if missing:
        raise ModelError(f"{where}: card layer tensors not in the graph: {missing}")
    if "class_head_input" not in card.layers:
        raise ModelError(f"{where}: card layers must name a 'class_head_input' (the default explain layer)")


def load_detector(path: str | Path, card_path: str | Path | None = None) -> LoadedDetector:
    """Open a detector and its card, check them, and bring the graph to the runtime's shape."""
    from ..explain import ExplainError
    from ..model_card import _value_shape, read_checked_onnx
    from .postprocess import PostprocessConfig, append_box_decoding, append_postprocess, apply_score_activation

    path = Path(path)
    card_path = Path(card_path) if card_path else path.with_suffix(".json")
    if not path.is_file():
        raise ModelError(f"detector {path}: no such file")
    card = DetectorCard.load(card_path)
    _, model = read_checked_onnx(path, card_path, card.sha256, "detector")
    _check(card, model, str(path))
    p = card.postprocess  # checked by the card's schema
    post = PostprocessConfig(score_threshold=p["score_threshold"], iou_threshold=p["iou_threshold"],
                             max_detections=p["max_detections"], max_per_class=p["max_per_class"])
    try:
        if card.raw is not None:
            anchors = None
            if card.raw.anchors is not None:
                anchors_path = card_path.parent / card.raw.anchors
                if not anchors_path.is_file():
                    raise ModelError(f"detector card {card_path}: anchors file {anchors_path} not found")
                try:
                    anchors = np.load(anchors_path, allow_pickle=False)
                except (OSError, ValueError) as exc:
                    raise ModelError(f"detector card {card_path}: anchors file {anchors_path} is not a readable "
                                     f".npy ({str(exc).splitlines()[0]})") from None
            model, card.scores = apply_score_activation(model, card.raw.logits, card.raw.activation)
            model, card.boxes = append_box_decoding(model, card.raw.deltas, anchors, card.raw.coding)
        outputs = {o.name for o in model.graph.output}
        for role, tensor in (("scores", card.scores), ("boxes", card.boxes)):
            if tensor not in outputs:
                raise ModelError(f"detector {path}: card {role} tensor {tensor!r} is not a graph output "
                                 f"(outputs: {sorted(outputs)})")
        shape = next(_value_shape(o) for o in model.graph.output if o.name == card.scores)
        n = len(card.classes)
        if len(shape) != 3 or shape[2] != n:  # else the runtime meets class indices the card cannot name
            raise ModelError(f"detector {path}: scores tensor {card.scores!r} has shape {shape}, expected "
                             f"(1, anchors, {n}): the card lists {n} classes")
        if not p.get("in_graph", False) or not set(NMS_OUTPUTS) <= outputs:
            model = append_postprocess(model, card.boxes, card.scores, post)
    except ExplainError as exc:
        raise ModelError(f"detector {path}: {exc}") from None
    return LoadedDetector(path=path, card=card, model=model)
