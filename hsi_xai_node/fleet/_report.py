"""The fleet report: `OUT/fleet.json` (every number) and `OUT/index.html` (the same, for a person),
with the frames worth a human look ranked across the fleet and their thumbnails in `OUT/thumbnails/`."""

from __future__ import annotations

import base64
import html
import shutil
from dataclasses import asdict
from pathlib import Path

from ..report_page import PAGE_PROBE
from ._stats import CRITERIA
from ._worker import write_json_atomic

FLEET_JSON = "fleet.json"
FLEET_HTML = "index.html"
THUMBNAILS = "thumbnails"
FLEET_TOP = 12  # frames shown per criterion


def _rank(docs: list[dict]) -> dict[str, list[dict]]:
    ranked = {}
    for c, (_, score_of) in CRITERIA.items():
        items = [f for d in docs for f in d.get("worth_a_look", {}).get(c, [])]
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


def _bag_row(d: dict) -> str:
    e = html.escape
    s = d["summary"] or {}
    bad = "<br>".join(f"{e(r)}: {v['count']}" for r, v in (s.get("bad") or {}).items()) or "0"
    classes = " ".join(f"{e(n)} {100 * f:.0f}%" for n, f in (s.get("class_frequencies") or {}).items())
    res = s.get("residual_distribution") or {}
    dets = " ".join(f"{e(k)} {v}" for k, v in sorted((s.get("detections_per_class") or {}).items()))
    shares = "<br>".join(f"{e(c)}: " + " ".join(f"{e(cam)} {v:.2f}" for cam, v in by.items())
                         for c, by in sorted((s.get("camera_shares") or {}).items()))
    status = e(d["status"]) + "".join(f"<br><small>shard {e(str(f['shard']))}: {e(f['reason'])}</small>"
                                      for f in d["failures"])
    return (f"<tr><td>{e(d['name'])}</td><td>{status}</td><td>{s.get('frames_in', 0)} / "
            f"{s.get('frames_processed', 0)}</td><td>{bad}</td><td>{_fmt(s.get('fps'))}</td><td>{classes}</td>"
            f"<td>{_fmt(res.get('p50'))} / {_fmt(res.get('p99'))} / {_fmt(res.get('max'))}</td>"
            f"<td>{s.get('camera_sets_processed', 0)}: {dets}</td><td>{shares}</td></tr>")


def _html(doc: dict) -> str:
    e = html.escape
    f = doc["fleet"]
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>hsi_xai_node fleet report</title>",
             "<style>body{font-family:sans-serif;margin:1em;max-width:1360px} table{border-collapse:collapse;"
             "font-size:12px;width:100%} td,th{border:1px solid #ccc;padding:3px;vertical-align:top;"
             "overflow-wrap:anywhere} .grid{display:flex;flex-wrap:wrap;gap:6px} figure{margin:0;width:330px;"
             "font-size:11px} figure img{width:330px;display:block}</style></head><body>",
             "<h1>hsi_xai_node fleet report</h1>",
             f"<p>{f['bags']} bag(s): {f['bags_done']} done, {f['bags_failed']} failed. {f['shards']} shard(s): "
             f"{f['shards_run']} run, {f['shards_resumed']} resumed, {f['shards_failed']} failed. "
             f"{f['frames_processed']} of {f['frames_in']} frames processed, {f['bad_total']} bad messages, "
             f"{f['fps']:.2f} frames/s on {f['workers']} worker(s) over {f['wall_s']:.1f} s "
             f"(+{f['ray_start_s']:.1f} s Ray start-up).</p>",
             "<h2>Bags</h2><table><tr><th>bag</th><th>status</th><th>frames in / processed</th><th>bad messages"
             "</th><th>frames/s (per worker)</th><th>class pixels</th><th>activation residual p50 / p99 / max "
             "(logit)</th><th>camera sets: detections</th><th>camera shares (gradient x input)</th></tr>"]
    parts += [_bag_row(d) for d in doc["bags"]]
    parts.append("</table><h2>Frames worth a look</h2><p>Ranked over the whole fleet. Each thumbnail: false-colour "
                 "preview | segmentation | Grad-CAM overlay.</p>")
    for c, entry in doc["worth_a_look"].items():
        parts.append(f"<h3>{e(entry['what'])}</h3>")
        if not entry["frames"]:
            parts.append("<p>no frame has this figure.</p>")
            continue
        parts.append("<div class='grid'>")
        for fr in entry["frames"]:
            value = {"low_margin": fr["margin"], "method_disagreement": fr["disagreement"],
                     "residual": fr["residual"], "saturation": fr["saturation"]}[c]
            caption = f"{fr['bag']} @ log time {fr['t_ns'] / 1e9:.3f} s: {_fmt(value)}"
            img = f"<img src='{e(fr['thumbnail'])}' alt='{e(caption)}'>" if fr["thumbnail"] else ""
            parts.append(f"<figure>{img}<figcaption>{e(caption)}</figcaption></figure>")
        parts.append("</div>")
    parts.append(PAGE_PROBE + "</body></html>")
    return "\n".join(parts)
