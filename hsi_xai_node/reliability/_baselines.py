"""RISE (Petsiuk et al. 2018) and SIDU (Muddamsetty et al. 2020, 2022) as offline baselines, batched on the engine.

Both explain K targets at once (every class of a segmentation frame, or every explained
box of a detector) from the same masked inputs, and return (K, H, W) float32 maps at the
input's resolution. The masked inputs go through the model `batch` rows per engine call
(the model re-batched, see _batching.py; a model with a hard-coded batch is looped), and
are made chunk by chunk, so memory stays at one chunk of inputs whatever the mask count.
numpy, onnx and the runtime's engines only: no torch.

Masked input (both methods): x_i = b + (x - b) * M_i, every channel alike, with the
baseline b zeros by default (x * M_i, as Petsiuk and paper 001), a constant, "blur"
(Gaussian, sigma 5 px, `_perturbation.baseline_image`) or an array.

RISE (paper 001, eq. 3-4; Petsiuk's reference code):
    N binary grids of s x s cells, each cell 1 with probability p; each grid bilinearly
    upsampled (half-pixel centres, mirrored at the edges: skimage's resize(order=1,
    mode="reflect") of the reference code) to (s + 1) * ceil(H / s) rows and
    likewise columns, and cropped to (H, W) at a random integer shift in [0, ceil(H / s))
    x [0, ceil(W / s)). S_k = sum_i score_ik M_i / (N p).
    Defaults: 500 masks, s = 8, p = 0.5. (Paper 001: 500 masks of 8 x 8 cells, p = 0.1,
    and 5000 masks in its timing; Petsiuk: p = 0.5.) The grids and shifts come from
    numpy's default_rng(seed), drawn all at once, so the maps do not depend on `batch`.

SIDU (paper 001, eq. 5-7; the authors' code, github.com/satyamahesh84/SIDU_XAI_CODE):
    the feature maps F_i (i = 1..n channels) of a named layer, taken from the model on
    the unmasked input (the layer is exposed as an extra graph output, `with_outputs`),
    each made binary (F_i > 0.5: the authors' rule, on the raw activation; or
    `threshold_mode="relative"`: F_i > threshold * max F_i) and bilinearly upsampled to
    (H, W) (half-pixel, mirrored edges, as their skimage resize): the masks M_i. With p the
    (N, K) scores of the masked inputs and p_o those of the unmasked input:
      similarity difference SD_ik = exp(-(p_ik - p_ok)^2 / (2 sigma^2)), per target k
                            (the authors' sqrt(exp(-d^2 / sigma^2)), elementwise, sigma 0.25)
      uniqueness            U_ik = sum_j |p_ik - p_jk| (uniqueness="target", default: each
                            target's map is independent of which other targets are explained)
                            or U_i = sum_j ||p_i - p_j||_2 over the K-vector ("vector": the
                            authors' code, where the vector is the whole class-probability
                            output); `normalise_uniqueness` rescales U to [0, 1] over the
                            masks as their code does (off by default: paper 001's eq. 6 has
                            no rescaling, and with 2 masks it would zero both weights)
      S_k = sum_i SD_ik U_ik M_i / n.
    (Their code also divides by p1 = 0.5, a constant left out here.) SIDU costs n + 1
    forward passes, n the layer's channels.

Scores (`score(outputs) -> (N, K)`, one column per target):
* `segmentation_scores(classes, predicted, logits, kind)`: for each class c, the mean over
  its predicted region on the unmasked frame (`predicted`, the argmax labels at the
  logits' resolution) of c's softmax probability (kind="prob", default: RISE weights by
  probabilities, and SIDU's sigma = 0.25 is on that scale) or logit ("logit"). A class
  with an empty region scores 0 (its RISE map is zero, as the in-graph Grad-CAM's).
* `detection_scores(pairs, scores)`: each box's class score at its anchor, `scores`
  (N, A, C) at the flat index pair = anchor * C + class (the detector's `det_pairs`),
  the same (anchor, class) the in-graph per-box Grad-CAM seeds. (Paper 001 re-finds the
  box among the masked input's detections by IoU; the fixed anchor is cheaper and needs no
  NMS.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import onnx

from ._batching import BatchedModel

Score = Callable[[dict[str, np.ndarray]], np.ndarray]


# --- graph helper ---------------------------------------------------------------------------

def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of `model` with the named intermediate tensors added as graph outputs (shapes inferred)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    present = {o.name for o in g.output}
    wanted = [n for n in dict.fromkeys(names) if n not in present]
    if not wanted:
        return out
    produced = {o for n in g.node for o in n.output}
    missing = [n for n in wanted if n not in produced]
    if missing:
        raise ValueError(f"tensor(s) {missing} are not computed by the model")
    inferred = onnx.shape_inference.infer_shapes(out)
    info = {v.name: v for v in inferred.graph.value_info}
    for name in wanted:
        v = info.get(name)
        if v is None or not v.type.tensor_type.HasField("shape"):
            raise ValueError(f"shape inference gives no shape for {name!r}; cannot expose it as an output")
        g.output.append(v)
    return out


# --- bilinear resampling --------------------------------------------------------------------

def bilinear_matrix(n_in: int, n_out: int, edge: str = "clamp") -> np.ndarray:
    """(n_out, n_in) weights of 1-D linear resampling at half-pixel centres. Positions beyond the
    outer sample centres are clamped ("clamp": OpenCV's INTER_LINEAR, ONNX Resize linear/half_pixel)
    or mirrored about them ("mirror": skimage's resize with order=1, mode="reflect", the call of
    the RISE and SIDU reference codes)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    if edge == "mirror":
        src = np.abs(src)
        src = np.where(src > n_in - 1, 2.0 * (n_in - 1) - src, src)
    elif edge != "clamp":
        raise ValueError(f"edge must be clamp or mirror, got {edge!r}")
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    f = src - i0
    r = np.zeros((n_out, n_in))
    np.add.at(r, (np.arange(n_out), i0), 1.0 - f)
    np.add.at(r, (np.arange(n_out), i1), f)
    return r


def upsample(maps: np.ndarray, hw: tuple[int, int], edge: str = "clamp") -> np.ndarray:
    """(N, h, w) -> (N, H, W) float32, bilinear (`bilinear_matrix` along each axis)."""
    maps = np.asarray(maps, np.float32)
    ry = bilinear_matrix(maps.shape[1], hw[0], edge).astype(np.float32)
    rx = bilinear_matrix(maps.shape[2], hw[1], edge).astype(np.float32)
    return np.matmul(np.matmul(ry, maps), rx.T)


# --- the engines ----------------------------------------------------------------------------

class BaselineModel:
    """The engines RISE and SIDU run on.

    `single`: the batch-1 model with `layers` as extra outputs (SIDU's reference run);
    `rows`: a BatchedModel of the model (outputs as exported) running `batch` masked inputs
    per engine call. Build one and pass it to `rise`/`sidu` for many calls (sessions are
    made once). `calls` counts engine calls.
    """

    def __init__(self, model, batch: int = 16, layers: Sequence[str] = (), backend: str = "ort-cpu",
                 threads: int = 0, allow_rebatch: bool = True):
        from ..runtime.engine import open_engine

        model = _as_model(model)
        self.layers = tuple(layers)
        self.outputs = [o.name for o in model.graph.output]
        self.single = open_engine(with_outputs(model, self.layers).SerializeToString(), backend, "fp32",
                                  threads=threads)
        self.rows = BatchedModel(model, batch, backend=backend, threads=threads, allow_rebatch=allow_rebatch)
        self._setup()

    @classmethod
    def wrap(cls, rows: BatchedModel, layers: Sequence[str] = ()) -> "BaselineModel":
        """Use an existing BatchedModel (whose outputs must include `layers`); the reference run
        then takes one call of it (padded to its batch when re-batched)."""
        self = cls.__new__(cls)
        self.layers = tuple(layers)
        missing = [n for n in self.layers if n not in rows.outputs]
        if missing:
            raise ValueError(f"the BatchedModel has no output(s) {missing}: build it on with_outputs(model, layers)")
        self.outputs = [o for o in rows.outputs if o not in self.layers]
        self.single, self.rows = None, rows
        self._setup()
        return self

    def _setup(self):
        if len(self.rows.inputs) != 1:
            raise ValueError(f"RISE/SIDU perturb one input; the model has {self.rows.inputs}")
        self.input = self.rows.inputs[0]
        self.batch = self.rows.batch
        self.calls = 0

    @property
    def batched(self) -> bool:
        return self.rows.batched

    def reference(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """All outputs (with the layers) of the unmasked input, batch 1."""
        names = self.outputs + [n for n in self.layers if n not in self.outputs]
        if self.single is not None:
            self.calls += 1
            return self.single.run({self.input: x}, names)
        return self.run_rows(x, names)

    def run_rows(self, rows: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Any number of rows through the model, `batch` per call. A re-batched model's last,
        partial chunk of m rows is padded with zeros to a full call when m > batch / 2, else
        run as m batch-1 calls of `single` (on a CPU the cost is per row; with no `single`,
        padded); a looped model runs only the real rows."""
        names = list(outputs or self.outputs)
        n = rows.shape[0]
        parts = []
        for s in range(0, n, self.batch):
            chunk = rows[s:s + self.batch]
            m = chunk.shape[0]
            if self.rows.batched and (m == self.batch or 2 * m > self.batch or self.single is None):
                if m < self.batch:
                    chunk = np.concatenate([chunk, np.zeros((self.batch - m, *chunk.shape[1:]), chunk.dtype)])
                self.calls += 1
                out = self.rows.engine.run({self.input: chunk}, names)
                parts.append({k: v[:m] for k, v in out.items()})
            else:
                engine = self.rows.engine if not self.rows.batched else self.single
                for r in range(m):
                    self.calls += 1
                    parts.append(engine.run({self.input: chunk[r:r + 1]}, names))
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in names}


def _as_model(model) -> onnx.ModelProto:
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_model_from_string(bytes(model))
    if isinstance(model, onnx.ModelProto):
        return model
    raise TypeError(f"model must be an onnx.ModelProto, its bytes, a BatchedModel or a BaselineModel, "
                    f"got {type(model).__name__}")


def _runner(model, batch: int, layers: Sequence[str], backend: str, threads: int) -> BaselineModel:
    if isinstance(model, BaselineModel):
        missing = [n for n in layers if n not in model.layers]
        if missing:
            raise ValueError(f"this BaselineModel exposes layers {list(model.layers)}, not {missing}")
        return model
    if isinstance(model, BatchedModel):
        return BaselineModel.wrap(model, layers)
    return BaselineModel(model, batch, layers, backend=backend, threads=threads)


# --- inputs and scores ----------------------------------------------------------------------

def _layout(layout: str) -> str:
    lay = layout.upper()
    if lay not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be NCHW or NHWC, got {layout!r}")
    return lay


def _check_input(x, layout: str) -> tuple[np.ndarray, tuple[int, int]]:
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be one input (1, C, H, W) or (1, H, W, C), got {x.shape}")
    return x, ((x.shape[2], x.shape[3]) if layout == "NCHW" else (x.shape[1], x.shape[2]))


def _baseline(x: np.ndarray, baseline, layout: str) -> np.ndarray:
    if isinstance(baseline, np.ndarray):
        b = np.asarray(baseline, np.float32)
        if b.shape != x.shape:
            raise ValueError(f"baseline array {b.shape} must match x {x.shape}")
        return b
    from ._perturbation import baseline_image

    return baseline_image(x, baseline, layout=layout)


def masked_inputs(x: np.ndarray, masks: np.ndarray, base: np.ndarray, layout: str = "NCHW") -> np.ndarray:
    """(N, ...) inputs b + (x - b) * M_i, every channel masked alike (x * M_i for a zero baseline)."""
    m = masks[:, None] if _layout(layout) == "NCHW" else masks[..., None]
    return (base + (x - base) * m).astype(np.float32)


def _scores(score: Score, outputs: dict[str, np.ndarray], n: int) -> np.ndarray:
    s = np.asarray(score(outputs), np.float64)
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2 or s.shape[0] != n:
        raise ValueError(f"the score gave shape {s.shape} for {n} rows; it must return (N, K)")
    if not np.isfinite(s).all():
        raise ValueError("the score gave NaN or inf")
    return s


def _softmax(z: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def segmentation_scores(classes: Sequence[int], predicted: np.ndarray, logits: str = "logits",
                        kind: str = "prob") -> Score:
    """(N, K) score of the classes: each one's mean softmax probability ("prob") or logit ("logit")
    over its region in `predicted` (the unmasked frame's (h, w) argmax labels); 0 for an empty region."""
    if kind not in ("prob", "logit"):
        raise ValueError(f"kind must be prob or logit, got {kind!r}")
    pred = np.asarray(predicted)
    if pred.ndim == 3 and pred.shape[0] == 1:
        pred = pred[0]
    if pred.ndim != 2:
        raise ValueError(f"predicted must be (h, w) labels, got {pred.shape}")
    cls = [int(c) for c in classes]
    regions = np.stack([(pred == c).ravel() for c in cls]).astype(np.float64)  # (K, h*w)
    weights = regions / np.maximum(regions.sum(1, keepdims=True), 1.0)

    def score(outputs: dict[str, np.ndarray]) -> np.ndarray:
        z = np.asarray(outputs[logits], np.float64)
        if z.ndim != 4 or z.shape[2:] != pred.shape:
            raise ValueError(f"logits {z.shape} do not match the predicted labels {pred.shape}")
        v = _softmax(z, 1)[:, cls] if kind == "prob" else z[:, cls]
        return np.einsum("nkp,kp->nk", v.reshape(v.shape[0], len(cls), -1), weights)

    return score


def detection_scores(pairs: Sequence[int], scores: str = "scores") -> Score:
    """(N, K) class score of each box at its anchor: `scores` (N, A, C) at flat index pair = anchor * C + class."""
    p = np.asarray(pairs, np.int64).ravel()
    if p.size == 0:
        raise ValueError("no boxes to score")
    if (p < 0).any():
        raise ValueError("an empty detection slot (pair -1) has no score; pass the kept pairs only")

    def score(outputs: dict[str, np.ndarray]) -> np.ndarray:
        s = np.asarray(outputs[scores])
        flat = s.reshape(s.shape[0], -1)
        if p.max() >= flat.shape[1]:
            raise ValueError(f"pair {int(p.max())} is outside the {flat.shape[1]} anchor-class scores")
        return flat[:, p].astype(np.float64)

    return score


# --- RISE -----------------------------------------------------------------------------------

class RiseMasks:
    """Petsiuk's random masks, drawn at once (grids, shifts) and rendered chunk by chunk: masks[a:b] -> (n, H, W)."""

    def __init__(self, n: int, hw: tuple[int, int], grid: int | tuple[int, int] = 8, p: float = 0.5, seed: int = 0):
        if n < 1:
            raise ValueError(f"n_masks must be >= 1, got {n}")
        if not 0.0 < p <= 1.0:
            raise ValueError(f"p must be in (0, 1], got {p}")
        gy, gx = (grid, grid) if isinstance(grid, (int, np.integer)) else tuple(grid)
        if gy < 1 or gx < 1:
            raise ValueError(f"grid must be >= 1 cells, got {grid}")
        self.n, self.hw, self.p = int(n), (int(hw[0]), int(hw[1])), float(p)
        self.cell = (math.ceil(self.hw[0] / gy), math.ceil(self.hw[1] / gx))
        rng = np.random.default_rng(seed)
        self.grids = (rng.random((self.n, gy, gx)) < p).astype(np.float32)
        self.shifts = np.stack([rng.integers(0, self.cell[0], self.n), rng.integers(0, self.cell[1], self.n)], 1)
        self._ry = bilinear_matrix(gy, (gy + 1) * self.cell[0], "mirror").astype(np.float32)
        self._rx = bilinear_matrix(gx, (gx + 1) * self.cell[1], "mirror").astype(np.float32)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: slice) -> np.ndarray:
        if not isinstance(idx, slice):
            idx = slice(idx, idx + 1)
        g = self.grids[idx]
        sy, sx = self.shifts[idx, 0], self.shifts[idx, 1]
        ry = self._ry[sy[:, None] + np.arange(self.hw[0])]  # (n, H, gy): the cropped rows of the upsampling
        rx = self._rx[sx[:, None] + np.arange(self.hw[1])]  # (n, W, gx)
        return np.matmul(np.matmul(ry, g), rx.transpose(0, 2, 1))


def rise(model, x: np.ndarray, score: Score, n_masks: int = 500, grid: int | tuple[int, int] = 8, p: float = 0.5,
         batch: int = 16, seed: int = 0, baseline="zeros", layout: str = "NCHW",
         outputs: Sequence[str] | None = None, backend: str = "ort-cpu", threads: int = 0,
         details: dict | None = None, progress=None) -> np.ndarray:
    """RISE maps (K, H, W) float32 of the K targets `score` returns (module docstring).

    model: an onnx.ModelProto or its bytes (engines made here), a BatchedModel or a
    BaselineModel (reused; its batch wins over `batch`). outputs: the model outputs the
    score needs (default all). details: a dict, filled with the masks' scores and the engine calls.
    progress: called with the number of masks of each chunk done (a progress bar's update).
    """
    layout = _layout(layout)
    runner = _runner(model, batch, (), backend, threads)
    calls = runner.calls
    x, hw = _check_input(x, layout)
    base = _baseline(x, baseline, layout)
    masks = RiseMasks(n_masks, hw, grid, p, seed)
    acc, scores = None, []
    for s in range(0, masks.n, runner.batch):
        m = masks[s:s + runner.batch]
        sc = _scores(score, runner.run_rows(masked_inputs(x, m, base, layout), outputs), len(m))
        part = sc.T @ m.reshape(len(m), -1).astype(np.float64)
        acc = part if acc is None else acc + part
        scores.append(sc)
        if progress is not None:
            progress(len(m))
    if details is not None:
        details.update(scores=np.concatenate(scores), masks=masks.n, calls=runner.calls - calls)
    return (acc / (masks.n * masks.p)).reshape(-1, *hw).astype(np.float32)


# --- SIDU -----------------------------------------------------------------------------------

def sidu_masks(features: np.ndarray, threshold: float = 0.5, mode: str = "absolute") -> np.ndarray:
    """(n, h, w) binary float32 masks of the feature maps (n, h, w) (or (1, n, h, w)):
    F_i > threshold ("absolute", the authors' rule) or F_i > threshold * max F_i ("relative")."""
    f = np.asarray(features, np.float32)
    if f.ndim == 4 and f.shape[0] == 1:
        f = f[0]
    if f.ndim != 3:
        raise ValueError(f"features must be (n, h, w) or (1, n, h, w) (NCHW), got {np.shape(features)}")
    if mode == "absolute":
        cut = np.float32(threshold)
    elif mode == "relative":
        cut = np.float32(threshold) * f.reshape(f.shape[0], -1).max(1)[:, None, None]
        cut = np.where(cut > 0, cut, np.inf)  # a channel with no positive activation gives an empty mask
    else:
        raise ValueError(f"threshold mode must be absolute or relative, got {mode!r}")
    return (f > cut).astype(np.float32)


def sidu_weights(reference: np.ndarray, scores: np.ndarray, sigma: float = 0.25, uniqueness: str = "target",
                 normalise_uniqueness: bool = False) -> np.ndarray:
    """(N, K) weights SD_ik * U_ik of the N masks from the unmasked scores (1, K) and the masked (N, K)."""
    p = np.asarray(scores, np.float64)
    p = p[:, None] if p.ndim == 1 else p
    po = np.asarray(reference, np.float64).reshape(1, -1)
    if po.shape[1] != p.shape[1]:
        raise ValueError(f"reference has {po.shape[1]} targets, scores {p.shape[1]}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    sd = np.exp(-((p - po) ** 2) / (2.0 * sigma ** 2))
    if uniqueness == "target":
        u = np.stack([np.abs(p[:, k, None] - p[None, :, k]).sum(1) for k in range(p.shape[1])], 1)
    elif uniqueness == "vector":
        sq = (p * p).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * p @ p.T, 0.0)
        np.fill_diagonal(d2, 0.0)
        u = np.repeat(np.sqrt(d2).sum(1, keepdims=True), p.shape[1], axis=1)
    else:
        raise ValueError(f"uniqueness must be target or vector, got {uniqueness!r}")
    if normalise_uniqueness:
        lo, hi = u.min(0, keepdims=True), u.max(0, keepdims=True)
        u = (u - lo) / (hi - lo + 1e-13)
    return sd * u


def sidu(model, x: np.ndarray, score: Score, layer: str, threshold: float = 0.5, threshold_mode: str = "absolute",
         sigma: float = 0.25, uniqueness: str = "target", normalise_uniqueness: bool = False, batch: int = 16,
         baseline="zeros", layout: str = "NCHW", outputs: Sequence[str] | None = None, backend: str = "ort-cpu",
         threads: int = 0, edge: str = "mirror", details: dict | None = None) -> np.ndarray:
    """SIDU maps (K, H, W) float32 of the K targets `score` returns, masks from `layer`'s channels (module docstring).

    model: as `rise`; a BaselineModel must expose `layer`, a BatchedModel must have it among
    its outputs (`with_outputs`). layer: an NCHW tensor of the graph (the last conv layer).
    edge: the masks' upsampling at the border ("mirror" as the authors' skimage call, or "clamp").
    details: a dict, filled with the reference scores, the masks' scores, SD x U weights,
    the fraction of each mask set and the engine calls (for inspection and tests).
    """
    layout = _layout(layout)
    runner = _runner(model, batch, (layer,), backend, threads)
    calls = runner.calls
    x, hw = _check_input(x, layout)
    base = _baseline(x, baseline, layout)
    ref = runner.reference(x)
    p_org = _scores(score, ref, 1)
    low = sidu_masks(ref[layer], threshold, threshold_mode)
    n = low.shape[0]
    chunks = [(s, min(s + runner.batch, n)) for s in range(0, n, runner.batch)]
    parts = []
    for a, b in chunks:
        rows = masked_inputs(x, upsample(low[a:b], hw, edge), base, layout)
        parts.append(_scores(score, runner.run_rows(rows, outputs), b - a))
    p = np.concatenate(parts)
    w = sidu_weights(p_org, p, sigma, uniqueness, normalise_uniqueness)
    acc = np.zeros((w.shape[1], hw[0] * hw[1]))
    for a, b in chunks:
        acc += w[a:b].T @ upsample(low[a:b], hw, edge).reshape(b - a, -1).astype(np.float64)
    if details is not None:
        details.update(reference=p_org[0], scores=p, weights=w, mask_fraction=low.reshape(n, -1).mean(1),
                       masks=n, calls=runner.calls - calls)
    return (acc / n).reshape(-1, *hw).astype(np.float32)
