"""What makes an overlay readable: colormaps by the kind of map, scales that hold across frames, legends.

Colormaps. One-sided maps (Grad-CAM with ReLU, per-box Grad-CAM) go on a sequential colormap
(`colormap`, default inferno: dark = 0, bright = the scale); signed maps (activation
contributions, Grad-CAM without ReLU, HiRes) on a diverging one centred on zero
(`signed_colormap`, default coolwarm: blue negative, grey 0, red positive), so negative
evidence never looks like weak positive evidence.

Scales (`overlay_scale`): a map value v is shown as v / s (one-sided: 0..1; signed: -1..1),
clipped, with s per class (segmentation) or per box class (detection):

    card     s = the class's reference value in the model card (`overlay_scales`: a high percentile
             of that map over the class's predicted pixels on validation frames, measured by
             `calibrate_overlay_scales` when the model is exported): the same value has the same
             colour in every frame and on every machine
    running  s = a running mean of each class's per-frame peak (rate RUNNING_RATE per frame, starting
             from the first frame's peak): stable within a drive, for models whose card has none
    frame    s = the frame's own peak (per-frame min-max): colours compare within one frame only

`legend_image` draws the key an RViz or Foxglove user needs: the colour bar, what 1 (and -1)
means per class in the map's unit, and which scale is in force.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from ..classes import bgr_lookup
from ..errors import InputError

log = logging.getLogger(__name__)

SEQUENTIAL = ("inferno", "viridis", "magma", "hot", "turbo", "jet")  # OpenCV's own tables
DIVERGING = ("coolwarm", "rdbu", "bwr", "seismic")  # matplotlib's (rdbu: RdBu reversed, red positive)
_OPENCV = {"inferno": cv2.COLORMAP_INFERNO, "viridis": cv2.COLORMAP_VIRIDIS, "magma": cv2.COLORMAP_MAGMA,
           "hot": cv2.COLORMAP_HOT, "turbo": cv2.COLORMAP_TURBO, "jet": cv2.COLORMAP_JET}
_MATPLOTLIB = {"coolwarm": "coolwarm", "rdbu": "RdBu_r", "bwr": "bwr", "seismic": "seismic"}
SCALE_MODES = ("card", "running", "frame")
RUNNING_RATE = 0.02  # per frame: the running scale follows a change of the peaks over ~50 frames (2 s at 25 fps)
REFERENCE_PERCENTILE = 99.0  # the card's scale: this percentile of |map| over the class's predicted pixels

# what a map's values are, for legends and captions (detector boxes: "box_" + the same, of the box's score)
UNITS = {"activation": "logit contribution (sum_k w_ck A_k)",
         "seg_gradcam": "Grad-CAM: mean gradient x activation",
         "seg_gradcam_signed": "Grad-CAM without ReLU: mean gradient x activation",
         "hires": "HiRes-CAM: gradient x activation per pixel",
         "gradcam_pp": "Grad-CAM++: weighted activation",
         "xgradcam": "XGrad-CAM: weighted activation",
         "layercam": "LayerCAM: positive gradient x activation per pixel",
         "seg_xres": "Seg-XRes-CAM: window-pooled gradient x activation",
         "eigencam": "EigenCAM: activation projected on its first principal component",
         "scorecam": "Score-CAM: softmax-weighted activation",
         "fem": "FEM: channel means over their K-sigma strong pixels",
         # input attributions, summed over the bands (paper 003)
         "gradient": "gradient: |dS/dx| summed over the bands",
         "input_x_gradient": "input x gradient, summed over the bands",
         "guided_backprop": "guided backprop gradient, summed over the bands",
         "deconvnet": "DeconvNet gradient, summed over the bands",
         "smoothgrad": "SmoothGrad: |mean noisy gradient| summed over the bands",
         "integrated_gradients": "integrated gradients (sum = S(x) - S(baseline)), over the bands",
         "deeplift": "DeepLIFT rescale (sum = S(x) - S(baseline)), over the bands",
         "lrp_epsilon": "LRP-epsilon relevance (sum = the score), over the bands",
         "lrp_epsilon_nobias": "LRP-epsilon relevance without bias, over the bands",
         "lrp_zplus": "LRP-z+ relevance, over the bands",
         "lrp_alpha2_beta1": "LRP-alpha2-beta1 relevance, over the bands",
         "lrp_gamma": "LRP-gamma relevance, over the bands",
         "lrp_epsilon_plus_flat": "LRP EpsilonPlusFlat relevance, over the bands",
         "lrp_epsilon_gamma_box": "LRP EpsilonGammaBox relevance, over the bands",
         "lrp_deep_taylor": "deep Taylor (z-box, then z+) relevance, over the bands",
         "box_gradcam": "box-score gradient x activation",
         "box_gradcam_signed": "box-score gradient x activation, no ReLU",
         "box_input_x_gradient": "box-score gradient x input"}


def unit_of(method: str) -> str:
    """The unit of a map for its legend, for any method of either task."""
    if method in UNITS:
        return UNITS[method]
    base = method.removeprefix("box_")
    return f"box score: {UNITS.get(base, UNITS.get('seg_' + base, base))}" if method.startswith("box_") else method


def check_colormap(name: str, signed: bool, parameter: str) -> str:
    """The name, or an InputError naming the parameter: one-sided maps take a sequential colormap,
    signed maps a diverging one."""
    allowed = DIVERGING if signed else SEQUENTIAL
    if name not in allowed:
        kind = "signed maps need a diverging colormap" if signed else "one-sided maps need a sequential colormap"
        raise InputError(f"{parameter} {name!r}: {kind}, one of {list(allowed)}")
    return name


@lru_cache(maxsize=None)
def colormap_lut(name: str) -> np.ndarray:
    """(256, 3) uint8 BGR: grey level -> colour."""
    if name in _OPENCV:
        return cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), _OPENCV[name]).reshape(256, 3)
    if name in _MATPLOTLIB:
        from matplotlib import colormaps

        rgba = colormaps[_MATPLOTLIB[name]](np.linspace(0.0, 1.0, 256))
        return np.ascontiguousarray((rgba[:, 2::-1] * 255.0 + 0.5).astype(np.uint8))
    raise InputError(f"unknown colormap {name!r}; use one of {list(SEQUENTIAL + DIVERGING)}")


def apply_colormap(u8: np.ndarray, name: str) -> np.ndarray:
    """A uint8 map (h, w) as a bgr8 image through the colormap's table."""
    return bgr_lookup(u8, colormap_lut(name))


def to_uint8(values: np.ndarray, scale, signed: bool) -> np.ndarray:
    """Host-side twin of the graph's uint8 scaling (explain._maps.MapWriter.to_uint8): v / s onto 0..255
    (signed: -s..s onto 0..255 with 0 at 127.5), rounded half to even and clipped."""
    s = np.maximum(np.asarray(scale, np.float32), np.float32(1e-12))
    v = np.asarray(values, np.float32)
    v = v * (np.float32(127.5) / s) + np.float32(127.5) if signed else np.maximum(v, 0) * (np.float32(255.0) / s)
    return np.clip(np.round(v), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class MapKey:
    """One overlay map: its method, its layer (the tensor name, as the card's overlay_scales key it),
    whether it is signed, and its rows' class names (segmentation: the card's classes in channel order)."""

    method: str
    layer: str
    signed: bool

    @property
    def card_key(self) -> str:
        return f"{self.method}@{self.layer}"


class OverlayScales:
    """The per-class scale of each overlay map under the chosen mode (module docstring)."""

    def __init__(self, mode: str, maps: dict[str, MapKey], classes: list[str], card_scales: dict | None,
                 model_name: str, rows: str = "class"):
        """`classes`: the scales' rows by name; `rows` says what a row is, for `describe` ("class", or "class and
        level" for a detector's boxes explained at their own pyramid level, rows named "car@bifpn_p3")."""
        if mode not in SCALE_MODES:
            raise InputError(f"overlay_scale must be one of {list(SCALE_MODES)}, got {mode!r}")
        self.classes, self.maps, self.rows = list(classes), dict(maps), rows
        self.requested = mode
        self.mode = mode
        self.fixed: dict[str, np.ndarray] = {}
        self.running: dict[str, np.ndarray] = {}
        if mode == "card":
            card_scales = card_scales or {}
            missing, partial = [], {}
            for name, key in self.maps.items():
                entry = card_scales.get(key.card_key)
                if not isinstance(entry, dict) or not isinstance(entry.get("classes"), dict):
                    missing.append(key.card_key)
                    continue
                values = [entry["classes"].get(c) for c in self.classes]
                ok = [isinstance(v, (int, float)) and np.isfinite(v) and v > 0 for v in values]
                # a class the card has no value for (its map never reached above 0 on its own pixels in
                # validation) is shown by its own peak in each frame: 0 asks the graph for exactly that
                self.fixed[name] = np.array([v if k else 0.0 for v, k in zip(values, ok)], np.float32)
                if not all(ok):
                    partial[key.card_key] = [c for c, k in zip(self.classes, ok) if not k]
            if missing:
                self.mode, self.fixed = "running", {}
                log.warning("overlay_scale card: model %r's card has no overlay scale for %s; using running scales "
                            "(run `hsi-xai calibrate-overlays` on the model to add them)", model_name, missing)
            elif partial:
                log.info("overlay_scale card: model %r's card has no scale for %s: those classes are shown by "
                         "their own peak in each frame", model_name, partial)

    def scale(self, name: str) -> np.ndarray | None:
        """(rows,) float32 scale of a map now, or None in frame mode (the frame's own peak)."""
        if self.mode == "card":
            return self.fixed[name]
        if self.mode == "running":
            return self.running.get(name)
        return None

    def update(self, name: str, peaks: np.ndarray) -> np.ndarray:
        """Feed a frame's per-row peaks (running mode); returns the scale to use for this frame."""
        peaks = np.asarray(peaks, np.float32).reshape(-1)
        if self.mode != "running":
            return self.scale(name) if self.mode == "card" else peaks
        old = self.running.get(name)
        new = peaks.copy() if old is None else old + np.float32(RUNNING_RATE) * (peaks - old)
        # a class absent so far (peak 0) takes its first real peak at once
        if old is not None:
            new = np.where(old <= 0, peaks, new)
        self.running[name] = new.astype(np.float32)
        return self.running[name]

    def reset(self) -> None:
        """Forget the running scales (a new drive starts)."""
        self.running.clear()

    def describe(self) -> str:
        if self.mode == "card":
            return f"card (fixed per {self.rows}, from the model card)"
        if self.mode == "running":
            why = " (the card has no scales)" if self.requested == "card" else ""
            return f"running (per {self.rows}, rate {RUNNING_RATE} per frame){why}"
        return "frame (each frame's own peak: colours do not compare across frames)"


def legend_image(title: str, unit: str, colormap: str, signed: bool, scales: dict[str, float] | None,
                 mode: str, width: int = 420) -> np.ndarray:
    """A bgr8 legend: the colour bar with its end labels, what 1 means per class, and the scale mode."""
    font, fs, th = cv2.FONT_HERSHEY_SIMPLEX, 0.42, 1
    lines = [f"{title}: {unit}", f"scale: {mode}"]
    bar_h, pad, line_h = 18, 8, 16
    if scales:  # as many entries on a line as fit ("car@bifpn_p3: 1 = 0.000231" per class and level is long)
        line = ""
        for n, v in scales.items():
            entry = f"{n}: 1 = {v:.3g}" if v > 0 else f"{n}: 1 = its peak"
            joined = f"{line}   {entry}" if line else entry
            if line and cv2.getTextSize(joined, font, fs, th)[0][0] > width - 2 * pad:
                lines.append(line)
                joined = entry
            line = joined
        lines.append(line)
    height = pad + bar_h + 18 + line_h * len(lines) + pad
    img = np.full((height, width, 3), 255, np.uint8)
    x0, x1 = pad, width - pad
    ramp = np.linspace(0, 255, x1 - x0).round().astype(np.uint8)
    img[pad:pad + bar_h, x0:x1] = apply_colormap(np.tile(ramp, (bar_h, 1)), colormap)
    cv2.rectangle(img, (x0, pad), (x1 - 1, pad + bar_h - 1), (0, 0, 0), 1)
    ticks = [(-1.0, "-1"), (0.0, "0"), (1.0, "+1")] if signed else [(0.0, "0"), (1.0, "1 (or more)")]
    for value, text in ticks:
        pos = (value + 1) / 2 if signed else value
        x = int(round(x0 + pos * (x1 - x0 - 1)))
        cv2.line(img, (x, pad + bar_h), (x, pad + bar_h + 4), (0, 0, 0), 1)
        (tw, _), _ = cv2.getTextSize(text, font, fs, th)
        tx = min(max(x - tw // 2, 0), width - tw)
        cv2.putText(img, text, (tx, pad + bar_h + 16), font, fs, (0, 0, 0), th, cv2.LINE_AA)
    y = pad + bar_h + 18 + line_h - 4
    for line in lines:
        cv2.putText(img, line, (pad, y), font, fs, (0, 0, 0), th, cv2.LINE_AA)
        y += line_h
    return img
