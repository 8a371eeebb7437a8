"""`hsi-xai reliability`: the papers' evaluations of the explanations, run on a model and generated drives.

    reliability_out/report.json   every number below, machine-readable
    reliability_out/index.html    tables and plots

Sections (each on the segmentation U-Net, and on the detector where it applies):

1. Conservativeness (paper 000): per method and class, the residual between a map's sum
   over the class region and the logit sum (minus bias) there, over the frames.
2. Sanity checks (Adebayo et al. 2018): cascading model-parameter randomisation from the
   top layer down, and (given a model trained on permuted labels) label randomisation;
   Spearman rank correlation and SSIM between the trained and randomised models' maps.
3. Insertion and deletion AUC (Petsiuk et al. 2018, as paper 001) per method, for the
   predicted classes and for the detector's kept boxes; RISE and SIDU (paper 001's
   offline baselines) included, with their cost per map beside Grad-CAM's.
4. The band-count study of paper 000 (1-, 3- and 25-band models side by side).
5. The method gallery (paper 003's Fig. 11).
6. Which explanation to trust (paper 003, sec. 7; _evaluation.py): every method's localisation against the
   generated ground truth, spectral localisation, faithfulness (with region perturbation's AOPC), robustness,
   randomisation verdicts, sparseness and cost, ranked per metric, with a verdict in words.
"""

from __future__ import annotations

import contextlib
import html
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx

from ..explain import (INPUT_METHODS, PathOptions, SegmentationExplainConfig, build_segmentation_explainer,
                       conservation_residual, multiply_adds)
from ..model_card import load_model
from ..report_page import (PAGE_PROBE, PAGE_STYLE, PLOT_FONT_PT, duration_text, machine_text, run_header, scroll,
                           utc_now)
from ..runtime.engine import open_engine
from ._baselines import BaselineModel, detection_scores, rise, segmentation_scores, sidu
from ._batching import BatchedModel
from ._conservativeness import conservativeness_table
from ._evaluation import (METRICS, box_rows, mean_rows, random_logit, randomisation_verdicts, segmentation_rows,
                          summarise, truth_window, verdict, verdicts)
from ._metrics import relative_change
from ._perturbation import (PerturbationConfig, deletion, detection_score, insertion, region_perturbation,
                            segmentation_insertion_deletion, segmentation_score)
from ._randomisation import cascading, parameter_layers, randomise
from ._similarity import compare_maps, spearman, ssim
from .config import QUICK, ReportConfig

SEG_METHODS = ("activation", "seg_gradcam", "seg_gradcam_signed", "hires", "gradcam_pp", "xgradcam", "layercam",
               "seg_xres", "eigencam", "fem", "scorecam")  # every in-graph CAM method: which are faithful
REPORT_BOX_LAYER = "class_head_input"  # the layer of the per-box CAMs the report evaluates (bifpn_p2 for every box)
BOX_REPORT_METHODS = ("box_gradcam", "box_gradcam_signed", "box_hires", "box_gradcam_pp", "box_xgradcam",
                      "box_layercam", "box_xres", "box_eigencam", "box_fem", "box_input_x_gradient",
                      # paper 003's input attributions per box: one of each kind (gradient, DeepLIFT, an LRP composite)
                      "box_gradient", "box_deeplift", "box_lrp_epsilon_plus_flat")
# and the detection node's own default map: Grad-CAM at each box's own pyramid level (explain/_detection.py)
BOX_LEVEL_ROW = "box_gradcam@box_level"
BOX_REPORT_ROWS = (*BOX_REPORT_METHODS, BOX_LEVEL_ROW)


def box_row(row: str) -> tuple[str, str]:
    """A detector row of the report -> (per-box method, layer): "box_gradcam@box_level", or a method at
    REPORT_BOX_LAYER."""
    method, _, layer = row.partition("@")
    return method, layer or REPORT_BOX_LAYER


def box_explainer(model: onnx.ModelProto, card, k: int, rows, pairs: str, boxes: str):
    """(explain graph, row -> its float maps' output at the input size) of the detector's per-box `rows`, every box
    of the `pairs` tensor's first k explained."""
    from ..explain import BOX_LEVEL, DetectionExplainConfig, build_detection_explainer

    split = {r: box_row(r) for r in rows}
    layers = tuple(dict.fromkeys(layer for _, layer in split.values()))
    methods = tuple(dict.fromkeys(method for method, _ in split.values()))
    graph = build_detection_explainer(model, card.input.tensor, card.scores, card.layers,
                                      DetectionExplainConfig(layers=layers, top_k=k, methods=methods, uint8=False),
                                      pairs=pairs, layout=card.input.layout, boxes=boxes)

    def maps_at(at_level: bool) -> dict[str, str]:  # row -> output, of the rows at box_level or of the others
        outputs = {n: o for n, o in graph.outputs.items() if (o.layer == BOX_LEVEL) == at_level}
        wanted = {method: r for r, (method, layer) in split.items() if (layer == BOX_LEVEL) == at_level}
        return {wanted[m]: n for m, n in full_size_maps(outputs, list(wanted), card.input.hw).items()}
    return graph, maps_at(False) | maps_at(True)


def seg_methods(cfg: ReportConfig) -> tuple[str, ...]:
    """The CAM family and the input attributions the run evaluates."""
    inputs = tuple(INPUT_METHODS) if cfg.input_methods is None else tuple(cfg.input_methods)
    return SEG_METHODS + inputs


def path_options(cfg: ReportConfig) -> PathOptions:
    return PathOptions(smoothgrad_samples=cfg.smoothgrad_samples, ig_steps=cfg.ig_steps)


def _json(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if hasattr(o, "as_dict"):
        return o.as_dict()
    raise TypeError(type(o).__name__)


def full_size_maps(outputs: dict, methods, hw) -> dict[str, str]:
    """Method -> the explain graph's output holding its float maps at the input size `hw`: the `_full` (resized)
    output where there is one, else the map itself (a layer at full resolution)."""
    maps = {}
    for name, o in outputs.items():
        base = o.method.removesuffix("_full")
        if base in methods and o.dtype == "float32" and tuple(o.shape[2:]) == tuple(hw):
            if o.method.endswith("_full") or base not in maps:
                maps[base] = name
    return maps


# --- segmentation ------------------------------------------------------------------------------

class SegmentationExplainer:
    """The U-Net's explain graph (all methods at the penultimate layer), with maps at input size."""

    def __init__(self, model: onnx.ModelProto, card, backend: str, threads: int, methods=SEG_METHODS,
                 paths: PathOptions = PathOptions()):
        cfg = SegmentationExplainConfig(methods=tuple(methods), layers=("penultimate",), upsample=True, uint8=False,
                                        second_block=False, paths=paths)
        self.graph = build_segmentation_explainer(model, card.input.tensor, card.logits, card.layers, cfg)
        self.card = card
        self.engine = open_engine(self.graph.model.SerializeToString(), backend, "fp32", threads=threads)
        # method -> output name of its (K, 1, H, W) map at the input size
        self.maps = full_size_maps(self.graph.outputs, methods, card.input.shape[2:])

    def run(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
        t0 = time.perf_counter()
        out = self.engine.run({self.card.input.tensor: x})
        seconds = time.perf_counter() - t0
        return out, {m: out[n][:, 0] for m, n in self.maps.items()}, seconds


FRAME_SEED0, FRAME_INDEX = 2000, 30  # the frames: drive seeds 2000, 2001, ... (the cards' test drives), frame 30


def _frames(cfg: ReportConfig, profile, card, cameras: bool):
    from ..scenes.drive import DriveGenerator
    from ..sensor.frontend import FrontEnd

    out = []
    for i in range(cfg.frames):
        gen = DriveGenerator(profile, seed=FRAME_SEED0 + i, render_cameras=cameras)
        dark, white = gen.references()
        frame = gen.frame(FRAME_INDEX)
        fe = FrontEnd(profile, dark, white, card.frontend_config()).process(frame.raw)
        out.append({"x": card.model_input(fe.cube.data), "frame": frame, "dark": dark, "white": white})
    return out


def sanity_checks(cfg: ReportConfig, model: onnx.ModelProto, card, x: np.ndarray, trained: dict, bar=None) -> dict:
    """Cascading parameter randomisation (and label randomisation when a model is given), one frame.

    bar: bar(desc, total, unit) -> a progress bar context (run_report's), or None."""
    steps = list(cascading(model, cfg.seed))
    picks = sorted(set(np.linspace(0, len(steps) - 1, min(cfg.cascade_steps, len(steps))).round().astype(int)))
    cascade = []
    progress = bar("sanity checks (cascading randomisation)", len(picks), "depth") if bar else contextlib.nullcontext()
    with progress as b:
        for i in picks:
            label, randomised = steps[i]
            _, maps, _ = SegmentationExplainer(randomised, card, cfg.backend, cfg.threads, seg_methods(cfg),
                                               path_options(cfg)).run(x)
            cascade.append({"depth": int(i) + 1, "layer": label,
                            "methods": {m: {k: v for k, v in r.items()
                                            if k in ("spearman", "spearman_abs", "ssim", "rows")}
                                        for m, r in compare_maps(trained, maps).items()}})
            if b is not None:
                b.update(1)
    out = {"layers": len(steps), "cascading": cascade}
    if cfg.random_labels_model:
        loaded = load_model(cfg.random_labels_model)
        _, maps, _ = SegmentationExplainer(onnx.load_model_from_string(loaded.onnx_bytes), loaded.card,
                                           cfg.backend, cfg.threads, seg_methods(cfg), path_options(cfg)).run(x)
        out["label_randomisation"] = {m: {k: v for k, v in r.items() if k in ("spearman", "spearman_abs", "ssim", "rows")}
                                      for m, r in compare_maps(trained, maps).items()}
    return out


def segmentation_faithfulness(cfg: ReportConfig, model: onnx.ModelProto, card, x, maps, logits,
                              bar=None) -> dict:
    """Insertion/deletion AUC per method (in-graph maps, RISE, SIDU) and each method's cost per map.

    bar: bar(desc, total, unit) -> a progress bar context (run_report's), or None."""
    bar = bar or (lambda *a: contextlib.nullcontext())
    pred = logits[0].argmax(0)
    classes = [c for c in range(logits.shape[1]) if (pred == c).any()]
    score = segmentation_scores(classes, pred, card.logits)
    runner = BaselineModel(model, batch=16, layers=(card.layers.get(cfg.sidu_layer, cfg.sidu_layer),),
                           backend=cfg.backend, threads=cfg.threads)
    # each in-graph method's own cost: its graph alone, on this frame, per class map
    cost = {m: s / logits.shape[1] for m, s in segmentation_method_seconds(model, card, x, list(maps), cfg).items()}
    t0 = time.perf_counter()
    with bar("segmentation: RISE", cfg.rise_masks, "mask") as b:
        r = rise(runner, x, score, n_masks=cfg.rise_masks, seed=cfg.seed, progress=b and b.update)
    cost["rise"] = (time.perf_counter() - t0) / len(classes)
    t0 = time.perf_counter()
    s = sidu(runner, x, score, card.layers.get(cfg.sidu_layer, cfg.sidu_layer))
    cost["sidu"] = (time.perf_counter() - t0) / len(classes)
    full = dict(maps)
    for name, m in (("rise", r), ("sidu", s)):  # rows of the classes evaluated -> rows by class id
        rows = np.zeros((logits.shape[1], *m.shape[1:]), np.float32)
        rows[classes] = m
        full[name] = rows
    pc = PerturbationConfig(steps=cfg.perturbation_steps)
    with bar("segmentation: insertion/deletion curves", len(full) * len(classes), "map") as b:
        auc = segmentation_insertion_deletion(model, x, full, card.logits, classes, config=pc, backend=cfg.backend,
                                              threads=cfg.threads, progress=b and b.update)
    return {m: {"deletion": v["deletion"], "insertion": v["insertion"], "seconds_per_map": cost[m]}
            for m, v in auc.items()}


def noisy_copies(cfg: ReportConfig, x: np.ndarray):
    """(half-width, generator of cfg.sensitivity_draws copies of x with uniform noise of that half-width): the
    half-width is cfg.sensitivity_noise x the frame's standard deviation; fixed seed, the same copies every run."""
    rng = np.random.default_rng(cfg.seed)
    half = cfg.sensitivity_noise * float(x.std())
    return half, ((x + rng.uniform(-half, half, x.shape)).astype(np.float32) for _ in range(cfg.sensitivity_draws))


def _next_frame_input(cfg: ReportConfig, profile, card, first: dict) -> np.ndarray:
    """The model input of the frame after the first evaluated one (same drive, same references)."""
    from ..scenes.drive import DriveGenerator
    from ..sensor.frontend import FrontEnd

    frame = DriveGenerator(profile, seed=FRAME_SEED0).frame(FRAME_INDEX + 1)
    fe = FrontEnd(profile, first["dark"], first["white"], card.frontend_config()).process(frame.raw)
    return card.model_input(fe.cube.data)


def segmentation_evaluation(cfg: ReportConfig, model: onnx.ModelProto, card, explainer: SegmentationExplainer,
                            frames, runs, report: dict, profile, bar=None) -> dict:
    """Paper 003's evaluation of every U-Net method (section 7 of the report, _evaluation.py): localisation against
    each frame's generated class regions, spectral localisation, AOPC, max-sensitivity and consecutive-frame
    stability on the first frame, randomisation verdicts, sparseness, cost; ranked, with a verdict in words."""
    bar = bar or (lambda *a: contextlib.nullcontext())
    names = {o.method: n for n, o in explainer.graph.outputs.items()}
    methods = list(runs[0][1])
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    scored = []
    channel_names = {c.channel: c.name for c in card.classes}
    for i, (f, (out, maps, _)) in enumerate(zip(frames, runs)):
        bands = {m: out[names[f"{m}_bands"]] for m in methods if f"{m}_bands" in names}
        r, classes = segmentation_rows(maps, truth_window(f["frame"].labels, card), bands, f["x"][0])
        for m in methods:
            rows[m] += r[m]
        scored.append({"drive_seed": FRAME_SEED0 + i, "frame": FRAME_INDEX,
                       "classes": [channel_names[c] for c in classes]})
    table = {m: mean_rows(v) | {"regions": len(v)} for m, v in rows.items()}
    for m, v in report["segmentation_faithfulness"].items():
        table.setdefault(m, {}).update({k: v[k] for k in ("deletion", "insertion", "seconds_per_map")})
    out0, maps0, _ = runs[0]
    x0 = frames[0]["x"]
    pred = out0[card.logits][0].argmax(0)
    present = [c for c in range(pred.max() + 1) if (pred == c).any()]
    runner = BatchedModel(model, cfg.perturbation_steps + 1, backend=cfg.backend, threads=cfg.threads)
    with bar("evaluation: region perturbation (AOPC)", len(methods) * len(present), "map") as b:
        for m in methods:
            aopc = []
            for c in present:
                aopc.append(region_perturbation(runner, x0, maps0[m][c], segmentation_score(card.logits, c, pred == c),
                                                patch=cfg.region_patch, seed=cfg.seed,
                                                input_name=card.input.tensor).auc)
                if b is not None:
                    b.update(1)
            table[m]["aopc"] = float(np.nanmean(aopc)) if aopc else float("nan")
    half, copies = noisy_copies(cfg, x0)
    sensitivity = {m: [] for m in methods}
    label_change = []
    with bar("evaluation: max-sensitivity and consecutive frames", cfg.sensitivity_draws + 1, "run") as b:
        for noisy in copies:
            o, md, _ = explainer.run(noisy)
            label_change.append(float(np.mean(o[card.logits][0].argmax(0) != pred)))
            for m in methods:
                sensitivity[m].append(float(np.nanmean([relative_change(maps0[m][c], md[m][c]) for c in present])))
            if b is not None:
                b.update(1)
        o, nxt, _ = explainer.run(_next_frame_input(cfg, profile, card, frames[0]))
        both = [c for c in present if (o[card.logits][0].argmax(0) == c).any()]
        if b is not None:
            b.update(1)
    for m in methods:
        table[m]["max_sensitivity"] = float(np.nanmax(sensitivity[m])) if sensitivity[m] else float("nan")
        table[m]["temporal_ssim"] = float(np.mean([ssim(maps0[m][c], nxt[m][c]) for c in both])) if both \
            else float("nan")
    randomisation = randomisation_verdicts(report["sanity"], random_logit(maps0, present, cfg.seed))
    for m, v in randomisation.items():
        if m in table:
            table[m].update({k: v[k] for k in ("model_randomisation", "random_logit")})
    summary = summarise(table)
    return {"frames": scored, "table": table, "summary": summary, "randomisation": randomisation,
            "robustness": {"noise_half_width": half, "draws": cfg.sensitivity_draws,
                           "label_change_max": max(label_change) if label_change else float("nan"),
                           "next_frame": {"drive_seed": FRAME_SEED0, "frame": FRAME_INDEX + 1}},
            "verdict": verdict(summary, randomisation, "generated class regions")}


DETECTOR_RANDOMISATION = ("on the kept boxes of the first frame with any: model randomisation explains the same "
                          "(anchor, class) pairs on the detector with every layer random (its own NMS would keep other "
                          "boxes), random logit another class at the same anchor; label randomisation is not measured "
                          "(no detector trained on permuted labels), nor the consecutive-frame stability (a kept box has "
                          "no identity from one frame to the next here)")


def detection_evaluation(table: dict) -> dict:
    """The detector's per-box figures (detection_faithfulness' table) ranked, with the verdict in words."""
    keep = {m: {k: x for k, x in v.items() if k in METRICS} for m, v in table.items()}
    summary = summarise(keep)
    randomisation = verdicts(table)
    return {"table": table, "summary": summary, "randomisation": randomisation,
            "randomisation_note": DETECTOR_RANDOMISATION,
            "verdict": verdict(summary, randomisation, "generated objects' pixels of the matched boxes")}


def _median_call_seconds(engine, feeds: dict, calls: int = 3) -> float:
    engine.run(feeds)  # warm-up
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        engine.run(feeds)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def segmentation_method_seconds(model: onnx.ModelProto, card, x: np.ndarray, methods, cfg: ReportConfig) -> dict:
    """Method -> seconds of one engine call of that method's graph alone (all classes at once, maps at the input
    size), median of 3 after a warm-up: every method's own cost, measured here (Score-CAM's masked forwards
    included), not a share of a graph computing them all."""
    out = {}
    for m in methods:
        graph = build_segmentation_explainer(model, card.input.tensor, card.logits, card.layers,
                                             SegmentationExplainConfig(methods=(m,), layers=("penultimate",),
                                                                       upsample=True, uint8=False, top_k=0,
                                                                       second_block=False, paths=path_options(cfg)))
        wanted = [n for n, o in graph.outputs.items() if o.method.removesuffix("_full") == m]
        engine = open_engine(graph.model.SerializeToString(), cfg.backend, "fp32", threads=cfg.threads,
                             outputs_to_copy=[card.logits, *wanted])
        out[m] = _median_call_seconds(engine, {card.input.tensor: x})
    return out


def box_method_seconds(loaded, x: np.ndarray, rows, boxes: int, cfg: ReportConfig) -> dict:
    """Row -> seconds per explained box of the detector's graph with that method (at its layer) alone, `boxes`
    rows."""
    card, out = loaded.card, {}
    for m in rows:
        graph, full = box_explainer(loaded.model, card, boxes, [m], "det_pairs", "det_boxes")
        engine = open_engine(graph.model.SerializeToString(), cfg.backend, "fp32", threads=cfg.threads,
                             outputs_to_copy=["det_pairs", *full.values()])
        out[m] = _median_call_seconds(engine, {card.input.tensor: x}) / boxes
    return out


def input_conservation(frames_outputs, graph) -> dict:
    """Per conserving input attribution (LRP, integrated gradients, DeepLIFT): |total - target| / |target| over the
    frames and the classes present (max, median), and what its target is. For LRP with biases the residual is the
    share the biases and stabilisers absorb, not an error; for integrated gradients the quadrature's error; for
    DeepLIFT float rounding."""
    names = {o.method: n for n, o in graph.outputs.items()}
    out = {}
    for m, method in INPUT_METHODS.items():
        if f"{m}_target" not in names:
            continue
        r = np.concatenate([conservation_residual(o[names[f"{m}_total"]], o[names[f"{m}_target"]])
                            for o in frames_outputs])
        v = r[np.isfinite(r)]
        out[m] = {"target": method.conserves, "max": float(v.max()) if v.size else float("nan"),
                  "median": float(np.median(v)) if v.size else float("nan"), "rows": int(v.size)}
    return out


def _map_grid(panels: int, cols: int, width: float, height: float):
    """(figure, axes) of a grid holding `panels` pictures, every axis off (the empty ones stay blank)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * width, rows * height), dpi=100, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    return fig, axes


def _show_map(ax, v: np.ndarray, signed: bool, percentile: float) -> None:
    """A gallery map scaled to its own `percentile` of |value|: signed blue-red around 0, one-sided inferno."""
    top = float(np.percentile(np.abs(v), percentile)) or float(np.abs(v).max()) or 1.0
    ax.imshow(v, cmap="coolwarm" if signed else "inferno", vmin=-top if signed else 0, vmax=top)


def gallery(out: Path, card, run, explainer: SegmentationExplainer, methods) -> dict:
    """Paper 003's Fig. 11 for this model: one frame, every evaluated method's map of one class side by side
    (the class with the largest predicted region), and each input attribution's per-band totals over that region on
    one plot. Writes gallery_segmentation.png and gallery_spectra.png; returns what they show."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outputs, maps, _ = run
    pred = outputs[card.logits][0].argmax(0)
    c = int(np.bincount(pred.ravel(), minlength=len(card.classes)).argmax())
    region = pred == c
    shown = [m for m in methods if m in maps]
    signed = {m: explainer.graph.outputs[explainer.maps[m]].signed for m in shown}
    font = PLOT_FONT_PT
    fig, axes = _map_grid(len(shown), 5, 3.0, 1.9)
    for ax, m in zip(axes.ravel(), shown):
        _show_map(ax, maps[m][c], signed[m], 99)
        ax.contour(region, levels=[0.5], colors="white", linewidths=0.5)
        ax.set_title(m, fontsize=font)
    name = card.classes[c].name
    fig.suptitle(f"class {name} (outlined): each map scaled to its own 99th percentile of |value|; signed maps "
                 "blue-red around 0", fontsize=font)
    fig.tight_layout()
    fig.savefig(out / "gallery_segmentation.png", bbox_inches="tight")
    plt.close(fig)
    names = {o.method: n for n, o in explainer.graph.outputs.items()}
    bands_nm = np.asarray(card.input.bands_nm, np.float64)
    order = np.argsort(bands_nm)
    spectra = {}
    fig, ax = plt.subplots(figsize=(11, 4.8), dpi=100)
    for m in methods:
        if f"{m}_bands" not in names:
            continue
        row = np.asarray(outputs[names[f"{m}_bands"]][c], np.float64)
        total = np.abs(row).sum()
        spectra[m] = (row / total if total > 0 else row).tolist()
        ax.plot(bands_nm[order], (row / total if total > 0 else row)[order], marker=".", label=m)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("band centre (nm)", fontsize=font)
    ax.set_ylabel("share of the summed |attribution|", fontsize=font)
    ax.tick_params(labelsize=font)
    ax.set_title(f"which wavelengths: per-band totals over the {name} region, each method normalised", fontsize=font)
    if spectra:
        ax.legend(fontsize=font, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(out / "gallery_spectra.png", bbox_inches="tight")
    plt.close(fig)
    return {"class": name, "pixels": int(region.sum()), "methods": shown, "bands_nm": bands_nm.tolist(),
            "spectra": spectra}


def box_gallery(out: Path, x: np.ndarray, box, maps: dict, signed: dict, title: str) -> dict:
    """One detector box: every per-box method's map over the detector input (its first three channels shown
    as the image), the box outlined. Writes gallery_detection.png."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    font = PLOT_FONT_PT
    panels = ["image", *maps]
    fig, axes = _map_grid(len(panels), 4, 3.2, 2.6)
    image = np.asarray(x[0, :3], np.float64).transpose(1, 2, 0)
    lo, hi = np.percentile(image, 1), np.percentile(image, 99)
    image = np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1)
    x0, y0, x1, y1 = (float(v) for v in box)
    for ax, m in zip(axes.ravel(), panels):
        if m == "image":
            ax.imshow(image)
        else:
            _show_map(ax, maps[m], signed[m], 99.9)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="white", lw=1))
        ax.set_title(m, fontsize=font)
    fig.suptitle(title, fontsize=font)
    fig.tight_layout()
    fig.savefig(out / "gallery_detection.png", bbox_inches="tight")
    plt.close(fig)
    return {"box": [x0, y0, x1, y1], "methods": list(maps), "title": title}


# --- detection ---------------------------------------------------------------------------------

def detection_faithfulness(cfg: ReportConfig, frames, progress=None,
                           gallery_dir: Path | None = None) -> tuple[dict, dict | None, dict]:
    """Per-box methods, RISE and SIDU on the detector's kept boxes: (method -> AUCs, AOPC, localisation against the
    matched generated objects, max-sensitivity and cost; gallery; robustness settings); with `gallery_dir`, the
    first kept box's maps side by side (box_gallery) and what it shows, else None.

    progress: called with 1 after each frame (a progress bar's update)."""
    from ..runtime.detection import DetectionPipeline, DetectionPipelineConfig

    # the detector, its front end and card; the explain graph is the report's own (box_explainer: every row)
    pipeline = DetectionPipeline(DetectionPipelineConfig(model=cfg.detector, backend=cfg.backend, threads=cfg.threads,
                                                         explain_boxes=0))
    forward = pipeline.loaded.model  # the detector with NMS, before the explain graph was appended
    card = pipeline.card
    layer = card.layers[REPORT_BOX_LAYER]
    runner = BaselineModel(forward, batch=16, layers=(layer,), backend=cfg.backend, threads=cfg.threads)
    curves = BatchedModel(forward, cfg.perturbation_steps + 1, backend=cfg.backend, threads=cfg.threads)
    pc = PerturbationConfig(steps=cfg.perturbation_steps, layout=card.input.layout.upper())
    rows, cost = {}, {"rise": [], "sidu": []}
    located: dict[str, list[dict]] = {}  # method -> localisation rows of the boxes matched to generated objects
    sensitivity: dict[str, float] = {}  # method -> max-sensitivity on the first frame with kept boxes
    sanity: dict[str, dict] = {}  # method -> model randomisation and random logit, the same frame
    robustness: dict = {}  # the max-sensitivity's settings, once measured
    ids = {c.channel: c.id for c in card.classes}  # the boxes' channels -> the generated objects' class ids
    # the pipeline's engine holds only what the node publishes: this report reads every row's float maps (each method
    # at REPORT_BOX_LAYER, and Grad-CAM at each box's level) and the kept pairs, from an engine of one explain graph
    graph, full = box_explainer(forward, card, min(cfg.boxes, int(card.postprocess.get("max_detections", 20))),
                                BOX_REPORT_ROWS, "det_pairs", "det_boxes")  # row -> its maps
    engine = open_engine(graph.model.SerializeToString(), cfg.backend, "fp32", threads=cfg.threads,
                         outputs_to_copy=["det_pairs", "det_boxes", *full.values()])
    shown = None
    for f in frames:
        images = {n: c.image for n, c in f["frame"].cameras.items()}
        x = pipeline.frontend(images)
        if card.input.layout == "nhwc":
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        out = engine.run({card.input.tensor: x})
        if not any(m in cost for m in full):  # each box method's own graph, timed once on the first frame
            cost.update({m: [s] for m, s in box_method_seconds(pipeline.loaded, x, list(full), cfg.boxes, cfg).items()})
        pairs = [int(p) for p in out["det_pairs"][0][:cfg.boxes] if p >= 0]
        if not pairs:
            if progress is not None:
                progress(1)
            continue
        k = len(pairs)
        maps = {m: out[n][:k, 0] for m, n in full.items()}
        if shown is None and gallery_dir is not None:
            anchor, cls = divmod(pairs[0], len(card.classes))
            signed = {m: graph.outputs[n].signed for m, n in full.items()}
            shown = box_gallery(gallery_dir, x if card.input.layout != "nhwc" else x.transpose(0, 3, 1, 2),
                                out["det_boxes"][0][0], {m: v[0] for m, v in maps.items()}, signed,
                                f"box 1 ({card.classes[cls].name}, anchor {anchor}) of the first frame with a kept "
                                "box: each map scaled to its own 99.9th percentile of |value|")
        t0 = time.perf_counter()
        maps["rise"] = rise(runner, x, detection_scores(pairs), n_masks=cfg.rise_masks, seed=cfg.seed)
        cost["rise"].append((time.perf_counter() - t0) / k)
        t0 = time.perf_counter()
        maps["sidu"] = sidu(runner, x, detection_scores(pairs), layer)
        cost["sidu"].append((time.perf_counter() - t0) / k)
        for method, m in maps.items():
            for j, pair in enumerate(pairs):
                score = detection_score(pair, len(card.classes))
                rows.setdefault(method, []).append(
                    (deletion(curves, x, m[j], score, pc).auc, insertion(curves, x, m[j], score, pc).auc,
                     region_perturbation(curves, x, m[j], score, patch=cfg.region_patch, seed=cfg.seed,
                                         layout=pc.layout).auc))
        if not robustness:  # max-sensitivity and the sanity checks on the first frame with kept boxes
            sensitivity, robustness = _box_sensitivity(cfg, engine, card.input.tensor, x, out, pairs, full)
            sanity.update(box_randomisation(cfg, forward, card, x, pairs, out["det_boxes"][0], list(full)))
        # localisation against the generated objects' pixels, for the kept boxes that match one
        found, _ = box_rows(maps, out["det_boxes"][0][:k], np.array([ids[p % len(card.classes)] for p in pairs]),
                            f["frame"], pipeline.frontend.config, (card.input.hw[1], card.input.hw[0]))
        for method, r in found.items():
            located.setdefault(method, []).extend(r)
        if progress is not None:
            progress(1)
    table = {m: {"deletion": float(np.nanmean([a for a, _, _ in v])),
                 "insertion": float(np.nanmean([b for _, b, _ in v])), "aopc": float(np.nanmean([c for *_, c in v])),
                 "boxes": len(v), "seconds_per_map": float(np.mean(cost[m])) if cost[m] else float("nan")}
             | mean_rows(located.get(m, [])) | {"matched_boxes": len(located.get(m, []))}
             | ({"max_sensitivity": sensitivity[m]} if m in sensitivity else {}) | sanity.get(m, {})
             for m, v in rows.items()}
    return table, shown, robustness


def _given_boxes_explainer(forward: onnx.ModelProto, card, k: int, rows, cfg: ReportConfig):
    """(engine, row -> map output) of the detector's explain graph with the explained pairs and boxes as inputs
    (`explain_pairs` (1, k) int64, `explain_boxes` (1, k, 4)) instead of NMS's: the same boxes can then be explained
    on a model with randomised weights, or for another class at the same anchor."""
    model = onnx.ModelProto()
    model.CopyFrom(forward)
    model.graph.input.extend([onnx.helper.make_tensor_value_info("explain_pairs", onnx.TensorProto.INT64, [1, k]),
                              onnx.helper.make_tensor_value_info("explain_boxes", onnx.TensorProto.FLOAT, [1, k, 4])])
    graph, full = box_explainer(model, card, k, rows, "explain_pairs", "explain_boxes")
    engine = open_engine(graph.model.SerializeToString(), cfg.backend, "fp32", threads=cfg.threads,
                         outputs_to_copy=list(full.values()))
    return engine, full


def box_randomisation(cfg: ReportConfig, forward: onnx.ModelProto, card, x: np.ndarray, pairs: list[int],
                      boxes: np.ndarray, methods) -> dict[str, dict[str, float]]:
    """The sanity checks of the U-Net's section for the detector's kept boxes of one frame, per box method (mean over
    the boxes): model randomisation, |Spearman| of the |maps| of the same (anchor, class) pairs explained by the
    trained detector and by the detector with every layer's weights random; random logit, Spearman of each box's map
    with the map of another class (drawn with cfg.seed) at the same anchor."""
    k, classes = len(pairs), len(card.classes)
    rng = np.random.default_rng(cfg.seed)
    other = [a * classes + int(rng.choice([c for c in range(classes) if c != cls]))
             for a, cls in (divmod(p, classes) for p in pairs)]
    feeds = {card.input.tensor: x, "explain_boxes": np.asarray(boxes[None, :k], np.float32)}
    trained, full = _given_boxes_explainer(forward, card, k, methods, cfg)
    random_engine, _ = _given_boxes_explainer(randomise(forward, parameter_layers(forward), cfg.seed), card, k,
                                              methods, cfg)
    mine = trained.run(feeds | {"explain_pairs": np.array([pairs], np.int64)})
    others = trained.run(feeds | {"explain_pairs": np.array([other], np.int64)})
    random = random_engine.run(feeds | {"explain_pairs": np.array([pairs], np.int64)})
    out = {}
    for m, n in full.items():
        out[m] = {"model_randomisation": float(np.mean([abs(spearman(np.abs(mine[n][j, 0]), np.abs(random[n][j, 0])))
                                                        for j in range(k)])),
                  "random_logit": float(np.mean([spearman(mine[n][j, 0], others[n][j, 0]) for j in range(k)]))}
    return out


def _box_sensitivity(cfg: ReportConfig, engine, tensor: str, x: np.ndarray, reference: dict, pairs: list[int],
                     full: dict) -> tuple[dict[str, float], dict]:
    """Max-sensitivity of every per-box method over the noisy copies of x (noisy_copies): the largest relative
    change of a kept box's map, mean over the boxes; a copy whose kept boxes differ from x's is not a small
    perturbation of the same prediction and is counted, not used. Returns (method -> value, the settings)."""
    half, copies = noisy_copies(cfg, x)
    k = len(pairs)
    changes: dict[str, list[float]] = {m: [] for m in full}
    changed_boxes = 0
    for noisy in copies:
        out = engine.run({tensor: noisy})
        if [int(p) for p in out["det_pairs"][0][:k]] != pairs:
            changed_boxes += 1
            continue
        for m, n in full.items():
            changes[m].append(float(np.mean([relative_change(reference[n][j, 0], out[n][j, 0]) for j in range(k)])))
    settings = {"noise_half_width": half, "draws": cfg.sensitivity_draws, "boxes": k,
                "draws_with_other_boxes": changed_boxes}
    return {m: max(v) for m, v in changes.items() if v}, settings


# --- the command -----------------------------------------------------------------------------------

def estimate_seconds(cfg: ReportConfig, model: onnx.ModelProto, card, x: np.ndarray, detect: bool,
                     explain_graph: onnx.ModelProto, build_s: float = 0.0) -> dict:
    """A rough up-front estimate of the run, from a 16-image U-Net forward (and one detector forward)
    timed now on this machine and the explain graph's multiply-adds in forwards: RISE's masked forwards, the
    insertion/deletion and region-perturbation curves and, with the path methods of paper 003, the explain graph
    itself; and from `build_s`, the measured build of the explain graph and its engine, the graphs built again (one
    per cascade depth and for the label-randomised model; the per-method timing graphs, about twice the whole
    graph together; the detector's)."""
    runner = BaselineModel(model, batch=16, backend=cfg.backend, threads=cfg.threads)
    rows = np.repeat(x, 16, axis=0)
    runner.run_rows(rows)  # warm-up
    t0 = time.perf_counter()
    runner.run_rows(rows)
    fwd16 = time.perf_counter() - t0
    classes, methods = len(card.classes), len(seg_methods(cfg)) + 2
    graph_forwards = multiply_adds(explain_graph) / multiply_adds(model)
    # the explain graph runs on every frame and at every cascade depth (and its label-randomised twin), and each
    # method's own graph is timed alone (a warm-up and 3 calls): together about the whole graph 4 times
    # and on the evaluation's noisy copies and the next frame
    calls16 = ((cfg.frames + 2 * cfg.cascade_steps + 4 + cfg.sensitivity_draws + 1) * graph_forwards / 16
               + -(-cfg.rise_masks // 16) + 2  # RISE, SIDU
               + methods * classes * 3 * (cfg.perturbation_steps + 1) / 16)  # insertion, deletion, region curves
    builds = (cfg.cascade_steps + bool(cfg.random_labels_model) + 2) * build_s
    parts = {"segmentation": calls16 * fwd16 + builds, "band study": 3 * cfg.frames * 4 * fwd16 / 16}
    if detect:  # the detector's forward is ~1/4 of the U-Net's per image here; its head loops batch 1
        box_maps = len(BOX_REPORT_ROWS) + 2  # and RISE, SIDU: three curves per box each
        per_frame = (cfg.rise_masks + box_maps * cfg.boxes * 3 * (cfg.perturbation_steps + 1)) * fwd16 / 16 / 4
        parts["detection"] = cfg.frames * per_frame + 2 * build_s
    return {"forward16_s": fwd16, "build_s": build_s, "explain_graph_forwards": graph_forwards, "sections_s": parts,
            "total_s": sum(parts.values())}


def estimate_text(est: dict, cfg: ReportConfig) -> str:
    """The estimate as one line; it advises --quick only when the run is not already quick."""
    shorter = "--rise-masks makes it shorter" if cfg.preset == "quick" else "--quick or --rise-masks make it shorter"
    return (f"estimated time: about {max(1, round(est['total_s'] / 60))} min ("
            + ", ".join(f"{k} {v / 60:.1f}" for k, v in est["sections_s"].items())
            + f" min; from a 16-image U-Net forward of {est['forward16_s']:.2f} s and the explain graph's build of "
            f"{est['build_s']:.1f} s measured now, and the explain "
            f"graph's {est['explain_graph_forwards']:.0f} forwards' worth of multiply-adds; RISE's {cfg.rise_masks} "
            f"masks, the curves and the path methods' copies weigh most: {shorter})")


def run_report(out_dir: str | Path, cfg: ReportConfig = ReportConfig(), log=print, progress: bool = False) -> dict:
    """Run every section and write report.json and index.html; with `progress`, a bar per section."""
    from tqdm import tqdm

    from ..sensor.calibration import load_profile

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    profile = load_profile("hsi-drive")
    loaded = load_model(cfg.model, profile=profile)
    card, model = loaded.card, onnx.load_model_from_string(loaded.onnx_bytes)
    detect = bool(cfg.detector) and Path(cfg.detector).is_file()

    def bar(desc: str, total: int, unit: str):
        return tqdm(total=total, desc=desc, unit=unit, disable=not progress, leave=True)

    t_start = time.perf_counter()
    frames = _frames(cfg, profile, card, cameras=detect)
    t_build = time.perf_counter()
    explainer = SegmentationExplainer(model, card, cfg.backend, cfg.threads, seg_methods(cfg), path_options(cfg))
    est = estimate_seconds(cfg, model, card, frames[0]["x"], detect, explainer.graph.model,
                           build_s=time.perf_counter() - t_build)
    log(estimate_text(est, cfg))
    names = [c.name for c in card.classes]
    with bar("explain frames", len(frames), "frame") as b:
        runs = []
        for f in frames:
            runs.append(explainer.run(f["x"]))
            b.update(1)
    report = {"config": asdict(cfg), "model": card.name, "classes": names, "estimate": est,
              "frames": [{"drive_seed": FRAME_SEED0 + i, "frame": FRAME_INDEX} for i in range(cfg.frames)]}
    report["conservativeness"] = conservativeness_table([r[0] for r in runs], explainer.graph, class_names=names)
    report["input_conservation"] = input_conservation([r[0] for r in runs], explainer.graph)
    report["gallery"] = gallery(out, card, runs[0], explainer, seg_methods(cfg))
    report["sanity"] = sanity_checks(cfg, model, card, frames[0]["x"], runs[0][1], bar)
    out0, maps0, _ = runs[0]
    report["segmentation_faithfulness"] = segmentation_faithfulness(cfg, model, card, frames[0]["x"], maps0,
                                                                    out0[card.logits], bar)
    report["evaluation"] = {"segmentation": segmentation_evaluation(cfg, model, card, explainer, frames, runs, report,
                                                                    profile, bar)}
    if detect:
        with bar("detection: RISE, SIDU, curves and localisation per frame", len(frames), "frame") as b:
            table, shown, robustness = detection_faithfulness(cfg, frames, b.update, out)
            report["detection_faithfulness"] = {m: {k: v[k] for k in ("deletion", "insertion", "boxes",
                                                                      "seconds_per_map")} for m, v in table.items()}
            report["detection_gallery"] = shown
            report["evaluation"]["detection"] = detection_evaluation(table) | {"robustness": robustness}
    band_paths = [p for p in cfg.band_models if Path(p).is_file()]
    if len(band_paths) >= 2:
        from ._bandstudy import band_study
        with bar("band study", 1, "study") as b:
            study = band_study([f["frame"] for f in frames], band_paths,
                               references=[(f["dark"], f["white"]) for f in frames],
                               profile=profile, threads=cfg.threads or 1, out_dir=out)
            b.update(1)
        report["band_study"] = study.as_dict()
    from ..runtime.backend_choice import machine_description
    from ..detection.card import load_detector

    det = load_detector(cfg.detector).card if detect else None
    report["run"] = {
        "model": f"{card.name} (card sha256 {card.sha256[:12]}...)",
        "detector": (f"{det.name} (card sha256 {det.sha256[:12]}...), per-box methods at {REPORT_BOX_LAYER} "
                     f"({det.layers[REPORT_BOX_LAYER]}) for every box; {BOX_LEVEL_ROW}: Grad-CAM at each box's own "
                     "pyramid level (the detection node's default map)" if det else "none (no detection sections)"),
        "backend": explainer.engine.describe_backend(), "precision": f"fp32: {explainer.engine.arithmetic}",
        "data": (f"{cfg.frames} generated held-out test frame(s): drive seed(s) "
                 f"{', '.join(str(FRAME_SEED0 + i) for i in range(cfg.frames))}, frame {FRAME_INDEX} of each; the sanity "
                 f"checks and segmentation curves use the first"),
        "preset": (f"quick (--quick: {', '.join(f'{k} {v}' for k, v in QUICK.items())})" if cfg.preset == "quick"
                   else "full (the defaults)"),
        "options": (f"frames {cfg.frames}, RISE masks {cfg.rise_masks}, perturbation steps {cfg.perturbation_steps}, "
                    f"cascade depths {cfg.cascade_steps}, boxes per frame {cfg.boxes}, threads {cfg.threads or 'all'}"),
        "date": utc_now(), "duration": duration_text(time.perf_counter() - t_start),
        "machine": machine_text(machine_description())}
    (out / "report.json").write_text(json.dumps(report, indent=1, default=_json))
    _plots(out, report)
    _html(out / "index.html", report)
    return report


# --- plots and the page ------------------------------------------------------------------------------

def _plots(out: Path, report: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    font = PLOT_FONT_PT
    cascade = report["sanity"]["cascading"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), dpi=100)
    for ax, key in zip(axes, ("spearman", "ssim")):
        for method in cascade[0]["methods"]:
            ax.plot([c["depth"] for c in cascade], [c["methods"][method][key] for c in cascade], marker="o",
                    label=method)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("layers randomised, from the top", fontsize=font)
        ax.set_ylabel(f"{key} (trained vs randomised)", fontsize=font)
        ax.tick_params(labelsize=font)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=font, loc="center left", bbox_to_anchor=(0.8, 0.5), frameon=False)
    fig.suptitle("cascading model-parameter randomisation (Adebayo et al. 2018)", fontsize=font)
    fig.tight_layout(rect=(0, 0, 0.8, 1))  # the legend beside the panels, over no line
    fig.savefig(out / "sanity_cascading.png", bbox_inches="tight")
    plt.close(fig)
    for key in ("segmentation_faithfulness", "detection_faithfulness"):
        if key not in report:
            continue
        rows = report[key]
        fig, ax = plt.subplots(figsize=(max(11.0, 0.42 * len(rows)), 4.8), dpi=100)
        xs = np.arange(len(rows))
        ax.bar(xs - 0.2, [r["deletion"] for r in rows.values()], 0.4, label="deletion AUC (lower is better)")
        ax.bar(xs + 0.2, [r["insertion"] for r in rows.values()], 0.4, label="insertion AUC (higher is better)")
        ax.set_xticks(xs, list(rows), fontsize=font, rotation=40, ha="right")  # long names: slanted, no overlap
        ax.tick_params(axis="y", labelsize=font)
        ax.legend(fontsize=font, loc="lower center", bbox_to_anchor=(0.5, 1.08), ncol=2, frameon=False)
        ax.set_title(key.replace("_", " "), fontsize=font)
        fig.tight_layout()
        fig.savefig(out / f"{key}.png", bbox_inches="tight")
        plt.close(fig)


DECORRELATED = 0.3  # |Spearman| below this: the map's pixel ranking no longer follows the trained model's


def sanity_reading(cascade: list[dict]) -> str:
    """The cascading-randomisation rows read for this model, method by method (HTML), from its own numbers:
    what Spearman did once the head was random, and why SSIM stays high here."""
    e = html.escape
    items = []
    for m in cascade[0]["methods"]:
        sp = [c["methods"][m]["spearman"] for c in cascade]
        later = max(abs(v) for v in sp)
        if later < DECORRELATED:
            verdict = (f"at every depth |Spearman| is below {DECORRELATED}: its pixel ranking stops following the "
                       "trained model once the weights are random, so it depends on what was learnt")
        elif abs(sp[-1]) >= 0.5:
            verdict = ("it still ranks pixels like the trained model with every layer random: it shows the input's "
                       "structure more than the model")
        else:
            verdict = (f"some depths keep |Spearman| at or above {DECORRELATED} (largest {later:.2f}): it only "
                       "partly depends on the learnt weights")
        items.append(f"<li><b>{e(m)}</b>: Spearman {sp[0]:+.2f} with the first {cascade[0]['depth']} layer(s) "
                     f"random, {sp[-1]:+.2f} with {cascade[-1]['depth']}; {verdict}.</li>")
    ssim = [c["methods"][m]["ssim"] for c in cascade[1:] or cascade for m in c["methods"]]
    note = (f"<p>SSIM stays between {min(ssim):.2f} and {max(ssim):.2f} once layers are random. SSIM compares "
            "local brightness, contrast and structure, and the randomised model's maps still share the scene's "
            "regions and edges with the trained model's: structure that comes from the input rather than from "
            "the weights (most likely passed on by the U-Net's skip connections, whatever the weights). For this "
            "model SSIM therefore cannot tell trained from random maps, and the Spearman column is the test. "
            f"Small Spearman values of either sign (|Spearman| &lt; {DECORRELATED}) count as decorrelated here.</p>"
            if ssim and min(ssim) > 0.2 else
            f"<p>SSIM falls to {min(ssim):.2f}..{max(ssim):.2f} once layers are random, with Spearman.</p>")
    return "<ul>" + "".join(items) + "</ul>" + note


def _table(header: list[str], rows: list[list]) -> str:
    e = html.escape
    fmt = (lambda v: f"{v:.3g}" if isinstance(v, float) else e(str(v)))
    return scroll("<table border=1><tr>" + "".join(f"<th>{e(h)}</th>" for h in header)
                  + "</tr>" + "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
                  + "</table>")


def _plot(name: str) -> str:
    e = html.escape
    return scroll(f"<a href='{e(name)}'><img class='plot' src='{e(name)}' alt='{e(name)}'></a>")


def _input_conservation_html(rows: dict) -> str:
    if not rows:
        return ""
    return ("<h3>Input attributions: do they add up? (paper 003)</h3><p>Per method, |sum of the attribution over "
            "every input element - its target| / |target|, over the frames and the classes present. LRP's target is "
            "the class score: with biases in the model its residual is the share the biases and stabilisers keep "
            "(LRP-epsilon without bias and z+ drop them from the denominator), not an error. Integrated gradients' "
            "target is S(x) - S(baseline): its residual is the quadrature's error (more steps, smaller). DeepLIFT's "
            "is the same difference, which its rescale rule meets exactly: its residual is float rounding.</p>"
            + _table(["method", "target", "max residual", "median residual", "class rows"],
                     [[m, v["target"], v["max"], v["median"], v["rows"]] for m, v in rows.items()]))


def _gallery_html(r: dict) -> str:
    if "gallery" not in r:
        return ""
    g = r["gallery"]
    parts = [f"<h2>5. Method gallery (paper 003, Fig. 11)</h2><p>The first frame, class <b>{html.escape(g['class'])}"
             f"</b> ({g['pixels']} predicted pixels, outlined): every evaluated method's map side by side. Input "
             "attributions are summed over the bands; signed maps are blue (against) to red (for) around 0.</p>",
             _plot("gallery_segmentation.png"),
             "<p>Which wavelengths: each input attribution's totals per band over the same region, divided by the "
             "sum of their absolute values so that the methods' shapes compare.</p>", _plot("gallery_spectra.png")]
    d = r.get("detection_gallery")
    if d:
        parts += [f"<p>Detector: {html.escape(d['title'])}.</p>", _plot("gallery_detection.png")]
    return "".join(parts)


def _evaluation_html(r: dict) -> str:
    """Section 6: per model, the verdict in words and the methods x metrics table, each value with its rank."""
    from ._evaluation import METRICS, MIN_REGION_PIXELS, RANDOMISATION_THRESHOLD

    ev = r.get("evaluation")
    if not ev:
        return ""
    e = html.escape
    parts = ["<h2>6. Which explanation to trust (paper 003, sec. 7)</h2><p>Every method against what the generated "
             "drives know. Each cell: the mean over the scored class regions or matched boxes, then its rank among the "
             "methods for that metric (1 = best; arrows say which way is better). Localisation and map comparison "
             f"use ground-truth regions of at least {MIN_REGION_PIXELS} pixels; a map's positive values are its "
             "evidence for the class or box. Randomisation checks pass below "
             f"{RANDOMISATION_THRESHOLD}. n/a: not defined for that method (spectral needs per-band totals that "
             "differ between bands: EpsilonPlusFlat's flat first layer spreads relevance evenly over them; RISE and "
             "SIDU are scored on the curves only).</p>",
             _table(["metric", "group", "better", "what"], [[k, g, "higher" if up else "lower", w]
                                                           for k, (g, up, w) in METRICS.items()])]
    for key, title in (("segmentation", "U-Net"), ("detection", "detector")):
        if key not in ev:
            continue
        v = ev[key]
        if key == "segmentation":
            rb = v["robustness"]
            frames = "; ".join(f"drive seed {f['drive_seed']} frame {f['frame']}: {', '.join(f['classes'])}"
                               for f in v["frames"])
            intro = (f"<p>Scored class regions: {e(frames)}. Faithfulness and robustness on the first frame: "
                     f"{rb['draws']} noisy copies (uniform, half-width {rb['noise_half_width']:.3g}; predicted labels "
                     f"changed at up to {100 * rb['label_change_max']:.2f} % of the pixels) and frame "
                     f"{rb['next_frame']['frame']} of the same drive.</p>")
        else:
            rb = v.get("robustness") or {}
            noise = (f" Max-sensitivity: the {rb['boxes']} kept box(es) of the first frame with any, over "
                     f"{rb['draws']} noisy copies (half-width {rb['noise_half_width']:.3g}; "
                     f"{rb['draws_with_other_boxes']} kept other boxes and were left out)." if rb else "")
            intro = (f"<p>Boxes kept on the evaluated frames, each matched to a generated object of its class at "
                     f"IoU 0.5 and scored against that object's pixels in the network view.{e(noise)} "
                     f"Randomisation: {e(v['randomisation_note'])}.</p>")
        metrics = v["summary"]["metrics"]
        rows = []
        for m, cells in v["summary"]["methods"].items():
            rows.append([m] + [("n/a" if not np.isfinite(c["value"]) else f"{c['value']:.3g}")
                               + (f" ({c['rank']})" if c["rank"] else "") for c in (cells[k] for k in metrics)])
        parts += [f"<h3>{title}</h3>", intro, "<ul>" + "".join(f"<li>{e(line)}</li>" for line in v["verdict"])
                  + "</ul>", _table(["method"] + [f"{k} {'↑' if METRICS[k][1] else '↓'}" for k in metrics], rows)]
    return "".join(parts)


def _html(path: Path, r: dict) -> None:
    run = r.get("run", {})
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>explanation reliability</title>", PAGE_STYLE,
             "</head><body>",
             f"<h1>Explanation reliability: {html.escape(r['model'])}</h1>",
             run_header([(k, run.get(k)) for k in ("model", "detector", "backend", "precision", "data", "preset",
                                                  "options", "date", "duration", "machine")]),
             "<p>Every number of this page is in <code>report.json</code>.</p>",
             "<h2>1. Conservativeness (paper 000)</h2><p>Residual |map sum over the class region - (logit sum - bias)| "
             "relative to the logit sum; conservative = below 1e-4 for every class and frame.</p>",
             _table(["method", "max residual", "median residual", "conservative"],
                    [[m, v["max"], v["median"], v["conservative"]] for m, v in r["conservativeness"].items()]),
             _input_conservation_html(r.get("input_conservation", {})),
             "<h2>2. Sanity checks (Adebayo et al. 2018)</h2><p>Maps of the trained model against those of the "
             "model with its top layers randomised (cascading, from the head down). What the numbers say for "
             "this model:</p>", sanity_reading(r["sanity"]["cascading"]), _plot("sanity_cascading.png")]
    cascade = r["sanity"]["cascading"]
    methods = list(cascade[0]["methods"])
    parts.append(_table(["layers randomised", "down to"] + [f"{m} Spearman / SSIM" for m in methods],
                        [[c["depth"], c["layer"]] + [f"{c['methods'][m]['spearman']:.2f} / {c['methods'][m]['ssim']:.2f}"
                                                     for m in methods] for c in cascade]))
    if "label_randomisation" in r["sanity"]:
        lr = r["sanity"]["label_randomisation"]
        parts.append("<p>Label randomisation (a model trained on permuted labels):</p>"
                     + _table(["method", "Spearman", "|Spearman|", "SSIM"],
                              [[m, v["spearman"], v["spearman_abs"], v["ssim"]] for m, v in lr.items()]))
    else:
        parts.append("<p>Label randomisation: not run (give a model trained on permuted labels, made with "
                     "<code>hsi_xai_node.training.random_labels.train_with_random_labels</code>, as "
                     "<code>--random-labels-model</code>).</p>")
    parts.append("<h2>3. Insertion and deletion (Petsiuk et al. 2018; paper 001)</h2>"
                 "<p>AUC of the class (box) score as pixels are deleted (to zero) or inserted (into a blurred copy) "
                 "in the order of each map, normalised by the unperturbed score. Seconds per map: each method's own "
                 "graph alone, timed on this machine in this run (median of 3 calls, all classes or boxes in one call, "
                 "divided by their number); RISE and SIDU as run here.</p>")
    for key, title in (("segmentation_faithfulness", "segmentation classes"), ("detection_faithfulness", "detector boxes")):
        if key in r:
            parts.append(f"<h3>{title}</h3>" + _plot(f"{key}.png")
                         + _table(["method", "deletion AUC", "insertion AUC", "seconds per map"],
                                  [[m, v["deletion"], v["insertion"], v["seconds_per_map"]] for m, v in r[key].items()]))
    if "band_study" in r:
        parts.append("<h2>4. Band-count study (paper 000)</h2>" + r["band_study"].get("html", ""))
    parts.append(_gallery_html(r))
    parts.append(_evaluation_html(r))
    parts.append(PAGE_PROBE + "</body></html>")
    path.write_text("\n".join(parts))
