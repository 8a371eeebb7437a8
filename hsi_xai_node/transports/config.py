"""Node/replay parameters from the YAML file the launch file uses (config/hsi_xai.yaml).

The file has the ROS 2 parameter-file shape (`<node>: ros__parameters: {...}`); the
replay reads the same keys so a bag replayed offline and a live node are configured alike.
Every value is checked on construction (pydantic: types, ranges, files, camera lists): a bad one
is a `ConfigError` naming the parameter (and, from `load_config`, the file).
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict
from pydantic.dataclasses import dataclass

from ..errors import ConfigError, InputError
from ..explain import BOX_LEVEL, LrpOptions, PathOptions
from ..files import read_yaml
from ..schema import Fraction, PositiveFinite, _finite, raise_as
from ..resources import share_path
from ..runtime.detection import DEFAULT_DETECTOR, DetectionPipelineConfig
from ..runtime.pipeline import DEFAULT_MODEL, PipelineConfig

DEFAULT_CONFIG = share_path("config/hsi_xai.yaml")


def _check_file(parameter: str, value: str) -> None:
    """A path parameter ("" = its default) must name an existing file."""
    if not value:
        return
    try:
        ok = Path(value).is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        ok = False
    if not ok:
        raise ConfigError(f"parameter {parameter}: {value!r} is not an existing file")


def resolve_topic(name: str, namespace: str = "/", node: str = "hsi_xai") -> str:
    """A topic name made absolute as ROS 2 expands it for a node `node` in `namespace`: "/x" stays, "~/x" is
    /<namespace>/<node>/x, "x" is /<namespace>/x (remapping is the middleware's, applied after this)."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    if name.startswith("/"):
        return name
    if name == "~" or name.startswith("~/"):
        return f"{ns}/{node}{name[1:]}"
    return f"{ns}/{name}"


def camera_name(topic: str) -> str:
    """The rig camera name a topic stands for when multispectral_cameras is empty: its first path segment."""
    return topic.strip("/").split("/")[0]


def _as_tuple(value):
    """YAML and ROS give lists; an empty typed list the ROS parameter file could not type arrives as None."""
    return () if value is None else tuple(value) if isinstance(value, list) else value


Str = Annotated[str, Strict()]
Strs = Annotated[tuple[Annotated[str, Strict()], ...], BeforeValidator(_as_tuple)]
Seconds = Annotated[float, Field(ge=0, le=10), AfterValidator(_finite)]


@dataclass(frozen=True, config=ConfigDict(strict=True))
class NodeConfig:
    """The node's and the replay's parameters, checked on construction (types, ranges, files, camera lists);
    a bad value is a ConfigError naming the parameter."""

    # names relative to the node's namespace, outputs in its private one ("~"): two nodes in two namespaces do not
    # meet (resolve_topic / resolved() make them absolute, as the replay and the tools use them)
    raw_topic: Str = "hsi/image_raw"
    dark_topic: Str = "hsi/dark_reference"
    white_topic: Str = "hsi/white_reference"
    multispectral_topics: Strs = ("rgb/image_raw", "nir/image_raw", "mir/image_raw", "fir/image_raw")
    multispectral_cameras: Strs = ()  # rig camera name per topic; () = each topic's first segment
    sync_slop_s: Seconds = 0.02
    output_namespace: Str = "~"
    publish_class_maps: bool = False
    model: Str = ""
    card: Str = ""
    sensor_profile: Str = "hsi-drive"
    flip_vertical: bool = False
    backend: Literal["auto", "tensorrt", "ort-trt", "ort-cuda", "openvino", "ort-cpu"] = "auto"
    openvino_device: Literal["CPU", "GPU", "NPU", "AUTO"] = "CPU"  # with backend openvino
    precision: Literal["fp16", "fp32"] = "fp16"
    engine_cache_dir: Str = ""
    methods: Strs = ("activation", "seg_gradcam", "hires")
    explain_classes: Strs = ()
    target_layers: Strs = ("penultimate",)
    overlay_method: Str = "seg_gradcam"
    overlay_alpha: Fraction = 0.5
    colormap: Str = "inferno"           # one-sided maps (sequential)
    signed_colormap: Str = "coolwarm"   # signed maps (diverging, centred on zero)
    overlay_scale: Literal["card", "running", "frame"] = "card"
    focus_class: Str = ""               # a class name: also publish its focus overlay; "" = none
    fem_k: Annotated[float, Field(ge=0, le=10), AfterValidator(_finite)] = 2.0  # fem: the K-sigma rule's K
    lrp_epsilon: Annotated[float, Field(gt=0, le=10), AfterValidator(_finite)] = 0.01  # LRP epsilon rule
    lrp_gamma: Annotated[float, Field(ge=0, le=10), AfterValidator(_finite)] = 0.25  # LRP gamma rule
    smoothgrad_samples: Annotated[int, Field(ge=1, le=64)] = 8  # noisy copies of the forward per frame
    smoothgrad_noise: Annotated[float, Field(gt=0, le=1), AfterValidator(_finite)] = 0.1  # share of the input range
    ig_steps: Annotated[int, Field(ge=1, le=256)] = 16  # integrated gradients' intervals (copies of the forward)
    ig_quadrature: Literal["trapezoid", "riemann_right"] = "trapezoid"
    attribution_baseline: Literal["zeros", "blur", "spectral_mean"] = "zeros"  # integrated gradients', DeepLIFT's
    detector_model: Str = "default"     # "" = detection off; "default" = the bundled detector; else a path
    detector_card: Str = ""             # "" = the detector path with .json
    rig_file: Str = ""                  # "" = the generated drives' rig
    detection_score_threshold: Annotated[float, Field(ge=0, lt=1), AfterValidator(_finite)] = 0.0  # 0 = the card's
    explain_boxes: Annotated[int, Field(ge=0, le=256)] = 10
    detection_methods: Strs = ("box_gradcam",)  # per-box maps; add box_spectral for each detection's camera shares
    detection_overlay_method: Str = "box_gradcam"  # a per-box CAM or input attribution (runtime.detection)
    detection_layer: Str = BOX_LEVEL  # the per-box CAMs' layer: each box at its own level, or a card role / tensor
    memory_limit_mb: PositiveFinite = 4096.0  # a model, detector or rig needing more per frame is refused at start
    camera_transport: Literal["raw", "compressed"] = "raw"  # cameras as Image, or CompressedImage on <topic>/compressed
    raw_transport: Literal["raw", "compressed"] = "raw"  # the mosaic as Image, or 16-bit PNG on <raw_topic>/compressed
    max_input_age_s: Seconds = 0.0  # node: frames older than this on arrival are dropped (counted); 0 = off
    publish_foxglove_annotations: bool = False  # node: foxglove_msgs/ImageAnnotations too (needs foxglove_msgs)
    input_qos: Literal["sensor_data", "reliable"] = "sensor_data"  # camera subscriptions
    output_qos: Literal["sensor_data", "reliable"] = "reliable"  # output publishers (and outputs in bags)

    def __post_init__(self):
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
            raise ConfigError(f"parameter multispectral_topics has an empty topic name: {list(topics)}")
        if names and len(names) != len(topics):
            raise ConfigError(f"parameters multispectral_cameras ({len(names)} names: {list(names)}) and "
                             f"multispectral_topics ({len(topics)} topics: {list(topics)}) must be parallel lists "
                             f"of the same length")
        names = names or tuple(camera_name(t) for t in topics)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            source = "multispectral_cameras" if self.multispectral_cameras else \
                "the first path segments of multispectral_topics (set multispectral_cameras to name them)"
            raise ConfigError(f"camera name(s) {twice} given twice by {source}: {dict(zip(topics, names))}")
        dup_topics = sorted({t for t in topics if topics.count(t) > 1})
        if dup_topics:
            raise ConfigError(f"parameter multispectral_topics lists {dup_topics} twice")
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
            openvino_device=self.openvino_device, precision=self.precision, cache_dir=self.engine_cache_dir or None,
            score_threshold=self.detection_score_threshold or None, explain_boxes=self.explain_boxes,
            overlay_method=self.detection_overlay_method, layer=self.detection_layer, colormap=self.colormap,
            signed_colormap=self.signed_colormap, overlay_scale=self.overlay_scale,
            memory_limit_mb=self.memory_limit_mb, methods=tuple(self.detection_methods), fem_k=self.fem_k,
            lrp=LrpOptions(epsilon=self.lrp_epsilon, gamma=self.lrp_gamma), paths=self._paths()).validated()

    def pipeline_config(self) -> PipelineConfig:
        return PipelineConfig(
            model=self.model or str(DEFAULT_MODEL), card=self.card or None, profile=self.sensor_profile,
            flip_vertical=self.flip_vertical, backend=self.backend, openvino_device=self.openvino_device,
            precision=self.precision,
            cache_dir=self.engine_cache_dir or None, methods=tuple(self.methods), layers=tuple(self.target_layers),
            overlay_method=self.overlay_method, overlay_alpha=self.overlay_alpha, colormap=self.colormap,
            signed_colormap=self.signed_colormap, overlay_scale=self.overlay_scale, focus_class=self.focus_class,
            class_maps=self.publish_class_maps, explain_classes=tuple(self.explain_classes),
            memory_limit_mb=self.memory_limit_mb, fem_k=self.fem_k,
            lrp=LrpOptions(epsilon=self.lrp_epsilon, gamma=self.lrp_gamma), paths=self._paths()).validated()

    def _paths(self) -> PathOptions:
        """SmoothGrad's, integrated gradients' and DeepLIFT's settings, for the U-Net's classes and the boxes."""
        return PathOptions(smoothgrad_samples=self.smoothgrad_samples, smoothgrad_noise=self.smoothgrad_noise,
                           ig_steps=self.ig_steps, ig_quadrature=self.ig_quadrature, baseline=self.attribution_baseline)

    def output_topic(self, name: str) -> str:
        return f"{self.output_namespace.rstrip('/')}/{name}" if self.output_namespace != "/" else f"/{name}"

    def resolved(self, namespace: str = "/", node: str = "hsi_xai") -> "NodeConfig":
        """This configuration with every topic absolute for a node `node` in `namespace` (the replay, the fleet
        and the bag writers run as a node named hsi_xai at the root). Camera names that came from the topics'
        first segments are written out first, so a namespace does not become a camera's name."""
        return replace(self, raw_topic=resolve_topic(self.raw_topic, namespace, node),
                       dark_topic=resolve_topic(self.dark_topic, namespace, node),
                       white_topic=resolve_topic(self.white_topic, namespace, node),
                       multispectral_topics=tuple(resolve_topic(t, namespace, node) for t in self.multispectral_topics),
                       multispectral_cameras=tuple(self.camera_topics()),
                       output_namespace=resolve_topic(self.output_namespace, namespace, node))


# parameters the running node cannot apply (its subscriptions and publishers are made from them): read-only
RESTART_PARAMETERS = frozenset({"raw_topic", "dark_topic", "white_topic", "output_namespace", "publish_class_maps",
                                "focus_class", "camera_transport", "raw_transport", "input_qos", "output_qos",
                                "publish_foxglove_annotations"})


def parameter_range(name: str) -> tuple[type, float, float, bool] | None:
    """(int or float, lowest, highest, exclusive end?) of a numeric parameter, from its declared bounds; None
    for others. An open upper bound is the type's largest value; an exclusive bound is given with the flag
    (ROS ranges are inclusive: the node's own check refuses the end itself)."""
    import sys

    from annotated_types import Ge, Gt, Le, Lt

    f = NodeConfig.__pydantic_fields__[name]
    kind = f.annotation if f.annotation in (int, float) else None
    if kind is None:
        return None
    low, high, exclusive = (-sys.float_info.max, sys.float_info.max, False) if kind is float \
        else (-(2 ** 63), 2 ** 63 - 1, False)
    for m in f.metadata:
        if isinstance(m, (Ge, Gt)):
            low, exclusive = (m.ge if isinstance(m, Ge) else m.gt), exclusive or isinstance(m, Gt)
        elif isinstance(m, (Le, Lt)):
            high, exclusive = (m.le if isinstance(m, Le) else m.lt), exclusive or isinstance(m, Lt)
    return kind, low, high, exclusive


# pydantic's own error type becomes the project's, naming the parameter (dataclasses.replace comes here too)
raise_as(NodeConfig, ConfigError, field_prefix="parameter ")


def load_config(path: str | Path | None = None, resolve: bool = True, **overrides) -> NodeConfig:
    """Read the parameters of the first node in a ROS 2 parameter file; unknown keys are errors. With `resolve`,
    topic names come back absolute for a node hsi_xai at the root (what the replay and the tools want)."""
    path = Path(path) if path else DEFAULT_CONFIG
    values: dict = {}
    if path.is_file():
        doc = read_yaml(path, "config", ConfigError)  # size, depth, count bounded; no aliases (files.py)
        node = next(iter(doc.values()), None) if isinstance(doc, dict) and doc else None
        params = node.get("ros__parameters") if isinstance(node, dict) else None
        if doc is not None and not isinstance(params, dict):
            raise ConfigError(f"config {path}: not a ROS 2 parameter file (expected '<node>: ros__parameters: "
                              "{...}')")
        values = dict(params or {})
    elif path != DEFAULT_CONFIG:
        raise ConfigError(f"config {path}: no such file")
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(NodeConfig)}
    unknown = sorted(str(k) for k in set(values) - known)
    if unknown:
        raise ConfigError(f"config {path}: unknown parameter(s) {unknown[:10]}; known: {sorted(known)}")
    try:  # every check a pipeline makes of its settings, here, so the error can name the file
        config = NodeConfig(**values)
        config.pipeline_config()
        config.detection_config()
    except InputError as exc:
        raise ConfigError(f"config {path}: {exc}") from None
    return config.resolved() if resolve else config
