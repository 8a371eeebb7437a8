"""Which explanation to trust: paper 003's evaluation of every method against what the generated drives know.

The generated drives give each frame's exact class regions (segmentation) and each object's pixels (detection),
so the maps are judged against ground truth, not only against each other:

    localisation     pointing game, relevance mass, relevance rank, ROC AUC of the map against the region
    comparison       PCC, SIM, SSIM and L1 against the region blurred (paper 003's fixation-map comparison)
    spectral         per-band totals against the bands that separate the region from the rest (input methods)
    faithfulness     deletion and insertion AUC (the report's curves) and region perturbation's AOPC
    robustness       max-sensitivity over small input noise; SSIM of the maps of consecutive frames (a moving scene:
                     not 1 for a perfect method, but a method that flickers shows here)
    randomisation    cascading parameter randomisation (all layers) and random logit, pass/fail at a threshold
    complexity       sparseness (Gini)
    cost             each method's own measured seconds per map (the report's faithfulness tables)

`segmentation_rows` / `box_rows` give one row of localisation figures per (frame, class) or kept box;
`summarise` ranks the methods per metric and `verdict` says in words what the figures support.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..classes import SEGMENTATION_CLASSES

from ._metrics import (band_separability, fixation_map, map_similarity, pointing_game, relevance_mass, relevance_rank,
                       roc_auc, sparseness, spectral_agreement)
from ._similarity import spearman

RANDOMISATION_THRESHOLD = 0.5  # a method passes a randomisation check when its similarity stays below this
FIXATION_SIGMA_SHARE = 0.02    # the fixation stand-in's blur: 2 % of the image diagonal (a few px)
MIN_REGION_PIXELS = 16         # smaller ground-truth regions are not scored (a pointing game on 3 px says little)

# metric -> (group, True when higher is better, what it is); the table's columns in this order
METRICS: dict[str, tuple[str, bool, str]] = {
    "pointing_game": ("localisation", True, "share of regions whose map maximum lies inside"),
    "relevance_mass": ("localisation", True, "share of positive relevance inside the region"),
    "relevance_rank": ("localisation", True, "share of the top-|region| pixels inside the region"),
    "roc_auc": ("localisation", True, "ROC AUC of the map against region / rest"),
    "pcc": ("comparison", True, "Pearson correlation with the blurred region"),
    "sim": ("comparison", True, "histogram intersection with the blurred region"),
    "ssim": ("comparison", True, "SSIM with the blurred region"),
    "l1": ("comparison", False, "mean |map - blurred region|, both scaled to [0, 1]"),
    "spectral": ("spectral", True, "Spearman of |per-band totals| with the bands' separability"),
    "deletion": ("faithfulness", False, "deletion AUC (first frame)"),
    "insertion": ("faithfulness", True, "insertion AUC (first frame)"),
    "aopc": ("faithfulness", True, "region perturbation AOPC / score (first frame)"),
    "max_sensitivity": ("robustness", False, "largest relative change under input noise"),
    "temporal_ssim": ("robustness", True, "SSIM of the maps of consecutive frames"),
    "model_randomisation": ("randomisation", False, "|Spearman| of |map|, trained vs all layers randomised"),
    "random_logit": ("randomisation", False, "Spearman of the class's map with another class's"),
    "sparseness": ("complexity", True, "Gini index of |map|"),
    "seconds_per_map": ("cost", False, "the method's own measured seconds per map"),
}
LOCALISATION = ("pointing_game", "relevance_mass", "relevance_rank", "roc_auc", "pcc", "sim", "ssim", "l1",
                "sparseness")


def localisation_row(m: np.ndarray, region: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """The localisation, comparison and complexity figures of one map against one ground-truth region."""
    return {"pointing_game": pointing_game(m, region), "relevance_mass": relevance_mass(m, region),
            "relevance_rank": relevance_rank(m, region), "roc_auc": roc_auc(m, region),
            **map_similarity(m, reference), "sparseness": sparseness(m)}


def fixation_sigma(shape) -> float:
    return FIXATION_SIGMA_SHARE * float(np.hypot(*shape[-2:]))


def truth_window(labels: np.ndarray, card) -> np.ndarray:
    """The generated frame's labels (class ids of the generated drives' set, cube resolution) cut to the model's
    window and turned into the model's output channels by class name (an imported model's ids need not be the
    generated set's: HSI-Drive v2.0's sky is 5, the 5-class set's 4); -1 where a label is none of the card's
    classes, and a card class the drives do not have (v2.0's glass) has no region."""
    i = card.input
    window = np.asarray(labels)[i.crop_top:i.crop_top + i.height, i.crop_left:i.crop_left + i.width]
    out = np.full(window.shape, -1, np.int64)
    generated = {c.name: c.id for c in SEGMENTATION_CLASSES if c.id}
    for c in card.classes:
        if c.name in generated:
            out[window == generated[c.name]] = c.channel
    return out


def segmentation_rows(maps: Mapping[str, np.ndarray], truth: np.ndarray, band_totals: Mapping[str, np.ndarray],
                      x: np.ndarray) -> tuple[dict[str, list[dict]], list[int]]:
    """One frame: method -> one localisation row per class with a ground-truth region of MIN_REGION_PIXELS or
    more (with `spectral` for methods that have per-band totals), and the classes scored.

    maps: method -> (K, H, W) per class; truth: (H, W) class ids; band_totals: method -> (K, B); x: (B, H, W)."""
    classes = [c for c in range(next(iter(maps.values())).shape[0]) if (truth == c).sum() >= MIN_REGION_PIXELS]
    sigma = fixation_sigma(truth.shape)
    rows: dict[str, list[dict]] = {m: [] for m in maps}
    for c in classes:
        region = truth == c
        reference = fixation_map(region, sigma)
        separability = band_separability(x, region)
        for m, v in maps.items():
            row = localisation_row(v[c], region, reference)
            if m in band_totals:
                row["spectral"] = spectral_agreement(band_totals[m][c], separability)
            rows[m].append(row)
    return rows, classes


def object_masks(frame, config, input_size: tuple[int, int]) -> dict[int, np.ndarray]:
    """Each generated object's pixels in the detector's network view: instance id (SceneObject.instance) ->
    (H, W) bool. The layout's instance map (filter-area pixels) warped through the drive's area -> common view
    homography and the front end's common -> network scaling, nearest neighbour."""
    import cv2

    from ..scenes.render import common_from_layout
    from ..sensor.multispectral import network_from_common

    layout = frame.layout
    instance = layout.table("instance", np.int32)[layout.surface]
    h_area = common_from_layout(*layout.shape)
    m = network_from_common(config.common_size, input_size) @ h_area
    warped = cv2.warpPerspective(instance.astype(np.float32), m, tuple(input_size), flags=cv2.INTER_NEAREST,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return {int(i): warped == i for i in np.unique(warped) if i > 0}


def box_rows(maps: Mapping[str, np.ndarray], boxes: np.ndarray, classes: np.ndarray, frame, config,
             input_size: tuple[int, int], iou: float = 0.5) -> tuple[dict[str, list[dict]], int]:
    """One frame's kept boxes: method -> one localisation row per box matched to a generated object (same class,
    IoU >= `iou` in the network view), against that object's pixels; and how many boxes matched.

    maps: method -> (k, H, W) per kept box; boxes: (k, 4) network-view boxes; classes: (k,) their class ids."""
    from ..detection.boxes import iou_matrix
    from ..sensor.multispectral import boxes_to_network

    objects = frame.camera_objects
    rows: dict[str, list[dict]] = {m: [] for m in maps}
    if not objects or not len(boxes):
        return rows, 0
    truth = boxes_to_network(np.array([o.box for o in objects], np.float64), config)
    overlap = iou_matrix(np.asarray(boxes, np.float64), truth)
    masks = object_masks(frame, config, input_size)
    sigma = fixation_sigma(input_size[::-1])
    matched = 0
    for j in range(len(boxes)):
        same = np.array([o.class_id == int(classes[j]) for o in objects]) & (overlap[j] >= iou)
        if not same.any():
            continue
        obj = objects[int(np.argmax(np.where(same, overlap[j], -1.0)))]
        region = masks.get(obj.instance)
        if region is None or region.sum() < MIN_REGION_PIXELS:
            continue
        matched += 1
        reference = fixation_map(region, sigma)
        for m, v in maps.items():
            rows[m].append(localisation_row(v[j], region, reference))
    return rows, matched


def mean_rows(rows: list[dict]) -> dict[str, float]:
    keys = sorted({k for r in rows for k in r})
    out = {}
    for k in keys:
        v = np.array([r.get(k, np.nan) for r in rows], np.float64)
        out[k] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    return out


def summarise(table: Mapping[str, Mapping[str, float]]) -> dict:
    """table: method -> metric -> value. Returns {"metrics": [...], "methods": {m: {metric: {"value", "rank"}}}}:
    rank 1 the best per metric (ties share the better rank), None for NaN or a metric with one method."""
    metrics = [k for k in METRICS if any(k in v for v in table.values())]
    out = {m: {} for m in table}
    for k in metrics:
        higher = METRICS[k][1]
        values = {m: v.get(k, float("nan")) for m, v in table.items()}
        for m, x in values.items():
            rank = None
            if np.isfinite(x) and len([v for v in values.values() if np.isfinite(v)]) > 1:
                rank = 1 + sum(1 for v in values.values() if np.isfinite(v) and (v > x if higher else v < x))
            out[m][k] = {"value": float(x), "rank": rank}
    return {"metrics": metrics, "methods": out}


def verdicts(values: Mapping[str, Mapping[str, float]]) -> dict[str, dict]:
    """method -> its randomisation figures among model_randomisation, random_logit and label_randomisation, each
    with a pass/fail at RANDOMISATION_THRESHOLD (`<key>_pass`; None where the figure is NaN)."""
    out = {}
    for m, v in values.items():
        row = {}
        for key in ("model_randomisation", "random_logit", "label_randomisation"):
            if key in v:
                x = float(v[key])
                row |= {key: x, f"{key}_pass": bool(x < RANDOMISATION_THRESHOLD) if np.isfinite(x) else None}
        if row:
            out[m] = row
    return out


def randomisation_verdicts(sanity: dict, random_logit: Mapping[str, float]) -> dict[str, dict]:
    """The U-Net's verdicts (`verdicts`) from the report's sanity checks: model randomisation, |Spearman| of the
    |maps| with every layer randomised (the cascade's last step); label randomisation the same against the model
    trained on permuted labels, when there is one; random logit as given."""
    last = sanity["cascading"][-1]["methods"] if sanity.get("cascading") else {}
    labels = sanity.get("label_randomisation", {})
    values: dict[str, dict[str, float]] = {}
    for m in set(random_logit) | set(last):
        # Adebayo et al. rank the maps' absolute values (a sign flip is no change); a strong negative correlation
        # is as much a dependence as a positive one, hence its size
        values[m] = {"model_randomisation": abs(float(last[m]["spearman_abs"])) if m in last else float("nan"),
                     "random_logit": float(random_logit.get(m, float("nan")))}
        if m in labels:
            values[m]["label_randomisation"] = abs(float(labels[m]["spearman_abs"]))
    return verdicts(values)


def random_logit(maps: Mapping[str, np.ndarray], classes: list[int], seed: int = 0) -> dict[str, float]:
    """Sixt et al. 2020 (Quantus' RandomLogit), per method: the mean over `classes` of the Spearman rank correlation
    between the map of class c and that of another class drawn at random (fixed seed), the same draw for every
    method. Quantus compares with SSIM by default; here the rank correlation, because SSIM of these maps stays high
    for maps that share only the scene's structure (the sanity-check section shows it for randomised weights)."""
    k = next(iter(maps.values())).shape[0]
    rng = np.random.default_rng(seed)
    others = [int(rng.choice([o for o in range(k) if o != c])) for c in classes]
    return {m: float(np.mean([spearman(v[c], v[o]) for c, o in zip(classes, others)])) if classes else float("nan")
            for m, v in maps.items()}


def _fmt(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.3g}"


def verdict(summary: dict, randomisation: Mapping[str, dict], what: str) -> list[str]:
    """A few sentences, every claim with its figures: the best and worst localising and most faithful methods,
    the randomisation failures (and whether guided backprop fails as Adebayo et al. found), and the methods the
    evidence supports: passing both randomisation checks and in the better half of mean rank over localisation
    and faithfulness."""
    methods = summary["methods"]

    def ranked(metric, n=3, best=True):
        r = sorted((v[metric]["rank"], m) for m, v in methods.items() if metric in v and v[metric]["rank"])
        r = r[:n] if best else r[-n:][::-1]
        return ", ".join(f"{m} {_fmt(methods[m][metric]['value'])}" for _, m in r)

    lines = []
    if any("roc_auc" in v for v in methods.values()):
        lines.append(f"Localisation (ROC AUC of the map against the {what}): best {ranked('roc_auc')}; "
                     f"worst {ranked('roc_auc', best=False)}.")
    if any("aopc" in v for v in methods.values()):
        lines.append(f"Faithfulness (region perturbation AOPC): best {ranked('aopc')}; worst "
                     f"{ranked('aopc', best=False)}.")
    if any("spectral" in v and v["spectral"]["rank"] for v in methods.values()):
        lines.append(f"Spectral localisation (rank correlation with the separating bands): best {ranked('spectral')}.")
    fails = {k: sorted((m, r[k]) for m, r in randomisation.items() if r.get(f"{k}_pass") is False)
             for k in ("model_randomisation", "random_logit", "label_randomisation")}
    for k, label in (("model_randomisation", "model-parameter randomisation (|Spearman| of |map|, trained vs every "
                      "layer randomised)"),
                     ("random_logit", "random logit (Spearman of a class's map with another class's)"),
                     ("label_randomisation", "label randomisation (|Spearman| of |map| against the model trained on "
                      "permuted labels)")):
        measured = [m for m, r in randomisation.items() if r.get(f"{k}_pass") is not None]
        if not measured:
            continue
        if fails[k]:
            lines.append(f"Fail {label} at {RANDOMISATION_THRESHOLD}: "
                         + ", ".join(f"{m} {_fmt(v)}" for m, v in fails[k]) + ".")
        else:
            lines.append(f"All {len(measured)} methods measured pass {label} at {RANDOMISATION_THRESHOLD}.")
    gb = randomisation.get("guided_backprop")
    if gb and gb.get("model_randomisation_pass") is not None:
        lines.append("Adebayo et al. (2018) found guided backprop insensitive to model randomisation: "
                     + ("reproduced here" if not gb["model_randomisation_pass"] else "not reproduced here")
                     + f" (|Spearman| of |map| {_fmt(gb['model_randomisation'])} with every layer randomised).")
    keys = [k for k in ("roc_auc", "relevance_mass", "pointing_game", "aopc", "insertion", "deletion")
            if any(k in v for v in methods.values())]
    mean_rank = {}
    for m, v in methods.items():
        r = [v[k]["rank"] for k in keys if k in v and v[k]["rank"]]
        if r:
            mean_rank[m] = float(np.mean(r))
    if mean_rank:
        order = sorted(mean_rank, key=mean_rank.get)
        half = order[:max(1, len(order) // 2)]
        passing = [m for m in half if all(randomisation.get(m, {}).get(f"{k}_pass") is not False
                                          for k in ("model_randomisation", "random_logit", "label_randomisation"))]
        lines.append("Supported by the evidence (better half by mean rank over " + ", ".join(keys)
                     + ", no randomisation check failed): "
                     + (", ".join(f"{m} (mean rank {mean_rank[m]:.1f})" for m in passing) or "none") + ".")
    return lines
