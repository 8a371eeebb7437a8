"""Paper 000's band-count study: the 1-, 3- and 25-band (PN) U-Nets side by side.

    study = band_study(held_out_frames(profile), ["models/unet_bundled_1.onnx", "models/unet_bundled_3.onnx",
                                                  "models/unet_bundled_25pn.onnx"], out_dir="band_study")
    study.as_dict()      # JSON-ready: scores, weight correlations, matched channels, plot file names

What it measures, on generated drive frames with sun and shadow, each model fed through
its own card's front end (its bands, PN or not, scale and window: `FrontEnd` with
`card.frontend_config()`, then `card.model_input`, as the pipeline does):

1. Per-class accuracy and IoU (`metrics.confusion` / `metrics.scores`) over all pixels of
   the model's window, over sunlit pixels (direct-sun share >= 0.9) and over shaded ones
   (<= 0.1), the thresholds `training.segmentation.evaluate` uses for the cards' numbers
   (paper 000's table 1 gives per-class accuracy of the three models). The sun share is
   the frame's float `sun`; the cards' numbers used it quantised to 1/255, so a few
   pixels at the thresholds can fall on the other side.
2. The final layer: the 1x1 conv producing the logits, z_c = sum_k w_ck A_k + b_c, read
   from the ONNX initialisers (`final_layer_weights`, `final_layer_bias`); A is the
   penultimate block's output (card role "penultimate", `dec1`), non-negative (ReLU).
3. Correlation of the class weight vectors across models (`weight_correlation`). The
   channel k of one model has nothing to do with channel k of another (each model learnt
   its own channels from its own initialisation), so the channels are matched first:

   a. Run both models on the same frames and take the penultimate activations over the
      same pixels (the intersection of their windows), one vector of pixels per channel.
   b. Correlate every channel of model A with every channel of model B over those pixels
      (Pearson; a constant channel, e.g. a dead ReLU, correlates 0 with everything).
   c. Match channels one to one by the Hungarian algorithm
      (`scipy.optimize.linear_sum_assignment`) on -|corr|: the assignment maximising the
      summed absolute activation correlation. `perm[j]` is A's channel matched to B's
      channel j, so A's channels in B's order are `A[:, perm]`.
   d. For each class c, the Pearson correlation over the matched channels of the class's
      weight vectors, corr(W_A[c, perm], W_B[c, :]): near 1 when channels that fire on
      the same pixels contribute to the class alike in both models, near -1 when they
      contribute oppositely, near 0 when the two models use their similar features
      differently. With only 12 (bundled) or 32 (paper) channels such a correlation is
      noisy, so each comes with a permutation p-value (random one-to-one matchings,
      two-sided, `permutations` draws).
   The matched pairs with the highest |activation correlation| are the "most correlated
   penultimate channels" (`most_correlated_channels`), shown as images a|b
   (`channel_images`, paper 000's figures 5 and 6).

How this relates to what paper 000 did (section 5.2.1, figures 4 and 5; its text as
extracted here has no equations): the paper matched channels across models by "the
correlations between the weight vectors of each channel", i.e. channel k's vector of
class weights (w_1k .. w_5k, five numbers) in one model against the same in another
("channel 21 of the HSI model shows the highest correlation with channel 1 of the
1-channel model and channel 21 of the 3-channel model"), and showed the activations of
the three best-matched channels (figure 5); figure 4 plots the per-class weights of each
channel. For the second conv block (figure 6, 3x3 kernels, no class weights) it picked
"the three most significant [activations] that exhibit the greatest similarity", with no
stated measure. So the default here differs from the paper: channels are matched by their
activations (paper 000's figure 6 criterion, made quantitative), and the per-class weight
correlation is then a test of whether matched features play the same role, not the
criterion that matched them. The paper's criterion is available too (`match="weights"`:
Pearson over the classes of each channel's weight vector, Hungarian on -corr, signed);
`band_study` reports both, and how often the two matchings agree. Under the paper's
criterion the per-class weight correlations are inflated by construction (the channels
were picked for similar weights), so read them as a description, not as evidence.
The paper also shows the raw weights per channel (figure 4), which `plot_channel_weights`
draws with the channels aligned by the matching.

Runtime code: numpy, onnx, the runtime's engines (ONNX Runtime CPU by default, one
thread), scipy for the assignment, OpenCV for colour maps, matplotlib (Agg) for the
plots; no torch.
"""

from __future__ import annotations

import html as _html
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
from onnx import numpy_helper

from ..metrics import confusion, scores
from ..report_page import PLOT_FONT_PT as FONT
from ..model_card import LoadedModel, ModelCard, ModelError, load_model

#: Sun-share thresholds for "sunlit" and "shaded" pixels, as `training.segmentation.SUN/SHADE`
#: (not imported from there: that module needs torch).
SUN, SHADE = 0.9, 0.1
MATCHES = ("activations", "weights", "none")
HELD_OUT_SEEDS = (2002, 2004)  # test drives (cards' test split) with much shade at frame 30
FRAME_INDEX = 30


# --- the final layer ------------------------------------------------------------------------------

def _logits_name(card: ModelCard | str) -> str:
    return card if isinstance(card, str) else card.logits


def _head(model: onnx.ModelProto, logits: str):
    node = next((n for n in model.graph.node if logits in n.output), None)
    if node is None or node.op_type != "Conv":
        raise ModelError(f"the band study needs a final 1x1 Conv producing {logits!r}; "
                         f"found {node.op_type if node is not None else 'no node'}")
    return node


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray:
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in model.graph.node:  # a Constant node (some exporters emit these instead)
        if n.op_type == "Constant" and name in n.output:
            return numpy_helper.to_array(next(a.t for a in n.attribute if a.name == "value"))
    raise ModelError(f"{name!r} is not a constant of the model (neither an initialiser nor a Constant node)")


def final_layer_weights(model: onnx.ModelProto, card: ModelCard | str) -> np.ndarray:
    """(classes, channels) float32 weights of the 1x1 conv producing the card's logits.

    Row c is the logits channel c (the card's `ClassSpec.channel`), column k the channel k of
    the conv's input (the penultimate layer). `card` may also be the logits tensor name.
    """
    node = _head(model, _logits_name(card))
    w = _constant(model, node.input[1])
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    if w.ndim != 4 or w.shape[2:] != (1, 1) or group != 1:
        raise ModelError(f"the conv producing the logits is not an ungrouped 1x1 conv "
                         f"(weight {w.shape}, group {group})")
    return np.ascontiguousarray(w[:, :, 0, 0], dtype=np.float32)


def final_layer_bias(model: onnx.ModelProto, card: ModelCard | str) -> np.ndarray:
    """(classes,) float32 bias of that conv (zeros when it has none)."""
    node = _head(model, _logits_name(card))
    if len(node.input) > 2 and node.input[2]:
        return _constant(model, node.input[2]).astype(np.float32).ravel()
    return np.zeros(final_layer_weights(model, card).shape[0], np.float32)


def head_input(model: onnx.ModelProto, card: ModelCard) -> str:
    """The tensor the final 1x1 conv reads; checked to be the card's "penultimate" layer."""
    name = _head(model, card.logits).input[0]
    pen = card.layers.get("penultimate")
    if pen is not None and pen != name:
        raise ModelError(f"model {card.name!r}: the final conv reads {name!r}, but the card's penultimate layer is "
                         f"{pen!r}; the weights would not belong to those activations")
    return name


# --- penultimate activations ----------------------------------------------------------------------

def _with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {o.name for o in out.graph.output}
    wanted = [n for n in dict.fromkeys(names) if n not in present]
    if wanted:
        info = {v.name: v for v in onnx.shape_inference.infer_shapes(out).graph.value_info}
        produced = {o for n in out.graph.node for o in n.output}
        for name in wanted:
            if name not in produced:
                raise ModelError(f"tensor {name!r} is not computed by the model")
            out.graph.output.append(info.get(name) or onnx.helper.make_tensor_value_info(
                name, onnx.TensorProto.FLOAT, None))
    return out


def _as_loaded(model: LoadedModel | str | Path) -> LoadedModel:
    return model if isinstance(model, LoadedModel) else load_model(model)


def _frames_of(inputs) -> list[np.ndarray]:
    """Model inputs as a list of (1, bands, h, w): from (n, 1, b, h, w), (n, b, h, w), (1, b, h, w) or a list."""
    if isinstance(inputs, np.ndarray):
        if inputs.ndim == 5:
            return [inputs[i] for i in range(len(inputs))]
        if inputs.ndim == 4:
            return [inputs[i:i + 1] for i in range(len(inputs))]
        raise ValueError(f"model inputs must be (frames, [1,] bands, h, w), got {inputs.shape}")
    return [np.asarray(x).reshape(1, *np.asarray(x).shape[-3:]) for x in inputs]


class _Runner:
    """The model with its penultimate tensor as an extra output, on one engine."""

    def __init__(self, loaded: LoadedModel, backend: str = "ort-cpu", threads: int = 1):
        from ..runtime.engine import open_engine

        self.card = loaded.card
        model = onnx.load_model_from_string(loaded.onnx_bytes)
        self.penultimate = head_input(model, self.card)
        self.weights = final_layer_weights(model, self.card)
        self.bias = final_layer_bias(model, self.card)
        graph = _with_outputs(model, [self.penultimate])
        self.engine = open_engine(graph.SerializeToString(), backend, "fp32", threads=threads)

    def run(self, inputs) -> tuple[np.ndarray, np.ndarray]:
        """(logits (n, K, h, w), penultimate activations (n, C, h, w)), float32."""
        logits, acts = [], []
        for x in _frames_of(inputs):
            out = self.engine.run({self.card.input.tensor: x}, [self.card.logits, self.penultimate])
            logits.append(out[self.card.logits][0])
            acts.append(out[self.penultimate][0])
        return np.stack(logits).astype(np.float32), np.stack(acts).astype(np.float32)


def penultimate_activations(model: LoadedModel | str | Path, inputs, *, backend: str = "ort-cpu",
                            threads: int = 1, return_logits: bool = False):
    """(frames, channels, h, w) float32 activations of the tensor the final 1x1 conv reads
    (the card's "penultimate", `dec1`), exposed as an extra graph output; ORT CPU, one
    thread by default. `inputs`: model inputs, (frames, [1,] bands, h, w) or a list of
    (1, bands, h, w). With `return_logits`, (activations, logits)."""
    logits, acts = _Runner(_as_loaded(model), backend, threads).run(inputs)
    return (acts, logits) if return_logits else acts


# --- correlations and matching ---------------------------------------------------------------------

class ChannelPair(NamedTuple):
    a: int  # channel of model A
    b: int  # channel of model B
    corr: float  # their Pearson correlation (activations, or weight vectors with match="weights")


@dataclass(frozen=True)
class ChannelMatch:
    """One-to-one channel matching of model B's channels to model A's."""

    perm: np.ndarray  # (Cb,) int: A's channel matched to B's channel j; -1 where none (Cb > Ca)
    corr: np.ndarray  # (Cb,) the matched pairs' correlation (NaN where none)
    matrix: np.ndarray  # (Ca, Cb) the full correlation matrix the matching used

    def pairs(self) -> list[ChannelPair]:
        return [ChannelPair(int(a), int(b), float(self.corr[b])) for b, a in enumerate(self.perm) if a >= 0]


def _channels_by_samples(acts: np.ndarray) -> np.ndarray:
    """(frames, C, h, w) or (C, h, w) or (C, N) -> (C, N) float64."""
    a = np.asarray(acts, np.float64)
    if a.ndim == 4:
        return a.transpose(1, 0, 2, 3).reshape(a.shape[1], -1)
    if a.ndim in (2, 3):
        return a.reshape(a.shape[0], -1)
    raise ValueError(f"activations must be (frames, C, h, w), (C, h, w) or (C, N), got {a.shape}")


def pearson_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Ca, Cb) Pearson correlation between the rows of a (Ca, N) and b (Cb, N); a constant row gives 0."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"rows of different lengths: {a.shape} vs {b.shape}")
    za = a - a.mean(axis=1, keepdims=True)
    zb = b - b.mean(axis=1, keepdims=True)
    za[np.ptp(a, axis=1) == 0] = 0.0  # exactly constant rows: no rounding residue left to correlate
    zb[np.ptp(b, axis=1) == 0] = 0.0
    scale = np.outer(np.linalg.norm(za, axis=1), np.linalg.norm(zb, axis=1))
    r = np.divide(za @ zb.T, scale, out=np.zeros(scale.shape), where=scale > 0)
    return np.clip(r, -1.0, 1.0)


def activation_correlation(acts_a: np.ndarray, acts_b: np.ndarray) -> np.ndarray:
    """(Ca, Cb) correlation of every channel of A with every channel of B over the same pixels."""
    a, b = _channels_by_samples(acts_a), _channels_by_samples(acts_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"activations over different pixels: {a.shape[1]} vs {b.shape[1]} samples per channel")
    return pearson_matrix(a, b)


def channel_weight_correlation(weights_a: np.ndarray, weights_b: np.ndarray) -> np.ndarray:
    """(Ca, Cb) correlation, over the classes, of each channel's class-weight vector (paper 000's criterion)."""
    return pearson_matrix(np.asarray(weights_a).T, np.asarray(weights_b).T)


def match_by_correlation(matrix: np.ndarray, absolute: bool = True) -> ChannelMatch:
    """Hungarian one-to-one matching maximising the summed (absolute) correlation."""
    from scipy.optimize import linear_sum_assignment

    m = np.asarray(matrix, np.float64)
    ca, cb = m.shape
    rows, cols = linear_sum_assignment(-(np.abs(m) if absolute else m).T)  # rows: B, cols: A
    perm = np.full(cb, -1, np.int64)
    perm[rows] = cols
    corr = np.full(cb, np.nan)
    corr[rows] = m[cols, rows]
    return ChannelMatch(perm, corr, m)


def match_channels(acts_a: np.ndarray, acts_b: np.ndarray) -> ChannelMatch:
    """Match B's channels to A's by the |correlation| of their activations over the same pixels."""
    return match_by_correlation(activation_correlation(acts_a, acts_b), absolute=True)


def most_correlated_channels(acts_a: np.ndarray, acts_b: np.ndarray, k: int = 3,
                             match: ChannelMatch | None = None) -> list[ChannelPair]:
    """The k matched channel pairs (one-to-one, Hungarian) with the highest |activation correlation|."""
    match = match or match_channels(acts_a, acts_b)
    pairs = match.pairs()
    pairs.sort(key=lambda p: (-abs(p.corr), p.b))
    return pairs[:k]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(pearson_matrix(np.asarray(x)[None], np.asarray(y)[None])[0, 0])


def class_weight_correlation(weights_a: np.ndarray, weights_b: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """(classes,) corr over matched channels of W_A[c, perm] and W_B[c]; B channels with perm -1 left out."""
    perm = np.asarray(perm)
    keep = perm >= 0
    a, b = np.asarray(weights_a)[:, perm[keep]], np.asarray(weights_b)[:, keep]
    return np.array([_pearson(a[c], b[c]) for c in range(a.shape[0])])


def _permutation_p(weights_a, weights_b, perm, observed, draws: int, rng) -> np.ndarray:
    """Two-sided p-value per class of |r| under random one-to-one matchings."""
    keep = np.asarray(perm) >= 0
    b = np.asarray(weights_b, np.float64)[:, keep]
    ca = np.asarray(weights_a).shape[1]
    idx = np.stack([rng.permutation(ca)[:b.shape[1]] for _ in range(draws)])  # (draws, m)
    a = np.asarray(weights_a, np.float64)[:, idx]  # (K, draws, m)
    za = a - a.mean(-1, keepdims=True)
    zb = (b - b.mean(-1, keepdims=True))[:, None]
    den = np.linalg.norm(za, axis=-1) * np.linalg.norm(zb, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        null = np.where(den > 0, (za * zb).sum(-1) / den, 0.0)  # (K, draws)
    hits = (np.abs(null) >= np.abs(np.asarray(observed))[:, None] - 1e-12).sum(1)
    return (1.0 + hits) / (1.0 + draws)


def _pair_key(a: str, b: str) -> str:
    return f"{a}|{b}"


def weight_correlation(models: Mapping[str, np.ndarray], activations: Mapping[str, np.ndarray] | None = None, *,
                       match: str = "activations", class_names: Sequence[str] | None = None,
                       permutations: int = 1000, seed: int = 0) -> dict:
    """Per pair of models and per class, the correlation of the class weight vectors, channels matched.

    models: name -> (classes, channels) final-layer weights (`final_layer_weights`), in the
    order the pairs are formed (pairs (a, b) with a before b). activations: name ->
    penultimate activations over the same frames and pixels for every model (needed for
    match="activations"). match: "activations" (default; Hungarian on -|activation corr|),
    "weights" (paper 000's: Hungarian on -corr of the channels' class-weight vectors) or
    "none" (channel k with channel k; only meaningful for models sharing an initialisation).

    Returns {"match", "classes", "models", "pairs": {"a|b": {"a", "b", "per_class": {class: r},
    "p_value": {class: p}, "all": r over all classes' weights together, "mean": mean of
    per_class, "perm": [A channel per B channel], "match_corr": [corr of each matched pair],
    "channel_weight_corr": [corr of each matched pair's class-weight vectors]}}}.
    """
    if match not in MATCHES:
        raise ValueError(f"match {match!r} is not one of {MATCHES}")
    names = list(models)
    k = np.asarray(models[names[0]]).shape[0]
    classes = list(class_names) if class_names is not None else [str(c) for c in range(k)]
    if any(np.asarray(w).shape[0] != k for w in models.values()):
        raise ValueError("the models have different numbers of classes")
    if match == "activations" and (activations is None or any(n not in activations for n in names)):
        raise ValueError("match='activations' needs every model's penultimate activations")
    rng = np.random.default_rng(seed)
    pairs = {}
    for a, b in itertools.combinations(names, 2):
        wa, wb = np.asarray(models[a], np.float64), np.asarray(models[b], np.float64)
        if match == "activations":
            m = match_channels(activations[a], activations[b])
        elif match == "weights":
            m = match_by_correlation(channel_weight_correlation(wa, wb), absolute=False)
        else:
            if wa.shape != wb.shape:
                raise ValueError(f"match='none' needs equal channel counts: {wa.shape} vs {wb.shape}")
            eye = np.arange(wa.shape[1])
            mat = np.eye(wa.shape[1])
            m = ChannelMatch(eye, np.ones(wa.shape[1]), mat)
        r = class_weight_correlation(wa, wb, m.perm)
        keep = m.perm >= 0
        p = _permutation_p(wa, wb, m.perm, r, permutations, rng) if permutations else np.full(k, np.nan)
        cw = channel_weight_correlation(wa, wb)
        pairs[_pair_key(a, b)] = {
            "a": a, "b": b,
            "per_class": {c: float(v) for c, v in zip(classes, r)},
            "p_value": {c: float(v) for c, v in zip(classes, p)},
            "all": _pearson(wa[:, m.perm[keep]].ravel(), wb[:, keep].ravel()),
            "mean": float(np.mean(r)),
            "perm": [int(v) for v in m.perm],
            "match_corr": [float(v) for v in m.corr],
            "channel_weight_corr": [float(cw[m.perm[j], j]) if m.perm[j] >= 0 else float("nan")
                                    for j in range(len(m.perm))],
        }
    return {"match": match, "classes": classes, "models": names, "permutations": permutations, "pairs": pairs}


# --- channel images ----------------------------------------------------------------------------------

def _colour(channel: np.ndarray, colormap: int, percentile: float) -> np.ndarray:
    import cv2

    lo = float(channel.min())
    hi = float(np.percentile(channel, percentile))
    if hi <= lo:
        hi = float(channel.max())
    scaled = np.zeros(channel.shape, np.uint8) if hi <= lo else \
        np.clip((channel - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(scaled, colormap)[..., ::-1]  # BGR -> RGB


def channel_images(acts_a: np.ndarray, acts_b: np.ndarray, pairs: Sequence[ChannelPair | tuple], *,
                   frame: int = 0, colormap: str = "viridis", gap: int = 4, percentile: float = 99.5
                   ) -> list[np.ndarray]:
    """Per pair, an (h, 2w + gap, 3) uint8 RGB image: A's channel | B's channel, on `frame`.

    Each half is colour-mapped on its own scale, from its minimum (0 for ReLU outputs) to
    its `percentile` (a few bright pixels do not wash out the rest); the gap is white.
    """
    import cv2

    cmap = getattr(cv2, f"COLORMAP_{colormap.upper()}", None)
    if cmap is None:
        raise ValueError(f"unknown colormap {colormap!r}: OpenCV has no COLORMAP_{colormap.upper()}")
    a, b = np.asarray(acts_a), np.asarray(acts_b)
    a = a[frame] if a.ndim == 4 else a
    b = b[frame] if b.ndim == 4 else b
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"activation maps of different sizes: {a.shape[1:]} vs {b.shape[1:]}")
    h, w = a.shape[1:]
    out = []
    for p in pairs:
        ca, cb = int(p[0]), int(p[1])
        img = np.full((h, 2 * w + gap, 3), 255, np.uint8)
        img[:, :w] = _colour(a[ca], cmap, percentile)
        img[:, w + gap:] = _colour(b[cb], cmap, percentile)
        out.append(img)
    return out


# --- frames --------------------------------------------------------------------------------------------

@dataclass
class StudyFrame:
    """A generated drive frame with the dark/white references of its drive."""

    frame: object  # scenes.drive.DriveFrame
    dark: np.ndarray
    white: np.ndarray
    seed: int | None = None
    index: int | None = None


def held_out_frames(profile=None, seeds: Sequence[int] = HELD_OUT_SEEDS, index: int = FRAME_INDEX
                    ) -> list[StudyFrame]:
    """Frame `index` of each generated drive in `seeds` (default: test drives with sun and shade), with references."""
    from ..scenes.drive import DriveGenerator
    from ..sensor.calibration import load_profile

    if profile is None or isinstance(profile, str):
        profile = load_profile(profile or "hsi-drive")
    out = []
    for s in seeds:
        gen = DriveGenerator(profile, seed=int(s), render_cameras=False)
        dark, white = gen.references()
        out.append(StudyFrame(gen.frame(int(index)), dark, white, int(s), int(index)))
    return out


def _study_frames(frames, references, profile) -> list[StudyFrame]:
    items = list(frames)
    refs = list(references) if references is not None else None
    if refs is not None and len(refs) != len(items):
        raise ValueError(f"{len(refs)} references for {len(items)} frames")
    out = []
    for i, f in enumerate(items):
        if isinstance(f, StudyFrame):
            out.append(f)
        elif isinstance(f, Mapping):
            out.append(StudyFrame(f["frame"], f["dark"], f["white"], f.get("seed"), f.get("index")))
        elif isinstance(f, tuple) and len(f) == 2 and all(isinstance(v, (int, np.integer)) for v in f):
            out.extend(held_out_frames(profile, (int(f[0]),), int(f[1])))
        elif isinstance(f, tuple) and len(f) == 3:
            out.append(StudyFrame(*f))
        elif refs is not None:
            out.append(StudyFrame(f, *refs[i]))
        else:
            raise ValueError("a drive frame needs its drive's dark and white references: pass "
                             "{'frame', 'dark', 'white'} dicts, (frame, dark, white) tuples, (seed, index) pairs, "
                             "or references=[(dark, white), ...]")
    return out


# --- the study -----------------------------------------------------------------------------------------

def _window(card: ModelCard) -> tuple[int, int, int, int]:
    i = card.input
    return i.crop_top, i.crop_left, i.crop_top + i.height, i.crop_left + i.width


@dataclass
class BandStudy:
    models: list[str]
    classes: list[str]
    inputs: dict[str, dict]  # name -> file, bands_nm, normalise, scale, penultimate channels
    frames: list[dict]  # seed, index, sunlit and shaded pixel shares of each frame
    scores: dict[str, dict]  # name -> {"all", "sun", "shadow"}: metrics.scores output each
    weights: dict[str, np.ndarray]  # name -> (classes, channels)
    bias: dict[str, np.ndarray]  # name -> (classes,)
    correlation: dict  # weight_correlation(match="activations")
    paper_correlation: dict  # weight_correlation(match="weights"): paper 000's channel criterion
    agreement: dict[str, float]  # pair -> share of B channels both criteria match to the same A channel
    top_pairs: dict[str, list[ChannelPair]]  # pair -> most correlated matched channels
    window: tuple[int, int, int, int]  # (top, left, bottom, right) in cube pixels: the pixels correlated
    seconds: float = 0.0
    plots: dict[str, str] = field(default_factory=dict)  # plot -> file name (in out_dir)
    predictions: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # name -> (n, h, w) label ids
    activations: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # name -> (n, C, h, w), window
    images: dict[str, list[np.ndarray]] = field(default_factory=dict, repr=False)  # pair -> a|b images

    def as_dict(self) -> dict:
        d = {"models": self.models, "classes": self.classes, "inputs": self.inputs, "frames": self.frames,
             "window": list(self.window), "sun_threshold": SUN, "shade_threshold": SHADE,
             "scores": self.scores,
             "weights": {n: w.tolist() for n, w in self.weights.items()},
             "bias": {n: b.tolist() for n, b in self.bias.items()},
             "weight_correlation": self.correlation, "paper_weight_correlation": self.paper_correlation,
             "matching_agreement": self.agreement,
             "top_pairs": {k: [p._asdict() for p in v] for k, v in self.top_pairs.items()},
             "seconds": self.seconds, "plots": dict(self.plots)}
        if self.plots:
            d["html"] = self.html()
        return _finite(d)

    def table(self, metric: str = "accuracy") -> str:
        """Markdown: per class `metric` (%) per model over all / sunlit / shaded pixels."""
        lines = ["| model | pixels | " + " | ".join(self.classes) + " | mean |",
                 "| --- | --- |" + " --- |" * (len(self.classes) + 1)]
        mean = "mean_accuracy" if metric == "accuracy" else "miou"
        for n in self.models:
            for part in ("all", "sun", "shadow"):
                s = self.scores[n][part]
                cells = [_pct(s[metric][c]) for c in self.classes]
                lines.append(f"| {n} | {part} | " + " | ".join(cells) + f" | {_pct(s[mean])} |")
        return "\n".join(lines)

    def correlation_table(self) -> str:
        """Markdown: per pair and class, weight correlation after activation matching (p-value)."""
        lines = ["| pair | " + " | ".join(self.classes) + " | all |", "| --- |" + " --- |" * (len(self.classes) + 1)]
        for key, p in self.correlation["pairs"].items():
            cells = [f"{p['per_class'][c]:+.2f} (p {p['p_value'][c]:.2f})" for c in self.classes]
            lines.append(f"| {p['a']} vs {p['b']} | " + " | ".join(cells) + f" | {p['all']:+.2f} |")
        return "\n".join(lines)

    def html(self) -> str:
        """An HTML fragment: tables and the plots (image names relative to the plots' folder)."""
        e = _html.escape

        def table(header, rows):
            return ("<div class='scroll'><table border=1><tr>"
                    + "".join(f"<th>{e(h)}</th>" for h in header)
                    + "</tr>" + "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>" for r in rows)
                    + "</table></div>")

        fed = ", ".join(e(f"{n}: {len(i['bands_nm'])} bands" + (" PN" if i["normalise"] == "pn" else ""))
                        for n, i in self.inputs.items())
        parts = [f"<p>{len(self.frames)} generated frames; each model fed through its own card's front end "
                 f"({fed}). "
                 f"Sunlit: direct-sun share &ge; {SUN}; shaded: &le; {SHADE}.</p>",
                 "<h3>Per-class accuracy (%)</h3>",
                 "<p>Each cell: accuracy, and over how many pixels of the class (a small count is a small "
                 "sample).</p>",
                 table(["model", "pixels", *self.classes, "mean"],
                       [[n, part, *[f"{_pct(self.scores[n][part]['accuracy'][c])} of "
                                    f"{self.scores[n][part]['pixels'][c]:,} px" for c in self.classes],
                         _pct(self.scores[n][part]["mean_accuracy"])]
                        for n in self.models for part in ("all", "sun", "shadow")])]
        if "accuracy" in self.plots:
            parts.append(_plot_html(self.plots["accuracy"]))
        parts.append("<h3>Final-layer weight correlation</h3><p>Channels matched one to one by the correlation of "
                     "their penultimate activations over the same pixels (Hungarian on -|corr|), then per class the "
                     "correlation of the class's weights over the matched channels (permutation p-value). Paper 000 "
                     "matched channels by their class-weight vectors instead (second table; inflated by "
                     "construction).</p>")
        for corr in (self.correlation, self.paper_correlation):
            parts.append(table(["pair", *self.classes, "all"],
                               [[f"{p['a']} vs {p['b']}",
                                 *[f"{p['per_class'][c]:+.2f} (p {p['p_value'][c]:.2f})" for c in self.classes],
                                 f"{p['all']:+.2f}"] for p in corr["pairs"].values()]))
        for key in ("weight_correlation", "channel_weights"):
            if key in self.plots:
                parts.append(_plot_html(self.plots[key]))
        parts.append("<h3>Most correlated penultimate channels (a | b)</h3>")
        parts.append(table(["pair", "channels (a, b): activation corr"],
                           [[k.replace("|", " vs "), ", ".join(f"({p.a}, {p.b}): {p.corr:+.2f}" for p in v)]
                            for k, v in self.top_pairs.items()]))
        if "channels" in self.plots:
            parts.append(_plot_html(self.plots["channels"]))
        return "\n".join(parts)


def _plot_html(name: str) -> str:
    """A plot at its natural size (its text as large as the page's), scrolling in its box on a narrow screen."""
    e = _html.escape
    return f"<div class='scroll'><a href='{e(name)}'><img class='plot' src='{e(name)}' alt='{e(name)}'></a></div>"


def _pct(v) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def _finite(o):
    """NaN/inf -> None, recursively (JSON has no NaN)."""
    if isinstance(o, float):
        return o if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def band_study(frames, model_paths: Sequence[str | Path], *, names: Sequence[str] | None = None, profile=None,
               references: Sequence[tuple[np.ndarray, np.ndarray]] | None = None, top_k: int = 3,
               image_frame: int = 0, permutations: int = 1000, backend: str = "ort-cpu", threads: int = 1,
               out_dir: str | Path | None = None, seed: int = 0) -> BandStudy:
    """Run the models on the same generated frames and compare them (see the module docstring).

    frames: `StudyFrame`s (`held_out_frames`), dicts with "frame", "dark", "white" (as the
    report builds), (frame, dark, white) tuples, (seed, index) pairs (generated here), or
    `DriveFrame`s with `references=[(dark, white), ...]`. model_paths: ONNX files with cards
    beside them; names default to the cards' names. profile: sensor profile (default
    hsi-drive). With `out_dir`, the plots are written there (`write_plots`).
    """
    from ..sensor.calibration import load_profile
    from ..sensor.frontend import FrontEnd

    t0 = time.perf_counter()
    if profile is None or isinstance(profile, str):
        profile = load_profile(profile or "hsi-drive")
    items = _study_frames(frames, references, profile)
    if not items:
        raise ValueError("the band study needs at least one frame")
    if len(model_paths) < 2:
        raise ValueError("the band study compares at least two models")
    loaded = [load_model(p, profile=profile) for p in model_paths]
    names = list(names) if names is not None else [m.card.name for m in loaded]
    if len(set(names)) != len(names) or len(names) != len(loaded):
        raise ValueError(f"model names must be unique, one per model: {names}")
    classes = [c.name for c in sorted(loaded[0].card.classes, key=lambda c: c.channel)]
    for m in loaded[1:]:
        if [c.name for c in sorted(m.card.classes, key=lambda c: c.channel)] != classes:
            raise ModelError(f"model {m.card.name!r} has classes {[c.name for c in m.card.classes]}, not {classes}")
    windows = [_window(m.card) for m in loaded]
    common = (max(w[0] for w in windows), max(w[1] for w in windows), min(w[2] for w in windows),
              min(w[3] for w in windows))
    if common[2] <= common[0] or common[3] <= common[1]:
        raise ModelError(f"the models' windows {windows} do not overlap")

    num_labels = max(max(c.id for c in m.card.classes) for m in loaded) + 1
    num_labels = max(num_labels, max(int(f.frame.labels.max()) for f in items) + 1)
    ids = {c.id: c.name for c in loaded[0].card.classes}
    scores_, weights, bias, acts, preds, inputs = {}, {}, {}, {}, {}, {}
    for name, m, (top, left, bottom, right) in zip(names, loaded, windows):
        runner = _Runner(m, backend, threads)
        weights[name], bias[name] = runner.weights, runner.bias
        card = m.card
        cms = {"all": 0, "sun": 0, "shadow": 0}
        lut = card.label_ids()
        a_frames, p_frames = [], []
        for f in items:
            cube = FrontEnd(profile, f.dark, f.white, card.frontend_config()).process(f.frame.raw).cube.data
            logits, a = runner.run(card.model_input(cube))
            pred = lut[logits[0].argmax(0)]
            truth = f.frame.labels[top:bottom, left:right]
            sun = f.frame.sun[top:bottom, left:right]
            cms["all"] = cms["all"] + confusion(truth, pred, num_labels)
            cms["sun"] = cms["sun"] + confusion(truth, pred, num_labels, sun >= SUN)
            cms["shadow"] = cms["shadow"] + confusion(truth, pred, num_labels, sun <= SHADE)
            p_frames.append(pred)
            a_frames.append(a[0, :, common[0] - top:common[2] - top, common[1] - left:common[3] - left])
        scores_[name] = {k: scores(np.asarray(v).reshape(num_labels, num_labels), ids) for k, v in cms.items()}
        acts[name] = np.stack(a_frames)
        preds[name] = np.stack(p_frames)
        i = card.input
        inputs[name] = {"file": str(m.path), "bands_nm": list(i.bands_nm), "normalise": i.normalise,
                        "scale": i.scale, "penultimate": runner.penultimate,
                        "channels": int(runner.weights.shape[1])}

    corr = weight_correlation(weights, acts, match="activations", class_names=classes,
                              permutations=permutations, seed=seed)
    paper = weight_correlation(weights, match="weights", class_names=classes, permutations=permutations, seed=seed)
    top_pairs, images, agreement = {}, {}, {}
    for key, p in corr["pairs"].items():
        a, b = p["a"], p["b"]
        m = ChannelMatch(np.array(p["perm"]), np.array(p["match_corr"]), np.empty((0, 0)))
        top_pairs[key] = most_correlated_channels(acts[a], acts[b], top_k, match=m)
        images[key] = channel_images(acts[a], acts[b], top_pairs[key], frame=image_frame)
        agreement[key] = float(np.mean(np.array(p["perm"]) == np.array(paper["pairs"][key]["perm"])))
    frames_meta = []
    for f in items:
        sun = f.frame.sun[common[0]:common[2], common[1]:common[3]]
        index = f.index if f.index is not None else getattr(f.frame, "index", None)
        frames_meta.append({"seed": f.seed, "index": index,
                            "sunlit_share": float((sun >= SUN).mean()), "shaded_share": float((sun <= SHADE).mean())})
    study = BandStudy(models=names, classes=classes, inputs=inputs, frames=frames_meta, scores=scores_,
                      weights=weights, bias=bias, correlation=corr, paper_correlation=paper, agreement=agreement,
                      top_pairs=top_pairs, window=common, predictions=preds, activations=acts, images=images)
    if out_dir is not None:
        study.plots = write_plots(study, out_dir)
    study.seconds = time.perf_counter() - t0
    return study


# --- plots ----------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


SMALL_SAMPLE_PX = 500  # a class region smaller than this: its bar carries its pixel count


def plot_class_accuracy(study: BandStudy, path: str | Path, metric: str = "accuracy") -> Path:
    """Bars per class and model, one panel each for all, sunlit and shaded pixels."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), dpi=100, sharey=True)
    xs = np.arange(len(study.classes))
    width = 0.8 / len(study.models)
    for ax, part, title in zip(axes, ("all", "sun", "shadow"), ("all pixels", "sunlit", "shaded")):
        for i, n in enumerate(study.models):
            v = [study.scores[n][part][metric][c] for c in study.classes]
            at = xs + (i - (len(study.models) - 1) / 2) * width
            ax.bar(at, [np.nan if x is None else 100 * x for x in v], width, label=n)
            for x, value, c in zip(at, v, study.classes):  # a bar over few pixels says how few
                px = study.scores[n][part]["pixels"][c]
                if value is not None and px < SMALL_SAMPLE_PX:
                    ax.text(x, 100 * value + 2, f"{px} px", rotation=90, ha="center", va="bottom", fontsize=FONT)
        ax.set_xticks(xs, study.classes, fontsize=FONT, rotation=35, ha="right")
        ax.tick_params(axis="y", labelsize=FONT)
        ax.set_title(title, fontsize=FONT)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", lw=0.3)
    axes[0].set_ylabel(f"{metric} (%)", fontsize=FONT)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=FONT, loc="center left", bbox_to_anchor=(0.86, 0.5), frameon=False)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, bbox_inches="tight")  # legends outside the axes stay in the file
    plt.close(fig)
    return Path(path)


def plot_weight_correlation(correlation: dict, path: str | Path) -> Path:
    """Heatmap: rows the model pairs, columns the classes (and all together), the weight correlation."""
    plt = _pyplot()
    pairs = list(correlation["pairs"].values())
    cols = [*correlation["classes"], "all"]
    m = np.array([[p["per_class"][c] for c in correlation["classes"]] + [p["all"]] for p in pairs], np.float64)
    fig, ax = plt.subplots(figsize=(1.4 * len(cols) + 4.0, 0.6 * len(pairs) + 2.2), dpi=100)
    im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=FONT)
    ax.set_xticks(range(len(cols)), cols, fontsize=FONT, rotation=35, ha="right")
    ax.set_yticks(range(len(pairs)), [f"{p['a']} vs {p['b']}" for p in pairs], fontsize=FONT)
    ax.set_title(f"final-layer weight correlation (channels matched by {correlation['match']})", fontsize=FONT)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")  # legends outside the axes stay in the file
    plt.close(fig)
    return Path(path)


def plot_channel_weights(study: BandStudy, path: str | Path, reference: str | None = None) -> Path:
    """Paper 000's figure 4: each model's class weights per channel, channels aligned to `reference`'s
    (default the last model) by the activation matching; one dot per class."""
    plt = _pyplot()
    ref = reference or study.models[-1]
    fig, axes = plt.subplots(len(study.models), 1, figsize=(13, 2.4 * len(study.models) + 0.8), dpi=100)
    c_ref = study.weights[ref].shape[1]
    colours = plt.get_cmap("tab10")
    for ax, n in zip(np.atleast_1d(axes), study.models):
        if n == ref:
            order = np.arange(c_ref)
        else:
            key = _pair_key(n, ref) if _pair_key(n, ref) in study.correlation["pairs"] else _pair_key(ref, n)
            perm = np.array(study.correlation["pairs"][key]["perm"])
            if key.startswith(n + "|"):  # perm: n's channel for each ref channel
                order = perm
            else:  # perm: ref's channel for each of n's channels -> invert
                order = np.full(c_ref, -1)
                order[perm[perm >= 0]] = np.nonzero(perm >= 0)[0]
        w = study.weights[n]
        for c, cls in enumerate(study.classes):
            xs = np.nonzero(order >= 0)[0]
            ax.scatter(xs, w[c, order[xs]], s=14, color=colours(c), label=cls)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_ylabel(n, fontsize=FONT)
        labels = [str(o) if o >= 0 else "-" for o in order]
        ax.set_xticks(range(c_ref), labels, fontsize=FONT)
        ax.set_xlim(-0.5, c_ref - 0.5)
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=FONT, loc="center left", bbox_to_anchor=(0.86, 0.5), frameon=False)
    np.atleast_1d(axes)[-1].set_xlabel(f"{ref}'s channels in order; ticks: each model's channel matched to it",
                                       fontsize=FONT)
    fig.suptitle("final-layer weights per channel and class", fontsize=FONT, x=0.3)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, bbox_inches="tight")  # legends outside the axes stay in the file
    plt.close(fig)
    return Path(path)


def plot_channel_images(study: BandStudy, path: str | Path) -> Path:
    """Grid: one row per model pair, its most correlated channel pairs side by side (a | b)."""
    plt = _pyplot()
    keys = [k for k, v in study.images.items() if v]
    cols = max((len(study.images[k]) for k in keys), default=1)
    fig, axes = plt.subplots(max(len(keys), 1), cols, figsize=(5.0 * cols, 1.8 * max(len(keys), 1) + 0.6),
                             dpi=100, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, k in enumerate(keys):
        a, b = k.split("|", 1)
        for j, (img, p) in enumerate(zip(study.images[k], study.top_pairs[k])):
            axes[i, j].imshow(img)
            axes[i, j].set_title(f"{a} ch {p.a} | {b} ch {p.b}  r={p.corr:+.2f}", fontsize=FONT)
    fig.suptitle("most correlated penultimate channels (each half on its own colour scale)", fontsize=FONT)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")  # legends outside the axes stay in the file
    plt.close(fig)
    return Path(path)


def write_plots(study: BandStudy, out_dir: str | Path, prefix: str = "band_study_") -> dict[str, str]:
    """All four plots as PNGs in `out_dir`; returns plot -> file name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"accuracy": f"{prefix}accuracy.png", "weight_correlation": f"{prefix}weight_correlation.png",
             "channel_weights": f"{prefix}channel_weights.png", "channels": f"{prefix}channels.png"}
    plot_class_accuracy(study, out / files["accuracy"])
    plot_weight_correlation(study.correlation, out / files["weight_correlation"])
    plot_channel_weights(study, out / files["channel_weights"])
    plot_channel_images(study, out / files["channels"])
    return files
