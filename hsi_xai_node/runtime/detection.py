"""The detection pipeline: synchronised camera frames in, detections and their per-box Grad-CAM out.

    pipeline = DetectionPipeline(DetectionPipelineConfig())      # the bundled RGB+MIR EfficientDet
    result = pipeline.process({"rgb": bgr, "mir": centikelvin})  # DetectionResult, or raises InputError

Stages (each timed in `result.timings_ms`):

    frontend   each camera registered into the network view and stacked (sensor.multispectral),
               with the card's normalisation and the rig's homographies
    engine     detector + decoding + NMS + per-box Grad-CAM of the top-K kept boxes (one call)
    post       detections in network-view and primary-camera pixels, the fused overlay

The overlay is the primary camera's own image (the first camera of the stack, whose header the
detections and the overlay carry) drawn `overlay_zoom` times larger so labels stay readable: its
pixels are the camera's (camera_model.zoomed gives its camera_info from the camera's), and the
boxes on it are the Detection2DArray's boxes. Over it, each explained box's own map only around
its box (the box grown by a margin, in the network view where the maps are), scaled by the box
class's scale (the card's, a running one or the box's own peak: runtime.overlay), coloured
(box_gradcam on `colormap`, box_gradcam_signed on the diverging `signed_colormap`) and blended
weighted by its magnitude so unexplained areas stay clean, carried into the camera's pixels by
the rig's homography; boxes in their class colours, labels placed where they overlap no other
label (numbers and a key at the bottom when they would). Boxes are reported in the network view
and in the primary camera's pixels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from ..detection.card import LoadedDetector, load_detector
from ..errors import FrameError, InputError
from ..explain import (BOX_ATTRIBUTIONS, BOX_CAMS, BOX_LEVEL, BOX_METHODS, CAMS, INPUT_METHODS, LEVEL_PART,
                       DetectionExplainConfig, LrpOptions, PathOptions, box_levels, build_detection_explainer,
                       linear_resize_matrix)
from ..resources import share_path
from ..sensor.camera_model import PixelMap, zoomed
from ..sensor.rig import (DEFAULT_COMMON_VIEW, CameraSpec, corner_bounds, load_rig, read_rig,  # noqa: F401
                          transform_boxes)  # (load_rig re-exported)
from ..sensor.multispectral import CameraInput, MultispectralFrontEnd, StackConfig, network_from_common
from .engine import open_engine, warn_fp16_attributions
from .memory import DEFAULT_LIMIT_MB, bounded_shapes, check_memory, graph_memory, image_bytes
from .overlay import (SCALE_MODES, MapKey, OverlayScales, apply_colormap, check_colormap, legend_image,
                      to_uint8, unit_of)

DEFAULT_DETECTOR = share_path("models/efficientdet_rgb_mir.onnx")


# the per-box maps the detection overlay can show: the CAM family at the class-head layer, input attributions
BOX_OVERLAY_METHODS = (*BOX_CAMS, *BOX_ATTRIBUTIONS)

@dataclass(frozen=True)
class DetectionPipelineConfig:
    model: str = str(DEFAULT_DETECTOR)
    card: str | None = None
    rig: str | None = None            # rig YAML; None = config/rig_default.yaml (the generated drives' rig)
    backend: str = "auto"
    precision: str = "fp16"
    cache_dir: str | None = None
    threads: int = 0
    openvino_device: str = "CPU"  # backend openvino: CPU, GPU, NPU or AUTO
    score_threshold: float | None = None  # None = the card's; may only raise the in-graph NMS threshold
    explain_boxes: int = 10           # top-K kept boxes explained per frame (0 = no explanations)
    # the explained layer: box_level = each box at its own pyramid level (explain/_detection.py), or a card role or
    # tensor name (class_head_input: the finest level's head input, for every box)
    layer: str = BOX_LEVEL
    methods: tuple[str, ...] = ("box_gradcam",)  # per-box maps computed (explain.BOX_METHODS); "box_spectral":
    # gradient x input per input channel in each box, grouped by camera (Detection.camera_shares)
    overlay_method: str = "box_gradcam"  # the per-box map the overlay shows: a box CAM or input attribution
    overlay_alpha: float = 0.6
    colormap: str = "inferno"         # box_gradcam (one-sided): sequential
    signed_colormap: str = "coolwarm"  # box_gradcam_signed: diverging, centred on zero
    overlay_scale: str = "card"       # card | running | frame (runtime.overlay), per box class
    overlay_margin: float = 0.25      # each box's map is shown within the box grown by this share of its size
    overlay_zoom: int = 1             # the overlay is the primary camera's image this many times larger: at 1 it
    # is a drop-in for the camera's image (same pixels, so the camera's own camera_info); 2 for small cameras
    box_maps: bool = False            # also return the per-box float maps
    memory_limit_mb: float = DEFAULT_LIMIT_MB  # a detector or rig needing more per frame is refused at load
    fem_k: float = 2.0  # box_fem: the K-sigma rule's K
    lrp: LrpOptions = LrpOptions()  # box_lrp_*: epsilon, gamma, stabiliser
    paths: PathOptions = PathOptions()  # box_smoothgrad, box_integrated_gradients, box_deeplift: samples, steps...

    def validated(self) -> "DetectionPipelineConfig":
        if not 0.0 <= self.overlay_alpha <= 1.0:
            raise InputError(f"overlay_alpha must be in [0, 1], got {self.overlay_alpha}")
        check_colormap(self.colormap, False, "colormap")
        check_colormap(self.signed_colormap, True, "signed_colormap")
        if self.overlay_scale not in SCALE_MODES:
            raise InputError(f"overlay_scale must be one of {list(SCALE_MODES)}, got {self.overlay_scale!r}")
        if self.overlay_method not in BOX_OVERLAY_METHODS:
            raise InputError(f"overlay_method {self.overlay_method!r} must be a per-box method with a map: "
                             f"{list(BOX_OVERLAY_METHODS)}")
        unknown = [m for m in self.methods if m not in BOX_METHODS]
        if unknown:
            raise InputError(f"detection methods {unknown} unknown; per-box methods: {list(BOX_METHODS)}")
        if self.explain_boxes < 0:
            raise InputError(f"explain_boxes must be >= 0, got {self.explain_boxes}")
        if not 0.0 <= self.overlay_margin <= 2.0:
            raise InputError(f"overlay_margin must be in [0, 2], got {self.overlay_margin}")
        if not 1 <= self.overlay_zoom <= 4:
            raise InputError(f"overlay_zoom must be 1..4, got {self.overlay_zoom}")
        return self


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]         # x0, y0, x1, y1 in network-view pixels
    camera_box: tuple[float, float, float, float]  # the same in the primary camera's pixels
    class_id: int
    class_name: str
    score: float
    slot: int                                       # row of the per-box maps (explained if < explain_boxes)
    # with "box_spectral": per camera of the stack, sum over the box of gradient x input over its channels
    # (signed: for or against the box's score), and its share |a| / sum |a| (what paper 001 asks of RGB + MIR)
    camera_attribution: dict | None = None
    camera_shares: dict | None = None
    # layer box_level: the tensor its map was taken at (its pyramid level's head input); None for other layers
    level: str | None = None


@dataclass
class DetectionResult:
    detections: list[Detection]
    detection_overlay: np.ndarray           # bgr8: the primary camera's image, overlay_zoom x, per-box maps, boxes
    box_maps: np.ndarray | None = None      # (explained, H, W) float32, when asked for
    slots_full: bool = False                # NMS filled every output slot: more boxes may have been cut off
    timings_ms: dict[str, float] = field(default_factory=dict)
    header: object = None                   # the primary camera's header, untouched
    make_preview: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    _preview: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def preview(self) -> np.ndarray | None:
        """bgr8 network view (the colour camera registered, else the first camera stretched), made when first read:
        nothing the pipeline publishes or draws uses it (0.65 ms a frame on the bundled detector's 320 x 256)."""
        if self._preview is None and self.make_preview is not None:
            self._preview = self.make_preview()
        return self._preview


def stack_from_card(loaded: LoadedDetector, rig: dict[str, CameraSpec],
                    common_size: tuple[int, int] = DEFAULT_COMMON_VIEW) -> StackConfig:
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
    return StackConfig(cameras=tuple(cams), input_size=(w, h), common_size=tuple(common_size))


def detection_graph(cfg: DetectionPipelineConfig):
    """(loaded detector, explain graph or None) for `cfg`; the TensorRT engine is keyed on this graph."""
    loaded = load_detector(cfg.model, cfg.card)
    bounded_shapes(loaded.model, f"detector {loaded.card.name!r}")  # a shape the input's values decide: refused now
    if cfg.explain_boxes == 0:
        return loaded, None
    k = min(cfg.explain_boxes, int(loaded.card.postprocess.get("max_detections", 20)))
    methods = tuple(dict.fromkeys((cfg.overlay_method, *cfg.methods)))
    graph = build_detection_explainer(loaded.model, loaded.card.input.tensor, loaded.card.scores,
                                      loaded.card.layers,
                                      DetectionExplainConfig(layers=(cfg.layer,), top_k=k, methods=methods, uint8=False,
                                                             fem_k=cfg.fem_k, lrp=cfg.lrp, paths=cfg.paths),
                                      pairs="det_pairs", layout=loaded.card.input.layout, boxes="det_boxes")
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
        rig = read_rig(cfg.rig)
        self.rig = rig.cameras
        stack = stack_from_card(self.loaded, self.rig, rig.common_view)
        self.memory_bytes = self._check_memory(stack)
        self.frontend = MultispectralFrontEnd(stack)
        self.primary = card.input.stack[0].camera
        # network view -> primary camera pixels, for reporting boxes in the frame the header names
        st = self.frontend.config
        self._to_camera = np.asarray(self.rig[self.primary].homography) @ np.linalg.inv(
            network_from_common(st.common_size, st.input_size))
        self.classes = {c.channel: c for c in card.classes}
        self._plan = {"boxes": "det_boxes", "scores": "det_scores", "classes": "det_classes"}
        model = self.loaded.model
        m = cfg.overlay_method  # a CAM at the class-head layer, or an input attribution (its map at the input)
        self._signed = CAMS[BOX_CAMS[m]].signed if m in BOX_CAMS else INPUT_METHODS[BOX_ATTRIBUTIONS[m]].signed
        # the maps the overlay draws from, each at its own size (plan key -> (rows, cols) resize matrices to the
        # input's size, None when already there): a box is shown only around itself, so only that crop is resized
        # here, where resizing in the graph made K maps of the whole input (1.2 ms of the bundled detector's 4 ms
        # for ten boxes, and their copy out)
        self._parts: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        if self.graph is not None:
            model = self.graph.model
            parts = {}
            for name, o in self.graph.outputs.items():
                if o.method == m + "_full" or (o.method == m and "maps" not in self._plan
                                                 and tuple(o.shape[2:]) == card.input.hw):
                    self._plan["maps"] = name  # float maps at the input size: read when needed (below)
                if o.method == (m + LEVEL_PART if m in BOX_CAMS and cfg.layer == BOX_LEVEL else m):
                    parts[name] = tuple(o.shape[2:])  # a CAM's part per level at box_level, else the map itself
                if o.method == "box_spectral":
                    self._plan["spectral"] = name
                if o.method == "box_level_index" and m in BOX_CAMS:
                    self._plan["levels"] = name
            out_h, out_w = card.input.hw
            for i, (name, (h, w)) in enumerate(parts.items()):
                self._plan[f"part{i}"] = name
                self._parts[f"part{i}"] = None if (h, w) == (out_h, out_w) else \
                    (linear_resize_matrix(h, out_h), linear_resize_matrix(w, out_w).T)
        # input channel -> camera of the stack, for the camera shares
        self._channel_camera = [s.camera for s in card.input.stack for _ in s.offset]
        layer = card.input.tensor if m in BOX_ATTRIBUTIONS else card.layers.get(cfg.layer, cfg.layer)
        names = [self.classes[ch].name for ch in sorted(self.classes)]
        # box_level: a scale per class and level ("car@bifpn_p3"), the rows of `names` by class, then level
        self.levels = box_levels(card.layers) if "levels" in self._plan else []
        rows = "class"
        if self.levels:
            names, rows = [f"{n}@{level}" for n in names for level in self.levels], "class and level"
        self.scales = OverlayScales(cfg.overlay_scale, {"box": MapKey(cfg.overlay_method, layer, self._signed)},
                                    names, card.overlay_scales, card.name, rows=rows)
        if "maps" in self._plan and not cfg.box_maps and self.scales.mode == "card":
            del self._plan["maps"]  # no box's peak is needed, nor the maps themselves: each is resized around its box
        self._outputs = list(dict.fromkeys(self._plan.values()))  # an input attribution's map is its own part too
        self.engine = open_engine(model.SerializeToString(), cfg.backend, cfg.precision, cfg.cache_dir, cfg.threads,
                                  outputs_to_copy=self._outputs, device=cfg.openvino_device)
        warn_fp16_attributions(self.engine, cfg.precision, [m for m in cfg.methods if m in BOX_ATTRIBUTIONS])

    def _check_memory(self, stack) -> int:
        """The detector's (and explain graph's) tensors, its cameras' frames and their warps, against the limit."""
        g = graph_memory(self.graph.model if self.graph is not None else self.loaded.model, f"detector {self.card.name!r}")
        w, h = stack.input_size
        warps = sum(image_bytes(c.width, c.height, 3 if c.encoding.endswith("8") and c.encoding != "mono8" else 1,
                                2 if "16" in c.encoding else 1) * 2 + image_bytes(w, h, 3, 4) for c in stack.cameras)
        explained = min(self.config.explain_boxes, int(self.card.postprocess.get("max_detections", 20))) \
            if self.graph is not None else 0
        rows = f"activations ({explained} explained boxes)"
        return check_memory({"model weights": g.weights, "model inputs": g.inputs, rows: g.activations,
                             "camera frames and warps": warps + image_bytes(w, h, 3, 3)},
                            self.config.memory_limit_mb, f"detector {self.card.name!r}")

    def overlay_pixels(self) -> PixelMap:
        """Where the detection overlay lies in the primary camera's pixels (its camera_info is the camera's
        through it): the camera's image drawn overlay_zoom times larger."""
        cam = self.rig[self.primary]
        return zoomed(self.config.overlay_zoom, cam.width, cam.height)

    @property
    def cameras(self) -> list[str]:
        """Camera names the detector needs, primary first."""
        return [s.camera for s in self.card.input.stack]

    def reset(self) -> None:
        """Forget the running overlay scales (a new bag starts; the engine is kept)."""
        self.scales.reset()

    def process(self, images: dict[str, np.ndarray], header: object = None) -> DetectionResult:
        if not isinstance(images, Mapping):
            raise FrameError(f"detector {self.card.name!r} takes its camera frames as a mapping camera name -> image "
                             f"(cameras {self.cameras}), got {type(images).__name__}")
        t0 = time.perf_counter()
        registered = self.frontend.register_all(images)
        x = self.frontend.stack(registered)
        if self.card.input.layout == "nhwc":
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        t1 = time.perf_counter()
        out = self.engine.run({self.card.input.tensor: x}, self._outputs)
        out = {k: out[v] for k, v in self._plan.items()}
        t2 = time.perf_counter()
        result = self._post(images, registered, out)
        t3 = time.perf_counter()
        result.timings_ms = {"frontend": (t1 - t0) * 1e3, "engine": (t2 - t1) * 1e3, "post": (t3 - t2) * 1e3,
                             "total": (t3 - t0) * 1e3}
        result.header = header
        return result

    def _post(self, images, registered, out) -> DetectionResult:
        classes, scores = out["classes"][0], out["scores"][0]
        kept = np.flatnonzero((classes >= 0) & ~(scores <= self.score_threshold))  # not "score > t": NaN as before
        boxes = out["boxes"][0][kept].tolist()
        detections = []
        for slot, box, camera_box in zip(kept.tolist(), boxes, transform_boxes(boxes, self._to_camera)):
            c = self.classes[int(classes[slot])]
            attribution, shares = self._camera_shares(out["spectral"][slot]) \
                if "spectral" in out and slot < len(out["spectral"]) else (None, None)
            level = self.levels[int(out["levels"][slot])] if "levels" in out and slot < len(out["levels"]) else None
            detections.append(Detection(tuple(box), camera_box, c.id, c.name, float(scores[slot]), slot,
                                        attribution, shares, level))
        rows = len(out["part0"]) if self._parts else 0  # the explained slots
        explained = [d for d in detections if d.slot < rows]
        overlay = self._draw_maps(images, out, explained)
        overlay = draw_boxes(overlay, detections, self.classes, self.config.overlay_zoom)
        box_maps = out["maps"][:, 0] if self.config.box_maps and "maps" in out else None
        slots_full = bool((out["classes"][0] >= 0).all())
        return DetectionResult(detections, overlay, box_maps, slots_full,
                               make_preview=lambda: self.frontend.preview(images, registered))

    def _camera_shares(self, spectral: np.ndarray) -> tuple[dict, dict]:
        """Per camera: the box's gradient x input summed over its channels, and its share of the total |.|."""
        attribution = {}
        for camera, value in zip(self._channel_camera, spectral):
            attribution[camera] = attribution.get(camera, 0.0) + float(value)
        total = sum(abs(v) for v in attribution.values())
        shares = {cam: (abs(v) / total if total > 0 else 0.0) for cam, v in attribution.items()}
        return attribution, shares

    def box_map(self, out: dict[str, np.ndarray], slot: int, rows: slice = slice(None),
                cols: slice = slice(None)) -> np.ndarray:
        """Box `slot`'s float map at the input's size, over `rows` x `cols`, from the engine's outputs `out` (plan
        key -> array): the graph's full-size maps where they were read, else the sum of the map's parts (one per
        pyramid level at box_level), each resized here as the graph resizes them (ONNX Resize's linear half-pixel
        weights as matrices: the columns, then the rows), only over the crop. A part that is zero in this row (a
        level the box's score does not reach) adds nothing and is skipped."""
        if "maps" in out:
            return out["maps"][slot, 0, rows, cols]
        total = None
        for key, resize in self._parts.items():
            m = out[key][slot, 0]
            if len(self._parts) > 1 and not m.any():
                continue
            crop = m[rows, cols] if resize is None else resize[0][rows] @ (m @ resize[1][:, cols])
            total = crop if total is None else total + crop
        if total is None:  # no level reached: an empty slot's map is zero
            h, w = self.card.input.hw
            total = np.zeros((len(range(h)[rows]), len(range(w)[cols])), np.float32)
        return total

    def box_scale(self, detections: list[Detection], out: dict[str, np.ndarray]) -> np.ndarray:
        """Per explained box, the scale its map is shown with: its class's (card or running) or its own peak
        (`out`: the engine's outputs by plan key, as `box_map` reads them)."""
        def peak(d: Detection) -> float:  # max |m| (signed) or max(m, 0): two reductions, no |m| copy of the map
            m = self.box_map(out, d.slot)
            return max(float(m.max()), -float(m.min())) if self._signed else max(float(m.max()), 0.0)

        if self.scales.mode == "frame":
            return np.array([peak(d) for d in detections], np.float32)
        channel = {c.id: ch for ch, c in self.classes.items()}
        rows = np.array([channel[d.class_id] * max(len(self.levels), 1) +
                         (self.levels.index(d.level) if self.levels else 0) for d in detections])
        peaks = None
        if self.scales.mode == "running":  # a class's running scale follows the peaks of its boxes
            peaks = np.array([peak(d) for d in detections], np.float32)
            current = self.scales.scale("box")
            update = current.copy() if current is not None else np.zeros(len(self.scales.classes), np.float32)
            for r in np.unique(rows):
                update[r] = peaks[rows == r].max()
            if current is not None:
                update = np.where(np.isin(np.arange(len(update)), rows), update, current)
            self.scales.update("box", update)
        chosen = self.scales.scale("box")[rows].astype(np.float32)
        for i in np.flatnonzero(chosen <= 0):  # a class (and level) without a scale: the box's own peak
            chosen[i] = peaks[i] if peaks is not None else peak(detections[i])
        return chosen

    def _draw_maps(self, images, out: dict[str, np.ndarray], explained: list[Detection]) -> np.ndarray:
        """Each explained box's map within its box grown by overlay_margin, weaker boxes first (the best on
        top), weighted by the shown magnitude, composed in the network view as one premultiplied layer (colour
        times weight, and the weight: blending them in turn over a picture is blending that layer over it),
        carried into the primary camera's zoomed pixels by the rig's homography and blended over its image, only
        around the boxes (`_painted_regions`)."""
        cfg = self.config
        z = cfg.overlay_zoom
        picture = self.frontend.camera_picture(self.primary, images.get(self.primary))
        picture = picture if z == 1 else cv2.resize(picture, None, fx=z, fy=z, interpolation=cv2.INTER_NEAREST)
        if not explained:
            return picture
        w, h = self.frontend.config.input_size  # the network view, where the maps are
        layer = np.zeros((h, w, 4), np.float32)  # premultiplied colour, and the weight
        tables = _blend_tables(cfg.signed_colormap if self._signed else cfg.colormap, self._signed, cfg.overlay_alpha)
        scales = self.box_scale(explained, out)
        painted = []  # the network-view rectangles the boxes' maps cover: all that is warped and blended
        for d, s in sorted(zip(explained, scales), key=lambda t: t[0].score):
            x0, y0, x1, y1 = d.box
            mx, my = cfg.overlay_margin * (x1 - x0) + 2.0, cfg.overlay_margin * (y1 - y0) + 2.0
            c0, r0 = max(int(np.floor(x0 - mx)), 0), max(int(np.floor(y0 - my)), 0)
            c1, r1 = min(int(np.ceil(x1 + mx)), w), min(int(np.ceil(y1 + my)), h)
            if c1 <= c0 or r1 <= r0:
                continue
            painted.append((c0, r0, c1, r1))
            u8 = to_uint8(self.box_map(out, d.slot, slice(r0, r1), slice(c0, c1)), s, self._signed)
            # layer x (1 - w) + colour x w, w and colour x w looked up by grey level (in place: the same float32
            # products and sums as computing them per pixel; np.take: 4x faster than indexing a table by an array)
            region = layer[r0:r1, c0:c1]  # colour and weight together: the same products and sums, half the passes
            region *= np.take(tables.keep, u8, axis=0)
            region += np.take(tables.layer, u8, axis=0)
        # network view -> primary camera pixels -> zoomed (pixel centres; OpenCV's warp samples at the centres)
        to_overlay = self.overlay_pixels().A @ self._to_camera
        out_image = picture.copy()
        for X0, Y0, X1, Y1 in _painted_regions(painted, to_overlay, picture.shape[:2]):
            shift = np.array([[1.0, 0.0, -X0], [0.0, 1.0, -Y0], [0.0, 0.0, 1.0]])
            warped = cv2.warpPerspective(layer, shift @ to_overlay, (X1 - X0, Y1 - Y0), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            # picture x (1 - weight) + premultiplied colour, rounded to uint8: by OpenCV's kernels, 2.5x numpy's
            # passes over a 640 x 480 camera (a value at exactly .5 rounds to even, not up: at most 1 grey level apart)
            *colour_z, weight_z = cv2.split(warped)
            keep = 1.0 - weight_z
            blended = cv2.multiply(out_image[Y0:Y1, X0:X1], cv2.merge([keep, keep, keep]), dtype=cv2.CV_32F)
            out_image[Y0:Y1, X0:X1] = cv2.convertScaleAbs(cv2.add(blended, cv2.merge(colour_z)))  # all >= 0
        return out_image

    def legend(self) -> np.ndarray:
        """The detection overlay's legend (colour bar, what 1 means per class, the scale in force)."""
        key = self.scales.maps["box"]
        scale = self.scales.scale("box")
        per_class = None if scale is None else {n: float(v) for n, v in zip(self.scales.classes, scale) if v > 0}
        return legend_image("detection overlay", unit_of(key.method), self.config.signed_colormap if key.signed
                            else self.config.colormap, key.signed, per_class, self.scales.describe())


LABEL_FONT, LABEL_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.4


@dataclass(frozen=True)
class _BlendTables:
    """Per grey level of a box's uint8 map: 1 - w, where w is its weight in the overlay (overlay_alpha x the shown
    magnitude), and what it adds to the premultiplied layer, its colour times w and w itself ((256, 1) and (256, 4)
    float32)."""

    keep: np.ndarray
    layer: np.ndarray


@lru_cache(maxsize=16)
def _blend_tables(colormap: str, signed: bool, alpha: float) -> _BlendTables:
    grey = np.arange(256, dtype=np.uint8)
    magnitude = np.abs(grey.astype(np.float32) - 127.5) / 127.5 if signed else grey / 255.0
    w = (alpha * magnitude).astype(np.float32)[:, None]
    return _BlendTables(1.0 - w, np.concatenate([apply_colormap(grey[:, None], colormap)[:, 0] * w, w], axis=1))


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _painted_regions(painted: list[tuple[int, int, int, int]], to_overlay: np.ndarray,
                     image_hw: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """The overlay's pixel rectangles (X0, Y0, X1, Y1) to warp the network view's layer into and blend: one per
    group of box rectangles (network view, (c0, r0, c1, r1)) whose footprints in the overlay overlap, so that no
    overlay pixel is blended twice. A footprint is the rectangle's corners carried over by `to_overlay`, grown by
    the bilinear sampling's reach and a pixel. Around each group rather than around all boxes: the boxes of a
    frame cover a third of the rectangle around them all, and the warp and blend cost what they cover."""
    h, w = image_hw

    def footprints(rects):  # all rectangles' corners in one OpenCV call (each point is carried over on its own)
        low, high = corner_bounds(np.asarray(rects, np.float64).reshape(-1, 4) + [-1.0, -1.0, 0.0, 0.0], to_overlay)
        low, high = (np.floor(low) - 1).tolist(), (np.ceil(high) + 2).tolist()
        return [(max(int(X0), 0), max(int(Y0), 0), min(int(X1), w), min(int(Y1), h))
                for (X0, Y0), (X1, Y1) in zip(low, high)]

    def footprint(rect):
        return footprints([rect])[0]

    groups = list(zip(painted, footprints(painted))) if painted else []
    merged = True
    while merged:  # join any two groups whose footprints overlap, until none do
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if _overlaps(groups[i][1], groups[j][1]):
                    a, b = groups[i][0], groups[j][0]
                    rect = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    groups[i] = (rect, footprint(rect))
                    del groups[j]
                    merged = True
                    break
            if merged:
                break
    return [f for _, f in groups if f[2] > f[0] and f[3] > f[1]]


@lru_cache(maxsize=4096)
def _text_size(text: str):
    """OpenCV's ((width, height), baseline) of a label (8 us a call, some 20 calls a frame; labels repeat)."""
    return cv2.getTextSize(text, LABEL_FONT, LABEL_SCALE, 1)


def place_labels(boxes: list[tuple[float, float, float, float]], sizes: list[tuple[int, int]],
                 image_hw: tuple[int, int]) -> list[tuple[int, int] | None]:
    """Top-left corners for label rectangles of `sizes` (w, h), one per box (best first), that overlap
    neither each other nor the image edge: above the box, below it, or inside its top; None where no
    spot is free."""
    h, w = image_hw
    placed, out = [], []
    for (x0, y0, x1, y1), (tw, th) in zip(boxes, sizes):
        x = int(min(max(x0, 0), max(w - tw, 0)))
        spot = None
        for y in (int(y0) - th - 1, int(y1) + 1, int(y0) + 1):
            rect = (x, y, x + tw, y + th)
            if y >= 0 and y + th <= h and not any(_overlaps(rect, p) for p in placed):
                spot = rect
                break
        if spot is not None:
            placed.append(spot)
        out.append(None if spot is None else spot[:2])
    return out


def draw_boxes(image: np.ndarray, detections: list[Detection], classes: dict, zoom: int) -> np.ndarray:
    """Boxes in class colours with "class score" labels placed without overlap; when a label finds no free
    spot, every box gets its number instead and a key lists them along the bottom."""
    out = image.copy()
    h, w = out.shape[:2]
    colours = {c.id: tuple(int(v) for v in c.bgr) for c in classes.values()}
    boxes = [tuple(v * zoom for v in d.camera_box) for d in detections]  # pixel edges scale with the zoom
    texts = [f"{d.class_name} {d.score:.2f}" for d in detections]
    sizes = []
    for t in texts:
        (tw, th), base = _text_size(t)
        sizes.append((tw + 2, th + base + 2))
    spots = place_labels(boxes, sizes, (h, w))
    numbered = any(s is None for s in spots)
    if numbered:
        texts = [str(i + 1) for i in range(len(detections))]
        sizes = [(_text_size(t)[0][0] + 2, sizes[0][1]) for t in texts]
        spots = place_labels(boxes, sizes, (h, w))
        spots = [s if s is not None else (int(max(b[0], 0)), int(max(b[1], 0))) for s, b in zip(spots, boxes)]
    for d, (x0, y0, x1, y1), text, (tw, th), spot in zip(detections, boxes, texts, sizes, spots):
        colour = colours[d.class_id]
        cv2.rectangle(out, (int(round(x0)), int(round(y0))), (int(round(x1)) - 1, int(round(y1)) - 1), colour, 1)
        x, y = spot
        cv2.rectangle(out, (x, y), (x + tw - 1, y + th - 1), (0, 0, 0), -1)
        cv2.putText(out, text, (x + 1, y + th - 4), LABEL_FONT, LABEL_SCALE, colour, 1, cv2.LINE_AA)
    if numbered:  # the key: "1 car 0.91  2 person 0.55 ...", wrapped, on a dark band at the bottom
        entries = [f"{i + 1} {d.class_name} {d.score:.2f}" for i, d in enumerate(detections)]
        line_h, lines, line = sizes[0][1] + 2, [], ""
        for entry in entries:
            candidate = f"{line}  {entry}" if line else entry
            if _text_size(candidate)[0][0] > w - 4 and line:
                lines.append(line)
                candidate = entry
            line = candidate
        lines.append(line)
        top = max(h - line_h * len(lines) - 2, 0)
        out[top:] = (out[top:] * 0.35).astype(np.uint8)
        for k, text in enumerate(lines):
            cv2.putText(out, text, (2, top + line_h * (k + 1) - 3), LABEL_FONT, LABEL_SCALE, (255, 255, 255), 1,
                        cv2.LINE_AA)
    return out
