"""Score-CAM (Wang 2020) for every class at once, inside the explain graph.

Gradient-free: each channel k of the target layer A (1, C, h, w) is resized to the input (bilinear,
half-pixel), scaled to [0, 1] by its own min and max (+1e-8, as pytorch-grad-cam), and multiplied
into the input; a copy of the model, re-batched to C, scores all C masked inputs in one batch; for
class c the score of mask k is S_c (the sum of logit c over the class's seed region, fixed from the
unmasked forward); the channel weights are softmax_k(S_c) and the map ReLU(sum_k w_ck A_k).

The cost is C forwards of the whole model per frame (12 at the bundled U-Net's penultimate layer,
96 at its bottleneck): offline-grade, which is why the node does not compute it by default. A model
whose batch is hard-coded cannot be re-batched: that is an ExplainError naming the method.
"""

from __future__ import annotations

import onnx
from onnx import compose

from ._cams import CamContext
from ._graph import Builder, ExplainError
from ._rebatch import rebatch

SCALE_EPS = 1e-8


def append_scorecam(b: Builder, model: onnx.ModelProto, input_name: str, logits: str, layer: str, region: str,
                    classes: int) -> str:
    """(classes, 1, h, w) Score-CAM maps at `layer`; `model` is the forward model (before any explain nodes)."""
    _, c, h, w = b.shape(layer)
    _, bands, hi, wi = b.shape(input_name)
    _, _, hl, wl = b.shape(logits)
    copy = rebatch(model, c)
    if copy is None:
        raise ExplainError(f"method 'scorecam' at {layer!r}: the model's batch of 1 is hard-coded, so its {c} masked "
                           "inputs cannot run as one batch")
    a = b.op("Transpose", [layer], "score_channels", perm=[1, 0, 2, 3])  # (C, 1, h, w)
    if (h, w) != (hi, wi):
        a = b.op("Resize", [a, "", "", b.ints([c, 1, hi, wi])], "score_upsampled", mode="linear",
                 coordinate_transformation_mode="half_pixel")
    lo = b.reduce("ReduceMin", a, [2, 3], 1, "score_min")
    hi_ = b.reduce("ReduceMax", a, [2, 3], 1, "score_max")
    masks = b.op("Div", [b.op("Sub", [a, lo]), b.op("Add", [b.op("Sub", [hi_, lo]), b.const(SCALE_EPS)])],
                 "score_masks")
    masked = b.op("Mul", [input_name, masks], "score_masked_inputs")  # (C, bands, H, W)

    prefix = b.fresh(f"scorecam.{layer}.") + "."
    copy = compose.add_prefix(copy, prefix)
    feed = prefix + input_name
    for t in copy.graph.initializer:
        b.graph.initializer.append(t)
    for node in copy.graph.node:
        node.input[:] = [masked if i == feed else i for i in node.input]
        b.graph.node.append(node)
    b._names |= {t.name for t in copy.graph.initializer} | {o for n in copy.graph.node for o in n.output}
    b._names |= {n.name for n in copy.graph.node}
    scores_map = prefix + logits  # (C, K, hl, wl)

    seed = b.op("Reshape", [region, b.ints([1, classes, hl, wl])], "score_region")
    summed = b.reduce("ReduceSum", b.reduce("ReduceSum", b.op("Mul", [scores_map, seed], "score_region_logits"),
                                            [3], 0, "score_cols"), [2], 0, "score_sums")  # (C, K)
    weights = b.op("Softmax", [b.op("Transpose", [summed], "score_by_class", perm=[1, 0])], "score_weights", axis=1)
    ctx = CamContext(b, classes, layer)
    return b.op("Relu", [ctx.weighted(weights, "scorecam_cam")], "scorecam")



