"""Node/replay parameters from the YAML file the launch file uses (config/hsi_xai.yaml).

The file has the ROS 2 parameter-file shape (`<node>: ros__parameters: {...}`); the
replay reads the same keys so a bag replayed offline and a live node are configured alike.
Every value is checked on construction (type and range): a bad one is an `InputError`
naming the parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from ..errors import InputError
from ..resources import share_path
from ..runtime.detection import DEFAULT_DETECTOR, DetectionPipelineConfig
from ..runtime.pipeline import DEFAULT_MODEL, PipelineConfig
from .qos import USER_CHOICES

DEFAULT_CONFIG = share_path("config/hsi_xai.yaml")
DETECTION_OVERLAY_METHODS = ("box_gradcam", "box_gradcam_signed")


def _check_file(parameter: str, value: str) -> None:
    """A path parameter ("" = its default) must name an existing file."""
    if not value:
        return
    try:
        ok = Path(value).is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        ok = False
    if not ok:
        raise InputError(f"parameter {parameter}: {value!r} is not an existing file")


def camera_name(topic: str) -> str:
    """The rig camera name a topic stands for when multispectral_cameras is empty: its first path segment."""
    return topic.strip("/").split("/")[0]


@dataclass(frozen=True)
class NodeConfig:
    raw_topic: str = "/hsi/image_raw"
    dark_topic: str = "/hsi/dark_reference"
    white_topic: str = "/hsi/white_reference"
    multispectral_topics: tuple[str, ...] = ("/rgb/image_raw", "/nir/image_raw", "/mir/image_raw", "/fir/image_raw")
    multispectral_cameras: tuple[str, ...] = ()  # rig camera name per topic; () = each topic's first segment
    sync_slop_s: float = 0.02
    output_namespace: str = "/hsi_xai"
    publish_class_maps: bool = False
    model: str = ""
    card: str = ""
    sensor_profile: str = "hsi-drive"
    flip_vertical: bool = False
    backend: str = "auto"
    precision: str = "fp16"
    engine_cache_dir: str = ""
    methods: tuple[str, ...] = ("activation", "seg_gradcam", "hires")
    explain_classes: tuple[str, ...] = ()
    target_layers: tuple[str, ...] = ("penultimate",)
    overlay_method: str = "seg_gradcam"
    overlay_alpha: float = 0.5
    colormap: str = "inferno"           # one-sided maps (sequential)
    signed_colormap: str = "coolwarm"   # signed maps (diverging, centred on zero)
    overlay_scale: str = "card"         # card | running | frame
    focus_class: str = ""               # a class name: also publish its focus overlay; "" = none
    detector_model: str = "default"     # "" = detection off; "default" = the bundled detector; else a path
    detector_card: str = ""             # "" = the detector path with .json
    rig_file: str = ""                  # "" = the generated drives' rig
    detection_score_threshold: float = 0.0  # 0.0 = the card's
    explain_boxes: int = 10
    detection_overlay_method: str = "box_gradcam"
    memory_limit_mb: float = 4096.0     # a model, detector or rig needing more per frame is refused at start
    input_qos: str = "sensor_data"      # camera subscriptions: sensor_data (best effort) or reliable
    output_qos: str = "reliable"        # output publishers (and the QoS outputs are recorded with in bags)

    def __post_init__(self):
        for f in fields(self):
            value, default = getattr(self, f.name), f.default
            if isinstance(default, tuple):
                if value is None:  # an empty typed list the ROS parameter file could not type
                    value = ()
                if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                    raise InputError(f"parameter {f.name} must be a list of strings, got {value!r}")
                value = tuple(value)
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise InputError(f"parameter {f.name} must be true or false, got {value!r}")
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise InputError(f"parameter {f.name} must be an integer, got {value!r}")
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise InputError(f"parameter {f.name} must be a number, got {value!r}")
                value = float(value)
            elif not isinstance(value, str):
                raise InputError(f"parameter {f.name} must be a string, got {value!r}")
            object.__setattr__(self, f.name, value)
        if self.sync_slop_s < 0:
            raise InputError(f"parameter sync_slop_s must be >= 0, got {self.sync_slop_s}")
        if not 0.0 <= self.detection_score_threshold < 1.0:
            raise InputError(f"parameter detection_score_threshold must be in [0, 1) (0 = the detector card's), "
                             f"got {self.detection_score_threshold}")
        if not self.memory_limit_mb > 0:
            raise InputError(f"parameter memory_limit_mb must be > 0, got {self.memory_limit_mb}")
        if self.explain_boxes < 0:
            raise InputError(f"parameter explain_boxes must be >= 0 (0 = no explanations), got {self.explain_boxes}")
        if self.detection_overlay_method not in DETECTION_OVERLAY_METHODS:
            raise InputError(f"parameter detection_overlay_method must be one of {list(DETECTION_OVERLAY_METHODS)}, "
                             f"got {self.detection_overlay_method!r}")
        for name in ("input_qos", "output_qos"):
            if getattr(self, name) not in USER_CHOICES:
                raise InputError(f"parameter {name} must be one of {list(USER_CHOICES)}, got {getattr(self, name)!r}")
        for name in ("model", "card", "detector_card", "rig_file"):
            _check_file(name, getattr(self, name))
        if self.detector_model != "default":
            _check_file("detector_model", self.detector_model)
        if self.sensor_profile.lower().endswith(".xml"):
            _check_file("sensor_profile", self.sensor_profile)
        self.camera_topics()  # checks the camera lists

    def camera_topics(self) -> dict[str, str]:
        """Rig camera name -> topic, from multispectral_topics and multispectral_cameras."""
        topics, names = self.multispectral_topics, self.multispectral_cameras
        if any(not t.strip("/") for t in topics):
            raise InputError(f"parameter multispectral_topics has an empty topic name: {list(topics)}")
        if names and len(names) != len(topics):
            raise InputError(f"parameters multispectral_cameras ({len(names)} names: {list(names)}) and "
                             f"multispectral_topics ({len(topics)} topics: {list(topics)}) must be parallel lists "
                             f"of the same length")
        names = names or tuple(camera_name(t) for t in topics)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            source = "multispectral_cameras" if self.multispectral_cameras else \
                "the first path segments of multispectral_topics (set multispectral_cameras to name them)"
            raise InputError(f"camera name(s) {twice} given twice by {source}: {dict(zip(topics, names))}")
        dup_topics = sorted({t for t in topics if topics.count(t) > 1})
        if dup_topics:
            raise InputError(f"parameter multispectral_topics lists {dup_topics} twice")
        return dict(zip(names, topics))

    def detector_topics(self, cameras: list[str]) -> list[str]:
        """The topic of each camera the detector needs (primary first), or an InputError naming what to set."""
        topics = self.camera_topics()
        missing = [c for c in cameras if c not in topics]
        if missing:
            raise InputError(f"the detector needs camera(s) {missing}, which no topic gives: add the topic to "
                             f"multispectral_topics (and, unless its first path segment is the camera name, the name "
                             f"to multispectral_cameras); cameras now: {topics or 'none'}")
        return [topics[c] for c in cameras]

    def detection_config(self) -> DetectionPipelineConfig | None:
        """The detection pipeline's configuration, or None when detection is off (detector_model "")."""
        if not self.detector_model:
            return None
        model = str(DEFAULT_DETECTOR) if self.detector_model == "default" else self.detector_model
        return DetectionPipelineConfig(
            model=model, card=self.detector_card or None, rig=self.rig_file or None, backend=self.backend,
            precision=self.precision, cache_dir=self.engine_cache_dir or None,
            score_threshold=self.detection_score_threshold or None, explain_boxes=self.explain_boxes,
            overlay_method=self.detection_overlay_method, colormap=self.colormap,
            signed_colormap=self.signed_colormap, overlay_scale=self.overlay_scale,
            memory_limit_mb=self.memory_limit_mb).validated()

    def pipeline_config(self) -> PipelineConfig:
        return PipelineConfig(
            model=self.model or str(DEFAULT_MODEL), card=self.card or None, profile=self.sensor_profile,
            flip_vertical=self.flip_vertical, backend=self.backend, precision=self.precision,
            cache_dir=self.engine_cache_dir or None, methods=tuple(self.methods), layers=tuple(self.target_layers),
            overlay_method=self.overlay_method, overlay_alpha=self.overlay_alpha, colormap=self.colormap,
            signed_colormap=self.signed_colormap, overlay_scale=self.overlay_scale, focus_class=self.focus_class,
            class_maps=self.publish_class_maps, explain_classes=tuple(self.explain_classes),
            memory_limit_mb=self.memory_limit_mb).validated()

    def output_topic(self, name: str) -> str:
        return f"{self.output_namespace.rstrip('/')}/{name}"


def load_config(path: str | Path | None = None, **overrides) -> NodeConfig:
    """Read the parameters of the first node in a ROS 2 parameter file; unknown keys are errors."""
    path = Path(path) if path else DEFAULT_CONFIG
    values: dict = {}
    if path.is_file():
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"config {path}: not valid YAML ({exc})") from None
        node = next(iter(doc.values()), {}) if isinstance(doc, dict) else {}
        values = dict((node or {}).get("ros__parameters", {}))
    elif path != DEFAULT_CONFIG:
        raise InputError(f"config {path}: no such file")
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name: f for f in fields(NodeConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InputError(f"config {path}: unknown parameter(s) {unknown}; known: {sorted(known)}")
    try:  # every check a pipeline makes of its settings, here, so the error can name the file
        config = NodeConfig(**values)
        config.pipeline_config()
        config.detection_config()
    except InputError as exc:
        raise InputError(f"config {path}: {exc}") from None
    return config
