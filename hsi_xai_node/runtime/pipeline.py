"""The perception pipeline every transport uses: raw frame in, labels, overlays and explanations out.

    pipeline = Pipeline(PipelineConfig(model="models/unet_bundled_25pn.onnx"), dark=dark, white=white)
    result = pipeline.process(raw_frame)           # FrameResult, or raises InputError for bad input

Stages (each timed in `result.timings_ms`):

    frontend   raw mosaic -> calibrated cube (sensor front end, the model card's bands and PN)
    engine     model + explain graph, all classes at once (one engine call)
    post       labels via the card, colour segmentation, fused overlays, residuals

The fused overlays show, at every pixel, the map of the class predicted there (each
class's map scaled to 0..255 in the graph by its class's scale: the card's, a running one or
the frame's own, see runtime.overlay), coloured (one-sided maps on `colormap`, signed maps
on the diverging `signed_colormap`) and alpha-blended over the false-colour preview. Outside
the model's window the preview shows through. With `focus_class`, one class's map is shown
over the whole window with its predicted region outlined.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import onnx

from ..classes import colourise
from ..errors import InputError
from ..explain import (CAM_METHODS, INPUT_METHODS, METHODS, LrpOptions, PathOptions, SegmentationExplainConfig,
                       build_segmentation_explainer, conservation_residual, conservativeness_residual_of_labels)
from ..model_card import ModelCard, load_model
from ..resources import share_path
from ..sensor.calibration import load_profile
from ..sensor.camera_model import PixelMap, binned_region
from ..sensor.frontend import FrontEnd
from ..sensor.radiometry import false_colour
from .engine import open_engine, warn_fp16_attributions
from .frame_quality import method_disagreement, prediction_margin
from .memory import DEFAULT_LIMIT_MB, bounded_shapes, check_memory, graph_memory, image_bytes
from .overlay import SCALE_MODES, MapKey, OverlayScales, apply_colormap, check_colormap, legend_image, unit_of

DEFAULT_MODEL = share_path("models/unet_bundled_25pn.onnx")
_PREVIEW_TOLERANCE_NM = inspect.signature(false_colour).parameters["tolerance_nm"].default
# maps the explanation overlay can show: the CAM family at a layer, or an input attribution (paper 003)
OVERLAY_METHODS = (*CAM_METHODS, "scorecam", *INPUT_METHODS)


@dataclass(frozen=True)
class PipelineConfig:
    model: str = str(DEFAULT_MODEL)
    card: str | None = None  # default: the model path with .json
    profile: str = "hsi-drive"  # sensor profile name or imec XML
    flip_vertical: bool = False
    backend: str = "auto"
    precision: str = "fp16"
    cache_dir: str | None = None
    methods: tuple[str, ...] = ("activation", "seg_gradcam", "hires")
    layers: tuple[str, ...] = ("penultimate",)
    seed: str = "predicted"
    overlay_method: str = "seg_gradcam"  # the map fused into the explanation ("gradcam") overlay: OVERLAY_METHODS
    overlay_alpha: float = 0.5
    colormap: str = "inferno"  # one-sided maps: a sequential colormap
    signed_colormap: str = "coolwarm"  # signed maps: a diverging colormap centred on zero
    overlay_scale: str = "card"  # card | running | frame (runtime.overlay)
    focus_class: str = ""  # a class name: also the focus overlay of that class; "" = none
    false_colour_nm: tuple[float, float, float] = (850.0, 731.88, 564.36)
    class_maps: bool = False  # also return per-class float maps (costs a device->host copy)
    explain_classes: tuple[str, ...] = ()  # class names the overlays show; () = every class
    threads: int = 0
    openvino_device: str = "CPU"  # backend openvino: CPU, GPU, NPU or AUTO
    memory_limit_mb: float = DEFAULT_LIMIT_MB  # a model needing more per frame is refused at load (runtime.memory)
    fem_k: float = 2.0  # fem: the K-sigma rule's K
    lrp: LrpOptions = LrpOptions()  # the LRP methods' epsilon, gamma and stabiliser
    paths: PathOptions = PathOptions()  # SmoothGrad's samples and noise, integrated gradients' steps, baselines

    def validated(self) -> "PipelineConfig":
        if not 0.0 <= self.overlay_alpha <= 1.0:
            raise InputError(f"overlay_alpha must be in [0, 1], got {self.overlay_alpha}")
        check_colormap(self.colormap, False, "colormap")
        check_colormap(self.signed_colormap, True, "signed_colormap")
        if self.overlay_scale not in SCALE_MODES:
            raise InputError(f"overlay_scale must be one of {list(SCALE_MODES)}, got {self.overlay_scale!r}")
        if self.overlay_method not in OVERLAY_METHODS:
            raise InputError(f"overlay_method {self.overlay_method!r} must be a method with a map: "
                             f"{list(OVERLAY_METHODS)}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise InputError(f"methods {unknown} unknown; explanation methods: {list(METHODS)}")
        return self


@dataclass
class FrameResult:
    labels: np.ndarray  # (rows, cols) uint8 class ids at cube resolution, 0 outside the model window
    segmentation: np.ndarray  # bgr8
    preview: np.ndarray  # bgr8 false colour
    gradcam_overlay: np.ndarray | None  # bgr8
    activation_overlay: np.ndarray | None  # bgr8
    focus_overlay: np.ndarray | None = None  # bgr8: focus_class's Grad-CAM map, its region outlined
    class_maps: dict[str, np.ndarray] = field(default_factory=dict)  # method@layer -> (K, h, w) float32
    spectra: np.ndarray | None = None  # (K, bands) spectral attribution
    band_attributions: dict[str, np.ndarray] = field(default_factory=dict)  # input method -> (K, bands) over region
    # method -> (K,) residual: activation's conservativeness; an input method's |total - target| / |target|
    residuals: dict[str, np.ndarray] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    saturated_fraction: float = 0.0
    margin: float = 0.0  # mean softmax margin p1 - p2 over the window (runtime.frame_quality)
    method_disagreement: float | None = None  # Grad-CAM-family vs activation maps, 0 = alike (frame_quality)
    header: object = None  # the input's header (stamp, frame_id), passed through untouched

    def conservation_values(self) -> dict[str, str]:
        """Diagnostic key -> value of each conserving input attribution computed: the largest residual
        |total - target| / |target| over the classes present ("n/a" when no class has a score to explain)."""
        out = {}
        for method, residual in self.residuals.items():
            if method == "activation":
                continue
            finite = residual[np.isfinite(residual)]
            out[f"conservation_residual_max {method}"] = f"{finite.max():.2e}" if finite.size else "n/a"
        return out


def pipeline_graph(cfg: PipelineConfig, profile=None):
    """(card, explain graph) the pipeline runs for `cfg`: the model checked against its card and
    sensor, with the configured explanations appended, pruned to the outputs the pipeline reads
    (`output_plan`): nothing is computed that no one reads. The TensorRT engine is keyed on this graph."""
    profile = profile or load_profile(cfg.profile, flip_vertical=cfg.flip_vertical)
    loaded = load_model(cfg.model, cfg.card, profile=profile)
    card: ModelCard = loaded.card
    model = onnx.load_model_from_string(loaded.onnx_bytes)
    bounded_shapes(model, f"model {card.name!r}")  # a shape the input's values decide: refused now, named
    # no top-k channels or second-block copy: the pipeline publishes neither; uint8 maps of the predicted class
    # only (what the fused overlays show) unless the focus overlay needs one class's map everywhere
    explain_cfg = SegmentationExplainConfig(methods=cfg.methods, layers=cfg.layers, seed=cfg.seed, top_k=0,
                                            second_block=False, upsample=True, uint8=True,
                                            uint8_scale="frame" if cfg.overlay_scale == "frame" else "input",
                                            uint8_rows="classes" if cfg.focus_class else "predicted",
                                            fem_k=cfg.fem_k, lrp=cfg.lrp, paths=cfg.paths)
    graph = build_segmentation_explainer(model, card.input.tensor, card.logits, card.layers, explain_cfg)
    return card, graph.pruned(list(dict.fromkeys(output_plan(cfg, card, graph).values())))


def output_plan(cfg: PipelineConfig, card: ModelCard, graph) -> dict[str, str]:
    """What the pipeline reads from the engine: its role ("logits", "activation_u8", ...) -> graph output.
    Float per-class maps only with `class_maps`; the spectra only with "spectral" among the methods."""
    def find(method: str, layer: str | None = None) -> str | None:
        return next((n for n, o in graph.outputs.items() if o.method == method and (layer is None or o.layer == layer)),
                    None)

    first_layer = card.layers.get(cfg.layers[0], cfg.layers[0]) if cfg.layers else None
    plan = {"logits": graph.logits, "argmax": find("argmax")}
    if "activation" in cfg.methods:
        plan["activation"] = find("activation")
        plan["activation_u8"] = find("activation_u8")
    if cfg.overlay_method in cfg.methods:  # an input attribution's map is at the input, not at a layer
        plan["gradcam_u8"] = find(cfg.overlay_method + "_u8",
                                  None if cfg.overlay_method in INPUT_METHODS else first_layer)
    for m in cfg.methods:
        if m in INPUT_METHODS:  # per class: which bands (a few floats), and for a conserving method its balance
            plan[f"{m}_bands"] = find(f"{m}_bands")
            if INPUT_METHODS[m].conserves:
                plan[f"{m}_total"], plan[f"{m}_target"] = find(f"{m}_total"), find(f"{m}_target")
    for kind in ("gradcam_u8", "activation_u8"):  # the per-row peaks that feed running scales
        if plan.get(kind) in graph.scale_inputs:
            plan[kind.replace("_u8", "_peak")] = graph.scale_inputs[plan[kind]][1]
    if "spectral" in cfg.methods:
        plan["spectral"] = find("spectral")
    if cfg.class_maps:
        for name, o in graph.outputs.items():
            if o.dtype == "float32" and o.method in ("activation", *OVERLAY_METHODS):
                plan[f"{o.method}@{o.layer}"] = name
    return {k: v for k, v in plan.items() if v is not None}


class Pipeline:
    """Holds the front end, the engine and the output plan for one model and sensor."""

    def __init__(self, config: PipelineConfig = PipelineConfig(), dark: np.ndarray | None = None,
                 white: np.ndarray | None = None):
        self.config = cfg = config.validated()
        self.profile = load_profile(cfg.profile, flip_vertical=cfg.flip_vertical)
        self.card, self.graph = pipeline_graph(cfg, self.profile)
        self.memory_bytes = self._check_memory()
        self.frontend = self._frontend(dark, white)
        self._plan = output_plan(cfg, self.card, self.graph)
        self.engine = open_engine(self.graph.model.SerializeToString(), cfg.backend, cfg.precision, cfg.cache_dir,
                                  cfg.threads, outputs_to_copy=list(dict.fromkeys(self._plan.values())),
                                  device=cfg.openvino_device)
        warn_fp16_attributions(self.engine, cfg.precision, [m for m in cfg.methods if m in INPUT_METHODS])
        self._lut = self.card.label_ids()
        names = [c.name for c in self.card.classes]
        unknown = [c for c in cfg.explain_classes if c not in names]
        if unknown:
            raise InputError(f"explain_classes {unknown} are not classes of model {self.card.name!r}: {names}")
        self._explained = np.array([n in cfg.explain_classes for n in names]) if cfg.explain_classes else None
        if cfg.focus_class and cfg.focus_class not in names:
            raise InputError(f"focus_class {cfg.focus_class!r} is not a class of model {self.card.name!r}: {names}")
        self._focus = names.index(cfg.focus_class) if cfg.focus_class else None
        overlays = {k: v for k, v in self._plan.items() if k.endswith("_u8")}
        self.scales = OverlayScales(cfg.overlay_scale, {u8: MapKey(self.graph.outputs[u8].method.removesuffix("_u8"),
                                                                    self.graph.outputs[u8].layer,
                                                                    self.graph.outputs[u8].signed)
                                                        for u8 in overlays.values()},
                                    names, self.card.overlay_scales, self.card.name)

    def _check_memory(self) -> int:
        """The explain graph's tensors (all classes in one batch) and the front end's frames, against the limit."""
        g = graph_memory(self.graph.model, f"model {self.card.name!r}")
        p = self.profile
        bands, rows, cols = p.cube_shape
        front = image_bytes(p.sensor_width, p.sensor_height, 1, 2) + 3 * image_bytes(cols, rows, bands, 4)
        return check_memory({"model weights": g.weights, "model inputs": g.inputs,
                             f"activations of {self.graph.classes} classes at once": g.activations,
                             "front end": front}, self.config.memory_limit_mb, f"model {self.card.name!r}")

    # --- one frame ----------------------------------------------------------------------------
    def _frontend(self, dark, white) -> FrontEnd:
        # the preview's three planes kept exactly when the front end normalises in place
        return FrontEnd(self.profile, dark, white, self.card.frontend_config(), keep_bands_nm=self.config.false_colour_nm,
                        keep_tolerance_nm=_PREVIEW_TOLERANCE_NM)

    def set_references(self, dark: np.ndarray, white: np.ndarray) -> None:
        """Swap in new dark/white reference frames; on bad ones raise and keep the current ones."""
        self.frontend = self._frontend(dark, white)

    def reset(self) -> None:
        """Back to the state of a new pipeline: no dark/white references, no running scales (a new bag
        starts; the engine and graph are kept)."""
        self.frontend = self._frontend(None, None)
        self.scales.reset()

    def process(self, raw: np.ndarray, header: object = None) -> FrameResult:
        t0 = time.perf_counter()
        fe = self.frontend.process(raw)
        x = self.card.model_input(fe.cube.data)
        t1 = time.perf_counter()
        out = self.engine.run({self.card.input.tensor: x, **self.scale_feeds()}, list(dict.fromkeys(self._plan.values())))
        t2 = time.perf_counter()
        for u8, (_, peak) in self.graph.scale_inputs.items():
            if peak in out:
                self.scales.update(u8, out[peak])
        result = self._post(fe, {k: out[v] for k, v in self._plan.items()})
        t3 = time.perf_counter()
        result.timings_ms = {"frontend": (t1 - t0) * 1e3, "engine": (t2 - t1) * 1e3, "post": (t3 - t2) * 1e3,
                             "total": (t3 - t0) * 1e3}
        result.header = header
        return result

    def scale_feeds(self) -> dict[str, np.ndarray]:
        """The graph's scale inputs for the next frame: card or running scales; a row with none yet (the
        first frame of a running scale) gets 0, which the graph reads as "this frame's own peak"."""
        feeds = {}
        for u8, (name, _) in self.graph.scale_inputs.items():
            scale = self.scales.scale(u8) if u8 in self.scales.maps else None
            rows = self.graph.classes  # one scale per class, whether the uint8 map holds every class or the predicted
            feeds[name] = (np.zeros(rows, np.float32) if scale is None else scale).reshape(rows, 1, 1, 1)
        return feeds

    def legends(self) -> dict[str, np.ndarray]:
        """overlay name -> bgr8 legend image (colour bar, what 1 means per class, the scale in force)."""
        out = {}
        names = [c.name for c in self.card.classes]
        for kind, overlay in (("gradcam_u8", "gradcam_overlay"), ("activation_u8", "activation_overlay")):
            u8 = self._plan.get(kind)
            if u8 is None:
                continue
            key = self.scales.maps[u8]
            scale = self.scales.scale(u8)
            per_class = None if scale is None else dict(zip(names, (float(v) for v in scale)))
            out[overlay] = legend_image(overlay.replace("_", " "), unit_of(key.method),
                                        self._colormap(key.signed), key.signed, per_class, self.scales.describe())
        return out

    def _colormap(self, signed: bool) -> str:
        return self.config.signed_colormap if signed else self.config.colormap

    def output_pixels(self, window: bool = False) -> PixelMap:
        """Where the outputs lie in the raw frame's pixels (their camera_info is the mosaic camera's through
        it): the labels, segmentation, preview and overlays span the cube, one pixel per 5x5 tile (per raw
        pixel with the bilinear demosaic); the per-class maps (`window`) the model's window of it."""
        p, i = self.profile, self.card.input
        binned = i.demosaic == "subsample"
        tile_w, tile_h = (p.pattern_width, p.pattern_height) if binned else (1, 1)
        cube = binned_region(p.offset_x, p.offset_y, tile_w, tile_h, p.area_width // tile_w, p.area_height // tile_h,
                             p.sensor_width, p.sensor_height)
        return cube.cropped(i.crop_left, i.crop_top, i.width, i.height) if window else cube

    def _window(self):
        i = self.card.input
        return slice(i.crop_top, i.crop_top + i.height), slice(i.crop_left, i.crop_left + i.width)

    def _fuse(self, maps_u8: np.ndarray, channel: np.ndarray, preview: np.ndarray, signed: bool) -> np.ndarray:
        """At each pixel the predicted class's map, coloured and blended over the preview
        (only where that class is one of `explain_classes`, when those are given)."""
        fused = maps_u8[0, 0] if maps_u8.shape[0] == 1 else np.take_along_axis(maps_u8[:, 0], channel[None], axis=0)[0]
        coloured = apply_colormap(fused, self._colormap(signed))
        out = preview.copy()
        rows, cols = self._window()
        a = self.config.overlay_alpha
        blended = cv2.addWeighted(preview[rows, cols], 1.0 - a, coloured, a, 0.0)
        if self._explained is not None:
            keep = self._explained[channel]
            blended[~keep] = preview[rows, cols][~keep]
        out[rows, cols] = blended
        return out

    def _focus_overlay(self, maps_u8: np.ndarray, channel: np.ndarray, preview: np.ndarray, signed: bool) -> np.ndarray:
        """focus_class's map over the whole window (what speaks for and against it everywhere), its predicted
        region outlined in white."""
        c = self._focus
        out = preview.copy()
        rows, cols = self._window()
        a = self.config.overlay_alpha
        out[rows, cols] = cv2.addWeighted(preview[rows, cols], 1.0 - a, apply_colormap(maps_u8[c, 0], self._colormap(signed)),
                                          a, 0.0)
        region = (channel == c).astype(np.uint8)
        contours, _ = cv2.findContours(region, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)  # holes too
        window = np.ascontiguousarray(out[rows, cols])
        cv2.drawContours(window, contours, -1, (255, 255, 255), 1)
        out[rows, cols] = window
        return out

    def _post(self, fe, out: dict[str, np.ndarray]) -> FrameResult:
        logits = out["logits"]
        channel = out["argmax"][0, 0] if "argmax" in out else logits[0].argmax(0)
        rows, cols = self._window()
        labels = np.zeros(fe.cube.data.shape[1:], np.uint8)
        labels[rows, cols] = self._lut[channel]
        preview = false_colour(fe.reflectance_bands(self.config.false_colour_nm, _PREVIEW_TOLERANCE_NM),
                               self.config.false_colour_nm, tolerance_nm=_PREVIEW_TOLERANCE_NM)
        result = FrameResult(labels=labels, segmentation=colourise(labels), preview=preview,
                             gradcam_overlay=None, activation_overlay=None,
                             saturated_fraction=float(fe.saturated.mean()), margin=prediction_margin(logits))
        signed = {k: self.graph.outputs[self._plan[k]].signed for k in ("gradcam_u8", "activation_u8") if k in out}
        if "gradcam_u8" in out:
            result.gradcam_overlay = self._fuse(out["gradcam_u8"], channel, preview, signed["gradcam_u8"])
            if self._focus is not None:
                result.focus_overlay = self._focus_overlay(out["gradcam_u8"], channel, preview, signed["gradcam_u8"])
        if "activation_u8" in out:
            result.activation_overlay = self._fuse(out["activation_u8"], channel, preview, signed["activation_u8"])
            result.residuals["activation"] = conservativeness_residual_of_labels(out["activation"], logits, channel,
                                                                                 self.graph.head_bias)
        if "gradcam_u8" in out and "activation_u8" in out:
            result.method_disagreement = method_disagreement(out["gradcam_u8"], out["activation_u8"], channel)
        if "spectral" in out:
            result.spectra = out["spectral"]
        for m in self.config.methods:
            if f"{m}_bands" in out:
                result.band_attributions[m] = out[f"{m}_bands"]
            if f"{m}_target" in out:
                result.residuals[m] = conservation_residual(out[f"{m}_total"], out[f"{m}_target"])
        result.class_maps = {k: v[:, 0] for k, v in out.items() if "@" in k}
        return result
