"""What a shard measures per frame, for its bag's summary and the fleet report.

ShardStats is the replay's observer (transports.replay's `observer`): per processed frame the stage
times, the conservativeness residual, the prediction margin, the disagreement between the Grad-CAM
family and the activation maps, the saturated fraction and the class pixel counts; per camera set the
detections and camera shares. For the frames worth a look it keeps the top few per criterion, each
with a thumbnail (preview | segmentation | Grad-CAM overlay). Everything is plain JSON, so shard
results travel through Ray and sit in `shard.json` for `--resume`.
"""

from __future__ import annotations

import base64
import heapq
from collections import Counter

import cv2
import numpy as np

# The activation maps add up to the logits up to float32 rounding (a relative residual of about 1e-7 on the
# bundled models): only a residual above this is a finding (the reliability report's "conservative" threshold)
RESIDUAL_WORTH = 1e-4

# criterion -> (what it means and how frames are chosen, how a frame scores: higher is more worth a look, None: not
# a finding at all)
CRITERIA = {
    "low_margin": ("lowest prediction margin (mean softmax p1 - p2 over the frame; 0 = two classes tie everywhere): "
                   "the model is unsure. Ranked, no threshold", lambda f: -f["margin"]),
    "method_disagreement": ("largest disagreement between the Grad-CAM-family and the activation maps (1 - their "
                            "correlation over each predicted class, 0 to 2). Ranked, no threshold",
                            lambda f: f["disagreement"]),
    "residual": (f"conservativeness residual of the activation maps above {RESIDUAL_WORTH:g} (relative to the class's "
                 "logit sum; float rounding leaves about 1e-7): the maps no longer add up to the logits",
                 lambda f: f["residual"] if f["residual"] > RESIDUAL_WORTH else None),
    "saturation": ("most saturated raw pixels (share of the frame's pixels with a band at full scale)",
                   lambda f: f["saturation"] or None),
}
EMPTY = {"low_margin": "no frame was segmented.", "method_disagreement": "no frame had both maps to compare.",
         "residual": f"no frame's residual is above {RESIDUAL_WORTH:g}: the activation maps add up to the logits "
                     "everywhere (float rounding only).",
         "saturation": "no frame has a saturated raw pixel."}
TOP_K = 8
THUMB_WIDTH = 160


def thumbnail(result) -> str:
    """Base64 JPEG: preview | segmentation | Grad-CAM overlay, each THUMB_WIDTH wide."""
    panels = [p for p in (result.preview, result.segmentation, result.gradcam_overlay) if p is not None]
    h, w = panels[0].shape[:2]
    size = (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w)))
    strip = np.hstack([cv2.resize(p, size, interpolation=cv2.INTER_AREA) for p in panels])
    ok, buf = cv2.imencode(".jpg", strip, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return base64.b64encode(buf.tobytes()).decode() if ok else ""


class ShardStats:
    def __init__(self, bag: str, top_k: int = TOP_K):
        self.bag, self.top_k = bag, top_k
        self.frames: list[dict] = []
        self.class_pixels: Counter = Counter()  # label id -> pixels
        self.stage_ms: dict[str, list[float]] = {}
        self.det_stage_ms: dict[str, list[float]] = {}
        self.detections: Counter = Counter()
        self.share_sums: dict[str, dict[str, list[float]]] = {}  # class -> camera -> [sum, n]
        self._heaps: dict[str, list] = {c: [] for c in CRITERIA}
        self._n = 0

    def __call__(self, kind: str, t: int, header, result) -> None:
        if kind == "frame":
            self._frame(t, header, result)
        else:
            self._set(result)

    def _frame(self, t: int, header, r) -> None:
        stamp = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        res = r.residuals.get("activation")
        f = {"t_ns": t, "stamp_ns": stamp, "margin": r.margin, "disagreement": r.method_disagreement,
             "residual": None if res is None else float(np.max(np.abs(res))), "saturation": r.saturated_fraction}
        self.frames.append(f)
        ids, counts = np.unique(r.labels, return_counts=True)
        self.class_pixels.update({int(i): int(c) for i, c in zip(ids, counts)})
        for k, v in r.timings_ms.items():
            self.stage_ms.setdefault(k, []).append(v)
        thumb = None
        for name, (_, score_of) in CRITERIA.items():
            score = score_of(f) if f[_field(name)] is not None else None
            if score is None:
                continue
            heap = self._heaps[name]
            self._n += 1
            if len(heap) < self.top_k or score > heap[0][0]:
                thumb = thumb if thumb is not None else thumbnail(r)
                item = (score, self._n, {**f, "bag": self.bag, "thumbnail": thumb})
                (heapq.heappush if len(heap) < self.top_k else heapq.heapreplace)(heap, item)

    def _set(self, r) -> None:
        for k, v in r.timings_ms.items():
            self.det_stage_ms.setdefault(k, []).append(v)
        self.detections.update(d.class_name for d in r.detections)
        for d in r.detections:
            for cam, share in (d.camera_shares or {}).items():
                acc = self.share_sums.setdefault(d.class_name, {}).setdefault(cam, [0.0, 0])
                acc[0] += share
                acc[1] += 1

    def as_dict(self, class_names: dict[int, str]) -> dict:
        """Plain JSON; class pixel counts by class name (label id -> name from the model card)."""
        return {"frames": self.frames,
                "class_pixels": {class_names.get(i, f"id {i}"): n for i, n in sorted(self.class_pixels.items())
                                 if i in class_names},
                "stage_ms": self.stage_ms, "detection_stage_ms": self.det_stage_ms,
                "detections": dict(self.detections), "share_sums": self.share_sums,
                "worth_a_look": {c: [item for _, _, item in sorted(h, key=lambda x: (-x[0], x[1]))]
                                 for c, h in self._heaps.items()}}


def _field(criterion: str) -> str:
    return {"low_margin": "margin", "method_disagreement": "disagreement"}.get(criterion, criterion)


def merge_stats(parts: list[dict], top_k: int = TOP_K) -> dict:
    """The stats of several shards as one (a bag's, or the fleet's)."""
    out = {"frames": [], "class_pixels": Counter(), "stage_ms": {}, "detection_stage_ms": {},
           "detections": Counter(), "share_sums": {}, "worth_a_look": {c: [] for c in CRITERIA}}
    for p in parts:
        out["frames"] += p["frames"]
        out["class_pixels"].update(p["class_pixels"])
        out["detections"].update(p["detections"])
        for key in ("stage_ms", "detection_stage_ms"):
            for k, v in p[key].items():
                out[key].setdefault(k, []).extend(v)
        for cls, by_cam in p["share_sums"].items():
            for cam, (total, n) in by_cam.items():
                acc = out["share_sums"].setdefault(cls, {}).setdefault(cam, [0.0, 0])
                acc[0] += total
                acc[1] += n
        for c, items in p["worth_a_look"].items():
            out["worth_a_look"][c] += items
    for c, items in out["worth_a_look"].items():
        score_of = CRITERIA[c][1]
        kept = [f for f in items if score_of(f) is not None]  # shards from before a threshold, resumed
        out["worth_a_look"][c] = sorted(kept, key=lambda f: -score_of(f))[:top_k]
    out["class_pixels"], out["detections"] = dict(out["class_pixels"]), dict(out["detections"])
    return out
