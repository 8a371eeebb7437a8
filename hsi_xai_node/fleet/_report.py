"""The fleet report: `OUT/fleet.json` (every number) and `OUT/index.html` (the same, for a person),
with the frames worth a human look ranked across the fleet and their thumbnails in `OUT/thumbnails/`."""

from __future__ import annotations

import base64
import html
import shutil
from dataclasses import asdict
from pathlib import Path

import time

from ..report_page import PAGE_PROBE, PAGE_STYLE, duration_text, machine_text, run_header
from ._stats import CRITERIA, EMPTY
from ._worker import write_json_atomic

FLEET_JSON = "fleet.json"
FLEET_HTML = "index.html"
THUMBNAILS = "thumbnails"
FLEET_TOP = 12  # frames shown per criterion


def _rank(docs: list[dict]) -> dict[str, list[dict]]:
    ranked = {}
    for c, (_, score_of) in CRITERIA.items():
        items = [f for d in docs for f in d.get("worth_a_look", {}).get(c, []) if score_of(f) is not None]
        ranked[c] = sorted(items, key=lambda f: -score_of(f))[:FLEET_TOP]
    return ranked


def _write_thumbnails(out: Path, ranked: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Thumbnails to files; the items get their path instead of the JPEG bytes."""
    folder = out / THUMBNAILS
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    listed = {}
    for c, items in ranked.items():
        listed[c] = []
        for k, f in enumerate(items):
            rel = ""
            if f.get("thumbnail"):
                rel = f"{THUMBNAILS}/{c}_{k:02d}.jpg"
                (out / rel).write_bytes(base64.b64decode(f["thumbnail"]))
            listed[c].append({**{key: v for key, v in f.items() if key != "thumbnail"}, "thumbnail": rel})
    return listed


def write_report(out: Path, fleet, docs: list[dict], run: dict) -> None:
    out = Path(out)
    ranked = _write_thumbnails(out, _rank(docs))
    bags = [{k: v for k, v in d.items() if k != "worth_a_look"} for d in docs]
    doc = {"fleet": asdict(fleet), "run": run, "bags": bags,
           "worth_a_look": {c: {"what": CRITERIA[c][0], "frames": items} for c, items in ranked.items()}}
    write_json_atomic(out / FLEET_JSON, doc)
    tmp = out / f".{FLEET_HTML}.tmp"
    tmp.write_text(_html(doc))
    tmp.replace(out / FLEET_HTML)


def _fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def log_time_text(t_ns: int, start_ns: int | None) -> str:
    """A frame's place in its bag: seconds from the bag's first processed frame, and the UTC time of its log stamp."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t_ns / 1e9)) + f".{int(t_ns % 1_000_000_000) // 1_000_000:03d}"
    into = f"{(t_ns - start_ns) / 1e9:.2f} s into the bag, " if start_ns is not None else ""
    return f"{into}{when} UTC"


def _bag_row(d: dict, shares_column: bool) -> str:
    e = html.escape
    s = d["summary"] or {}
    bad = "<br>".join(f"{e(r)}: {v['count']}" for r, v in (s.get("bad") or {}).items()) or "0"
    classes = " ".join(f"{e(n)} {100 * f:.0f}%" for n, f in (s.get("class_frequencies") or {}).items())
    res = s.get("residual_distribution") or {}
    dets = " ".join(f"{e(k)} {v}" for k, v in sorted((s.get("detections_per_class") or {}).items()))
    shares = "<br>".join(f"{e(c)}: " + " ".join(f"{e(cam)} {v:.2f}" for cam, v in by.items())
                         for c, by in sorted((s.get("camera_shares") or {}).items()))
    status = e(d["status"]) + "".join(f"<br>shard {e(str(f['shard']))}: {e(f['reason'])}"
                                      for f in d["failures"])
    return (f"<tr><td>{e(d['name'])}</td><td>{status}</td><td>{s.get('frames_in', 0)} / "
            f"{s.get('frames_processed', 0)}</td><td>{bad}</td><td>{_fmt(s.get('fps'))}</td><td>{classes}</td>"
            f"<td>{_fmt(res.get('p50'))} / {_fmt(res.get('p99'))} / {_fmt(res.get('max'))}</td>"
            f"<td>{s.get('camera_sets_processed', 0)}: {dets}</td>" + (f"<td>{shares}</td>" if shares_column else "")
            + "</tr>")


def _html(doc: dict) -> str:
    e = html.escape
    f, run = doc["fleet"], doc.get("run", {})
    models = run.get("models", {})
    summaries = [d["summary"] for d in doc["bags"] if d.get("summary")]
    choice = next((s.get("backend_choice") for s in summaries if s.get("backend_choice")), "") or \
        next((s.get("backend") for s in summaries if s.get("backend")), "")
    det_choice = next((s.get("detection_backend_choice") for s in summaries if s.get("detection_backend_choice")), "")
    arithmetic = next((s.get("arithmetic") for s in summaries if s.get("arithmetic")), "")
    det_arithmetic = next((s.get("detection_arithmetic") for s in summaries if s.get("detection_arithmetic")), "")
    rows = [("model", f"{models.get('model', '?')} (card sha256 {models.get('model_sha256', '?')[:12]}...)"),
            ("detector", f"{models['detector']} (card sha256 {models['detector_sha256'][:12]}...)"
             if models.get("detector") else "none (detector_model is empty)"),
            ("backend", f"segmentation: {choice}" + (f"; detection: {det_choice}" if det_choice else "")),
            ("precision", (f"segmentation: {arithmetic}" + (f"; detection: {det_arithmetic}" if det_arithmetic else ""))
             if arithmetic else None),
            ("data", f"{run.get('input', '?')}: {f['bags']} bag(s), {f['shards']} shard(s) of "
                     f"{run.get('shard_seconds', '?')} s, {f['frames_in']} raw frames"),
            ("workers", f"{f['workers']} on {run.get('address', 'a local Ray instance')}"),
            ("date", run.get("date")),
            ("duration", f"{duration_text(f['wall_s'])} (+{f['ray_start_s']:.1f} s Ray start-up)"),
            ("machine", f"the driver: {machine_text(run['machine'])}" if run.get("machine") else None)]
    shares_column = any((d.get("summary") or {}).get("camera_shares") for d in doc["bags"])
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>hsi_xai_node fleet report</title>", PAGE_STYLE,
             "<style>td,th{vertical-align:top;overflow-wrap:anywhere} .grid{display:flex;flex-wrap:wrap;gap:6px} "
             "figure{margin:0;width:480px;max-width:100%} figure img{width:480px;max-width:100%;display:block}</style>"
             "</head><body>",
             "<h1>hsi_xai_node fleet report</h1>", run_header(rows),
             f"<p>{f['bags']} bag(s): {f['bags_done']} done, {f['bags_failed']} failed. {f['shards']} shard(s): "
             f"{f['shards_run']} run, {f['shards_resumed']} resumed, {f['shards_failed']} failed. "
             f"{f['frames_processed']} of {f['frames_in']} frames processed, {f['bad_total']} bad messages, "
             f"{f['fps']:.2f} frames/s on {f['workers']} worker(s) over {f['wall_s']:.1f} s "
             f"(+{f['ray_start_s']:.1f} s Ray start-up).</p>",
             "<h2>Bags</h2>"
             + ("" if shares_column else "<p>Camera shares (each detection's gradient x input per camera) are not "
                "measured in this run: they need <code>box_spectral</code> among the detection methods.</p>")
             + "<div class='scroll'><table border=1><tr><th>bag</th><th>status</th><th>frames in / processed</th>"
             "<th>bad messages</th><th>frames/s (per worker)</th><th>class pixels</th><th>activation residual p50 / "
             "p99 / max (relative to the logit sum)</th><th>camera sets: detections</th>"
             + ("<th>camera shares (gradient x input)</th>" if shares_column else "") + "</tr>"]
    parts += [_bag_row(d, shares_column) for d in doc["bags"]]
    parts.append("</table></div><h2>Frames worth a look</h2><p>Ranked over the whole fleet, at most "
                 f"{FLEET_TOP} per figure. Each thumbnail (click for full size): false-colour preview | segmentation "
                 "| Grad-CAM overlay.</p>")
    starts = {d["name"]: (d.get("summary") or {}).get("start_ns") for d in doc["bags"]}
    for c, entry in doc["worth_a_look"].items():
        parts.append(f"<h3>{e(entry['what'])}</h3>")
        if not entry["frames"]:
            parts.append(f"<p>None: {e(EMPTY[c])}</p>")
            continue
        parts.append("<div class='grid'>")
        for fr in entry["frames"]:
            value = {"low_margin": fr["margin"], "method_disagreement": fr["disagreement"],
                     "residual": fr["residual"], "saturation": fr["saturation"]}[c]
            caption = f"{fr['bag']}, {log_time_text(fr['t_ns'], starts.get(fr['bag']))}: {_fmt(value)}"
            img = (f"<a href='{e(fr['thumbnail'])}'><img src='{e(fr['thumbnail'])}' alt='{e(caption)}'></a>"
                   if fr["thumbnail"] else "")
            parts.append(f"<figure>{img}<figcaption>{e(caption)}</figcaption></figure>")
        parts.append("</div>")
    parts.append(PAGE_PROBE + "</body></html>")
    return "\n".join(parts)
