"""Node/replay parameters from the YAML file the launch file uses (config/hsi_xai.yaml).

The file has the ROS 2 parameter-file shape (`<node>: ros__parameters: {...}`); the
replay reads the same keys so a bag replayed offline and a live node are configured alike.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from ..errors import InputError
from ..resources import share_path
from ..runtime.pipeline import DEFAULT_MODEL, PipelineConfig

DEFAULT_CONFIG = share_path("config/hsi_xai.yaml")


@dataclass(frozen=True)
class NodeConfig:
    raw_topic: str = "/hsi/image_raw"
    dark_topic: str = "/hsi/dark_reference"
    white_topic: str = "/hsi/white_reference"
    multispectral_topics: tuple[str, ...] = ()
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
    colormap: str = "jet"

    def pipeline_config(self) -> PipelineConfig:
        return PipelineConfig(
            model=self.model or str(DEFAULT_MODEL), card=self.card or None, profile=self.sensor_profile,
            flip_vertical=self.flip_vertical, backend=self.backend, precision=self.precision,
            cache_dir=self.engine_cache_dir or None, methods=tuple(self.methods), layers=tuple(self.target_layers),
            overlay_method=self.overlay_method, overlay_alpha=self.overlay_alpha, colormap=self.colormap,
            class_maps=self.publish_class_maps, explain_classes=tuple(self.explain_classes)).validated()

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
    for k, v in list(values.items()):
        if isinstance(v, list):
            values[k] = tuple(v)
    return NodeConfig(**values)
