"""Insertion and deletion (Petsiuk et al. 2018, as paper 001 uses them) for segmentation classes and boxes.

Given an input x, a saliency map S at the input's (H, W) and a score of the model's
outputs, the pixels are ranked by decreasing S (ties by pixel index) and changed in
`steps` equal chunks (after step i the first floor(i * P / steps) of the P pixels, all
channels):

* deletion: x with the changed pixels replaced by a baseline; default zeros (paper 001:
  "removes pixels ... set to zero").
* insertion: the baseline with the changed pixels taken from x; default a Gaussian blur
  of x, sigma 5 px, per channel (paper 001: "clear pixels are successively added to a
  blurred version"; Petsiuk's sigma).

All steps + 1 inputs go through the model in ONE engine call, the model re-batched to
steps + 1 (see _batching.py; a model with a hard-coded batch is looped instead). The
curve is the score after each step against the changed fraction i / steps (exactly,
the fraction of pixels changed), and the AUC is the trapezoid rule over [0, 1] of the
score divided by the score of the unperturbed input (deletion's first point,
insertion's last): 1 for a curve that stays at the original score. `normalise=False`
gives the raw AUC of Petsiuk et al. (NaN when normalising by a score of 0.)

Region perturbation (Samek et al. 2017, paper 003's "area over the perturbation curve"): the input's
pixels are cut into a grid of patch x patch squares (edge squares smaller), ranked by the map's sum
over each (most relevant first, ties by grid order), and at step k the first k squares are replaced,
all channels, by uniform noise over the input's value range (fixed seed; Samek's choice) or by a
constant. All `regions` + 1 rows go through the model in one call, like the curves above.
AOPC = mean over k = 0..regions of (score(x) - score(x_k)), divided by score(x) unless
`normalise=False`: higher is more faithful.

Scores (`score(outputs) -> (N,)`, one per row):

* `segmentation_score(logits, c, region, kind)`: the mean over the region R (the pixels
  predicted as class c on the unperturbed input) of class c's softmax probability
  (kind="prob", default, the probability Petsiuk and paper 001 track) or logit ("logit").
* `detection_score(pair, classes)`: the box's class score at its anchor, `scores`
  (N, A, C) at (anchor, class) = divmod(pair, C) from the detector's `det_pairs`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from ._batching import BatchedModel

Score = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class PerturbationConfig:
    steps: int = 16
    deletion_baseline: str | float = "zeros"  # "zeros", "blur" or a constant value
    insertion_baseline: str | float = "blur"
    blur_sigma: float = 5.0  # px, for "blur"
    normalise: bool = True  # AUC of score / score(unperturbed input)
    layout: str = "NCHW"  # where the pixel axes are in the model input ("NHWC": detector stacks)


@dataclass
class Curve:
    kind: str  # "deletion", "insertion" or "region" (region perturbation: auc holds the AOPC)
    fractions: np.ndarray  # (steps + 1,) fraction of pixels changed
    scores: np.ndarray  # (steps + 1,) raw scores
    reference: float  # score of the unperturbed input
    auc: float

    def as_dict(self) -> dict:
        return {"kind": self.kind, "fractions": self.fractions.tolist(), "scores": self.scores.tolist(),
                "reference": self.reference, "auc": self.auc}


def _pixel_axes(layout: str) -> tuple[int, int]:
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be NCHW or NHWC, got {layout!r}")
    return (2, 3) if layout == "NCHW" else (1, 2)


def baseline_image(x: np.ndarray, baseline: str | float = "zeros", sigma: float = 5.0,
                   layout: str = "NCHW") -> np.ndarray:
    """The all-pixels-removed input: zeros, a constant, or x Gaussian-blurred per channel."""
    x = np.asarray(x, np.float32)
    if baseline == "zeros":
        return np.zeros_like(x)
    if baseline == "blur":
        import cv2

        ya, xa = _pixel_axes(layout)
        planes = np.moveaxis(x, (ya, xa), (-2, -1))
        flat = planes.reshape(-1, *planes.shape[-2:])
        blurred = np.stack([cv2.GaussianBlur(p, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) for p in flat])
        return np.moveaxis(blurred.reshape(planes.shape), (-2, -1), (ya, xa)).astype(np.float32)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return np.full_like(x, np.float32(baseline))
    raise ValueError(f"baseline must be 'zeros', 'blur' or a number, got {baseline!r}")


def perturbed_batch(x: np.ndarray, saliency: np.ndarray, baseline: np.ndarray, steps: int, kind: str,
                    layout: str = "NCHW") -> tuple[np.ndarray, np.ndarray]:
    """(steps + 1, ...) inputs of a deletion or insertion curve, and the fraction changed in each."""
    if kind not in ("deletion", "insertion"):
        raise ValueError(f"kind must be deletion or insertion, got {kind!r}")
    x = np.asarray(x, np.float32)
    ya, xa = _pixel_axes(layout)
    hw = (x.shape[ya], x.shape[xa])
    s = np.squeeze(np.asarray(saliency, np.float64))
    if x.shape[0] != 1 or s.shape != hw:
        raise ValueError(f"need one input (1, ...) and a saliency map at its (H, W) {hw}; got x {x.shape}, "
                         f"map {np.shape(saliency)} (use the maps resized to the input, `..._full`)")
    if not np.isfinite(s).all():
        raise ValueError("the saliency map has NaN or inf")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    p = s.size
    rank = np.empty(p, np.int64)
    rank[np.argsort(-s.ravel(), kind="stable")] = np.arange(p)
    counts = np.arange(steps + 1) * p // steps
    changed = rank.reshape(hw)[None] < counts[:, None, None]  # (N, H, W)
    changed = np.expand_dims(changed, 1 if layout == "NCHW" else 3)
    out = np.where(changed, baseline, x) if kind == "deletion" else np.where(changed, x, baseline)
    return out.astype(np.float32), counts / p


def region_batch(x: np.ndarray, saliency: np.ndarray, patch: int, regions: int, replacement: str | float = "uniform",
                 seed: int = 0, layout: str = "NCHW") -> tuple[np.ndarray, np.ndarray]:
    """(regions + 1, ...) inputs of a region-perturbation curve (row k: the k most relevant squares replaced) and
    the fraction of pixels replaced in each row."""
    x = np.asarray(x, np.float32)
    ya, xa = _pixel_axes(layout)
    h, w = x.shape[ya], x.shape[xa]
    s = np.squeeze(np.asarray(saliency, np.float64))
    if x.shape[0] != 1 or s.shape != (h, w):
        raise ValueError(f"need one input (1, ...) and a saliency map at its (H, W) ({h}, {w}); got x {x.shape}, "
                         f"map {np.shape(saliency)}")
    if not np.isfinite(s).all():
        raise ValueError("the saliency map has NaN or inf")
    if patch < 1 or regions < 1:
        raise ValueError(f"patch and regions must be >= 1, got {patch} and {regions}")
    gh, gw = -(-h // patch), -(-w // patch)
    padded = np.zeros((gh * patch, gw * patch))
    padded[:h, :w] = s
    sums = padded.reshape(gh, patch, gw, patch).sum(axis=(1, 3)).ravel()
    order = np.argsort(-sums, kind="stable")[:regions]
    if replacement == "uniform":
        rng = np.random.default_rng(seed)
        fill = rng.uniform(float(x.min()), float(x.max()), x.shape).astype(np.float32)
    elif isinstance(replacement, (int, float)) and not isinstance(replacement, bool):
        fill = np.full_like(x, np.float32(replacement))
    else:
        raise ValueError(f"replacement must be 'uniform' or a number, got {replacement!r}")
    rank = np.full(gh * gw, regions, np.int64)  # squares beyond `regions` are never replaced
    rank[order] = np.arange(order.size)
    square = np.repeat(np.repeat(rank.reshape(gh, gw), patch, 0), patch, 1)[:h, :w]
    changed = square[None] < np.arange(regions + 1)[:, None, None]  # (N, H, W)
    fractions = changed.reshape(regions + 1, -1).mean(axis=1)
    changed = np.expand_dims(changed, 1 if layout == "NCHW" else 3)
    return np.where(changed, fill, x).astype(np.float32), fractions


def region_perturbation(model, x: np.ndarray, saliency: np.ndarray, score: Score, patch: int = 9,
                        replacement: str | float = "uniform", seed: int = 0, normalise: bool = True,
                        layout: str = "NCHW", input_name: str | None = None, backend: str = "ort-cpu",
                        threads: int = 0, regions: int = 16) -> Curve:
    """Samek's most-relevant-first region perturbation: Curve(kind "region", fractions replaced, scores, reference
    = score(x), auc = AOPC). model: as `deletion` (a BatchedModel's batch sets regions + 1)."""
    runner = _as_batched(model, regions, backend, threads)
    regions = runner.batch - 1
    batch, fractions = region_batch(x, saliency, patch, regions, replacement, seed, layout)
    scores = np.asarray(score(runner.run({input_name or runner.inputs[0]: batch})), np.float64).reshape(-1)
    if scores.shape != (regions + 1,):
        raise ValueError(f"the score gave {scores.shape} values for {regions + 1} rows")
    reference = float(scores[0])
    drop = float(np.mean(reference - scores))
    if normalise:
        drop = drop / reference if abs(reference) >= 1e-12 else float("nan")
    return Curve("region", fractions, scores, reference, drop)


def auc(fractions: np.ndarray, scores: np.ndarray, reference: float | None = None) -> float:
    """Trapezoid-rule area under scores(fractions), divided by `reference` when given."""
    y = np.asarray(scores, np.float64)
    if reference is not None:
        if abs(reference) < 1e-12:
            return float("nan")
        y = y / reference
    f = np.asarray(fractions, np.float64)
    return float(np.sum((y[1:] + y[:-1]) * np.diff(f)) / 2.0)


def _as_batched(model, steps: int, backend: str, threads: int) -> BatchedModel:
    if isinstance(model, BatchedModel):
        return model  # its batch sets the steps (batch - 1)
    if not isinstance(model, onnx.ModelProto):
        raise TypeError("model must be an onnx.ModelProto or a BatchedModel")
    return BatchedModel(model, steps + 1, backend=backend, threads=threads)


def _curve(kind: str, model, x, saliency, score: Score, config: PerturbationConfig, input_name: str | None,
           backend: str, threads: int) -> Curve:
    runner = _as_batched(model, config.steps, backend, threads)
    steps = runner.batch - 1
    name = input_name or runner.inputs[0]
    base = config.deletion_baseline if kind == "deletion" else config.insertion_baseline
    batch, fractions = perturbed_batch(x, saliency, baseline_image(x, base, config.blur_sigma, config.layout),
                                       steps, kind, config.layout)
    scores = np.asarray(score(runner.run({name: batch})), np.float64).reshape(-1)
    if scores.shape != (steps + 1,):
        raise ValueError(f"the score gave {scores.shape} values for {steps + 1} rows")
    reference = float(scores[0] if kind == "deletion" else scores[-1])
    return Curve(kind, fractions, scores, reference,
                 auc(fractions, scores, reference if config.normalise else None))


def deletion(model, x: np.ndarray, saliency: np.ndarray, score: Score,
             config: PerturbationConfig = PerturbationConfig(), input_name: str | None = None,
             backend: str = "ort-cpu", threads: int = 0) -> Curve:
    """Deletion curve and AUC (lower is better).

    model: an onnx.ModelProto (re-batched to config.steps + 1 here) or a BatchedModel,
    whose batch then sets the steps (batch - 1); reuse one for many curves.
    """
    return _curve("deletion", model, x, saliency, score, config, input_name, backend, threads)


def insertion(model, x: np.ndarray, saliency: np.ndarray, score: Score,
              config: PerturbationConfig = PerturbationConfig(), input_name: str | None = None,
              backend: str = "ort-cpu", threads: int = 0) -> Curve:
    """Insertion curve and AUC (higher is better); arguments as `deletion`."""
    return _curve("insertion", model, x, saliency, score, config, input_name, backend, threads)


def _softmax(z: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def segmentation_score(logits: str, cls: int, region: np.ndarray, kind: str = "prob") -> Score:
    """Mean over `region` (H, W) of class `cls`'s softmax probability ("prob") or logit ("logit")."""
    if kind not in ("prob", "logit"):
        raise ValueError(f"kind must be prob or logit, got {kind!r}")
    r = np.squeeze(np.asarray(region, bool))
    if not r.any():
        raise ValueError(f"class {cls}: empty region, nothing to score")

    def score(outputs: dict[str, np.ndarray]) -> np.ndarray:
        z = np.asarray(outputs[logits], np.float64)  # (N, K, H, W)
        v = _softmax(z, 1)[:, cls] if kind == "prob" else z[:, cls]
        return v[:, r].mean(axis=1)

    return score


def detection_score(pair: int, classes: int, scores: str = "scores") -> Score:
    """The box's class score at its anchor: scores[:, anchor, class], (anchor, class) = divmod(pair, classes)."""
    if pair < 0:
        raise ValueError("an empty detection slot (pair -1) has no score")
    anchor, cls = divmod(int(pair), int(classes))

    def score(outputs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(outputs[scores])[:, anchor, cls]

    return score


def segmentation_insertion_deletion(model: onnx.ModelProto, x: np.ndarray, maps: Mapping[str, np.ndarray],
                                    logits: str = "logits", classes=None, score_kind: str = "prob",
                                    config: PerturbationConfig = PerturbationConfig(),
                                    input_name: str | None = None, backend: str = "ort-cpu",
                                    threads: int = 0, progress=None) -> dict[str, dict]:
    """Deletion and insertion AUCs per method and class of one frame.

    maps: method -> (K, H, W) (or (K, 1, H, W)) maps at the input resolution, row c for
    class c (the explain graph's `..._full` outputs, or its maps when the layer is at full
    resolution). classes: the rows to evaluate, default every class predicted somewhere
    on `x`. Region and score per class: `segmentation_score` on the unperturbed prediction.
    Returns {method: {"deletion": mean AUC, "insertion": mean AUC, "classes": {c: {"deletion":
    Curve, "insertion": Curve}}}}; one re-batched engine serves every curve. progress: called with 1
    after each (method, class) pair's two curves (a progress bar's update).
    """
    from ..runtime.engine import open_engine

    single = open_engine(model.SerializeToString(), backend, "fp32", threads=threads)
    name = input_name or next(iter(single.inputs))
    z = single.run({name: np.asarray(x, np.float32)}, [logits])[logits]
    pred = z[0].argmax(0)
    present = [c for c in range(z.shape[1]) if (pred == c).any()]
    wanted = present if classes is None else [c for c in classes if c in present]
    runner = BatchedModel(model, config.steps + 1, backend=backend, threads=threads)
    out = {}
    for method, m in maps.items():
        m = np.asarray(m)
        m = m.reshape(m.shape[0], *m.shape[-2:])
        per = {}
        for c in wanted:
            score = segmentation_score(logits, c, pred == c, score_kind)
            per[c] = {k: _curve(k, runner, x, m[c], score, config, name, backend, threads)
                      for k in ("deletion", "insertion")}
            if progress is not None:
                progress(1)
        out[method] = {k: float(np.mean([v[k].auc for v in per.values()])) if per else float("nan")
                       for k in ("deletion", "insertion")}
        out[method]["classes"] = per
    return out
