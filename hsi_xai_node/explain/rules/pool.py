"""Backward rules of pooling and reductions.

Windowed pools route each kernel offset's share of the cotangent back onto the input grid (`route_windows`), from
masks computed at the forward's batch of 1 (TensorRT builds no MaxPool Indices, and a Scatter per element would not
be cheaper): where the windows tile the input (a 2x2/2 pool), the cotangent upsampled times the masks interleaved
once at batch 1; elsewhere by shifts and one interleave of the rows (`scatter_windows`).
"""

from __future__ import annotations

import itertools

import numpy as np

from . import RuleContext, rule
from .activation import mask_of
from .conv import conv_geometry


def pool_geometry(c: RuleContext):
    """(kernel, strides, begin pads, end pads, x spatial shape, y spatial shape) of a pooling node."""
    kernel = list(c.attr("kernel_shape"))
    if any(d != 1 for d in c.attr("dilations", [1] * len(kernel))):
        raise c.fail("dilated pooling is not supported")
    strides, pads, _ = conv_geometry(c, c.x(), (0, 0, *kernel), c.y())
    n = len(kernel)
    return kernel, strides, pads[:n], pads[n:], c.shape(c.x())[2:], c.shape(c.y())[2:]


def route_windows(c: RuleContext, g: str, masks: dict[tuple[int, ...], str | None], geometry) -> str:
    """The cotangent `g` (the output's shape) added back onto the input grid once per kernel offset d, times that
    offset's mask (`masks`: offset -> a tensor of the output's shape at the forward's batch of 1, or None for all
    ones): output o's share for offset d lands on input position o * s + d - begin.

    Where the windows tile the input (kernel = stride, no padding, the input a whole number of windows), every input
    position is reached from one window at one offset: the share is g upsampled (nearest, each output repeated over
    its window) times the offsets' masks interleaved onto the input grid, the interleave at batch 1. The rows then
    pay one upsample and one product, where `scatter_windows` moved them through a product per offset, a Concat and
    a Transpose per interleaved axis (bundled U-Net, five classes, its four 2x2/2 max-pools, ONNX Runtime's CPU
    provider on 2 threads, calls interleaved with the interleave's: the gradient 0.94-0.99x the time, DeepLIFT
    0.95-0.98x; the same values)."""
    kernel, strides, begin, _, xs, ys = geometry
    n, b = len(kernel), c.b
    ones = [m is None for m in masks.values()]  # all (average pools) or none (max-pools' window maxima)
    if list(kernel) != list(strides) or any(begin) or any(ys[i] * strides[i] != xs[i] for i in range(n)) \
            or len(set(ones)) > 1:
        return scatter_windows(c, g, masks, geometry)
    up = b.op("Resize", [g, "", b.const(np.array([1, 1, *strides], np.float32), "pool_scales")], "pool_upsampled",
              mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    if all(ones):  # every offset takes the whole share
        return up
    return b.op("Mul", [up, scatter_windows(c, None, masks, geometry, rows=1)], "pool_routed")


def scatter_windows(c: RuleContext, g: str | None, masks: dict[tuple[int, ...], str | None], geometry,
                    rows: int | None = None) -> str:
    """`route_windows` by shifts and interleaves of the rows (any kernel, stride and padding). With `g` None, the masks
    themselves are interleaved, at `rows` rows (the forward's batch of 1: `route_windows`'s tiled case).

    Positions of one residue modulo the stride (a "phase") form a grid of their own, on which offset d's share is g
    shifted by a whole number of positions times the mask shifted alike; g is shifted once per distinct shift (three
    for a 3x3/2 pool), the masks, at the forward's batch of 1, once each. The phases are then interleaved. Shifts
    and interleaving are copies, where a ConvTranspose with a one-hot kernel per channel and offset took 4-6x
    longer on ONNX Runtime's CPU provider (a detector's per-box backward through the BiFPN's 3x3/2 max-pools:
    10 x 64 x 64 x 80). Positions in the padding, and past the input in ceil mode, are cropped.
    """
    kernel, strides, begin, _, xs, ys = geometry
    n, b = len(kernel), c.b
    lead = (rows or c.batch, c.shape(c.x())[1])  # (rows, channels)
    grid = [-(-xs[i] // strides[i]) for i in range(n)]  # each phase's positions along each axis (ceil)
    phases: dict[tuple[int, ...], list[str]] = {}
    moved: dict[tuple[int, ...], str] = {}
    for offset, mask in masks.items():
        shift = [offset[i] - begin[i] for i in range(n)]
        phase = tuple(shift[i] % strides[i] for i in range(n))
        q = tuple((shift[i] - phase[i]) // strides[i] for i in range(n))
        if g is None:
            part = _shifted(c, mask, list(q), ys, grid)
        else:
            if q not in moved:
                moved[q] = _shifted(c, g, list(q), ys, grid)
            part = moved[q] if mask is None else \
                b.op("Mul", [moved[q], _shifted(c, mask, list(q), ys, grid)], "pool_route")
        phases.setdefault(phase, []).append(part)
    planes = {}
    for phase in itertools.product(*[range(s) for s in strides]):
        got = phases.get(phase)
        if not got:  # stride larger than the kernel: no window reaches these positions
            planes[phase] = b.op("Expand", [b.const(0.0, "zero"), b.ints([*lead, *grid])], "pool_no_window")
        else:
            planes[phase] = b.add_all(got, "pool_phase")
    # interleave one axis at a time, the last first: the phases of that axis side by side on a new axis right after
    # it, then merged into it (Reshape). Along the last axis the phases are stacked on a new leading axis (a Concat
    # of whole tensors) which one Transpose then moves to the end; along the others a Concat on the new axis copies
    # runs of whole rows. Other ways measured for 10 x 64 x 64 x 80 were each several times slower on ONNX Runtime's
    # or OpenVINO's CPU plugin: a Concat on a new innermost axis (OpenVINO 10 ms against 2-3), a DepthToSpace or a
    # rank-6 Transpose (ONNX Runtime 8-21 ms), a grouped ConvTranspose (OpenVINO 18 ms).
    size = list(grid)
    for axis in reversed(range(n)):  # the keys are the phases of the axes not merged yet
        if strides[axis] == 1:
            planes = {phase[:axis]: plane for phase, plane in planes.items()}
            continue
        size[axis] *= strides[axis]
        merged = {}
        for prefix in dict.fromkeys(phase[:axis] for phase in planes):
            group = [planes[prefix + (r,)] for r in range(strides[axis])]
            if axis == n - 1:
                stacked = b.op("Concat", [b.op("Unsqueeze", [p, b.ints([0])], "pool_phase_axis") for p in group],
                               "pool_phases", axis=0)
                side = b.op("Transpose", [stacked], "pool_interleave", perm=list(range(1, 3 + n)) + [0])
            else:
                side = b.op("Concat", [b.op("Unsqueeze", [p, b.ints([3 + axis])], "pool_phase_axis") for p in group],
                            "pool_interleave", axis=3 + axis)
            merged[prefix] = b.op("Reshape", [side, b.ints([*lead, *size])], "pool_interleaved")
        planes = merged
    (full,) = planes.values()
    if any(grid[i] * strides[i] != xs[i] for i in range(n)):
        full = b.op("Slice", [full, b.ints([0] * n), b.ints(list(xs)), b.ints(list(range(2, 2 + n)))], "pool_grad")
    return full


def _shifted(c: RuleContext, part: str, shift: list[int], ys, grid) -> str:
    """`part` (output grid) moved by `shift` positions onto a phase grid of size `grid`: element j lands on j + shift;
    what falls outside is dropped, the rest is zero."""
    n, b = len(shift), c.b
    lo = [max(0, -shift[i]) for i in range(n)]
    hi = [min(ys[i], grid[i] - shift[i]) for i in range(n)]
    if lo != [0] * n or hi != list(ys):
        part = b.op("Slice", [part, b.ints(lo), b.ints(hi), b.ints(list(range(2, 2 + n)))], "pool_shift_crop")
    before = [lo[i] + shift[i] for i in range(n)]
    after = [grid[i] - (hi[i] + shift[i]) for i in range(n)]
    if any(before) or any(after):
        part = b.op("Pad", [part, b.ints([0, 0, *before, 0, 0, *after])], "pool_shift")
    return part


def window_slices(c: RuleContext, x: str, pad_value: float) -> dict[tuple[int, ...], str]:
    """`x` (a tensor of the pool's input shape) at each kernel offset d of the pooling node `c.node`: a tensor of the
    output's shape whose element o is x at o * stride + d - begin pad (`pad_value` where that is in the padding);
    the offsets in row-major window order."""
    kernel, strides, begin, _, xs, ys = pool_geometry(c)
    n, b = len(kernel), c.b
    # padded far enough that every window (ceil mode too) is in range
    tail = [max(0, (ys[i] - 1) * strides[i] + kernel[i] - begin[i] - xs[i]) for i in range(n)]
    if any(begin) or any(tail):
        x = b.op("Pad", [x, b.ints([0, 0, *begin, 0, 0, *tail]), b.const(pad_value, "pool_pad_value")], "pool_pad")
    axes, steps = b.ints(list(range(2, 2 + n))), b.ints(strides)
    return {o: b.op("Slice", [x, b.ints(o), b.ints([o[i] + (ys[i] - 1) * strides[i] + 1 for i in range(n)]), axes,
                              steps], "maxpool_window")
            for o in itertools.product(*[range(k) for k in kernel])}


def window_maxima(c: RuleContext, x: str) -> dict[tuple[int, ...], str | None]:
    """Per kernel offset of the MaxPool node `c.node` applied to `x` (batch 1): a boolean tensor of the output's
    shape, true where that offset holds its window's first maximum (PyTorch's tie rule); None for a 1-element
    kernel (the only offset always holds it)."""
    kernel = pool_geometry(c)[0]
    if int(np.prod(kernel)) == 1:
        return {(0,) * len(kernel): None}
    # padded with -inf so padding never wins; then the running argmax keeps the FIRST maximum (strict Greater),
    # PyTorch's tie rule, from x alone (never Equal(x, y))
    b = c.b
    offsets, slices = zip(*window_slices(c, x, -np.inf).items())
    # offset k took the lead (strictly greater than every earlier one) ...
    best, led = slices[0], [None]
    for k, s in enumerate(slices[1:], 1):
        led.append(b.op("Greater", [s, best], "maxpool_better"))
        if k < len(slices) - 1:
            best = b.op("Max", [s, best], "maxpool_best")
    # ... and holds the (first) maximum when no later offset took it: boolean ops from the last offset back, where a
    # running index (Where) and an Equal per offset took 2.5x as long on ONNX Runtime's CPU provider
    hits, later = [None] * len(slices), None
    for k in range(len(slices) - 1, -1, -1):
        if later is None:
            hits[k] = led[k]
        else:
            kept = b.op("Not", [later], "maxpool_kept")
            hits[k] = kept if led[k] is None else b.op("And", [led[k], kept], "maxpool_hit")
        if k > 0:
            later = led[k] if later is None else b.op("Or", [later, led[k]], "maxpool_later")
    return dict(zip(offsets, hits))


def check_values_only(c: RuleContext) -> None:
    """A MaxPool rule's precondition: the node outputs its values only."""
    if len([o for o in c.node.output if o]) > 1:
        raise c.fail("the Indices output is not supported (TensorRT cannot build it): use MaxPool's values only")
    if int(c.attr("storage_order", 0)):
        raise c.fail("storage_order=1 (column-major Indices) is not supported")


@rule("MaxPool")
def max_pool(c: RuleContext):
    check_values_only(c)
    # each offset's share: g where that offset holds its window's maximum; the masks at the forward's batch of 1,
    # each a product with g, not a Where (activation.mask_of says why)
    masks = {o: None if hit is None else mask_of(c, hit) for o, hit in window_maxima(c, c.x()).items()}
    return [route_windows(c, c.g, masks, pool_geometry(c))]


@rule("AveragePool")
def average_pool(c: RuleContext):
    geometry = kernel, strides, begin, end, xs, ys = pool_geometry(c)
    n = len(kernel)
    include_pad = int(c.attr("count_include_pad", 0))
    # divisor of each output: the window's count of real inputs (or of padded ones with
    # count_include_pad, never past the end pad in ceil mode); separable, so per axis then outer product
    count = np.ones((1, 1), np.float64)
    for i in range(n):
        lo, hi = (-begin[i], xs[i] + end[i]) if include_pad else (0, xs[i])
        starts = np.arange(ys[i]) * strides[i] - begin[i]
        axis = np.minimum(starts + kernel[i], hi) - np.maximum(starts, lo)
        count = np.multiply.outer(count, axis)
    inv = (1.0 / count).reshape((1, 1, *ys))
    g = c.b.op("Mul", [c.g, c.b.const(inv, "avgpool_inv_count")], "avgpool_scale")
    return [route_windows(c, g, dict.fromkeys(itertools.product(*[range(k) for k in kernel])), geometry)]


@rule("GlobalAveragePool")
def global_average_pool(c: RuleContext):
    spatial = c.shape(c.x())[2:]
    g = c.b.op("Mul", [c.g, c.b.const(1.0 / float(np.prod(spatial)), "inv_count")], "gap_scale")
    return [c.b.op("Expand", [g, c.b.ints(c.cot_shape(c.x()))], "gap_grad")]


@rule("ReduceMean")
def reduce_mean(c: RuleContext):
    xs = c.shape(c.x())
    rank = len(xs)
    axes = c.attr("axes")
    if len(c.node.input) > 1 and c.x(1):  # opset >= 18: axes is an input
        axes = c.b.require_constant(c.x(1), c.node, "axes").tolist()
    axes = sorted({int(a) % rank for a in axes or []})
    out = [None] * len(c.node.input)
    if not axes:
        if int(c.attr("noop_with_empty_axes", 0)):
            out[0] = c.g
            return out
        axes = list(range(rank))  # the default reduces every axis, the batch axis included
    if 0 in axes:
        raise c.fail(f"reducing over the batch axis (axes {axes}) is not supported: "
                     "each seed row needs its own batch entry")
    g = c.g
    if not int(c.attr("keepdims", 1)):
        g = c.b.op("Reshape", [g, c.b.ints([1 if i in axes else d for i, d in enumerate(c.cot_shape(c.x()))])],
                   "reducemean_keep")
    g = c.b.op("Mul", [g, c.b.const(1.0 / float(np.prod([xs[a] for a in axes])), "inv_count")], "reducemean_scale")
    out[0] = c.b.op("Expand", [g, c.b.ints(c.cot_shape(c.x()))], "reducemean_grad")
    return out
