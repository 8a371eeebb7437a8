"""A bag's summary from its shards' replay summaries and stats: the fields `hsi-xai replay` reports,
summed or merged over the shards, plus what the fleet report shows (class frequencies, residual and
margin distributions, camera shares)."""

from __future__ import annotations

import statistics

import numpy as np

SUMS = ("frames_in", "frames_processed", "dropped", "reference_updates", "uncalibrated_frames", "wall_s",
        "camera_messages_in", "camera_sets_in", "camera_sets_processed", "camera_unmatched", "detections_total",
        "detection_slots_full")


def _first(values, default=""):
    return next((v for v in values if v), default)


def _distribution(values: list[float]) -> dict | None:
    v = np.asarray([x for x in values if x is not None], float)
    if not v.size:
        return None
    return {"count": int(v.size), "min": float(v.min()), "p50": float(np.percentile(v, 50)),
            "p99": float(np.percentile(v, 99)), "max": float(v.max()), "mean": float(v.mean())}


def bag_summary(summaries: list[dict], stats: dict, listed: dict[str, int], wanted: set[str]) -> dict:
    """`summaries`: the shards' ReplaySummary.as_dict() in window order; `stats`: merged ShardStats;
    `listed`: messages per topic in the bag's index; `wanted`: topics the replay reads (checked against
    what the shards read, as a whole-bag replay does)."""
    out = {k: sum(s[k] for s in summaries) for k in SUMS}
    bad: dict[str, dict] = {}
    for s in summaries:
        for reason, v in s["bad"].items():
            entry = bad.setdefault(reason, {"count": 0, "first": v["first"]})
            entry["count"] += v["count"]
    read: dict[str, int] = {}
    for s in summaries:
        for topic, n in s.get("messages_read", {}).items():
            read[topic] = read.get(topic, 0) + n
    truncation = "; ".join(s["truncation"] for s in summaries if s["truncation"])
    if not truncation:
        for topic in sorted(wanted):
            if read.get(topic, 0) < listed.get(topic, 0):
                bad[f"unreadable on {topic}"] = {"count": listed[topic] - read.get(topic, 0),
                                                 "first": f"{topic}: the bag's index lists {listed[topic]} "
                                                          f"message(s), {read.get(topic, 0)} could be read"}
    residuals = [f["residual"] for f in stats["frames"]]
    pixels = stats["class_pixels"]
    total_px = sum(pixels.values()) or 1
    out.update(
        backend=_first(s["backend"] for s in summaries), model=_first(s["model"] for s in summaries),
        backend_choice=_first(s.get("backend_choice", "") for s in summaries),
        detection_backend_choice=_first(s.get("detection_backend_choice", "") for s in summaries),
        arithmetic=_first(s.get("arithmetic", "") for s in summaries),
        detection_arithmetic=_first(s.get("detection_arithmetic", "") for s in summaries),
        start_ns=min((f["t_ns"] for f in stats["frames"]), default=None),
        bad=bad, bad_total=sum(v["count"] for v in bad.values()), truncation=truncation,
        fps=out["frames_processed"] / out["wall_s"] if out["wall_s"] > 0 else 0.0,
        stage_ms={k: statistics.median(v) for k, v in stats["stage_ms"].items()},
        activation_residual_max=max((r for r in residuals if r is not None), default=None),
        references=_first(s["references"] for s in summaries),
        uncalibrated_stamps=[t for s in summaries for t in s["uncalibrated_stamps"]][:100],
        detection=_first((s["detection"] for s in summaries if s["detection"] == "on"),
                         _first(s["detection"] for s in summaries)),
        detector=_first(s["detector"] for s in summaries),
        detection_backend=_first(s["detection_backend"] for s in summaries),
        detections_per_class=stats["detections"],
        camera_shares={cls: {cam: total / n for cam, (total, n) in by_cam.items() if n}
                       for cls, by_cam in stats["share_sums"].items()},
        detection_stage_ms={k: statistics.median(v) for k, v in stats["detection_stage_ms"].items()},
        messages_read=read,
        class_frequencies={name: n / total_px for name, n in sorted(pixels.items())},
        residual_distribution=_distribution(residuals),
        margin_distribution=_distribution([f["margin"] for f in stats["frames"]]),
        disagreement_distribution=_distribution([f["disagreement"] for f in stats["frames"]]),
        shards=len(summaries))
    return out
