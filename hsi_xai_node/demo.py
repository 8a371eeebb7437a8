"""`hsi-xai demo`: a generated drive, recorded as a rosbag2, replayed through the node's pipeline.

    demo_out/input_bag/    the drive as the vehicle would record it (raw mosaic mono16 at 25 fps,
                           dark/white references, RGB/NIR/MIR/FIR cameras), MCAP
    demo_out/output_bag/   the replay: every input topic plus what the live node publishes
                           (labels, segmentation, preview, fused Grad-CAM and activation overlays,
                           /diagnostics), same topic names and headers; play it with `ros2 bag play`
                           and the detector's Detection2DArray and detection overlay
    demo_out/index.html    the report: a contact sheet read back from the output bag (false colour,
                           ground truth, segmentation, overlays, detections with per-box Grad-CAM,
                           cameras), per-class spectral attributions, class spectra in sun and
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

RAW_ZOOM = (slice(500, 600), slice(1000, 1100))  # 100x100 raw pixels = 20x20 pattern tiles
SHOWN = ("preview", "segmentation", "gradcam_overlay", "activation_overlay", "detection_overlay")
CAPTIONS = {"preview": "false colour (850 / 732 / 564 nm)", "segmentation": "segmentation (bundled 25-band PN U-Net)",
            "gradcam_overlay": "Seg-Grad-CAM, all classes fused", "activation_overlay": "activation maps (conservative), fused",
            "detection_overlay": "detections (RGB+MIR EfficientDet) with per-box Grad-CAM"}


@dataclass
class DemoSummary:
    out_dir: str
    profile: str
    seed: int
    frames: int
    replay: dict = field(default_factory=dict)  # the replay's summary
    label_accuracy: float = float("nan")  # share of labelled pixels the model gets right (contact-sheet frames)
    class_spectra: dict = field(default_factory=dict)  # class -> {"sun": [...], "shadow": [...]} PN means
    spectral_attribution: dict = field(default_factory=dict)  # class -> per-band gradient x input
    wavelengths_nm: list = field(default_factory=list)
    detection: dict = field(default_factory=dict)  # AP against the drive's ground truth, counts


def thermal_to_mono8(image: np.ndarray) -> np.ndarray:
    """Stretch a mono16 thermal frame (centikelvin) to 8 bits between its 1st and 99th percentiles."""
    lo, hi = np.percentile(image, (1, 99))
    return np.clip((image.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0)), 0, 255).astype(np.uint8)


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
    dets, gts = [], []
    for stamp, (boxes, classes, ignore) in truth.items():
        b, sc, names = detections.get(stamp, (np.zeros((0, 4)), np.zeros(0), []))
        dets.append(Detections(b, sc, np.array([ids[n] for n in names], np.int64)))
        gts.append(GroundTruth(boxes, classes, ignore))
    r = evaluate_map(dets, gts, len(DETECTION_CLASSES))
    names = [c.name for c in DETECTION_CLASSES]
    return {"frames": len(gts), "map": r.mean_ap, "ap": dict(zip(names, r.ap)), "objects": dict(zip(names, r.num_gt)),
            "tp": dict(zip(names, r.tp)), "fp": dict(zip(names, r.fp)),
            "detections": int(sum(len(d.scores) for d in dets))}


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
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for c in SEGMENTATION_CLASSES:
        colour = tuple(v / 255 for v in c.bgr[::-1])
        if min(colour) > 0.85:  # white road marks would vanish on the white background
            colour = (0.55, 0.55, 0.55)
        for light, style in zip(styles, ("-", "--")):
            spec = series.get(c.name, {}).get(light)
            if spec is not None:
                ax.plot(np.asarray(wavelengths)[order], np.asarray(spec)[order], style, color=colour,
                        label=f"{c.name}" + (f" ({light})" if len(styles) > 1 else ""), marker=".")
    ax.set_xlabel("wavelength (nm)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_demo(out_dir: str | Path, profile_name: str = "hsi-drive", seed: int = 7, frames: int = 25,
             stride: int = 1, backend: str = "auto", progress: bool = True, sheet: int = 6) -> DemoSummary:
    """Record `frames` frames of a generated drive (every `stride`-th; 1 = the 25 fps camera rate) as a
    bag, replay it through the pipeline, and write the report with `sheet` evenly spaced frames."""
    from .runtime import Pipeline
    from .scenes.drive import DriveGenerator
    from .sensor.calibration import load_profile
    from .sensor.frontend import FrontEnd, FrontEndConfig
    from .transports.config import load_config
    from .transports.drive_bag import CAMERA_TOPIC, write_drive_bag
    from .transports.replay import replay

    out = Path(out_dir)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    config = load_config(sensor_profile=profile_name, backend=backend,
                         multispectral_topics=tuple(CAMERA_TOPIC.values()))
    in_bag = write_drive_bag(out / "input_bag", config, seed=seed, frames=frames, stride=stride)
    summary = replay(in_bag, out / "output_bag", config, progress=progress, overwrite=True)

    shown = {name: config.output_topic(name) for name in SHOWN}
    labels_topic = config.output_topic("labels")
    images = read_images(out / "output_bag",
                         [*shown.values(), labels_topic, config.raw_topic, *CAMERA_TOPIC.values()])
    profile = load_profile(profile_name)
    gen = DriveGenerator(profile, seed=seed, render_cameras=False)
    detection = {}
    if config.detector_model:
        detection = _score_detections(out / "output_bag", config, gen, stride, sorted(images[config.raw_topic]))
    dark, white = gen.references()
    front_end = FrontEnd(profile, dark, white, FrontEndConfig(normalise=True))
    spectral = Pipeline(dataclasses.replace(config.pipeline_config(), methods=("activation", "spectral")), dark, white)
    acc = {light: {} for light in ("sun", "shadow")}
    attributions, rows, correct, labelled = [], [], 0, 0
    stamps = sorted(images[config.raw_topic])
    shown_k = sorted(set(np.linspace(0, len(stamps) - 1, min(sheet, len(stamps))).round().astype(int).tolist()))
    for row, k in enumerate(shown_k):
        stamp = stamps[k]
        frame = gen.frame(k * stride)
        raw = images[config.raw_topic][stamp]
        labels = images[labels_topic][stamp]
        scored = labels > 0
        correct += int((labels[scored] == frame.labels[scored]).sum())
        labelled += int(scored.sum())
        fe = front_end.process(raw)
        for light, mask in (("sun", frame.sun > 0.9), ("shadow", frame.sun < 0.1)):
            for cid, spec in _class_means(fe.cube.data, frame.labels, mask & ~fe.saturated).items():
                acc[light].setdefault(cid, []).append(spec)
        attributions.append(spectral.process(raw).spectra)
        cells = [(CAPTIONS["preview"], images[shown["preview"]][stamp]), ("ground truth", colourise(frame.labels))]
        cells += [(CAPTIONS[n], images[shown[n]][stamp]) for n in SHOWN[1:] if stamp in images[shown[n]]]
        cells.append(("raw mosaic, 100x100 px zoom", raw_zoom(raw)))
        for name, topic in CAMERA_TOPIC.items():
            if stamp in images[topic]:
                img = images[topic][stamp]
                cells.append((f"{name} camera", thermal_to_mono8(img) if img.dtype == np.uint16 else img))
        files = []
        for i, (caption, img) in enumerate(cells):
            rel = f"frames/{row:03d}_{i}.png"
            cv2.imwrite(str(out / rel), img)
            files.append((caption, rel))
        rows.append((k * stride, stamp, files))

    names = {c.id: c.name for c in SEGMENTATION_CLASSES}
    wl = profile.band_wavelengths_nm
    class_spectra = {names[cid]: {light: np.mean(acc[light][cid], axis=0).tolist()
                                  for light in acc if cid in acc[light]}
                     for cid in sorted(set(acc["sun"]) | set(acc["shadow"]))}
    mean_attr = np.mean(attributions, axis=0)  # (classes, bands), model channel order = sensor band order
    card_classes = [c.name for c in spectral.card.classes]
    attribution = {name: {"all": mean_attr[i].tolist()} for i, name in enumerate(card_classes)}
    _plot(out / "spectra_pn.png", wl, class_spectra, "mean PN spectrum: sun (-) vs shadow (--)")
    _plot(out / "spectral_attribution.png", wl, attribution, "per-class spectral attribution (gradient x input)",
          "sum over the class region", styles=("all",))
    result = DemoSummary(out_dir=str(out), profile=profile.name, seed=seed, frames=len(stamps),
                         replay=summary.as_dict(), label_accuracy=correct / max(labelled, 1),
                         class_spectra=class_spectra, spectral_attribution=attribution, wavelengths_nm=wl.tolist(),
                         detection=detection)
    (out / "summary.json").write_text(json.dumps(result.__dict__, indent=1))
    _write_html(out / "index.html", result, rows, summary.text())
    return result


def _score_detections(bag: Path, config, gen, stride: int, stamps: list[int]) -> dict:
    """The published detections of every frame against the drive's ground-truth boxes."""
    from .detection.card import load_detector
    from .detection.evaluation import MIN_HEIGHT_PX
    from .runtime.detection import load_rig, stack_from_card
    from .scenes.render import transform_box
    from .sensor.multispectral import boxes_to_network

    # the detector's card and the rig give the geometry; no engine is needed to score published boxes
    det = config.detection_config()
    rig = load_rig(det.rig)
    loaded = load_detector(det.model, det.card)
    primary, stack = loaded.card.input.stack[0].camera, stack_from_card(loaded, rig)
    truth = {}
    for k, stamp in enumerate(stamps):
        objects = gen.frame(k * stride).camera_objects
        common = np.array([o.box for o in objects], np.float64).reshape(-1, 4)
        height = boxes_to_network(common, stack)
        truth[stamp] = (np.array([transform_box(b, rig[primary].homography) for b in common]).reshape(-1, 4),
                        np.array([o.class_id for o in objects], np.int64),
                        (height[:, 3] - height[:, 1]) < MIN_HEIGHT_PX)
    return detection_scores(read_detections(bag, config.output_topic("detections")), truth)


def _detection_html(d: dict) -> str:
    if not d:
        return "<h2>Detections</h2><p>Detection is off (no detector_model configured).</p>"
    e = html.escape
    ap = {n: "-" if v is None else f"{v:.3f}" for n, v in d["ap"].items()}
    rows = "".join(f"<tr><td>{e(n)}</td><td>{d['objects'][n]}</td><td>{d['tp'][n]}</td><td>{d['fp'][n]}</td>"
                   f"<td>{ap[n]}</td></tr>" for n in ap)
    mean = "-" if d["map"] is None else f"{d['map']:.3f}"
    return ("<h2>Detections</h2><p>The RGB+MIR EfficientDet's published Detection2DArray boxes (primary camera "
            f"pixels) against the drive's ground truth over {d['frames']} frames, at the node's score threshold "
            "(so AP is that of a truncated precision-recall curve); objects too small for the network view "
            f"are ignore regions. mAP@0.5: <b>{mean}</b>, {d['detections']} detections.</p>"
            "<table border=1 style='border-collapse:collapse'><tr><th>class</th><th>objects</th><th>TP</th>"
            f"<th>FP</th><th>AP@0.5</th></tr>{rows}</table>")


def _write_html(path: Path, s: DemoSummary, rows, replay_text: str) -> None:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>hsi_xai_node demo</title>",
             "<style>body{font-family:sans-serif;margin:1em} td{vertical-align:top;padding:3px;font-size:11px}"
             " img{max-width:260px;display:block} pre{background:#f4f4f4;padding:6px}</style></head><body>",
             f"<h1>hsi_xai_node demo</h1><p>A generated drive (seed {s.seed}, sensor profile <b>{e(s.profile)}</b>) "
             f"recorded as <code>input_bag/</code> and replayed through the node's pipeline into "
             f"<code>output_bag/</code>; every image below is read back from the output bag. "
             f"Pixels labelled right: {100 * s.label_accuracy:.1f}%.</p>",
             f"<h2>Replay</h2><pre>{e(replay_text)}</pre>",
             "<h2>Per-class spectral attribution</h2><p>Gradient x input summed over each predicted class "
             "region, per band: which wavelengths drove the decision (computed inside the model graph).</p>"
             "<img src='spectral_attribution.png' style='max-width:640px'>",
             "<h2>Class spectra in sun and shadow</h2><p>After per-pixel normalisation the spectra of sunlit and "
             "shaded pixels of one class nearly coincide: why the 25-band model is trained on PN input.</p>"
             "<img src='spectra_pn.png' style='max-width:640px'>",
             _detection_html(s.detection),
             "<h2>Frames</h2><table>"]
    t0 = rows[0][1] if rows else 0
    for index, stamp, cells in rows:
        parts.append(f"<tr><td><b>frame {index}</b><br>t = {(stamp - t0) / 1e9:.2f} s</td>")
        parts.extend(f"<td><img src='{e(rel)}' alt='{e(caption)}'>{e(caption)}</td>" for caption, rel in cells)
        parts.append("</tr>")
    # after loading, record how many images decoded (read by the rendering test in headless Chromium)
    parts.append("</table><script>addEventListener('load', () => { const i = [...document.images]; "
                 "document.body.dataset.imagesLoaded = i.filter(x => x.complete && x.naturalWidth > 0).length "
                 "+ '/' + i.length; });</script></body></html>")
    path.write_text("\n".join(parts))


def add_demo_parser(sub) -> None:
    d = sub.add_parser("demo", help="record a generated drive as a rosbag2, replay it, write a report")
    d.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    d.add_argument("--profile", default="hsi-drive", help="sensor profile name or imec XML")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--frames", type=int, default=25, help="frames to record (default: 1 s at 25 fps)")
    d.add_argument("--stride", type=int, default=1, help="record every N-th frame of the drive (1: camera rate)")
    d.add_argument("--sheet", type=int, default=6, help="frames shown in the report's contact sheet")
    d.add_argument("--backend", default="auto", help="engine backend: auto, tensorrt, ort-trt, ort-cuda, ort-cpu")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    s = run_demo(args.out, args.profile, args.seed, args.frames, args.stride, args.backend, not args.no_progress,
                 args.sheet)
    print(f"wrote {s.out_dir}/index.html, {s.out_dir}/input_bag and {s.out_dir}/output_bag: {s.frames} frames, "
          f"{100 * s.label_accuracy:.1f}% of pixels labelled right")
    return 0
