"""The detection pipeline: synchronised camera frames in, detections and their per-box Grad-CAM out.

    pipeline = DetectionPipeline(DetectionPipelineConfig())      # the bundled RGB+MIR EfficientDet
    result = pipeline.process({"rgb": bgr, "mir": centikelvin})  # DetectionResult, or raises InputError

Stages (each timed in `result.timings_ms`):

    frontend   each camera registered into the network view and stacked (sensor.multispectral),
               with the card's normalisation and the rig's homographies
    engine     detector + decoding + NMS + per-box Grad-CAM of the top-K kept boxes (one call)
    post       detections in network-view and primary-camera pixels, the fused overlay

The overlay blends, at every pixel, the largest of the explained boxes' Grad-CAM maps
(each scaled to 0..255 in the graph), weighted by its own value so unexplained areas
stay clean, over the registered preview, and draws the boxes with class and score.
Boxes are reported in the primary camera's pixels too (the first camera of the stack,
whose header the detections carry), through the rig's homography.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from ..detection.card import LoadedDetector, load_detector
from ..errors import InputError
from ..explain import DetectionExplainConfig, build_detection_explainer
from ..resources import share_path
from ..scenes.render import CameraSpec, default_cameras, transform_box
from ..sensor.multispectral import CameraInput, MultispectralFrontEnd, StackConfig, network_from_common
from .engine import open_engine
from .pipeline import COLORMAPS

DEFAULT_DETECTOR = share_path("models/efficientdet_rgb_mir.onnx")


def load_rig(path: str | Path | None = None) -> dict[str, CameraSpec]:
    """Camera name -> size, encoding and homography (common view -> camera pixels).

    None gives the generated drives' rig (scenes.render.default_cameras). A rig file is
    YAML: `cameras: [{name, encoding, width, height, homography: 3x3 list}, ...]`.
    """
    if path is None:
        return {c.name: c for c in default_cameras()}
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
        rig = {}
        for i, c in enumerate(doc["cameras"]):
            h = np.asarray(c["homography"], np.float64)
            if h.shape != (3, 3) or not np.isfinite(h).all() or abs(np.linalg.det(h)) < 1e-12:
                raise ValueError(f"cameras[{i}] ({c.get('name')}): homography must be an invertible 3x3 matrix")
            rig[str(c["name"])] = CameraSpec(str(c["name"]), str(c.get("kind", c["name"])), int(c["width"]),
                                             int(c["height"]), str(c["encoding"]), h)
        return rig
    except FileNotFoundError:
        raise InputError(f"rig file {path}: no such file") from None
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"rig file {path}: malformed ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class DetectionPipelineConfig:
    model: str = str(DEFAULT_DETECTOR)
    card: str | None = None
    rig: str | None = None            # rig YAML; None = the generated drives' rig
    backend: str = "auto"
    precision: str = "fp16"
    cache_dir: str | None = None
    threads: int = 0
    score_threshold: float | None = None  # None = the card's; may only raise the in-graph NMS threshold
    explain_boxes: int = 10           # top-K kept boxes explained per frame (0 = no explanations)
    layer: str = "class_head_input"   # card role or tensor name of the explained layer
    overlay_method: str = "box_gradcam"  # or box_gradcam_signed (no ReLU)
    overlay_alpha: float = 0.6
    colormap: str = "jet"
    box_maps: bool = False            # also return the per-box float maps

    def validated(self) -> "DetectionPipelineConfig":
        if not 0.0 <= self.overlay_alpha <= 1.0:
            raise InputError(f"overlay_alpha must be in [0, 1], got {self.overlay_alpha}")
        if self.colormap not in COLORMAPS:
            raise InputError(f"unknown colormap {self.colormap!r}; use one of {sorted(COLORMAPS)}")
        if self.overlay_method not in ("box_gradcam", "box_gradcam_signed"):
            raise InputError(f"overlay_method {self.overlay_method!r} must be box_gradcam or box_gradcam_signed")
        if self.explain_boxes < 0:
            raise InputError(f"explain_boxes must be >= 0, got {self.explain_boxes}")
        return self


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]         # x0, y0, x1, y1 in network-view pixels
    camera_box: tuple[float, float, float, float]  # the same in the primary camera's pixels
    class_id: int
    class_name: str
    score: float
    slot: int                                       # row of the per-box maps (explained if < explain_boxes)


@dataclass
class DetectionResult:
    detections: list[Detection]
    preview: np.ndarray                     # bgr8 network view
    detection_overlay: np.ndarray           # bgr8: fused per-box Grad-CAM and the boxes
    box_maps: np.ndarray | None = None      # (explained, H, W) float32, when asked for
    slots_full: bool = False                # NMS filled every output slot: more boxes may have been cut off
    timings_ms: dict[str, float] = field(default_factory=dict)
    header: object = None                   # the primary camera's header, untouched


def stack_from_card(loaded: LoadedDetector, rig: dict[str, CameraSpec]) -> StackConfig:
    """The card's cameras and normalisation placed by the rig's geometry."""
    card = loaded.card
    cams = []
    for s in card.input.stack:
        if s.camera not in rig:
            raise InputError(f"detector {card.name!r} needs camera {s.camera!r}, which the rig does not have "
                             f"(rig cameras: {sorted(rig)})")
        r = rig[s.camera]
        if r.encoding != s.encoding:
            raise InputError(f"detector {card.name!r} expects {s.camera!r} as {s.encoding}, the rig says {r.encoding}")
        cams.append(CameraInput(s.camera, s.encoding, r.width, r.height, np.asarray(r.homography), s.offset, s.scale))
    h, w = card.input.hw
    return StackConfig(cameras=tuple(cams), input_size=(w, h))


def detection_graph(cfg: DetectionPipelineConfig):
    """(loaded detector, explain graph or None) for `cfg`; the TensorRT engine is keyed on this graph."""
    loaded = load_detector(cfg.model, cfg.card)
    if cfg.explain_boxes == 0:
        return loaded, None
    k = min(cfg.explain_boxes, int(loaded.card.postprocess.get("max_detections", 20)))
    graph = build_detection_explainer(loaded.model, loaded.card.input.tensor, loaded.card.scores,
                                      loaded.card.layers, DetectionExplainConfig(layers=(cfg.layer,), top_k=k),
                                      pairs="det_pairs", layout=loaded.card.input.layout)
    return loaded, graph


class DetectionPipeline:
    def __init__(self, config: DetectionPipelineConfig = DetectionPipelineConfig()):
        self.config = cfg = config.validated()
        self.loaded, self.graph = detection_graph(cfg)
        card = self.card = self.loaded.card
        floor = float(card.postprocess.get("score_threshold", 0.0))
        self.score_threshold = floor if cfg.score_threshold is None else float(cfg.score_threshold)
        if self.score_threshold < floor:
            raise InputError(f"score_threshold {self.score_threshold} is below detector {card.name!r}'s in-graph "
                             f"NMS threshold {floor}: re-export the model with a lower one")
        self.rig = load_rig(cfg.rig)
        self.frontend = MultispectralFrontEnd(stack_from_card(self.loaded, self.rig))
        self.primary = card.input.stack[0].camera
        # network view -> primary camera pixels, for reporting boxes in the frame the header names
        st = self.frontend.config
        self._to_camera = np.asarray(self.rig[self.primary].homography) @ np.linalg.inv(
            network_from_common(st.common_size, st.input_size))
        self.classes = {c.channel: c for c in card.classes}
        self._plan = {"boxes": "det_boxes", "scores": "det_scores", "classes": "det_classes"}
        model = self.loaded.model
        if self.graph is not None:
            model = self.graph.model
            for name, o in self.graph.outputs.items():
                if o.method == cfg.overlay_method + "_u8":
                    self._plan["maps_u8"] = name
                if cfg.box_maps and o.method == cfg.overlay_method + "_full":
                    self._plan["maps"] = name
        self.engine = open_engine(model.SerializeToString(), cfg.backend, cfg.precision, cfg.cache_dir, cfg.threads,
                                  outputs_to_copy=list(self._plan.values()))

    @property
    def cameras(self) -> list[str]:
        """Camera names the detector needs, primary first."""
        return [s.camera for s in self.card.input.stack]

    def process(self, images: dict[str, np.ndarray], header: object = None) -> DetectionResult:
        t0 = time.perf_counter()
        registered = self.frontend.register_all(images)
        x = self.frontend.stack(registered)
        if self.card.input.layout == "nhwc":
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        t1 = time.perf_counter()
        out = self.engine.run({self.card.input.tensor: x}, list(self._plan.values()))
        out = {k: out[v] for k, v in self._plan.items()}
        t2 = time.perf_counter()
        result = self._post(images, registered, out)
        t3 = time.perf_counter()
        result.timings_ms = {"frontend": (t1 - t0) * 1e3, "engine": (t2 - t1) * 1e3, "post": (t3 - t2) * 1e3,
                             "total": (t3 - t0) * 1e3}
        result.header = header
        return result

    def _post(self, images, registered, out) -> DetectionResult:
        detections, drawn = [], []  # drawn: each detection's ClassSpec (its colour)
        for slot, (box, score, cls) in enumerate(zip(out["boxes"][0], out["scores"][0], out["classes"][0])):
            if cls < 0 or score <= self.score_threshold:
                continue
            c = self.classes[int(cls)]
            drawn.append(c)
            box = tuple(float(v) for v in box)
            detections.append(Detection(box, transform_box(box, self._to_camera), c.id, c.name, float(score), slot))
        preview = self.frontend.preview(images, registered)
        overlay = preview.copy()
        maps = out.get("maps_u8")
        explained = [d.slot for d in detections if maps is not None and d.slot < len(maps)]
        if explained:
            fused = maps[explained, 0].max(0)
            coloured = cv2.applyColorMap(fused, COLORMAPS[self.config.colormap]).astype(np.float32)
            weight = (self.config.overlay_alpha / 255.0) * fused.astype(np.float32)[..., None]
            overlay = np.clip(preview * (1.0 - weight) + coloured * weight + 0.5, 0, 255).astype(np.uint8)
        for d, c in zip(detections, drawn):
            x0, y0, x1, y1 = (int(round(v)) for v in d.box)
            cv2.rectangle(overlay, (x0, y0), (x1 - 1, y1 - 1), tuple(int(v) for v in c.bgr), 1)
            cv2.putText(overlay, f"{d.class_name} {d.score:.2f}", (x0, max(y0 - 2, 8)), cv2.FONT_HERSHEY_PLAIN,
                        0.7, tuple(int(v) for v in c.bgr), 1, cv2.LINE_AA)
        box_maps = out["maps"][:, 0] if "maps" in out else None
        slots_full = bool((out["classes"][0] >= 0).all())
        return DetectionResult(detections, preview, overlay, box_maps, slots_full)
