"""Model cards and the model loader: an ONNX file is only used together with its card.

A card (`<model>.json` beside `<model>.onnx`) says what the model expects and gives:
classes (channel -> id, name, colour), the input (tensor name, shape, bands by
wavelength, normalisation, scale, where the model's window sits in the cube), the
sensor profile it was trained for, the tensor names explanations target, how it was
trained and what it measured, and the file's SHA-256.

`load_model` opens both, checks the card against the graph (tensor names and shapes,
band and class counts), the file against its hash, and the card against the sensor
profile in use (bands present, window inside the cube), and fails with a `ModelError`
naming the problem. Only `onnx` is needed here; sessions are made by the runtime.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import InputError
from .files import read_json
from .schema import Byte, Finite, Name, PixelCount, PositiveFinite, validation_message
from .sensor.calibration import SensorProfile
from .sensor.frontend import FrontEndConfig

CARD_SCHEMA = "hsi_xai_node/model-card/1"
#: How reflectance becomes the model's input (before `scale`), per model window:
#: pn: each pixel's bands divided by their sum (paper 000; done by the front end);
#: none: reflectance as it is; max: 2 x / max_b - 1 per band b, max_b the band's largest value in the window
#: (each band to [-1, 1], as HSI-Drive's own Python pipeline scales its cubes);
#: mean_std: (x - mean_b) / std_b per band b (mmsegmentation's and torchvision's per-channel normalisation).
NORMALISATIONS = ("pn", "none", "max", "mean_std")


class ModelError(InputError):
    """A model file or its card is missing, corrupt, or does not fit the graph or sensor."""


@dataclass(frozen=True)
class ClassSpec:
    channel: int  # logits channel
    id: int  # label id written to the class mask (0 stays "unlabelled")
    name: str
    bgr: tuple[int, int, int]


@dataclass(frozen=True)
class InputSpec:
    tensor: str
    shape: tuple[int, ...]  # (1, bands, height, width)
    bands_nm: tuple[float, ...]  # in model channel order
    normalise: str  # one of NORMALISATIONS
    scale: float  # model input = scale * normalised value
    crop_top: int  # the model window inside the sub-sampled cube
    crop_left: int
    demosaic: str = "subsample"
    band_tolerance_nm: float = 2.0
    mean: tuple[float, ...] = ()  # "mean_std": per band, in model channel order
    std: tuple[float, ...] = ()

    @property
    def height(self) -> int:
        return self.shape[2]

    @property
    def width(self) -> int:
        return self.shape[3]


@dataclass
class ModelCard:
    name: str
    task: str  # "segmentation" (detection cards come with the detector)
    file: str
    sha256: str
    sensor_profile: str
    input: InputSpec
    classes: tuple[ClassSpec, ...]
    logits: str  # output tensor name
    layers: dict[str, str]  # role or block name -> tensor name, e.g. "penultimate": "dec1"
    architecture: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    # "<method>@<layer tensor>" -> {"classes": {name: reference value}, "percentile", "unit", "frames", ...}:
    # the fixed overlay scales (runtime.overlay, measured by overlay_calibration)
    overlay_scales: dict = field(default_factory=dict)
    schema: str = CARD_SCHEMA

    # --- (de)serialisation --------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, d, source: str = "card") -> "ModelCard":
        """A card from its JSON object, checked against ModelCardSchema (a ModelError names the field)."""
        c = validate_card(ModelCardSchema, d, source)
        inp = c.input
        return cls(name=c.name, task=c.task, file=c.file, sha256=c.sha256, sensor_profile=c.sensor_profile,
                   input=InputSpec(inp.tensor, tuple(inp.shape), tuple(inp.bands_nm), inp.normalise, inp.scale,
                                   inp.crop_top, inp.crop_left, inp.demosaic, inp.band_tolerance_nm,
                                   tuple(inp.mean), tuple(inp.std)),
                   classes=class_specs(c.classes), logits=c.logits, layers=dict(c.layers),
                   architecture=c.architecture, training=c.training, metrics=c.metrics,
                   overlay_scales={k: v.model_dump() for k, v in c.overlay_scales.items()})

    @classmethod
    def load(cls, path: str | Path) -> "ModelCard":
        return cls.from_dict(read_card_json(path, "model card"), f"model card {path}")

    # --- what the card means for the pipeline ----------------------------------------------
    def frontend_config(self) -> FrontEndConfig:
        """The front-end options that produce this model's bands and normalisation."""
        return FrontEndConfig(demosaic=self.input.demosaic, bands=list(self.input.bands_nm),
                              band_tolerance_nm=self.input.band_tolerance_nm,
                              normalise=self.input.normalise == "pn")

    def model_input(self, cube: np.ndarray) -> np.ndarray:
        """(bands, rows, cols) front-end output -> (1, bands, h, w) float32 model input."""
        i = self.input
        window = cube[:, i.crop_top:i.crop_top + i.height, i.crop_left:i.crop_left + i.width]
        if window.shape != tuple(i.shape[1:]):
            raise ModelError(f"model {self.name!r}: cube {cube.shape} cannot hold the {i.height}x{i.width} "
                             f"window at ({i.crop_top}, {i.crop_left}) with {i.shape[1]} bands")
        return (normalised_window(window, i) * np.float32(i.scale))[None].astype(np.float32, copy=False)

    def label_ids(self) -> np.ndarray:
        """Lookup table: logits channel -> label id."""
        lut = np.zeros(len(self.classes), np.uint8)
        for c in self.classes:
            lut[c.channel] = c.id
        return lut


def normalised_window(window: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The model window (bands, h, w) normalised as the card says, before its scale ("pn" is the front end's)."""
    if spec.normalise == "max":
        top = window.max(axis=(1, 2), keepdims=True) if window.size else np.zeros((len(window), 1, 1), np.float32)
        # a dark band (max <= 0) maps to -1 everywhere rather than to inf or NaN
        two_over = np.divide(np.float32(2), top, out=np.zeros_like(top), where=top > 0)
        return window * two_over - np.float32(1)
    if spec.normalise == "mean_std":
        mean = np.asarray(spec.mean, np.float32)[:, None, None]
        return (window - mean) * (np.float32(1) / np.asarray(spec.std, np.float32))[:, None, None]
    return window


# --- the card's schema ------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class ClassSchema(_Strict):
    channel: int = Field(ge=0, le=1023)
    id: Byte  # labels are uint8 images: 0..255
    name: Name
    bgr: list[Byte] = Field(min_length=3, max_length=3)


class SegmentationInputSchema(_Strict):
    tensor: Name
    shape: list[PixelCount] = Field(min_length=4, max_length=4)
    bands_nm: list[Annotated[PositiveFinite, Field(lt=100_000)]] = Field(min_length=1, max_length=1024)
    normalise: Literal[NORMALISATIONS]
    scale: PositiveFinite
    crop_top: int = Field(ge=0, le=65535)
    crop_left: int = Field(ge=0, le=65535)
    demosaic: Literal["subsample", "bilinear"] = "subsample"
    band_tolerance_nm: PositiveFinite = 2.0
    mean: list[Finite] = Field(default=[], max_length=1024)
    std: list[PositiveFinite] = Field(default=[], max_length=1024)

    @model_validator(mode="after")
    def _per_band(self):
        bands = len(self.bands_nm)
        if self.normalise == "mean_std" and (len(self.mean) != bands or len(self.std) != bands):
            raise ValueError(f"normalise mean_std needs a mean and a std per band ({bands}), got "
                             f"{len(self.mean)} and {len(self.std)}")
        if self.normalise != "mean_std" and (self.mean or self.std):
            raise ValueError(f"mean and std are for normalise mean_std, not {self.normalise!r}")
        return self


class OverlayScaleSchema(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")  # unit, percentile, drives, ...: information
    classes: dict[Name, PositiveFinite]


def check_classes(classes: list) -> None:
    """Class names, ids and channels each unique (shared by both card kinds)."""
    for key in ("name", "id", "channel"):
        values = [getattr(c, key) for c in classes]
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"class {key}(s) {twice[:5]} appear more than once")


def class_specs(classes: list) -> tuple[ClassSpec, ...]:
    return tuple(ClassSpec(c.channel, c.id, c.name, tuple(c.bgr)) for c in classes)


class ModelCardSchema(_Strict):
    schema_: Literal["hsi_xai_node/model-card/1"] = Field(alias="schema")
    name: Name
    task: Literal["segmentation"]
    file: Name
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    sensor_profile: Name
    input: SegmentationInputSchema
    classes: list[ClassSchema] = Field(min_length=1, max_length=256)
    logits: Name
    layers: dict[Name, Name]
    architecture: dict = {}
    training: dict = {}
    metrics: dict = {}
    overlay_scales: dict[Name, OverlayScaleSchema] = {}

    @model_validator(mode="after")
    def _consistent(self):
        check_classes(self.classes)
        if self.input.shape[0] != 1:
            raise ValueError(f"input.shape {self.input.shape}: the batch must be 1")
        if len(self.input.bands_nm) != self.input.shape[1]:
            raise ValueError(f"input.bands_nm lists {len(self.input.bands_nm)} bands for an input of "
                             f"{self.input.shape[1]} channels")
        return self


def validate_card(schema: type[BaseModel], doc, source: str):
    """`doc` checked against a card schema; any problem is one ModelError naming the source and the field."""
    if not isinstance(doc, dict):
        raise ModelError(f"{source}: a card must be a JSON object, got {type(doc).__name__}")
    try:
        return schema.model_validate(doc)
    except ValidationError as exc:
        raise ModelError(validation_message(exc, source)) from None


def read_card_json(path: str | Path, what: str) -> dict:
    """The JSON document of a card file, size, depth and count bounded (files.py); ModelError names the file
    when it is missing, too large or not JSON."""
    return read_json(path, what, ModelError)


@dataclass
class LoadedModel:
    path: Path
    card: ModelCard
    onnx_bytes: bytes


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_checked_onnx(path: Path, card_path: Path, sha256: str, what: str = "model"):
    """(bytes, onnx.ModelProto) of the ONNX file at `path`, checked against its card's SHA-256."""
    import onnx

    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ModelError(f"{what} {path}: SHA-256 {digest[:12]}... does not match its card {card_path} "
                         f"({sha256[:12]}...): the file is corrupt or the card belongs to another model")
    try:
        model = onnx.load_model_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises several unrelated types for a damaged file
        raise ModelError(f"{what} {path}: not a valid ONNX model ({exc})") from None
    return data, model


def load_model(path: str | Path, card_path: str | Path | None = None,
               profile: SensorProfile | None = None) -> LoadedModel:
    """Open an ONNX model and its card (default: same stem, .json) and check them."""
    path = Path(path)
    card_path = Path(card_path) if card_path else path.with_suffix(".json")
    if not path.is_file():
        raise ModelError(f"model {path}: no such file")
    card = ModelCard.load(card_path)
    data, model = read_checked_onnx(path, card_path, card.sha256)
    check_card_against_graph(card, model, str(path))
    if profile is not None:
        check_card_against_profile(card, profile)
    return LoadedModel(path=path, card=card, onnx_bytes=data)


def _value_shape(v) -> tuple:
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim)


def check_card_against_graph(card: ModelCard, model, where: str = "model") -> None:
    g = model.graph
    initialisers = {t.name for t in g.initializer}
    inputs = {v.name: v for v in g.input if v.name not in initialisers}
    outputs = {v.name: v for v in g.output}
    i = card.input
    if i.tensor not in inputs:
        raise ModelError(f"{where}: card input tensor {i.tensor!r} is not a graph input (inputs: {sorted(inputs)})")
    if _value_shape(inputs[i.tensor]) != tuple(i.shape):
        raise ModelError(f"{where}: graph input {i.tensor!r} has shape {_value_shape(inputs[i.tensor])}, "
                         f"card says {tuple(i.shape)}")
    if len(i.bands_nm) != i.shape[1]:
        raise ModelError(f"{where}: card lists {len(i.bands_nm)} bands for an input of {i.shape[1]} channels")
    if i.normalise not in NORMALISATIONS:
        raise ModelError(f"{where}: card normalise {i.normalise!r} is not one of {list(NORMALISATIONS)}")
    if card.logits not in outputs:
        raise ModelError(f"{where}: card logits tensor {card.logits!r} is not a graph output "
                         f"(outputs: {sorted(outputs)})")
    expected = (1, len(card.classes), i.height, i.width)
    if _value_shape(outputs[card.logits]) != expected:
        raise ModelError(f"{where}: graph output {card.logits!r} has shape {_value_shape(outputs[card.logits])}, "
                         f"card implies {expected} ({len(card.classes)} classes)")
    if sorted(c.channel for c in card.classes) != list(range(len(card.classes))):
        raise ModelError(f"{where}: card class channels {[c.channel for c in card.classes]} are not 0..n-1")
    produced = {o for n in g.node for o in n.output}
    missing = {role: t for role, t in card.layers.items() if t not in produced}
    if missing:
        raise ModelError(f"{where}: card layer tensors not in the graph: {missing}")


def check_card_against_profile(card: ModelCard, profile: SensorProfile) -> None:
    i = card.input
    if i.demosaic == "subsample":
        rows, cols = profile.cube_height, profile.cube_width
    else:
        rows, cols = profile.area_height, profile.area_width
    if i.crop_top < 0 or i.crop_left < 0 or i.crop_top + i.height > rows or i.crop_left + i.width > cols:
        raise ModelError(f"model {card.name!r}: its {i.height}x{i.width} window at ({i.crop_top}, {i.crop_left}) "
                         f"does not fit the {rows}x{cols} cube of sensor profile {profile.name!r}")
    wl = profile.band_wavelengths_nm
    far = [w for w in i.bands_nm if np.min(np.abs(wl - w)) > i.band_tolerance_nm]
    if far:
        raise ModelError(f"model {card.name!r} needs bands at {far} nm, which sensor profile {profile.name!r} "
                         f"does not have within {i.band_tolerance_nm} nm (trained for {card.sensor_profile!r})")
