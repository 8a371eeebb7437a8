"""In-graph pre- and postprocessing: one ONNX graph from the raw mosaic to uint8 images.

    fast = InGraphPipeline(pipeline, raw_dtype="int32")   # from an already built Pipeline
    result = fast.process(raw)                              # FrameResult: labels and images

`build_ingraph_pipeline(pipeline, raw_dtype)` wraps the pipeline's explain graph:

    raw (rows, cols) -> float -> filter area -> tiles (n, ch, cw)          sub-sampling demosaic
      -> wanted bands * gain + bias (dark/white references as constants)  reflectance
      -> model bands -> model window -> [PN] -> * scale -> model input
      -> model + explanations (the explain graph, pruned to what is used)
      -> labels (argmax -> card ids), segmentation (palette), preview (false colour),
         fused Grad-CAM / activation overlays (colormap LUT, blended over the preview)

Float stages (reflectance, PN, the model) repeat the CPU path's float32 operations in the same
order; the stages that make grey levels do not compute them in float at all: false colour is a
binary search over thresholds found with `false_colour` itself, and the overlay blend a table
made with `cv2.addWeighted` itself, so both match the CPU path exactly on any backend that
matches its reflectance. On ONNX Runtime CPU every output equals `Pipeline.process`'s
(test/runtime/test_ingraph.py). TensorRT may contract Mul+Add into FMA and reorder the PN sum
(ulp-level differences that can flip a near-tie argmax or a grey level at a threshold), and in
fp16 mode the model's own forward runs in half precision (the pre- and postprocessing, whose nodes are named like the
explanations', stay in FP32 with them): build the engine in fp32 for equality.
Residuals, spectra and per-class float maps are not produced: they need the float maps on
the host, which is what this graph exists to avoid; use `Pipeline` for them.

Raw dtype: TensorRT has no UINT16 tensors, so the raw input is one of
    "uint16"  the camera's mono16 frame as is, zero host conversion; ONNX Runtime only;
    "int32"   TensorRT-compatible; the host widens the frame (exact for any bit depth).
Images leave the graph through a final Cast to uint8, the only place TensorRT allows UINT8;
inside the graph class ids and grey levels are int32.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import onnx
from onnx import TensorProto as TP

from ..classes import palette
from ..errors import InputError
from ..explain._graph import Builder, keep_outputs
from ..sensor.cube import Cube
from ..sensor.demosaic import check_frame
from ..sensor.radiometry import false_colour, per_pixel_normalise, select_bands
from .engine import EngineError, open_engine
from .overlay import colormap_lut
from .pipeline import FrameResult, Pipeline

RAW_DTYPES = {"uint16": (np.uint16, TP.UINT16), "int32": (np.int32, TP.INT32)}
# Pipeline calls false_colour and per_pixel_normalise with their defaults: read them, do not copy them.
_FALSE_COLOUR = {k: v.default for k, v in inspect.signature(false_colour).parameters.items()}
_PN_EPS = inspect.signature(per_pixel_normalise).parameters["eps"].default


@dataclass
class InGraphModel:
    """The whole-frame graph and the names of its tensors (overlays None when not configured)."""

    model: onnx.ModelProto
    raw_input: str
    raw_dtype: str  # "uint16" or "int32"
    raw_shape: tuple[int, int]  # (rows, cols) of the sensor frame
    labels: str  # (rows, cols) uint8 class ids at cube resolution
    segmentation: str  # (rows, cols, 3) bgr8
    preview: str  # (rows, cols, 3) bgr8
    saturated_fraction: str  # (1,) float32
    gradcam_overlay: str | None = None
    activation_overlay: str | None = None
    stage_nodes: dict[str, int] = field(default_factory=dict)  # preprocess / model+explain / postprocess

    def output_names(self) -> dict[str, str]:
        """FrameResult field -> graph output, for the outputs this graph has."""
        fields = ("labels", "segmentation", "preview", "gradcam_overlay", "activation_overlay", "saturated_fraction")
        return {f: getattr(self, f) for f in fields if getattr(self, f) is not None}


def _check_supported(pipeline: Pipeline) -> None:
    fe = pipeline.frontend.config
    if fe.demosaic != "subsample":
        raise InputError(f"in-graph preprocessing does the sub-sampling demosaic only, not {fe.demosaic!r}")
    if fe.median_ksize or fe.correction is not None:
        raise InputError("in-graph preprocessing has no median filter or spectral correction stage")
    if pipeline.scales.mode == "running":
        raise InputError("in-graph pipeline: overlay_scale running needs the peaks on the host each frame; use "
                         "card or frame")
    if pipeline.graph.extra_inputs:
        raise InputError(f"in-graph pipeline needs seed 'predicted'; the graph asks for inputs "
                         f"{sorted(pipeline.graph.extra_inputs)}")


def _band_indices(profile, wavelengths, tolerance_nm: float) -> list[int]:
    """Sensor band indices exactly as select_bands picks them from a band-index-order cube."""
    probe = Cube(np.zeros((profile.n_bands, 1, 1), np.float32), profile.band_wavelengths_nm,
                 np.arange(profile.n_bands))
    return select_bands(probe, list(wavelengths), tolerance_nm).band_indices.tolist()


def _false_colour_steps(wavelengths) -> np.ndarray:
    """(256,) float32: [k] is the least reflectance false_colour turns into grey level >= k ([0] = 0).

    Found by bisection over float32 bit patterns (ordered like the values for non-negative
    floats), calling false_colour itself, so its gamma, white level and rounding are the graph's.
    """
    if _FALSE_COLOUR["white_level"] is None:
        raise InputError("in-graph false colour needs a fixed white level (per-frame percentiles are not in the graph)")
    wl = np.asarray(wavelengths, np.float64)

    def grey(bits: np.ndarray) -> np.ndarray:
        values = np.broadcast_to(bits.view(np.float32), (3, 1, bits.size))
        return false_colour(Cube(values.copy(), wl, np.full(3, -1)), wavelengths)[0, :, 0]

    want = np.arange(256)
    lo = np.zeros(256, np.int32)
    hi = np.full(256, np.float32(_FALSE_COLOUR["white_level"]).view(np.int32))  # grey 255 there
    while (lo < hi).any():
        mid = lo + (hi - lo) // 2
        reached = grey(mid) >= want
        hi, lo = np.where(reached, mid, hi), np.where(reached, lo, mid + 1)
    return lo.view(np.float32)


def _preprocess(b: Builder, pipeline: Pipeline, raw: str) -> tuple[str, str, str]:
    """Raw frame -> (model input (1, bands, h, w), preview (rows, cols, 3) int32, saturated fraction (1,))."""
    p, fe, inp = pipeline.profile, pipeline.frontend, pipeline.card.input
    ph, pw = p.pattern_height, p.pattern_width
    n, ch, cw = p.cube_shape
    f = b.op("Cast", [raw], "raw_float", to=TP.FLOAT)  # exact: raw values are integers < 2**24
    area = b.op("Slice", [f, b.ints([p.offset_y, p.offset_x]), b.ints([p.offset_y + ch * ph, p.offset_x + cw * pw])],
                "filter_area")
    grid = b.op("Reshape", [area, b.ints([ch, ph, cw, pw])], "tile_grid")  # (cube row, tile row, cube col, tile col)

    # A cube pixel is saturated when any raw value of its tile reaches full scale (FrontEnd's rule).
    peak = b.reduce("ReduceMax", grid, [1, 3], 0, "tile_peak")
    hit = b.op("Cast", [b.op("GreaterOrEqual", [peak, b.const(float((1 << fe.bit_depth) - 1))], "saturated")],
               "saturated_f", to=TP.FLOAT)
    saturated = b.reduce("ReduceMean", b.reduce("ReduceMean", hit, [1], 0, "saturated_cols"), [0], 1,
                         "saturated_fraction")

    tiles = b.op("Reshape", [b.op("Transpose", [grid], "tile_major", perm=[1, 3, 0, 2]), b.ints([n, ch, cw])],
                 "tiles")  # tile-position order
    model_bands = _band_indices(p, inp.bands_nm, inp.band_tolerance_nm)
    preview_bands = _band_indices(p, pipeline.config.false_colour_nm, _FALSE_COLOUR["tolerance_nm"])[::-1]  # BGR
    wanted = list(dict.fromkeys(model_bands + preview_bands))
    tile_of_band = np.argsort(p.layout.ravel())
    planes = b.op("Gather", [tiles, b.ints(tile_of_band[wanted])], "band_planes", axis=0)
    # Same float32 operations as FrontEnd: raw * gain + (-offset * gain), per band and pixel.
    gain = fe.reflectance.gain[wanted]
    bias = -fe.reflectance.offset[wanted] * gain
    refl = b.op("Add", [b.op("Mul", [planes, b.const(gain, "gain")], "gained"), b.const(bias, "bias")], "reflectance")

    x = refl
    if wanted != model_bands:  # `wanted` starts with the model's bands: equal means no extra planes
        x = b.op("Gather", [refl, b.ints([wanted.index(band) for band in model_bands])], "model_bands", axis=0)
    # PN is per pixel, so cropping to the model window first changes no value and saves work.
    x = b.op("Slice", [x, b.ints([inp.crop_top, inp.crop_left]),
                       b.ints([inp.crop_top + inp.height, inp.crop_left + inp.width]), b.ints([1, 2])], "window")
    if pipeline.frontend.config.normalise:
        total = b.reduce("ReduceSum", x, [0], 1, "pixel_sum")
        recip = b.op("Where", [b.op("Greater", [total, b.const(_PN_EPS)], "lit"),
                               b.op("Div", [b.const(1.0), total], "reciprocal"), b.const(0.0)], "safe_reciprocal")
        x = b.op("Mul", [x, recip], "pn")
    if inp.normalise == "max":  # as model_card.normalised_window: 2 x / max_b - 1 per band, a dark band -> -1
        top = b.reduce("ReduceMax", x, [1, 2], 1, "band_max")
        two_over = b.op("Where", [b.op("Greater", [top, b.const(0.0)], "window_lit"),
                                  b.op("Div", [b.const(2.0), top], "two_over_max"), b.const(0.0)], "safe_two_over")
        x = b.op("Sub", [b.op("Mul", [x, two_over], "over_max"), b.const(1.0)], "max_normalised")
    elif inp.normalise == "mean_std":
        mean = np.asarray(inp.mean, np.float32).reshape(-1, 1, 1)
        recip = (np.float32(1) / np.asarray(inp.std, np.float32)).reshape(-1, 1, 1)
        x = b.op("Mul", [b.op("Sub", [x, b.const(mean, "band_mean")], "centred"), b.const(recip, "band_recip_std")],
                 "standardised")
    if np.float32(inp.scale) != 1.0:  # x * 1 is exact: skipping it changes nothing
        x = b.op("Mul", [x, b.const(inp.scale)], "scaled")
    x = b.op("Unsqueeze", [x, b.ints([0])], "model_input")

    # false_colour's grey level is a step function of reflectance: a binary search over its 255 steps
    # reproduces numpy's float32 pow, which is not correctly rounded (so a Pow node differs by 1
    # grey level at a few pixels, and differently on each backend); comparisons are exact everywhere.
    v = b.op("Gather", [refl, b.ints([wanted.index(band) for band in preview_bands])], "preview_bands", axis=0)
    steps = _false_colour_steps(pipeline.config.false_colour_nm)
    table = b.const(steps, "grey_steps")
    level = b.op("Where", [b.op("GreaterOrEqual", [v, b.const(steps[128])], "ge_128"),
                           b.const(128, "grey", np.int32), b.const(0, "grey", np.int32)], "level_128")
    for step in (64, 32, 16, 8, 4, 2, 1):  # grey levels stay int32 up to the output Cast
        up = b.op("Add", [level, b.const(step, "grey_step", np.int32)], f"try_{step}")
        ge = b.op("GreaterOrEqual", [v, b.op("Gather", [table, up], f"step_{step}", axis=0)], f"ge_{step}")
        level = b.op("Where", [ge, up, level], f"level_{step}")
    preview = b.op("Transpose", [level], "preview_hwc", perm=[1, 2, 0])
    return x, preview, saturated


def _postprocess(b: Builder, pipeline: Pipeline, preview: str) -> dict[str, str]:
    """Logits and uint8-scaled maps -> labels, segmentation, overlays (int32; cast to uint8 by the caller)."""
    inp, cfg, eg = pipeline.card.input, pipeline.config, pipeline.graph
    rows, cols = pipeline.profile.cube_height, pipeline.profile.cube_width
    h, w, top, left = inp.height, inp.width, inp.crop_top, inp.crop_left
    bottom, right = rows - top - h, cols - left - w
    channel = b.op("ArgMax", [eg.logits], "channel", axis=1, keepdims=1)  # first maximum, as numpy's argmax
    ids = b.op("Gather", [b.const(pipeline.card.label_ids(), "label_ids", np.int32),
                          b.op("Reshape", [channel, b.ints([h, w])], "channel_hw")], "ids", axis=0)
    labels = b.op("Pad", [ids, b.ints([top, left, bottom, right])], "labels_full")  # 0 outside the window
    out = {"labels": labels,
           "segmentation": b.op("Gather", [b.const(palette(), "palette", np.int32), labels], "segmentation", axis=0),
           "preview": preview}

    plan = pipeline._plan  # the CPU path's choice of maps, so both fuse the same ones
    maps = {k: plan[k + "_u8"] for k in ("gradcam", "activation") if k + "_u8" in plan}
    if not maps:
        return out
    producers = {o: n for n in b.graph.node for o in n.output}
    # cv2.addWeighted(preview, 1 - a, coloured, a, 0) is a function of two grey levels: tabulating it
    # with OpenCV itself reproduces its fused multiply-add and round-half-even on every backend.
    grey = np.arange(256, dtype=np.uint8)
    blend_lut = cv2.addWeighted(np.repeat(grey, 256).reshape(256, 256), 1.0 - cfg.overlay_alpha,
                                np.tile(grey, 256).reshape(256, 256), cfg.overlay_alpha, 0.0)
    blend_lut = b.const(blend_lut.ravel(), "blend", np.int32)  # [preview * 256 + coloured]
    window = b.op("Slice", [preview, b.ints([top, left]), b.ints([top + h, left + w]), b.ints([0, 1])],
                  "preview_window")
    base = b.op("Mul", [window, b.const(256, "row", np.int32)], "blend_row")
    inside = np.zeros((rows, cols, 1), bool)
    inside[top:top + h, left:left + w] = True
    inside = b.const(inside, "window_mask", bool)
    for kind, u8 in maps.items():
        cast = producers.get(u8)
        if cast is None or cast.op_type != "Cast":
            raise InputError(f"explain output {u8!r} is not a Cast to uint8; cannot reuse its scaled map")
        scaled = cast.input[0]  # (K, 1, h, w) integral floats 0..255, or (1, 1, h, w) already the predicted class's
        fused = scaled if eg.outputs[u8].shape[0] == 1 else \
            b.op("GatherElements", [scaled, channel], f"{kind}_fused", axis=0)  # the predicted class's map
        idx = b.op("Cast", [b.op("Reshape", [fused, b.ints([h, w])], f"{kind}_hw")], f"{kind}_idx", to=TP.INT32)
        lut = colormap_lut(pipeline._colormap(eg.outputs[u8].signed))  # the CPU path's table, signed or not
        coloured = b.op("Gather", [b.const(lut, "colormap", np.int32), idx], f"{kind}_coloured", axis=0)  # (h, w, 3)
        blend = b.op("Gather", [blend_lut, b.op("Add", [base, coloured], f"{kind}_pair")], f"{kind}_blend", axis=0)
        padded = b.op("Pad", [blend, b.ints([top, left, 0, bottom, right, 0])], f"{kind}_padded")
        out[f"{kind}_overlay"] = b.op("Where", [inside, padded, preview], f"{kind}_overlay")  # preview outside
    return out


def build_ingraph_pipeline(pipeline: Pipeline, raw_dtype: str = "uint16") -> InGraphModel:
    """One ONNX graph: raw frame (`raw_dtype`) -> uint8 labels and bgr8 images, as `pipeline` computes them."""
    if raw_dtype not in RAW_DTYPES:
        raise InputError(f"raw_dtype {raw_dtype!r} must be one of {sorted(RAW_DTYPES)} "
                         "(uint16 for ONNX Runtime, int32 for TensorRT, which has no UINT16)")
    _check_supported(pipeline)
    model = onnx.ModelProto()
    model.CopyFrom(pipeline.graph.model)
    b = Builder(model)
    g = model.graph
    explain = list(g.node)
    g.ClearField("node")  # Builder appends: collect each stage's nodes separately, then order them

    profile, model_input = pipeline.profile, pipeline.card.input.tensor
    raw = b.add_input("raw", profile.frame_shape, RAW_DTYPES[raw_dtype][1])
    x, preview, saturated = _preprocess(b, pipeline, raw)
    pre = list(g.node)
    g.ClearField("node")
    for node in explain:  # the model now reads the preprocessed frame instead of its own input
        for i, name in enumerate(node.input):
            if name == model_input:
                node.input[i] = x
    g.node.extend(explain)  # postprocessing looks up the explain graph's nodes
    post_out = _postprocess(b, pipeline, preview)
    post = list(g.node)[len(explain):]

    taken = {t.name for t in g.initializer} | {v.name for v in g.input} | {o for n in g.node for o in n.output}
    g.ClearField("output")
    rows, cols = profile.cube_height, profile.cube_width
    image = (rows, cols, 3)
    outputs = {**{k: (v, TP.UINT8, image) for k, v in post_out.items()},
               "labels": (post_out["labels"], TP.UINT8, (rows, cols)),
               "saturated_fraction": (saturated, TP.FLOAT, (1,))}
    for key, (tensor, elem, shape) in outputs.items():
        if key in taken:
            raise InputError(f"the model already has a tensor named {key!r}; cannot name an output so")
        # uint8 only through a Cast that produces a graph output: the one place TensorRT allows it
        attrs = {"to": elem} if elem == TP.UINT8 else {}
        post.append(onnx.helper.make_node("Cast" if attrs else "Identity", [tensor], [key], name=b.fresh(key + "_out"),
                                          **attrs))
        g.output.append(onnx.helper.make_tensor_value_info(key, elem, list(shape)))

    g.ClearField("node")
    g.node.extend(pre + explain + post)
    kept_inputs = [v for v in g.input if v.name != model_input]
    del g.input[:]
    g.input.extend(kept_inputs)
    keep_outputs(g, [o.name for o in g.output])  # drop what no output depends on (unused explanations)
    produced = {n.output[0] for n in g.node}  # the nodes in g are copies: recognise them by their outputs
    counts = {k: sum(n.output[0] in produced for n in nodes)
              for k, nodes in (("preprocess", pre), ("model+explain", explain), ("postprocess", post))}
    onnx.checker.check_model(model, full_check=True)
    return InGraphModel(model=model, raw_input=raw, raw_dtype=raw_dtype, raw_shape=profile.frame_shape,
                        labels="labels", segmentation="segmentation", preview="preview",
                        saturated_fraction="saturated_fraction", stage_nodes=counts,
                        gradcam_overlay="gradcam_overlay" if "gradcam_overlay" in outputs else None,
                        activation_overlay="activation_overlay" if "activation_overlay" in outputs else None)


class InGraphPipeline:
    """Runs an `InGraphModel` on an engine: the host only checks and (for int32) widens the frame.

    `backend` defaults to the pipeline's. A uint16 graph cannot run on TensorRT; with "auto"
    it takes the first ONNX Runtime backend that works (ort-cuda, then ort-cpu).
    """

    def __init__(self, pipeline: Pipeline, raw_dtype: str = "uint16", backend: str | None = None):
        self.profile = pipeline.profile
        self.graph = build_ingraph_pipeline(pipeline, raw_dtype)
        cfg = pipeline.config
        backend = backend or cfg.backend
        if raw_dtype == "uint16" and backend in ("tensorrt", "ort-trt"):
            raise InputError(f"raw_dtype 'uint16' cannot run on {backend} (TensorRT has no UINT16): use 'int32'")
        data = self.graph.model.SerializeToString()
        candidates = ("ort-cuda", "ort-cpu") if raw_dtype == "uint16" and backend == "auto" else (backend,)
        for i, name in enumerate(candidates):
            try:
                self.engine = open_engine(data, name, cfg.precision, cfg.cache_dir, cfg.threads,
                                          device=cfg.openvino_device)
                break
            except EngineError:
                if i == len(candidates) - 1:
                    raise
        self._dtype = RAW_DTYPES[raw_dtype][0]
        self._names = self.graph.output_names()
        self._scale_feeds = pipeline.scale_feeds()  # card scales (fixed); none in frame mode

    def process(self, raw: np.ndarray) -> FrameResult:
        t0 = time.perf_counter()
        raw = check_frame(raw, self.profile)  # shape and dtype, before anything runs
        feed = raw.astype(self._dtype, copy=False)  # uint16: no copy; int32: the widening TensorRT needs
        t1 = time.perf_counter()
        out = self.engine.run({self.graph.raw_input: feed, **self._scale_feeds}, list(self._names.values()))
        t2 = time.perf_counter()
        r = {k: out[v] for k, v in self._names.items()}
        result = FrameResult(labels=r["labels"], segmentation=r["segmentation"], preview=r["preview"],
                             gradcam_overlay=r.get("gradcam_overlay"), activation_overlay=r.get("activation_overlay"),
                             saturated_fraction=float(r["saturated_fraction"][0]))
        result.timings_ms = {"host": (t1 - t0) * 1e3, "engine": (t2 - t1) * 1e3, "total": (t2 - t0) * 1e3}
        return result
