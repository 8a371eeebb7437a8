"""`hsi-xai demo`: a generated drive, recorded as a rosbag2, replayed through the node's pipeline.

    demo_out/input_bag/    the drive as the vehicle would record it (raw mosaic mono16 at 25 fps,
                           dark/white references, RGB/NIR/MIR/FIR cameras), MCAP
    demo_out/output_bag/   the replay: every input topic plus what the live node publishes
                           (labels, segmentation, preview, fused Grad-CAM and activation overlays,
                           /diagnostics), same topic names and headers; play it with `ros2 bag play`
                           and the detector's Detection2DArray and detection overlay
    demo_out/index.html    the report: a contact sheet read back from the output bag (false colour,
                           ground truth, segmentation, overlays, detections with per-box Grad-CAM,
                           cameras), per-class spectral attributions (gradient x input and
                           DeepLIFT, with DeepLIFT's summation-to-delta), class spectra in sun and
                           shadow, detection AP against the drive's ground truth, timing and
                           conservativeness figures
"""

from __future__ import annotations

import dataclasses
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .classes import SEGMENTATION_CLASSES, colourise
from .report_page import (PAGE_PROBE, PAGE_STYLE, PLOT_FONT_PT, duration_text, machine_text, run_header, scroll,
                          utc_now)

RAW_ZOOM = (slice(500, 600), slice(1000, 1100))  # 100x100 raw pixels = 20x20 pattern tiles
SHOWN = ("preview", "segmentation", "gradcam_overlay", "activation_overlay", "detection/overlay")
CAPTIONS = {"preview": "false colour (850 / 732 / 564 nm)", "segmentation": "segmentation (bundled 25-band PN U-Net)",
            "gradcam_overlay": "Seg-Grad-CAM (one-sided), each pixel's predicted class",
            "activation_overlay": "activation maps (conservative, signed), each pixel's predicted class",
            "detection/overlay": "detections (RGB+MIR EfficientDet), each box's Grad-CAM around it"}
LEGENDS = ("gradcam_overlay", "activation_overlay", "detection/overlay")


@dataclass
class DemoSummary:
    out_dir: str
    profile: str
    seed: int
    frames: int
    replay: dict = field(default_factory=dict)  # the replay's summary
    label_accuracy: float = float("nan")  # share of labelled pixels the model gets right (contact-sheet frames)
    class_spectra: dict = field(default_factory=dict)  # class -> {"sun": [...], "shadow": [...]} PN means
    # class -> per band, over its region: "gradient x input" and "DeepLIFT" (zero reference, paper 003)
    spectral_attribution: dict = field(default_factory=dict)
    deeplift_residual_max: float = float("nan")  # largest |sum - (S(x) - S(0))| / |S(x) - S(0)| over frames, classes
    wavelengths_nm: list = field(default_factory=list)
    detection: dict = field(default_factory=dict)  # AP against the drive's ground truth, counts
    drive: dict = field(default_factory=dict)  # which drive, and whether any model saw it (drive_provenance)
    map_strength: list = field(default_factory=list)  # per overlay and class: card reference against this drive's peaks
    run: dict = field(default_factory=dict)  # what ran: models and card hashes, backend, options, date, machine
    input_bag_mb: float = 0.0  # measured on disk when the demo finished
    output_bag_mb: float = 0.0
    seconds: float = 0.0  # the whole demo, wall time


def thermal_to_mono8(image: np.ndarray) -> np.ndarray:
    """A mono16 thermal frame (centikelvin) as 8 bits by histogram equalisation: grey level = temperature rank.

    A linear stretch (even between the 2nd and 98th percentiles) spends most grey levels on the gap
    between the cold sky and everything else, leaving the scene nearly white; thermal cameras' own
    displays equalise for the same reason."""
    values, index, counts = np.unique(image, return_inverse=True, return_counts=True)
    cdf = np.cumsum(counts)
    lut = (cdf - cdf[0]) * (255.0 / max(int(cdf[-1] - cdf[0]), 1))
    return lut[index].reshape(image.shape).round().astype(np.uint8)


def raw_zoom(raw: np.ndarray, scale: int = 2) -> np.ndarray:
    """A stretched, nearest-neighbour enlargement of a raw patch: the mosaic pattern shows."""
    patch = raw[RAW_ZOOM].astype(np.float32)
    lo, hi = np.percentile(patch, (1, 99))
    patch = np.clip((patch - lo) * (255.0 / max(hi - lo, 1.0)), 0, 255).astype(np.uint8)
    return cv2.resize(patch, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def read_images(bag: Path, topics: list[str]) -> dict[str, dict[int, np.ndarray]]:
    """topic -> {header stamp (ns) -> image} for the Image topics of a bag."""
    from rosbags.rosbag2 import Reader

    from .transports import messages as m

    out = {t: {} for t in topics}
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic in out]
        for conn, _, data in reader.messages(connections=conns):
            msg = m.deserialize(data, conn.msgtype)
            out[conn.topic][m.stamp_ns(msg.header)] = m.image_to_array(msg, conn.topic).copy()
    return out


def read_detections(bag: Path, topic: str) -> dict[int, tuple[np.ndarray, np.ndarray, list[str]]]:
    """header stamp (ns) -> (boxes (n, 4) x0 y0 x1 y1, scores, class names) of a Detection2DArray topic."""
    from rosbags.rosbag2 import Reader

    from .transports import messages as m

    out = {}
    with Reader(bag) as reader:
        for conn, _, data in reader.messages(connections=[c for c in reader.connections if c.topic == topic]):
            msg = m.deserialize(data, conn.msgtype)
            boxes, scores, names = [], [], []
            for d in msg.detections:
                cx, cy, w, h = d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y
                boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
                scores.append(d.results[0].hypothesis.score)
                names.append(d.results[0].hypothesis.class_id)
            out[m.stamp_ns(msg.header)] = (np.array(boxes, np.float64).reshape(-1, 4), np.array(scores), names)
    return out


def detection_scores(detections: dict, truth: dict) -> dict:
    """AP@0.5 per class of the published detections against the generated ground truth (both in the
    primary camera's pixels); objects lower than the training's minimum height are ignore regions."""
    from .classes import DETECTION_CLASSES
    from .detection.evaluation import Detections, GroundTruth, evaluate_map

    ids = {c.name: c.id for c in DETECTION_CLASSES}
    dets, gts, per_frame = [], [], {}
    for stamp, (boxes, classes, ignore) in truth.items():
        b, sc, names = detections.get(stamp, (np.zeros((0, 4)), np.zeros(0), []))
        dets.append(Detections(b, sc, np.array([ids[n] for n in names], np.int64)))
        gts.append(GroundTruth(boxes, classes, ignore))
        per_frame[stamp] = {"objects": int((~np.asarray(ignore, bool)).sum()), "too_small": int(np.sum(ignore)),
                            "detections": len(names)}
    r = evaluate_map(dets, gts, len(DETECTION_CLASSES))
    names = [c.name for c in DETECTION_CLASSES]
    per_class = {n: int(sum((d.classes == ids[n]).sum() for d in dets)) for n in names}
    too_small = {n: int(sum(((g.classes == ids[n]) & g.ignore).sum() for g in gts)) for n in names}
    present = [n for n, k in zip(names, r.num_gt) if k]
    return {"frames": len(gts), "map": r.mean_ap, "map_over": present, "ap": dict(zip(names, r.ap)),
            "objects": dict(zip(names, r.num_gt)), "too_small": too_small, "tp": dict(zip(names, r.tp)),
            "fp": dict(zip(names, r.fp)), "on_ignore": dict(zip(names, r.dropped)), "per_class": per_class,
            "detections": int(sum(len(d.scores) for d in dets)), "per_frame": per_frame}


def _class_means(cube: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> dict[int, np.ndarray]:
    out = {}
    for c in SEGMENTATION_CLASSES:
        sel = (labels == c.id) & mask
        if sel.sum() >= 20:
            out[c.id] = cube[:, sel].mean(axis=1)
    return out


def _plot(path: Path, wavelengths, series: dict, title: str, ylabel: str = "", styles=("sun", "shadow")) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(wavelengths)
    fig, ax = plt.subplots(figsize=(9.0, 4.2), dpi=100)
    for c in SEGMENTATION_CLASSES:
        colour = tuple(v / 255 for v in c.bgr[::-1])
        if min(colour) > 0.85:  # white road marks would vanish on the white background
            colour = (0.55, 0.55, 0.55)
        for light, style in zip(styles, ("-", "--")):
            spec = series.get(c.name, {}).get(light)
            if spec is not None:
                ax.plot(np.asarray(wavelengths)[order], np.asarray(spec)[order], style, color=colour,
                        label=f"{c.name}" + (f" ({light})" if len(styles) > 1 else ""), marker=".")
    ax.set_xlabel("wavelength (nm)", fontsize=PLOT_FONT_PT)
    ax.set_ylabel(ylabel, fontsize=PLOT_FONT_PT)
    ax.set_title(title, fontsize=PLOT_FONT_PT)
    ax.tick_params(labelsize=PLOT_FONT_PT)
    ax.legend(fontsize=PLOT_FONT_PT, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside the data
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def demo_cards(config) -> dict[str, str]:
    """model name -> card path of the models the demo runs (segmentation, and the detector when on)."""
    seg = config.pipeline_config()
    cards = {Path(seg.model).stem: seg.card or str(Path(seg.model).with_suffix(".json"))}
    det = config.detection_config()
    if det is not None:
        cards[Path(det.model).stem] = det.card or str(Path(det.model).with_suffix(".json"))
    return cards


def drive_provenance(seed: int, frames: int, stride: int, cards: dict[str, str], allow_seen: bool) -> dict:
    """Which drive the demo's figures come from and whether any model saw it; refuses a seen drive
    unless `allow_seen` (then every figure says it was measured on training or validation data)."""
    from .drive_splits import describe_splits, seen_by
    from .errors import InputError

    seen = seen_by(seed, cards)
    if seen and not allow_seen:
        raise InputError(f"drive seed {seed} was used to fit the models ({', '.join(f'{m}: {s}' for m, s in seen.items())}"
                         "): figures measured on it would flatter them. Choose a held-out seed (the default, or one "
                         "outside every card's training.splits train/val seeds), or pass --allow-training-drive")
    last = (frames - 1) * stride
    return {"seed": seed, "frames": f"0-{last}" + (f" (every {stride})" if stride > 1 else ""),
            "held_out": not seen, "seen_by": seen, "splits": describe_splits(cards)}


def provenance_text(p: dict) -> str:
    """One sentence for every figure: the drive and whether the models saw it."""
    where = f"drive seed {p['seed']}, frames {p['frames']}"
    if p["held_out"]:
        return f"{where}, held out: no model was trained or validated on this drive"
    seen = ", ".join(f"{m} ({s})" for m, s in p["seen_by"].items())
    return f"{where}: MEASURED ON DATA THE MODELS WERE FITTED ON ({seen}); these figures flatter the models"


def run_demo(out_dir: str | Path, profile_name: str = "hsi-drive", seed: int | None = None, frames: int = 25,
             stride: int = 1, backend: str = "auto", progress: bool = True, sheet: int = 6,
             allow_training_drive: bool = False, copy_raw: bool = False) -> DemoSummary:
    """Record `frames` frames of a generated drive (every `stride`-th; 1 = the 25 fps camera rate) as a
    bag, replay it through the pipeline, and write the report with `sheet` evenly spaced frames.

    `seed` (default: DEMO_SEED) must be a drive no model was trained or validated on, unless
    `allow_training_drive`; `copy_raw` also copies the raw mosaic into the output bag."""
    import shutil
    import time

    from .drive_splits import DEMO_SEED
    from .errors import InputError
    from .transports.config import load_config
    from .transports.drive_bag import CAMERA_TOPIC
    from .transports.output_dir import (check_replaceable, clean_stale_partials, disk_bytes, make_partial,
                                        prepare_dir, read_marker, remove_replaceable)

    t_start = time.perf_counter()
    seed = DEMO_SEED if seed is None else seed
    if frames < 1 or stride < 1 or sheet < 1:
        raise InputError(f"--frames, --stride and --sheet must be at least 1, got {frames}, {stride}, {sheet}")
    config = load_config(sensor_profile=profile_name, backend=backend,
                         multispectral_topics=tuple(CAMERA_TOPIC.values()))
    provenance = drive_provenance(seed, frames, stride, demo_cards(config), allow_training_drive)
    final = Path(out_dir)
    if final.is_dir() and any(final.iterdir()) and (read_marker(final) or {}).get("tool") != TOOL:
        prepare_dir(final, TOOL, "demo output directory")  # refuses, naming what is there
    check_replaceable(final, True, "demo output directory")
    clean_stale_partials(final)
    # built beside the final folder and renamed into place when complete: a failed demo leaves the earlier
    # output (or nothing) where it was, never a half-made report
    tmp = make_partial(final, TOOL)
    try:
        out = prepare_dir(tmp / final.name, TOOL, "demo output directory")
        result, page = _run(out, final, config, profile_name, seed, frames, stride, progress, sheet, copy_raw,
                            provenance)
        result.input_bag_mb = disk_bytes(out / "input_bag") / 1e6
        result.output_bag_mb = disk_bytes(out / "output_bag") / 1e6
        result.out_dir = str(final)
        result.seconds = time.perf_counter() - t_start
        result.run["duration"] = (f"{duration_text(result.seconds)} (input bag {result.input_bag_mb:.1f} MB, "
                                  f"output bag {result.output_bag_mb:.1f} MB)")
        (out / "summary.json").write_text(json.dumps(result.__dict__, indent=1))
        _write_html(out / "index.html", result, *page)
        remove_replaceable(final, "demo output directory")
        out.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


TOOL = "hsi-xai demo"
TRUTH_CAPTION = ("ground truth on the RGB camera: green found, red missed (no published box of its class at IoU "
                 ">= 0.5), grey too small to count; white: the published boxes")


def _run(out: Path, final: Path, config, profile_name: str, seed: int, frames: int, stride: int, progress: bool,
         sheet: int, copy_raw: bool, provenance: dict) -> tuple[DemoSummary, tuple]:
    """Everything the demo writes, into `out` (a temporary folder that becomes `final`)."""
    from .runtime import Pipeline
    from .runtime.backend_choice import machine_description
    from .scenes.drive import DriveGenerator
    from .sensor.calibration import load_profile
    from .sensor.frontend import FrontEnd, FrontEndConfig
    from .transports.drive_bag import CAMERA_TOPIC, write_drive_bag
    from .transports.replay import replay

    (out / "frames").mkdir(exist_ok=True)
    in_bag = write_drive_bag(out / "input_bag", config, seed=seed, frames=frames, stride=stride)
    summary = replay(in_bag, out / "output_bag", config, progress=progress, overwrite=True, copy_raw=copy_raw)
    summary.input, summary.output = str(final / "input_bag"), str(final / "output_bag")  # where they will be
    shown = {name: config.output_topic(name) for name in SHOWN}
    labels_topic = config.output_topic("labels")
    legend_topics = {name: config.output_topic(f"{name}/legend") for name in LEGENDS}
    images = read_images(out / "output_bag", [*shown.values(), labels_topic, *CAMERA_TOPIC.values(),
                                              *legend_topics.values()])
    legends = []  # the colour keys the node publishes (latched), read back from the bag: the first of each
    for name, topic in legend_topics.items():
        if images[topic]:
            rel = f"frames/legend_{name.replace('/', '_')}.png"
            cv2.imwrite(str(out / rel), images[topic][min(images[topic])])
            legends.append((name, rel))
    raws = read_images(in_bag, [config.raw_topic])[config.raw_topic]
    profile = load_profile(profile_name)
    gen = DriveGenerator(profile, seed=seed, render_cameras=False)
    stamps = sorted(raws)
    detection, truth, published = {}, {}, {}
    if config.detector_model:
        detection, truth, published = _score_detections(out / "output_bag", config, gen, stride, stamps)
    dark, white = gen.references()
    front_end = FrontEnd(profile, dark, white, FrontEndConfig(normalise=True))
    seg_cfg = config.pipeline_config()
    overlay = seg_cfg.overlay_method
    # the spectra, and the float maps of both overlays (their peaks against the card's references)
    # and DeepLIFT's per band beside gradient x input: an attribution whose bands add up to S(x) - S(0)
    spectral = Pipeline(dataclasses.replace(seg_cfg, methods=tuple(dict.fromkeys(("activation", overlay, "spectral",
                                                                                     "deeplift"))),
                                            class_maps=True), dark, white)
    # each detection's camera shares (gradient x input per camera, paper 001's question of RGB + MIR) and its
    # overlay map, for the contact-sheet frames: the replay's detector does not need the (costly) input gradient
    # for every frame
    det_cfg = config.detection_config()
    shares_detector = None
    if det_cfg is not None:
        from .runtime.detection import DetectionPipeline

        shares_detector = DetectionPipeline(dataclasses.replace(det_cfg, methods=("box_spectral",), explain_boxes=10,
                                                                box_maps=True))
        cam_gen = DriveGenerator(profile, seed=seed)
    acc = {light: {} for light in ("sun", "shadow")}
    attributions, deeplift, deeplift_residuals, rows, correct, labelled = [], [], [], [], 0, 0
    peaks: dict[tuple[str, str], list[float]] = {}  # (overlay, class) -> this drive's peaks
    shown_k = sorted(set(np.linspace(0, len(stamps) - 1, min(sheet, len(stamps))).round().astype(int).tolist()))
    for row, k in enumerate(shown_k):
        stamp = stamps[k]
        frame = gen.frame(k * stride)
        raw = raws[stamp]
        labels = images[labels_topic][stamp]
        scored = labels > 0
        correct += int((labels[scored] == frame.labels[scored]).sum())
        labelled += int(scored.sum())
        fe = front_end.process(raw)
        for light, mask in (("sun", frame.sun > 0.9), ("shadow", frame.sun < 0.1)):
            for cid, spec in _class_means(fe.cube.data, frame.labels, mask & ~fe.saturated).items():
                acc[light].setdefault(cid, []).append(spec)
        res = spectral.process(raw)
        attributions.append(res.spectra)
        deeplift.append(res.band_attributions["deeplift"])
        deeplift_residuals.append(res.residuals["deeplift"])
        _segmentation_peaks(spectral, res, peaks)
        cells = [(CAPTIONS["preview"], images[shown["preview"]][stamp]), ("ground truth", colourise(frame.labels))]
        cells += [(CAPTIONS[n], images[shown[n]][stamp]) for n in SHOWN[1:] if stamp in images[shown[n]]]
        cells.append(("raw mosaic, 100x100 px zoom", raw_zoom(raw)))
        if shares_detector is not None:
            found = shares_detector.process({n: c.image for n, c in cam_gen.frame(k * stride).cameras.items()})
            _box_peaks(shares_detector, found, peaks)
            rel = f"frames/{row:03d}_shares.png"
            if _camera_share_plot(out / rel, found.detections):
                cells.append(("camera shares per detection (gradient x input)", rel))
        primary = CAMERA_TOPIC.get("rgb")
        if stamp in truth and stamp in images.get(primary, {}):
            cells.append((TRUTH_CAPTION, truth_image(images[primary][stamp], truth[stamp], published.get(stamp))))
        for name, topic in CAMERA_TOPIC.items():
            if stamp in images[topic]:
                img = images[topic][stamp]
                thermal = img.dtype == np.uint16
                cells.append((f"{name} camera" + (" (histogram-equalised: grey = temperature rank)" if thermal else ""),
                              thermal_to_mono8(img) if thermal else img))
        files = []
        for i, (caption, img) in enumerate(cells):
            if isinstance(img, str):  # already written (a plot)
                files.append((caption, img))
                continue
            rel = f"frames/{row:03d}_{i}.png"
            cv2.imwrite(str(out / rel), img)
            files.append((caption, rel))
        rows.append((k * stride, stamp, files, detection.get("per_frame", {}).get(stamp)))

    names = {c.id: c.name for c in SEGMENTATION_CLASSES}
    wl = profile.band_wavelengths_nm
    class_spectra = {names[cid]: {light: np.mean(acc[light][cid], axis=0).tolist()
                                  for light in acc if cid in acc[light]}
                     for cid in sorted(set(acc["sun"]) | set(acc["shadow"]))}
    mean_attr = np.mean(attributions, axis=0)  # (classes, bands), model channel order = sensor band order
    card_classes = [c.name for c in spectral.card.classes]
    mean_deeplift = np.mean(deeplift, axis=0)
    attribution = {name: {"gradient x input": mean_attr[i].tolist(), "DeepLIFT": mean_deeplift[i].tolist()}
                   for i, name in enumerate(card_classes)}
    finite = np.concatenate(deeplift_residuals)
    finite = finite[np.isfinite(finite)]
    _plot(out / "spectra_pn.png", wl, class_spectra, "mean PN spectrum: sun (-) vs shadow (--)")
    _plot(out / "spectral_attribution.png", wl, attribution,
          "per-class spectral attribution: gradient x input (-), DeepLIFT (--)", "sum over the class region",
          styles=("gradient x input", "DeepLIFT"))
    _class_legend(out / "class_legend.png")
    strength = _map_strength(peaks, spectral, shares_detector)
    det = shares_detector
    ran = {"models": "; ".join(f"{c.name} (card sha256 {c.sha256[:12]}...)" for c in
                               [spectral.card, *([det.card] if det is not None else [])]),
           "backend": (f"segmentation: {summary.backend_choice or summary.backend}"
                       + (f"; detection: {summary.detection_backend_choice or summary.detection_backend}"
                          if det is not None else "")),
           "precision": (f"segmentation: {summary.arithmetic or seg_cfg.precision}"
                         + (f"; detection: {summary.detection_arithmetic}" if det is not None
                            and summary.detection_arithmetic else "")),  # what the engines computed in
           "data": f"{provenance_text(provenance)}; sensor profile {profile.name}",
           "options": (f"frames {frames}, stride {stride}, contact sheet {len(shown_k)} frames, overlay_scale "
                       f"{config.overlay_scale}, copy_raw {copy_raw}"),
           "date": utc_now(), "machine": machine_text(machine_description())}
    result = DemoSummary(out_dir=str(out), profile=profile.name, seed=seed, frames=len(stamps),
                         replay=summary.as_dict(), label_accuracy=correct / max(labelled, 1),
                         class_spectra=class_spectra, spectral_attribution=attribution, wavelengths_nm=wl.tolist(),
                         deeplift_residual_max=float(finite.max()) if finite.size else float("nan"),
                         detection=detection, drive=provenance, map_strength=strength, run=ran)
    return result, (rows, summary.text(), legends, config.overlay_scale)


def _segmentation_peaks(pipeline, result, peaks: dict) -> None:
    """Per overlay map and class: the map's peak over the class's own predicted pixels in this frame (one-sided
    maps: the largest value; signed: the largest magnitude), what its colour scale is compared with."""
    channel = None
    for key, maps in result.class_maps.items():
        method = key.split("@")[0]
        signed = pipeline.graph.outputs[pipeline._plan[key]].signed
        if channel is None:
            to_channel = np.full(256, -1)
            to_channel[pipeline._lut] = np.arange(len(pipeline._lut))  # label ids back to channels
            channel = to_channel[result.labels[pipeline._window()]]
        for c, cls in enumerate(pipeline.card.classes):
            region = channel == c
            if region.sum() < 20:
                continue
            v = maps[c][region]
            peaks.setdefault((method, cls.name), []).append(float(np.abs(v).max() if signed else max(v.max(), 0.0)))


def _box_peaks(detector, result, peaks: dict) -> None:
    if result.box_maps is None:
        return
    method = detector.config.overlay_method
    for d in result.detections:
        if d.slot < len(result.box_maps):
            m = result.box_maps[d.slot]
            peaks.setdefault((method, d.class_name), []).append(float(np.abs(m).max() if detector._signed
                                                                      else max(m.max(), 0.0)))


def _map_strength(peaks: dict, pipeline, detector) -> list:
    """Rows: overlay, class, the card's reference (what full colour means), this drive's median peak, and their
    ratio: a class whose maps peak far below its reference is shown dim, by design of the card scale."""
    refs = {}
    for card, layer_of in ((pipeline.card, lambda m: pipeline.card.layers.get("penultimate")),
                           *(((detector.card, lambda m: detector.card.layers.get(detector.config.layer,
                                                                                 detector.config.layer)),)
                             if detector is not None else ())):
        for key, entry in card.overlay_scales.items():
            refs[key] = (entry.get("classes", {}) if isinstance(entry, dict) else {})
    rows = []
    for (method, cls), values in sorted(peaks.items()):
        layer = (detector.card.layers.get(detector.config.layer, detector.config.layer)
                 if method.startswith("box_") and detector is not None else pipeline.card.layers.get("penultimate"))
        ref = refs.get(f"{method}@{layer}", {}).get(cls)
        peak = float(np.median(values))
        rows.append({"overlay": method, "class": cls, "reference": ref, "peak": peak, "maps": len(values),
                     "ratio": peak / ref if ref else None})
    return rows


def _camera_share_plot(path: Path, detections) -> bool:
    """A stacked bar per detection (best first): each camera's share of |gradient x input| over the box."""
    rows = [d for d in detections if d.camera_shares][:10]
    if not rows:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cameras = list(rows[0].camera_shares)
    colours = {"rgb": "#d04040", "mir": "#4060d0", "nir": "#40a040", "fir": "#d08020"}
    fig, ax = plt.subplots(figsize=(4.4, 0.3 * len(rows) + 1.4), dpi=100)
    y = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    for cam in cameras:
        share = np.array([d.camera_shares[cam] for d in rows])
        ax.barh(y, share, left=left, color=colours.get(cam, None), label=cam)
        left += share
    ax.set_yticks(y, [f"{i + 1} {d.class_name} {d.score:.2f}" for i, d in enumerate(rows)], fontsize=PLOT_FONT_PT)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of |gradient x input|", fontsize=PLOT_FONT_PT)
    ax.tick_params(axis="x", labelsize=PLOT_FONT_PT)
    ax.legend(fontsize=PLOT_FONT_PT, ncol=len(cameras), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return True


def _class_legend(path: Path) -> None:
    """The segmentation classes' colours with their names (the report's key to the segmentation images)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=tuple(v / 255 for v in c.bgr[::-1]), edgecolor="black", label=f"{c.id} {c.name}")
               for c in SEGMENTATION_CLASSES]
    fig = plt.figure(figsize=(6.0, 0.9), dpi=100)
    fig.legend(handles=handles, loc="center", ncol=3, fontsize=PLOT_FONT_PT, frameon=False)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _score_detections(bag: Path, config, gen, stride: int, stamps: list[int]) -> dict:
    """The published detections of every frame against the drive's ground-truth boxes."""
    from .detection.card import load_detector
    from .detection.evaluation import MIN_HEIGHT_PX
    from .runtime.detection import stack_from_card
    from .sensor.multispectral import boxes_to_network
    from .sensor.rig import read_rig, transform_box

    # the detector's card and the rig give the geometry; no engine is needed to score published boxes
    det = config.detection_config()
    full_rig = read_rig(det.rig)
    rig = full_rig.cameras
    loaded = load_detector(det.model, det.card)
    primary, stack = loaded.card.input.stack[0].camera, stack_from_card(loaded, rig, full_rig.common_view)
    truth = {}
    for k, stamp in enumerate(stamps):
        objects = gen.frame(k * stride).camera_objects
        common = np.array([o.box for o in objects], np.float64).reshape(-1, 4)
        height = boxes_to_network(common, stack)
        truth[stamp] = (np.array([transform_box(b, rig[primary].homography) for b in common]).reshape(-1, 4),
                        np.array([o.class_id for o in objects], np.int64),
                        (height[:, 3] - height[:, 1]) < MIN_HEIGHT_PX)
    published = read_detections(bag, config.output_topic("detections"))
    return detection_scores(published, truth), truth, published


def truth_image(image: np.ndarray, truth, detections, zoom: int = 2) -> np.ndarray:
    """The primary camera's image with the ground truth drawn (`zoom` times, so thin boxes stay visible):
    green = found (a published box of its class overlaps it at IoU >= 0.5), red = missed, grey = too small to
    count (an ignore region); published boxes thin white."""
    from .classes import DETECTION_CLASSES
    from .detection.boxes import iou_matrix

    boxes, classes, ignore = truth
    det_boxes, _, det_names = detections if detections is not None else (np.zeros((0, 4)), None, [])
    ids = {c.name: c.id for c in DETECTION_CLASSES}
    det_classes = np.array([ids[n] for n in det_names], np.int64)
    out = cv2.resize(image, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
    if out.ndim == 2:
        out = cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
    for b in det_boxes:
        x0, y0, x1, y1 = (int(round(v * zoom)) for v in b)
        cv2.rectangle(out, (x0, y0), (x1, y1), (255, 255, 255), 1)
    iou = iou_matrix(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(det_boxes, np.float64).reshape(-1, 4))
    for i, (b, c, ign) in enumerate(zip(boxes, classes, ignore)):
        found = bool(len(det_classes)) and bool(((iou[i] >= 0.5) & (det_classes == c)).any())
        colour = (150, 150, 150) if ign else (0, 200, 0) if found else (0, 0, 230)
        x0, y0, x1, y1 = (int(round(v * zoom)) for v in b)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, 1 if ign else 3)
    return out


def _detection_html(d: dict, where: str) -> str:
    if not d:
        return "<h2>Detections</h2><p>Detection is off (no detector_model configured).</p>"
    e = html.escape
    ap = {n: "-" if v is None else f"{v:.3f}" for n, v in d["ap"].items()}
    rows = "".join(f"<tr><td>{e(n)}</td><td>{d['objects'][n]}</td><td>{d['too_small'][n]}</td><td>{d['per_class'][n]}"
                   f"</td><td>{d['tp'][n]}</td><td>{d['fp'][n]}</td><td>{d['on_ignore'][n]}</td><td>{ap[n]}</td></tr>"
                   for n in ap)
    total = {k: sum(d[k].values()) for k in ("objects", "too_small", "per_class", "tp", "fp", "on_ignore")}
    rows += ("<tr><td><b>all</b></td>" + "".join(f"<td><b>{total[k]}</b></td>" for k in
                                                 ("objects", "too_small", "per_class", "tp", "fp", "on_ignore"))
             + "<td></td></tr>")
    mean = "-" if d["map"] is None else f"{d['map']:.3f}"
    over = d.get("map_over", [])
    return ("<h2>Detections</h2><p>The RGB+MIR EfficientDet's published Detection2DArray boxes (primary camera "
            f"pixels) against the drive's ground truth over {d['frames']} frames ({e(where)}), at the node's score "
            "threshold (so AP is that of a truncated precision-recall curve). Objects lower than 8 px in the "
            "network view are <i>ignore regions</i>: they do not count as objects to find, and a detection on one "
            "is neither a true nor a false positive. "
            f"<b>{d['detections']} detections = {total['tp']} true positives + {total['fp']} false positives + "
            f"{total['on_ignore']} on ignore regions.</b> mAP@0.5: <b>{mean}</b>, the mean AP over the "
            f"{len(over)} classes with objects in this drive ({e(', '.join(over) or 'none')}); classes without "
            "objects have no AP. One drive of one second is a small sample: the detector's card gives its mAP over "
            "60 frames of 10 held-out drives.</p>"
            + scroll("<table border=1><tr><th>class</th><th>objects</th><th>too small (ignore regions)</th>"
                     "<th>detections</th><th>true positives</th><th>false positives</th><th>detections on ignore "
                     f"regions</th><th>AP@0.5</th></tr>{rows}</table>"))


def _strength_html(rows: list, scale: str) -> str:
    """Which classes' maps show dim at the card scale, and why: their reference against this drive's peaks."""
    if scale != "card" or not rows:
        return ""
    e = html.escape
    dim = [r for r in rows if r["ratio"] is not None and r["ratio"] < DIM_RATIO]
    body = "".join(f"<tr><td>{e(r['overlay'])}</td><td>{e(r['class'])}</td><td>"
                   + ("-" if r["reference"] is None else f"{r['reference']:.3g}") + f"</td><td>{r['peak']:.3g}</td><td>"
                   + ("-" if r["ratio"] is None else f"{r['ratio']:.2f}") + f"</td><td>{r['maps']}</td></tr>"
                   for r in rows)
    text = ("; ".join(f"{r['class']}'s {r['overlay']} maps peak at {r['ratio']:.2f} of the card's reference"
                      for r in dim))
    note = (f"<p>Shown dim on these frames: {e(text)}. With card scales full colour means the card's reference "
            "value for the class (the 99th percentile of that class's map over its pixels on the validation drives), "
            "so a class whose maps are weaker here than there is drawn dark, on purpose: the colour compares frames "
            "and drives, not classes within a frame.</p>" if dim else
            "<p>Every class's maps reach at least "
            f"{DIM_RATIO:.0%} of the card's reference on these frames.</p>")
    note += ("<p>The detection overlay also blends each pixel by its own value (dark where the box's map is low): a "
             "box whose map peaks at one spot shows mostly the camera image around that spot, however high the peak."
             "</p>")
    return ("<h3>How strong each class's maps are against the card's scale</h3>" + note
            + scroll("<table border=1><tr><th>overlay</th><th>class</th><th>card reference (full colour)</th><th>peak "
                     "on this drive (median over maps)</th><th>peak / reference</th><th>maps</th></tr>" + body
                     + "</table>"))


DIM_RATIO = 0.3  # a class whose maps peak below this share of their reference shows dark


def _splits_html(p: dict) -> str:
    e = html.escape
    rows = "".join(f"<tr><td>{e(m)}</td>" + "".join(f"<td>{e(sp.get(k, '-'))}</td>" for k in ("train", "val", "test"))
                   + "</tr>" for m, sp in p["splits"].items())
    return scroll("<table border=1><tr><th>model</th><th>trained on drives</th>"
                  f"<th>validated on</th><th>tested on</th></tr>{rows}</table>")


SCALE_TEXT = {"card": "each class's map is divided by the class's reference value in the model card (the 99th "
                      "percentile of that map over the class's pixels on the validation drives): a colour means the "
                      "same value in every frame",
              "running": "each class's map is divided by a running mean of its per-frame peak",
              "frame": "each class's map is divided by its own peak in each frame: colours compare within a frame only"}


def _write_html(path: Path, s: DemoSummary, rows, replay_text: str, legends=(), scale: str = "card") -> None:
    e = html.escape
    where = provenance_text(s.drive)
    warn = "" if s.drive["held_out"] else " style='color:#b00000;font-weight:bold'"
    run = [("models", s.run.get("models")), ("backend", s.run.get("backend")), ("precision", s.run.get("precision")),
           ("data", s.run.get("data")), ("options", s.run.get("options")), ("date", s.run.get("date")),
           ("duration", s.run.get("duration")), ("machine", s.run.get("machine"))]
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>hsi_xai_node demo</title>", PAGE_STYLE,
             "<style>.frame{display:flex;flex-wrap:wrap;gap:4px;margin-bottom:12px}"
             " figure{margin:0;width:216px;max-width:100%} figure img{width:216px;max-width:100%;display:block}"
             " figure.wide, figure.wide img{width:440px} figure.natural{width:auto;overflow-x:auto}"
             " figure.natural img{width:auto}</style>"
             "</head><body>",
             f"<h1>hsi_xai_node demo</h1><p>A generated drive (sensor profile <b>{e(s.profile)}</b>) recorded as "
             f"<code>input_bag/</code> and replayed through the node's pipeline into <code>output_bag/</code>; every "
             "output image below is read back from the output bag. Click an image to open it full size.</p>",
             run_header(run),
             f"<p{warn}>Every figure on this page comes from {e(where)}.</p>", _splits_html(s.drive),
             f"<p>Labelled pixels the segmentation gets right (contact-sheet frames): "
             f"<b>{100 * s.label_accuracy:.1f}%</b>.</p>",
             f"<h2>Replay</h2><pre>{e(replay_text)}</pre>",
             "<h2>Per-class spectral attribution</h2><p>Gradient x input (solid) and DeepLIFT against a zero "
             "reference (dashed, paper 003) summed over each predicted class region, per band: which wavelengths "
             "drove the decision (computed inside the model graph), mean over the contact-sheet frames. Unit: "
             "logit (sum over the region). DeepLIFT's attribution over the whole frame adds up to the class's "
             "score against the reference, S(x) - S(0) (the curves are its part inside the region): the largest "
             "|sum - (S(x) - S(0))| / |S(x) - S(0)| over those frames and classes was "
             f"{s.deeplift_residual_max:.1e}.</p>"
             + scroll("<a href='spectral_attribution.png'><img class='plot' src='spectral_attribution.png' "
                    "alt='spectral attribution'></a>"),
             "<h2>Class spectra in sun and shadow</h2><p>After per-pixel normalisation the spectra of sunlit and "
             "shaded pixels of one class nearly coincide: why the 25-band model is trained on PN input. Unit: PN "
             "reflectance (each pixel's bands sum to 1), ground-truth regions of the contact-sheet frames.</p>"
             + scroll("<a href='spectra_pn.png'><img class='plot' src='spectra_pn.png' alt='class spectra'></a>"),
             _detection_html(s.detection, where),
             "<h2>Frames</h2><p>Segmentation and ground-truth colours:</p>"
             + scroll("<img class='plot' src='class_legend.png' alt='class colours'>"),
             f"<p>Overlay colours (<code>overlay_scale {e(scale)}</code>): {e(SCALE_TEXT.get(scale, ''))}. One-sided "
             "maps on a sequential colormap (dark = 0), signed maps on a diverging one (grey = 0, blue = against the "
             "class, red = for it). The keys below are the legend images the node publishes beside each overlay "
             "topic:</p><div class='frame'>"
             + "".join(f"<figure class='natural'><a href='{e(rel)}'><img src='{e(rel)}' alt='{e(name)} key'></a>"
                       f"<figcaption>{e(name)}</figcaption></figure>" for name, rel in legends) + "</div>",
             _strength_html(s.map_strength, scale)]
    t0 = rows[0][1] if rows else 0
    for index, stamp, cells, counts in rows:
        gt = ("" if counts is None else f"; ground truth: {counts['objects']} objects to find and {counts['too_small']}"
              f" too small (ignore regions), {counts['detections']} detections published")
        parts.append(f"<h3>frame {index}, t = {(stamp - t0) / 1e9:.2f} s{e(gt)}</h3><div class='frame'>")
        for caption, rel in cells:
            kind = (" class='wide'" if caption in (CAPTIONS["detection/overlay"], TRUTH_CAPTION) else
                    " class='natural'" if rel.endswith("_shares.png") else "")
            plot = " class='plot'" if rel.endswith("_shares.png") else ""
            parts.append(f"<figure{kind}><a href='{e(rel)}'><img{plot} src='{e(rel)}' alt='{e(caption)}'></a>"
                         f"<figcaption>{e(caption)}</figcaption></figure>")
        parts.append("</div>")
    # after loading, record how many images decoded and the text sizes (read by the rendering test in Chromium)
    parts.append(PAGE_PROBE + "</body></html>")
    path.write_text("\n".join(parts))


def cmd_demo(args) -> int:
    s = run_demo(args.out, args.profile, args.seed, args.frames, args.stride, args.backend, not args.no_progress,
                 args.sheet, allow_training_drive=args.allow_training_drive, copy_raw=args.copy_raw)
    print(f"wrote {s.out_dir}/index.html, {s.out_dir}/input_bag ({s.input_bag_mb:.1f} MB) and {s.out_dir}/output_bag "
          f"({s.output_bag_mb:.1f} MB) in {duration_text(s.seconds)}: {s.frames} frames of "
          f"{provenance_text(s.drive)}; {100 * s.label_accuracy:.1f}% of labelled pixels right"
          + (f", detection mAP@0.5 {s.detection['map']:.3f}" if s.detection and s.detection.get("map") is not None
             else ""))
    return 0
