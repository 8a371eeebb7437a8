"""The white-box input attributions of paper 003 (sections 4-5), one registered function per method (as `_cams.py`
has one per CAM method): how each method's attribution is built in the graph from the composites of
`_composites.py` and, for the path methods, from copies of the forward (`_copies.py`) on other inputs
(`_baselines.py`).

Every method explains the same score as the CAM family: row r's S_r (a class's logit summed over its seed region,
or a box's score). Its attribution A_r is per input element (bands x H x W), and the graph outputs

    <method>          (rows, 1, H, W) per-pixel map: A summed over the bands (gradient and SmoothGrad: |A| summed,
                      a sensitivity)
    <method>_bands    (rows, bands) A summed over the row's region, per band: which wavelengths
    <method>_total    (rows, 1) A summed over every element
    <method>_target   (rows, 1) what a conserving method's total should be: S_r for LRP, S_r(x) - S_r(x0) for
                      integrated gradients and DeepLIFT; |total - target| / |target| is its conservation residual

    gradient               A = dS/dx                                                             (Simonyan 2014)
    input_x_gradient       A = x * dS/dx                                                        (Shrikumar 2016)
    guided_backprop        the guided gradient (ReLU: positive gradient where its input was positive)
                                                                                             (Springenberg 2015)
    deconvnet              the DeconvNet gradient (ReLU: the gradient rectified)                    (Zeiler 2014)
    smoothgrad             A = mean over n samples of dS/dx at x + sigma N_k                     (Smilkov 2017)
    integrated_gradients   A = (x - x0) * sum_j w_j dS/dx at x0 + a_j (x - x0)               (Sundararajan 2017)
    deeplift               A = (x - x0) * the rescale rule's multipliers                      (Shrikumar 2017)
    lrp_epsilon, lrp_epsilon_nobias, lrp_zplus, lrp_alpha2_beta1, lrp_gamma, lrp_epsilon_plus_flat,
    lrp_epsilon_gamma_box, lrp_deep_taylor
                           LRP relevance under that composite (_composites.py)  (Bach 2015; Montavon 2017, 2019)

Definitions where the libraries differ:
- LRP seeds each row with its score's own value (the logits on the region, R = z * seed), as Zennit's attributor
  does with that output relevance; the rules are Zennit's (rules/relevance.py).
- Guided backprop and DeconvNet return the modified gradient itself, as Captum's GuidedBackprop and Deconvolution.
- SmoothGrad: every sample noisy (Smilkov's and Captum's NoiseTunnel; Zennit's makes the last sample noise-free),
  the noise relative to the frame's range (Smilkov's and Zennit's; Captum takes an absolute standard deviation),
  the mean of the signed gradients (Captum's NoiseTunnel over Saliency(abs=False), Zennit's SmoothGrad).
- Integrated gradients: `trapezoid` takes m + 1 points a_j = j / m, weights 1/(2m) at the ends and 1/m between
  (the trapezoid rule; Captum's `riemann_trapezoid` with n steps weights its n points 1/n, halved at the ends, which
  sum to 1 - 1/n: its result is ours times (n - 1)/n); `riemann_right` takes a_j = j / m, j = 1..m, weights 1/m
  (Zennit's IntegratedGradients and Captum's `riemann_right`). Completeness is published, not assumed.
- DeepLIFT: rescale rule on every element-wise nonlinearity, Captum's max-pool rule (rules/deeplift.py; or the
  original implementation's gradient, `deeplift_maxpool`); the linear layers' multipliers are their gradients.
  Captum 0.9's own max-pool hook does not sum to delta where a window's winner moves down from x to x0
  (meta-pytorch/captum#1276 and the halves it mixes): the pool rule is checked by summation-to-delta against the
  float64 forward and by a window worked by hand, the rest against Captum with pooling by gradient on both sides.
Methods sharing a propagation share its backward pass (gradient and input x gradient are one).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ._baselines import BASELINES, append_baseline, append_noise, noise_tiles
from ._composites import LrpOptions, composite
from ._copies import forward_copy
from ._graph import Builder, ExplainError
from ._maps import MapWriter, sums_in_region
from ._reverse import append_backward
from .rules import GRADIENT, Propagation

QUADRATURES = ("trapezoid", "riemann_right")


@dataclass(frozen=True)
class PathOptions:
    """The path methods' settings (SmoothGrad, integrated gradients, DeepLIFT). Each SmoothGrad sample and each
    integrated-gradients point is one more forward and one backward for every row."""

    smoothgrad_samples: int = 8  # Captum's NoiseTunnel defaults to 5, Zennit's SmoothGrad to 20
    smoothgrad_noise: float = 0.1  # sigma as a share of the frame's input range (Smilkov: 10-20%)
    smoothgrad_seed: int = 0
    ig_steps: int = 16  # intervals of the trapezoid rule (points of riemann_right)
    ig_quadrature: str = "trapezoid"
    baseline: str = "zeros"  # integrated gradients' and DeepLIFT's x0 (_baselines.BASELINES)
    blur_sigma_px: float = 5.0  # the blur baseline's Gaussian
    # DeepLIFT through max pooling: "rescale" (Captum's rule, conserving) or "gradient" (the original
    # implementation's: the winner at x takes the multiplier, and summation-to-delta breaks where winners differ)
    deeplift_maxpool: str = "rescale"

    def validated(self) -> "PathOptions":
        if not 1 <= self.smoothgrad_samples <= 64:
            raise ExplainError(f"smoothgrad_samples must be 1..64, got {self.smoothgrad_samples}")
        if not 0.0 < self.smoothgrad_noise <= 1.0:
            raise ExplainError(f"smoothgrad_noise must be in (0, 1] of the input's range, got {self.smoothgrad_noise}")
        if not 1 <= self.ig_steps <= 256:
            raise ExplainError(f"ig_steps must be 1..256, got {self.ig_steps}")
        if self.ig_quadrature not in QUADRATURES:
            raise ExplainError(f"ig_quadrature must be one of {list(QUADRATURES)}, got {self.ig_quadrature!r}")
        if self.baseline not in BASELINES:
            raise ExplainError(f"baseline must be one of {list(BASELINES)}, got {self.baseline!r}")
        if self.deeplift_maxpool not in ("rescale", "gradient"):
            raise ExplainError(f"deeplift_maxpool must be 'rescale' or 'gradient', got {self.deeplift_maxpool!r}")
        if not 0.3 <= self.blur_sigma_px <= 64.0:
            raise ExplainError(f"blur_sigma_px must be 0.3..64 pixels, got {self.blur_sigma_px}")
        return self

    def ig_points(self) -> list[tuple[float, float]]:
        """(a_j, w_j) of the quadrature."""
        m = self.ig_steps
        if self.ig_quadrature == "riemann_right":
            return [(j / m, 1.0 / m) for j in range(1, m + 1)]
        return [(j / m, (0.5 if j in (0, m) else 1.0) / m) for j in range(m + 1)]


@dataclass
class AttributionContext:
    """What every method's builder reads: the forward (`logits` of `input_name`), the seed (rows, ...) whose
    product with the logits, summed, is each row's score, and the options. Shared pieces are built once."""

    b: Builder
    input_name: str
    logits: str
    seed: str
    rows: int
    lrp: LrpOptions
    paths: PathOptions
    one_hot_rows: bool = False  # each seed row one element (a detector's boxes): heads differentiated on windows
    _shared: dict = field(default_factory=dict)

    def once(self, key, build: Callable[[], str]) -> str:
        if key not in self._shared:
            self._shared[key] = build()
        return self._shared[key]

    def score(self, logits: str) -> str:
        """(rows, 1) each row's score S_r on these logits (the forward's or a copy's)."""
        b = self.b
        axes = list(range(1, len(b.shape(logits))))  # (rows, classes, H, W) logits, or a detector's (rows, A, C)
        per = b.reduce("ReduceSum", b.op("Mul", [self.seed, logits], "score_terms"), axes, 1, "score")
        return b.op("Reshape", [per, b.ints([self.rows, 1])], "score_rows")

    def backward(self, logits: str, x: str, seed: str, propagation: Propagation, method: str) -> str:
        """What `propagation` brings back from `seed` at `logits` to `x`, (rows, ...x's shape)."""
        named = propagation if propagation.name == method else replace(propagation, name=method)
        return append_backward(self.b, {logits: seed}, [x], self.rows, named, one_hot_rows=self.one_hot_rows)[x]

    def baseline(self) -> str:
        o = self.paths
        return self.once("baseline", lambda: append_baseline(self.b, self.input_name, o.baseline, o.blur_sigma_px))

    def at(self, x: str, tag: str) -> str:
        """The logits of the model run on `x` (the input's shape): a copy of the forward."""
        if x == self.input_name:
            return self.logits
        return forward_copy(self.b, self.input_name, x, [self.logits], tag)[self.logits]


@dataclass(frozen=True)
class InputMethod:
    name: str
    build: Callable[[AttributionContext], tuple[str, str | None]]  # -> (A (rows, bands, H, W), target or None)
    signed: bool = True  # the per-pixel map may be negative
    magnitude: bool = False  # the per-pixel map sums |A| over the bands
    conserves: str = ""  # what its total should equal, in words ("" if nothing)
    copies: Callable[[PathOptions], int] = lambda o: 0  # forwards on other inputs it adds


INPUT_METHODS: dict[str, InputMethod] = {}


def method(name: str, **kwargs):
    def register(fn):
        INPUT_METHODS[name] = InputMethod(name, fn, **kwargs)
        return fn
    return register


# --- one modified backward pass --------------------------------------------------------------------------------------

def _propagated(ctx: AttributionContext, comp: str, relevance: bool, name: str) -> str:
    """The composite's quantity at the input: seeded with dS/dz, or with the score's own value (LRP)."""
    def build():
        b = ctx.b
        start = b.op("Mul", [ctx.seed, ctx.logits], "relevance_seed") if relevance else ctx.seed
        return ctx.backward(ctx.logits, ctx.input_name, start, composite(comp, b, ctx.input_name, ctx.lrp), name)
    return ctx.once((comp, relevance), build)


@method("gradient", signed=False, magnitude=True)
def _gradient(ctx):
    return _propagated(ctx, "gradient", False, "gradient"), None


@method("input_x_gradient")
def _input_x_gradient(ctx):
    g = _propagated(ctx, "gradient", False, "input_x_gradient")
    return ctx.b.op("Mul", [g, ctx.input_name], "input_x_gradient_attribution"), None


@method("guided_backprop")
def _guided_backprop(ctx):
    return _propagated(ctx, "guided_backprop", False, "guided_backprop"), None


@method("deconvnet")
def _deconvnet(ctx):
    return _propagated(ctx, "deconvnet", False, "deconvnet"), None


def _lrp(name: str):
    def build(ctx):
        return _propagated(ctx, name, True, name), ctx.once("score", lambda: ctx.score(ctx.logits))
    method(name, conserves="S, less what biases and stabilisers absorb")(build)


for _name in ("lrp_epsilon", "lrp_epsilon_nobias", "lrp_zplus", "lrp_alpha2_beta1", "lrp_gamma",
              "lrp_epsilon_plus_flat", "lrp_epsilon_gamma_box", "lrp_deep_taylor"):
    _lrp(_name)


# --- path methods: the forward again on other inputs -----------------------------------------------------------------

@method("smoothgrad", signed=False, magnitude=True, copies=lambda o: o.smoothgrad_samples)
def _smoothgrad(ctx):
    b, o, x = ctx.b, ctx.paths, ctx.input_name
    _, bands, h, w = b.shape(x)
    span = b.op("Sub", [b.reduce("ReduceMax", x, [0, 1, 2, 3], 1, "input_max"),
                        b.reduce("ReduceMin", x, [0, 1, 2, 3], 1, "input_min")], "input_range")
    sigma = b.op("Mul", [span, b.const(o.smoothgrad_noise, "smoothgrad_level")], "smoothgrad_sigma")
    seed = b.op("Mul", [ctx.seed, b.const(1.0 / o.smoothgrad_samples, "smoothgrad_mean")], "smoothgrad_seed")
    grads = []
    for k, tiles in enumerate(noise_tiles(o.smoothgrad_samples, bands, o.smoothgrad_seed)):
        noisy = b.op("Add", [x, b.op("Mul", [append_noise(b, tiles, h, w, f"smoothgrad_noise{k}"), sigma])],
                     f"smoothgrad_input{k}")
        grads.append(ctx.backward(ctx.at(noisy, f"smoothgrad{k}"), noisy, seed, GRADIENT, "smoothgrad"))
    return b.add_all(grads, "smoothgrad"), None


@method("integrated_gradients", conserves="S(x) - S(x0), to the quadrature's error",
        copies=lambda o: len(o.ig_points()) + (o.ig_quadrature == "riemann_right") - 1)
def _integrated_gradients(ctx):
    b, o, x = ctx.b, ctx.paths, ctx.input_name
    x0 = ctx.baseline()
    diff = b.op("Sub", [x, x0], "ig_path")
    grads, base_logits = [], None
    for j, (a, weight) in enumerate(o.ig_points()):
        point = x if a == 1.0 else x0 if a == 0.0 else \
            b.op("Add", [x0, b.op("Mul", [diff, b.const(a, "ig_alpha")])], f"ig_point{j}")
        logits = ctx.at(point, f"ig{j}")
        if a == 0.0:
            base_logits = logits
        seed = b.op("Mul", [ctx.seed, b.const(weight, "ig_weight")], "ig_seed")
        grads.append(ctx.backward(logits, point, seed, GRADIENT, "integrated_gradients"))
    if base_logits is None:
        base_logits = ctx.at(x0, "ig_baseline")
    total = b.add_all(grads, "ig_gradient_sum")
    target = b.op("Sub", [ctx.once("score", lambda: ctx.score(ctx.logits)), ctx.score(base_logits)], "ig_delta")
    return b.op("Mul", [total, diff], "integrated_gradients"), target


@method("deeplift", conserves="S(x) - S(x0)", copies=lambda o: 1)
def _deeplift(ctx):
    b, x = ctx.b, ctx.input_name
    x0 = ctx.baseline()
    reference = forward_copy(b, x, x0, [ctx.logits], "deeplift_reference")
    comp = "deeplift" if ctx.paths.deeplift_maxpool == "rescale" else "deeplift_maxpool_gradient"
    multipliers = ctx.backward(ctx.logits, x, ctx.seed, composite(comp, b, x, ctx.lrp, reference), "deeplift")
    target = b.op("Sub", [ctx.once("score", lambda: ctx.score(ctx.logits)), ctx.score(reference[ctx.logits])],
                  "deeplift_delta")
    return b.op("Mul", [multipliers, b.op("Sub", [x, x0], "deeplift_delta_in")], "deeplift"), target


# --- the outputs -----------------------------------------------------------------------------------------------------

def append_input_attributions(b: Builder, maps: MapWriter, logits: str, seed: str, region: str, input_name: str,
                              rows: int, methods, lrp: LrpOptions = LrpOptions(),
                              paths: PathOptions = PathOptions(), prefix: str = "",
                              gradient: str | None = None, one_hot_rows: bool = False) -> None:
    """The attributions of `methods` for every row, appended to the graph as the module docstring's outputs (named
    `prefix` + method: "box_" for a detector's boxes): `seed` (rows, ...logits) the cotangent whose product with
    `logits` is each row's score, `region` (rows, 1, H, W) where each row's score lives (for the per-band sums),
    `gradient` the rows' dS/dx where the graph has it already (it is not built twice); `one_hot_rows`: each row of
    `seed` is one element (_reverse.append_backward)."""
    unknown = [m for m in methods if m not in INPUT_METHODS]
    if unknown:
        raise ExplainError(f"unknown input attribution method(s) {unknown}; known: {list(INPUT_METHODS)}")
    if len(b.shape(input_name)) != 4:
        raise ExplainError(f"input attributions need an NCHW input, {input_name!r} is {b.shape(input_name)}")
    ctx = AttributionContext(b, input_name, logits, seed, rows, lrp.validated(), paths.validated(), one_hot_rows)
    if gradient is not None:
        ctx.once(("gradient", False), lambda: gradient)
    _, bands, h, w = b.shape(input_name)
    for method_name in methods:
        m, name = INPUT_METHODS[method_name], prefix + method_name
        a, target = m.build(ctx)
        per_pixel = b.reduce("ReduceSum", b.op("Abs", [a]) if m.magnitude else a, [1], 1, f"{name}_map")
        maps.finish(per_pixel, name, input_name, signed=m.signed)
        maps.output(sums_in_region(b, a, region, rows, h * w, f"{name}_bands"), f"{name}_bands", input_name,
                    (rows, bands), signed=True)
        total = b.reduce("ReduceSum", b.reduce("ReduceSum", b.reduce("ReduceSum", a, [3], 1, f"{name}_sum_cols"),
                                               [2], 1, f"{name}_sum_hw"), [1], 1, f"{name}_sum_all")
        maps.output(b.op("Reshape", [total, b.ints([rows, 1])], f"{name}_total"), f"{name}_total", input_name,
                    (rows, 1), signed=True)
        if target is not None:
            maps.output(b.op("Identity", [target], f"{name}_target"), f"{name}_target", input_name, (rows, 1),
                        signed=True)


def conservation_residual(total: np.ndarray, target: np.ndarray) -> np.ndarray:
    """|total - target| / |target| per row (NaN where the target is 0: a row with nothing to explain)."""
    t, s = np.asarray(total, np.float64).reshape(-1), np.asarray(target, np.float64).reshape(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s != 0, np.abs(t - s) / np.abs(s), np.nan)
