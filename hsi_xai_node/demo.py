"""`hsi-xai demo`: a generated drive through the node's pipeline, written as images + HTML.

For each frame it writes the false-colour preview of the calibrated cube, the ground
truth, the bundled U-Net's segmentation, the fused Seg-Grad-CAM and activation overlays
(all classes, computed inside the model graph), the sun/shadow map, a zoom of the raw
mosaic and the four multispectral cameras; then per-class mean spectra in sun and in
shadow, before and after PN (the effect paper 000 relies on), and the measured
per-stage times and conservativeness residuals.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .classes import SEGMENTATION_CLASSES, colourise
from .runtime import Pipeline, PipelineConfig
from .sensor.calibration import load_profile
from .sensor.frontend import FrontEnd, FrontEndConfig
from .sensor.radiometry import false_colour

FALSE_COLOUR_NM = (850.0, 731.88, 564.36)  # red, green, blue of the preview
RAW_ZOOM = (slice(500, 600), slice(1000, 1100))  # 100x100 raw pixels = 20x20 pattern tiles


@dataclass
class DemoSummary:
    out_dir: str
    profile: str
    seed: int
    frames: int
    generate_ms_median: float
    frontend_ms_median: float
    pipeline_ms_median: dict = field(default_factory=dict)  # stage -> ms
    activation_residual_max: float = float("nan")
    label_accuracy: float = float("nan")  # share of labelled pixels the model gets right
    class_spectra: dict = field(default_factory=dict)  # class -> {"sun": [...], "shadow": [...]} PN means
    wavelengths_nm: list = field(default_factory=list)


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


def _class_means(cube: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> dict[int, np.ndarray]:
    out = {}
    for c in SEGMENTATION_CLASSES:
        sel = (labels == c.id) & mask
        if sel.sum() >= 20:
            out[c.id] = cube[:, sel].mean(axis=1)
    return out


def _plot_spectra(path: Path, wavelengths, sums: dict, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(wavelengths)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for c in SEGMENTATION_CLASSES:
        colour = tuple(v / 255 for v in c.bgr[::-1])
        if min(colour) > 0.85:  # white road marks would vanish on the white background
            colour = (0.55, 0.55, 0.55)
        for light, style in (("sun", "-"), ("shadow", "--")):
            spec = sums.get(c.name, {}).get(light)
            if spec is not None:
                ax.plot(np.asarray(wavelengths)[order], np.asarray(spec)[order], style, color=colour,
                        label=f"{c.name} ({light})")
    ax.set_xlabel("wavelength (nm)")
    ax.set_title(title)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_demo(out_dir: str | Path, profile_name: str = "hsi-drive", seed: int = 7, frames: int = 6,
             stride: int = 10, backend: str = "auto") -> DemoSummary:
    """Generate `frames` frames (every `stride`-th of a 25 fps drive) and write the page."""
    from .scenes.drive import DriveGenerator  # heavy: import only when the demo runs

    out = Path(out_dir)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    profile = load_profile(profile_name)
    gen = DriveGenerator(profile, seed=seed)
    dark, white = gen.references()
    front_end = FrontEnd(profile, dark, white, FrontEndConfig(normalise=True))
    pipeline = Pipeline(PipelineConfig(profile=profile_name, backend=backend), dark, white)
    gen_ms, fe_ms, rows, stage_ms, residuals, correct, labelled = [], [], [], [], [], 0, 0
    acc = {light: {} for light in ("sun", "shadow")}  # class id -> list of PN means
    acc_refl = {light: {} for light in ("sun", "shadow")}
    for k in range(frames):
        t0 = time.perf_counter()
        frame = gen.frame(k * stride)
        t1 = time.perf_counter()
        result = front_end.process(frame.raw)
        t2 = time.perf_counter()
        gen_ms.append((t1 - t0) * 1e3)
        fe_ms.append((t2 - t1) * 1e3)
        explained = pipeline.process(frame.raw)
        stage_ms.append(explained.timings_ms)
        residuals.append(np.nanmax(explained.residuals["activation"]))
        scored = explained.labels > 0
        correct += int((explained.labels[scored] == frame.labels[scored]).sum())
        labelled += int(scored.sum())
        valid = ~result.saturated
        for light, mask in (("sun", frame.sun > 0.9), ("shadow", frame.sun < 0.1)):
            for cid, spec in _class_means(result.cube.data, frame.labels, mask & valid).items():
                acc[light].setdefault(cid, []).append(spec)
            for cid, spec in _class_means(result.reflectance.data, frame.labels, mask & valid).items():
                acc_refl[light].setdefault(cid, []).append(spec)
        stem = f"frames/{k:03d}"
        images = {
            "false colour (850 / 732 / 564 nm)": false_colour(result.reflectance, FALSE_COLOUR_NM),
            "ground truth": colourise(frame.labels),
            "segmentation (bundled 25-band PN U-Net)": explained.segmentation,
            "Seg-Grad-CAM, all classes fused": explained.gradcam_overlay,
            "activation maps (conservative), fused": explained.activation_overlay,
            "sun (white) / shadow (black)": (np.clip(frame.sun, 0, 1) * 255).astype(np.uint8),
            "raw mosaic, 100x100 px zoom": raw_zoom(frame.raw),
        }
        for name, cam in frame.cameras.items():
            img = cam.image if cam.encoding in ("bgr8", "mono8") else thermal_to_mono8(cam.image)
            images[f"{name} camera ({cam.encoding})"] = img
        cells = []
        for i, (caption, img) in enumerate(images.items()):
            rel = f"{stem}_{i}.png"
            cv2.imwrite(str(out / rel), img)
            cells.append((caption, rel))
        rows.append((frame, cells))

    wl = result.cube.wavelengths_nm
    names = {c.id: c.name for c in SEGMENTATION_CLASSES}

    def means(source):
        return {names[cid]: {light: np.mean(source[light][cid], axis=0).tolist()
                             for light in source if cid in source[light]}
                for cid in sorted(set(source["sun"]) | set(source["shadow"]))}
    pn_means, refl_means = means(acc), means(acc_refl)
    _plot_spectra(out / "spectra_reflectance.png", wl, refl_means, "mean reflectance: sun (-) vs shadow (--)")
    _plot_spectra(out / "spectra_pn.png", wl, pn_means, "after per-pixel normalisation (PN)")
    summary = DemoSummary(out_dir=str(out), profile=profile.name, seed=seed, frames=frames,
                          generate_ms_median=float(np.median(gen_ms)),
                          frontend_ms_median=float(np.median(fe_ms)),
                          pipeline_ms_median={k: float(np.median([t[k] for t in stage_ms])) for k in stage_ms[0]},
                          activation_residual_max=float(np.max(residuals)),
                          label_accuracy=correct / max(labelled, 1),
                          class_spectra=pn_means, wavelengths_nm=wl.tolist())
    (out / "summary.json").write_text(json.dumps(summary.__dict__, indent=1))
    _write_html(out / "index.html", summary, rows)
    return summary


def _write_html(path: Path, s: DemoSummary, rows) -> None:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>hsi_xai_node demo</title>",
             "<style>body{font-family:sans-serif;margin:1em} td{vertical-align:top;padding:3px;font-size:11px}"
             " img{max-width:260px;display:block}</style></head><body>",
             f"<h1>hsi_xai_node demo</h1><p>Generated drive (seed {s.seed}), sensor profile <b>{e(s.profile)}</b>, "
             f"{s.frames} frames. Median per frame: scene generation {s.generate_ms_median:.0f} ms, "
             f"sensor front end (sub-sampling + reflectance + PN) {s.frontend_ms_median:.1f} ms.</p>"
             "<p>Pipeline, median ms per stage: "
             + ", ".join(f"{k} {v:.1f}" for k, v in s.pipeline_ms_median.items())
             + f". Pixels labelled right: {100 * s.label_accuracy:.1f}%. Conservativeness residual of the "
             f"activation maps (max over classes and frames): {s.activation_residual_max:.1e}; the overlays "
             "show, at each pixel, the map of the class predicted there.</p>",
             "<h2>Class spectra in sun and shadow</h2>"
             "<p>Shadow lowers reflectance many times over; per-pixel normalisation brings the two back "
             "together, which is why the 25-band model is trained on PN input.</p>"
             "<img src='spectra_reflectance.png' style='max-width:640px;display:inline'>"
             "<img src='spectra_pn.png' style='max-width:640px;display:inline'>",
             "<h2>Frames</h2><table>"]
    t0 = rows[0][0].stamp_ns if rows else 0
    for frame, cells in rows:
        parts.append(f"<tr><td><b>frame {frame.index}</b><br>t = {(frame.stamp_ns - t0) / 1e9:.2f} s<br>"
                     f"{len(frame.objects)} objects</td>")
        parts.extend(f"<td><img src='{e(rel)}' alt='{e(caption)}'>{e(caption)}</td>" for caption, rel in cells)
        parts.append("</tr>")
    parts.append("</table></body></html>")
    path.write_text("\n".join(parts))


def add_demo_parser(sub) -> None:
    d = sub.add_parser("demo", help="run a generated drive through the pipeline and write a report")
    d.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    d.add_argument("--profile", default="hsi-drive", help="sensor profile name or imec XML")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--frames", type=int, default=6)
    d.add_argument("--stride", type=int, default=10, help="use every N-th frame of the 25 fps drive")
    d.add_argument("--backend", default="auto", help="engine backend: auto, tensorrt, ort-trt, ort-cuda, ort-cpu")
    d.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    s = run_demo(args.out, args.profile, args.seed, args.frames, args.stride, args.backend)
    stages = ", ".join(f"{k} {v:.1f} ms" for k, v in s.pipeline_ms_median.items())
    print(f"wrote {s.out_dir}/index.html: {s.frames} frames; pipeline per frame (median): {stages}; "
          f"{100 * s.label_accuracy:.1f}% of pixels labelled right; activation-map residual "
          f"{s.activation_residual_max:.1e}")
    return 0
