"""Rules that propagate something other than the gradient: guided backprop's and DeconvNet's ReLU, and the LRP
rules (relevance) for linear layers and for the ops LRP distributes proportionally.

The LRP rules follow Zennit's definitions (Anders et al., zennit.rules), one linear layer z = W x + b at a time,
with the relevance R arriving at its output (one row per explained class or box; the forward has batch 1):

    epsilon      R_x = x * W^T (R / stab(z))                       (bias kept, or dropped from z: `bias=False`)
    zplus        R_x = x+ * W+^T s + x- * W-^T s,  s = R / stab(W+ x+ + W- x- + b+)       (alpha 1, beta 0)
    alpha_beta   R_x = alpha (x+ * W+^T s+ + x- * W-^T s+) - beta (x+ * W-^T s- + x- * W+^T s-),
                 s+ = R / stab(W+ x+ + W- x- + b+),  s- = R / stab(W- x+ + W+ x- + b-)
    gamma        positive outputs: (W + g W+) on x+ and (W + g W-) on x-; negative outputs the other way round
                 (Zennit's generalised gamma); R_x = sum of input * W'^T (R [branch] / stab(branch z'))
    flat         R_x = 1^T (R / stab(1^T 1)): the relevance spread evenly over the receptive field
    zbox         R_x = x * W^T s - l * W+^T s - h * W-^T s,  s = R / stab(W x - W+ l - W- h)   (input in [l, h])

with stab(z) = z + eps * sign(z), sign(0) = +1, W+ / W- the positive / negative parts, x+ / x- likewise, b+ / b- the
bias's. A layer's modified forward outputs (z') are computed once per frame: every explained row shares the
input. Where the input cannot be negative (`nonnegative`: a ReLU's output, a max-pool or concatenation of such), x-
is zero and its terms are left out, exactly: most layers of a ReLU network need half the terms of z+, alpha-beta and
gamma. Where the relevance arrives through the layer's own ReLU (A * relu(z), zero wherever z <= 0), gamma's group of
the negative outputs receives none and is left out too, exactly. z-box's two terms of the bounds (one value per
channel) are one convolution, its weight W+ l + W- h made per frame. `norm` (Zennit's Norm, for sums and average pools)
gives each input its share x_i / y of the output's relevance; `passthrough` (Zennit's Pass, for activations) hands
the relevance on unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from . import RULES, RuleContext, node_attr, node_attrs
from .activation import mask_of
from .conv import channel_scaled_weight, conv_input_vjp, conv_input_vjp_scaled, conv_transpose_input_vjp


# --- element-wise: guided backprop, DeconvNet, pass-through -------------------------------------------------------

def relu_guided(c: RuleContext):
    """Guided backprop (Springenberg 2015): the ReLU's gradient, and only where the arriving gradient is positive."""
    b = c.b
    where_on = mask_of(c, b.op("Greater", [c.y(), b.const(0.0, "zero")], "relu_mask"))  # at the forward's batch
    return [b.op("Mul", [b.op("Relu", [c.g], "guided_positive"), where_on], "guided_grad")]


def relu_deconvnet(c: RuleContext):
    """DeconvNet (Zeiler 2014): the arriving gradient rectified, whatever the forward input was."""
    return [c.b.op("Relu", [c.g], "deconv_grad")]


def passthrough(c: RuleContext):
    """The relevance arriving at the output handed to the (data) input unchanged (Zennit's Pass)."""
    return [c.g] + [None] * (len(c.node.input) - 1)


GATES = ("Sigmoid", "HardSigmoid")  # ops whose output, multiplied into a signal, acts as a gate (0..1)


def _producer(c: RuleContext, tensor: str) -> str | None:
    node = c.b.producer(tensor)
    return None if node is None else node.op_type


def gate(c: RuleContext):
    """Mul for relevance. A factor that does not depend on the input explained (a weight, a constant) makes it
    linear: the relevance passes to the other factor unchanged. A factor that does and comes out of a sigmoid is a
    gate (SiLU x * sigmoid(x), a squeeze-excitation gate): all relevance goes to the signal, none to the gate
    (Arras 2017's signal-take-all for LSTM gates; Zennit's Pass on SiLU). A product of two signals has no rule."""
    if not all(c.needs):
        i = 0 if c.needs[0] else 1
        return [c.unbroadcast(c.g, c.y(), c.x(i)) if k == i else None for k in (0, 1)]
    gates = [_producer(c, c.x(i)) in GATES for i in (0, 1)]
    if gates.count(True) != 1:
        raise c.fail(f"LRP has no rule for the product of two input-dependent tensors {c.x(0)!r} and {c.x(1)!r}, "
                     "neither (or both) a sigmoid gate")
    signal = gates.index(False)
    return [c.unbroadcast(c.g, c.y(), c.x(signal)) if k == signal else None for k in (0, 1)]


def scale(c: RuleContext):
    """Div for relevance: division by a constant (BiFPN's normalised fusion weights) is linear, the relevance passes
    to the dividend unchanged; a divisor that depends on the input explained has no rule."""
    if c.needs[1]:
        raise c.fail(f"LRP has no rule for a divisor {c.x(1)!r} that depends on the input explained")
    return [c.unbroadcast(c.g, c.y(), c.x(0)), None]


def stabilised(c: RuleContext, z: str, eps: float) -> str:
    """z + eps * sign(z), sign(0) = +1 (Zennit's stabiliser), as z + (2 eps [z >= 0] - eps): in float32 2 eps - eps is
    eps exactly, so the values are those of a Where between z + eps and z - eps, without ONNX Runtime's CPU Where
    (about 2 ms for each 12 x 208 x 400 layer output of the bundled U-Net, most of the stabilisers' cost)."""
    b = c.b
    step = mask_of(c, b.op("GreaterOrEqual", [z, b.const(0.0, "zero")], "stab_sign"))
    shift = b.op("Sub", [b.op("Mul", [step, b.const(2.0 * np.float32(eps), "two_eps")], "stab_twice"),
                         b.const(eps, "eps")], "stab_shift")
    return b.op("Add", [z, shift], "stab")


def divided(c: RuleContext, r: str, z: str, eps: float, scale: float = 1.0) -> str:
    """scale * r / stab(z), both of the node output's shape, z a forward quantity (batch 1).

    In a ReLU network the relevance mostly arrives as A * p: the backward of the layer above (A, one row per
    explained class or box) times that layer's input p, a forward tensor handed down unchanged through the
    activation (Pass). The quotient is then A * (p / stab(z)), the division at the forward's batch of 1: one
    product over the rows where a product and a division went over them (the same value up to float32 rounding; the
    product A * p, left unread, goes with the graph's other unread nodes, _graph.drop_unread)."""
    b = c.b
    pair = b.factors(r)
    if pair is not None:
        out_shape = c.shape(c.y())
        for i, p in enumerate(pair):
            if b.known_shape(p) == out_shape:
                share = _share_of_input(c, p, z, eps)
                if scale != 1.0:
                    share = b.op("Mul", [share, b.const(scale, "lrp_alpha")], "lrp_weighted")
                return b.op("Mul", [pair[1 - i], share], "lrp_share")
    if scale != 1.0:
        r = b.op("Mul", [r, b.const(scale, "lrp_alpha")], "lrp_weighted")
    return b.op("Div", [r, stabilised(c, z, eps)], "lrp_share")


def _after_relu(c: RuleContext) -> bool:
    """Whether the relevance arriving at the node's output is a product A * relu(y), y that output: it arrived
    through the ReLU reading y (handed on unchanged) as the layer above's backward times its input."""
    makers = [c.b.producer(p) for p in c.b.factors(c.g) or ()]
    return any(m is not None and m.op_type == "Relu" and m.input[0] == c.y() for m in makers)


def _share_of_input(c: RuleContext, p: str, z: str, eps: float) -> str:
    """p / stab(z) at the forward's batch. Where p is relu(u), u a layer's output, the denominator is taken from p:
    where p > 0, p is u, and where p = 0 the quotient is 0 whatever the (never zero) denominator. So z = u (the
    epsilon rule) gives p / (p + eps), the same float32 values as z + eps there; z = u - bias (without the bias) gives
    p / stab(p - bias). The stabiliser then reads only the ReLU's output, not u, so the runtimes keep each
    convolution fused with its ReLU in the forward pass and u is never written out (with z = u, nor its sign
    taken)."""
    b = c.b
    maker = b.producer(p)
    u = maker.input[0] if maker is not None and maker.op_type == "Relu" and eps > 0 else None
    if u is not None and z == u:
        return b.op("Div", [p, b.op("Add", [p, b.const(eps, "eps")], "stab_of_relu")], "lrp_input_share")
    made = b.producer(z)
    if u is not None and made is not None and made.op_type == "Sub" and made.input[0] == u and \
            b.constant(made.input[1]) is not None:
        z = b.op("Sub", [p, made.input[1]], "lrp_z_of_relu")
    return b.op("Div", [p, stabilised(c, z, eps)], "lrp_input_share")


def norm(eps: float = 1e-6) -> Callable:
    """Each input x_i receives x_i * (the op's gradient applied to R / stab(y)): its share of a sum or an average."""
    def rule(c: RuleContext):
        s = divided(c, c.g, c.y(), eps)
        cots = RULES[c.node.op_type](RuleContext(node=c.node, b=c.b, out_cots=[s], needs=c.needs, batch=c.batch))
        return [None if g is None else c.b.op("Mul", [g, x], "norm_relevance")
                for g, x in zip(cots, c.node.input)]
    return rule


# --- linear layers ---------------------------------------------------------------------------------------------------

class Layer:
    """The linear node of a rule (Conv, ConvTranspose, Gemm, or MatMul with a constant right operand): its forward
    with other weights, bias and input, and W'^T s with another weight."""

    def __init__(self, c: RuleContext):
        self.c, op = c, c.node.op_type
        if any(c.needs[1:]):
            raise c.fail("LRP needs constant weights and bias; only the data input may depend on the target")
        self.w = c.b.require_constant(c.x(1), c.node, "the weight")
        has_bias = len(c.node.input) > 2 and c.node.input[2]
        self.bias = c.b.require_constant(c.x(2), c.node, "the bias") if has_bias else None
        if op == "MatMul" and self.w.ndim != 2:
            raise c.fail("LRP on MatMul needs a 2-D constant right operand (a dense layer)")
        if op == "Gemm" and (c.attr("transA", 0) or float(c.attr("alpha", 1.0)) != 1.0
                             or float(c.attr("beta", 1.0)) != 1.0):
            raise c.fail("LRP on Gemm needs transA = 0, alpha = beta = 1 (a dense layer)")
        self.attrs = node_attrs(c.node)

    def weight_of_z(self, w: np.ndarray) -> np.ndarray:
        return w

    def forward(self, x: str, w: np.ndarray, bias: np.ndarray | None) -> str:
        c, b = self.c, self.c.b
        ins = [x, b.const(w.astype(np.float32), "lrp_w")]
        if c.node.op_type == "MatMul":
            y = b.op("MatMul", ins, "lrp_z")
            return y if bias is None else b.op("Add", [y, b.const(bias.astype(np.float32), "lrp_b")], "lrp_z")
        if bias is not None:
            ins.append(b.const(bias.astype(np.float32), "lrp_b"))
        return b.op(c.node.op_type, ins, "lrp_z", **self.attrs)

    def backward(self, s: str, w: np.ndarray) -> str:
        c, b, op = self.c, self.c.b, self.c.node.op_type
        if op == "Conv":
            return conv_input_vjp(c, w, s)
        if op == "ConvTranspose":
            return conv_transpose_input_vjp(c, b.const(w.astype(np.float32), "lrp_w"), s)
        if op == "Gemm":
            return b.op("Gemm", [s, b.const(w.astype(np.float32), "lrp_w")], "lrp_back",
                        transB=1 - int(c.attr("transB", 0)))
        return b.op("MatMul", [s, b.const(np.ascontiguousarray(w.T).astype(np.float32), "lrp_wt")], "lrp_back")

    def bias_shape(self, bias: np.ndarray) -> np.ndarray:
        """The bias as it broadcasts against the output (channels on axis 1 for convolutions)."""
        if self.c.node.op_type in ("Conv", "ConvTranspose"):
            return bias.reshape((1, -1) + (1,) * (len(self.c.shape(self.c.y())) - 2))
        return bias


def _pos(a):
    return None if a is None else np.maximum(a, 0)


def _neg(a):
    return None if a is None else np.minimum(a, 0)


@dataclass(frozen=True)
class Term:
    """One modified forward of a linear layer: which input (x, x+, x-, ones, low, high), which weight and bias, the
    sign of its share in R_x, the sign it enters its group's denominator with, and which group that is."""

    inp: str
    weight: Callable[[np.ndarray], np.ndarray]
    bias: Callable[[np.ndarray], np.ndarray] | None  # None: no bias in this term
    sign: float = 1.0
    group: int = 0
    zsign: float = 1.0


# ops whose output is >= 0 whatever their input, and ops whose output is >= 0 where their data inputs all are
_NONNEGATIVE_OUTPUT = frozenset({"Relu", "Sigmoid", "Softmax", "Abs", "Exp", "Sqrt"})
_KEEPS_SIGN = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Concat", "Slice", "Split",
                         "Reshape", "Flatten", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Expand", "Tile",
                         "ReduceMax", "ReduceMean", "ReduceSum", "Add", "Mul", "Max", "Min"})
_DATA_INPUTS = {"Slice": 1, "Reshape": 1, "Expand": 1, "Tile": 1, "Squeeze": 1, "Unsqueeze": 1, "Split": 1,
                "ReduceMax": 1, "ReduceMean": 1, "ReduceSum": 1}  # the others: every input is data


def nonnegative(c: RuleContext, tensor: str) -> bool:
    """Whether a forward tensor is >= 0 everywhere by construction (a ReLU's output, a max-pool or concatenation of
    such, a non-negative constant, ...). Conservative: False where it cannot tell."""
    seen: dict[str, bool] = {}

    def check(t: str) -> bool:
        if t in seen:
            return seen[t]
        seen[t] = False  # a cycle cannot occur in ONNX, but a wrong answer here must be "no"
        value = c.b.constant(t)
        node = c.b.producer(t)
        if value is not None:
            result = bool(np.all(value >= 0))
        elif node is None:  # a graph input
            result = False
        elif node.op_type in _NONNEGATIVE_OUTPUT:
            result = True
        elif node.op_type == "Clip":
            low = c.b.constant(node.input[1]) if len(node.input) > 1 and node.input[1] else None
            result = low is not None and bool(np.all(low >= 0))
        elif node.op_type == "Resize":  # nearest and linear interpolation are convex combinations; cubic is not
            mode = node_attr(node, "mode", b"nearest").decode()
            result = mode in ("nearest", "linear") and check(node.input[0])
        elif node.op_type in _KEEPS_SIGN:
            data = [i for i in node.input[:_DATA_INPUTS.get(node.op_type, len(node.input))] if i]
            result = bool(data) and all(check(i) for i in data)
        else:
            result = False
        seen[t] = result
        return result
    return check(tensor)


def _sign_part(c: RuleContext, x: str, kind: str) -> str:
    """x+ ("pos") or x- ("neg") of a forward tensor."""
    if kind == "pos":
        return c.b.op("Relu", [x], "x_pos")
    return c.b.op("Min", [x, c.b.const(0.0, "zero")], "x_neg")


def _input(c: RuleContext, kind: str, bounds: tuple | None) -> str:
    b, x = c.b, c.x()
    if kind == "x":
        return x
    if kind in ("pos", "neg"):
        return _sign_part(c, x, kind)
    shape = b.ints(list(c.shape(x)), "x_shape")
    if kind == "ones":
        return b.op("Expand", [b.const(1.0, "one"), shape], "x_ones")
    low, high = bounds
    return b.op("Expand", [low if kind == "low" else high, shape], f"x_{kind}")


def linear_rule(terms: tuple[Term, ...], eps: float, groups: dict[int, tuple[float, str]] | None = None,
                times_input: bool = True, bounds: Callable | None = None) -> Callable:
    """An LRP rule for linear layers made of `terms` (Zennit's BasicHook): each group's denominator is the sum of its
    terms' modified outputs, stabilised; `groups` maps a group to (alpha, mask) where mask is "all", "pos" or "neg"
    (the sign of the layer's own output z selects where the group applies: generalised gamma) and alpha its weight;
    R_x = sum over terms of sign * alpha * input' * W'^T s (without the input factor: `times_input=False`).
    `bounds(c)` gives the (low, high) tensors of the z-box inputs."""
    groups = groups or {}

    def rule(c: RuleContext):
        layer, b = Layer(c), c.b
        lim = bounds(c) if bounds is not None else None
        # where the input cannot be negative (a ReLU's output), x+ is x and a term of x- is zero: its modified
        # forward and its backward per row are left out (exactly: x- * (W'^T s) and W' x- are zeros)
        signed = any(t.inp in ("pos", "neg") for t in terms) and not nonnegative(c, c.x())
        terms_here = terms if signed else tuple(t for t in terms if t.inp != "neg")
        # relevance arriving as A * relu(z) (through the layer's own ReLU) is zero wherever z <= 0: a group of the
        # negative outputs (generalised gamma) receives none, exactly, so its modified forwards and backwards are left
        # out, and the positive outputs' mask changes nothing
        after_relu = _after_relu(c)
        if after_relu:
            terms_here = tuple(t for t in terms_here if groups.get(t.group, (1.0, "all"))[1] != "neg")
        bound_pair = _bound_pair(c, terms_here, lim)
        terms_here = tuple(t for t in terms_here if t not in bound_pair)
        # the pair's weights, each with the bound that scales its input channels (for the forward and the backward)
        scaled = [(t.weight(layer.w), lim[0] if t.inp == "low" else lim[1]) for t in bound_pair]
        inputs = {kind: c.x() if kind == "pos" and not signed else _input(c, kind, lim)
                  for kind in dict.fromkeys(t.inp for t in terms_here)}  # each input once, however many terms read it
        outputs = []
        for t in terms_here:
            w = t.weight(layer.w)
            bias = None if (t.bias is None or layer.bias is None) else t.bias(layer.bias)
            if t.inp == "x" and t.weight is _same and bias is not None and t.bias is _same:
                outputs.append(c.y())  # the forward itself: nothing to recompute
            elif t.inp == "x" and t.weight is _same and (layer.bias is None or t.bias is None):
                outputs.append(c.y() if layer.bias is None else
                               b.op("Sub", [c.y(), b.const(layer.bias_shape(layer.bias).astype(np.float32),
                                                           "lrp_b")], "lrp_z_nobias"))
            else:
                outputs.append(layer.forward(inputs[t.inp], w, bias))
        z_terms = list(zip(terms_here, outputs))
        if bound_pair:  # the pair as one term, with the sign, group and sign in z the two share
            z_terms.append((bound_pair[0], _bounds_forward(c, layer, bound_pair, scaled)))
        shares = {}
        for g in sorted({t.group for t, _ in z_terms}):
            members = [(t.zsign, o) for t, o in z_terms if t.group == g]
            z = members[0][1]
            for zsign, o in members[1:]:
                z = b.op("Add" if zsign > 0 else "Sub", [z, o], "lrp_denominator")
            r = c.g
            alpha, mask = groups.get(g, (1.0, "all"))
            if mask == "neg" or (mask == "pos" and not after_relu):
                keep = b.op("Greater" if mask == "pos" else "Less", [c.y(), b.const(0.0, "zero")], "lrp_branch")
                r = b.op("Mul", [r, mask_of(c, keep)], "lrp_branch_r")
            shares[g] = divided(c, r, z, eps, alpha)
        by_input = signed and times_input and not bound_pair and all(t.inp in ("x", "pos", "neg") for t in terms_here)
        blocks = _concatenated_blocks(c) if by_input else None
        if blocks is None:
            backs = [(t.sign, layer.backward(shares[t.group], t.weight(layer.w)), inputs[t.inp] if times_input else "")
                     for t in terms_here]
            if bound_pair:  # sum_i bound_i * W_i^T s as one backward with the bounds in the weight, no product
                backs.append((bound_pair[0].sign, conv_input_vjp_scaled(c, scaled, shares[bound_pair[0].group]), ""))
            total = _relevance(c, backs)
        else:  # each part of the concatenation its own relevance, its x- terms only where it can be negative
            parts, start = [], 0
            for x, size, sign_free in blocks:
                factor = {"x": x, "pos": x if sign_free else _sign_part(c, x, "pos"),
                          "neg": None if sign_free else _sign_part(c, x, "neg")}
                part = _relevance(c, [(t.sign, layer.backward(shares[t.group],
                                                              t.weight(layer.w)[:, start:start + size]), factor[t.inp])
                                      for t in terms_here if factor[t.inp] is not None])
                b.declare(part, (1, *c.shape(x)[1:]))  # (the concatenation's rule takes the parts back by their size)
                parts.append(part)
                start += size
            total = b.op("Concat", parts, "lrp_relevance_parts", axis=1)
        return [total] + [None] * (len(c.node.input) - 1)
    return rule


def _bound_pair(c: RuleContext, terms: tuple[Term, ...], bounds) -> tuple[Term, ...]:
    """z-box's two terms of the input's bounds (`low`, `high`: per-channel values of the frame, broadcast over the
    image), where they can be taken as one: an ungrouped convolution, the same sign, group and sign in z. Then
    sum_i W_i bound_i, on the forward side and in the backward alike, is one convolution whose weight has its input
    channels scaled by the bounds at run time (a few thousand values per frame): one modified forward and one
    backward per row where there were two each, and no products of the rows with the bounds (bundled U-Net: rows x
    25 bands x 208 x 400, twice). Empty where they cannot be merged."""
    pair = tuple(t for t in terms if t.inp in ("low", "high"))
    if bounds is None or len(pair) != 2 or c.node.op_type != "Conv" or int(c.attr("group", 1)) != 1 or \
            len({(t.sign, t.group, t.zsign) for t in pair}) != 1:
        return ()
    return pair


def _bounds_forward(c: RuleContext, layer: Layer, pair: tuple[Term, ...], scaled: list[tuple[np.ndarray, str]]) -> str:
    """sum_i (W_i bound_i + b_i) of `_bound_pair`'s terms, given as (W_i, bound_i) in `scaled`: the convolution of an
    image of ones with the weights' input channels scaled by the bounds (a constant image's convolution, its zero
    padding included)."""
    b = c.b
    weight = channel_scaled_weight(c, scaled, axis=1)
    biases = [t.bias(layer.bias) for t in pair if t.bias is not None and layer.bias is not None]
    ins = [_input(c, "ones", None), weight] + ([b.const(sum(biases).astype(np.float32), "lrp_b")] if biases else [])
    return b.op("Conv", ins, "lrp_z", **layer.attrs)


def _relevance(c: RuleContext, terms: list[tuple[float, str, str]]) -> str:
    """sum of sign * back * input over (sign, back, input) terms (input "": the back alone), the terms on one input
    summed before their one product with it: the sum stays a product A * x for the layer below to take apart (divided,
    and _reverse.py through copying ops); a negative term subtracted, not negated and added (z-box's two terms of the
    input's bounds)."""
    b = c.b
    backs: dict[str, tuple[str, float]] = {}  # input -> the sum of its terms' backwards, taken with this sign
    for sign, back, x in terms:
        if x not in backs:
            backs[x] = (back, sign)
        else:
            acc, first = backs[x]
            backs[x] = (b.op("Add" if sign == first else "Sub", [acc, back], "lrp_terms"), first)
    parts = sorted(((sign, b.op("Mul", [acc, x], "lrp_term") if x else acc) for x, (acc, sign) in backs.items()),
                   key=lambda part: part[0] < 0)  # a positive one first, where there is one
    sign, total = parts[0]
    if sign < 0:
        total = b.op("Neg", [total], "lrp_term_neg")
    for sign, part in parts[1:]:
        total = b.op("Add" if sign > 0 else "Sub", [total, part], "lrp_relevance")
    return total


def _concatenated_blocks(c: RuleContext) -> list[tuple[str, int, bool]] | None:
    """(input, channels, cannot be negative) of the channel concatenation an ungrouped convolution reads, where some of its inputs cannot
    be negative and others can (a U-Net decoder's ReLU skip and up-convolution): the rule's x- terms are then taken
    only over the parts that can be negative, the backward of each term per part (its weights' input channels), and
    a part that cannot be negative keeps its relevance a product with it. None otherwise."""
    concat = c.b.producer(c.x())
    if c.node.op_type != "Conv" or int(c.attr("group", 1)) != 1 or concat is None or concat.op_type != "Concat":
        return None
    rank = len(c.shape(c.x()))
    if node_attr(concat, "axis") % rank != 1:
        return None
    signs = [nonnegative(c, x) for x in concat.input]
    if all(signs) or not any(signs):
        return None
    return [(x, c.shape(x)[1], sign_free) for x, sign_free in zip(concat.input, signs)]


def _same(a):
    return a


def _zero(a):
    return np.zeros_like(a)


def epsilon(eps: float = 1e-6, bias: bool = True) -> Callable:
    return linear_rule((Term("x", _same, _same if bias else None),), eps)


def zplus(eps: float = 1e-6) -> Callable:
    return linear_rule((Term("pos", _pos, _pos), Term("neg", _neg, None)), eps)


def alpha_beta(alpha: float = 2.0, beta: float = 1.0, eps: float = 1e-6) -> Callable:
    if alpha - beta != 1.0 or alpha < 0 or beta < 0:
        raise ValueError(f"alpha - beta must be 1 with both non-negative, got alpha {alpha}, beta {beta}")
    terms = (Term("pos", _pos, _pos, 1.0, 0), Term("neg", _neg, None, 1.0, 0),
             Term("pos", _neg, _neg, -1.0, 1), Term("neg", _pos, None, -1.0, 1))
    return linear_rule(terms, eps, {0: (alpha, "all"), 1: (beta, "all")})


def gamma(g: float = 0.25, eps: float = 1e-6) -> Callable:
    def plus(a):
        return a + g * np.maximum(a, 0)

    def minus(a):
        return a + g * np.minimum(a, 0)
    terms = (Term("pos", plus, plus, 1.0, 0), Term("neg", minus, None, 1.0, 0),
             Term("pos", minus, minus, 1.0, 1), Term("neg", plus, None, 1.0, 1))
    return linear_rule(terms, eps, {0: (1.0, "pos"), 1: (1.0, "neg")})


def _ones(a):
    return np.ones_like(a)


def flat(eps: float = 1e-6) -> Callable:
    return linear_rule((Term("ones", _ones, None),), eps, times_input=False)


def zbox(bounds: Callable, eps: float = 1e-6) -> Callable:
    """`bounds(c)` -> (low, high) tensor names of shape (1, C, 1, ..): the input's range per channel (band)."""
    terms = (Term("x", _same, _same), Term("low", _pos, _pos, -1.0, 0, -1.0), Term("high", _neg, _neg, -1.0, 0, -1.0))
    return linear_rule(terms, eps, bounds=bounds)
