"""The CAM family, one registered function per method (as pytorch-grad-cam has one class per method).

Every method maps a target layer's activations A (1, C, h, w) and, for gradient methods, the
gradient G = dS/dA (rows, C, h, w) of each row's score S (a class's region sum, a box's score)
to one map per row (rows, 1, h, w). The formulas are those of the papers (and of pytorch-grad-cam
where the papers leave a choice):

    gradcam         Grad-CAM / Seg-Grad-CAM: ReLU(sum_k mean_xy(G_k) A_k)          (Selvaraju 2017; Vinogradova 2020)
    gradcam_signed  the same without the ReLU
    hires           HiResCAM: sum_k G_k * A_k, no averaging                       (Draelos 2020; paper 002)
    gradcam_pp      Grad-CAM++: alpha = G^2 / (2 G^2 + sum_xy(A) G^3 + eps) where G != 0,
                    w_k = sum_xy ReLU(G_k) alpha_k, ReLU(sum_k w_k A_k)              (Chattopadhyay 2018)
    xgradcam        XGrad-CAM: w_k = sum_xy(G_k A_k) / (sum_xy(A_k) + eps), ReLU(sum_k w_k A_k)   (Fu 2020)
    layercam        LayerCAM: ReLU(sum_k ReLU(G_k) * A_k), element-wise            (Jiang 2021)
    xres            Seg-XRes-CAM: G max-pooled over windows of `xres_window` px and spread back over
                    each window (the authors' default pooling), ReLU(sum_k pooled(G_k) * A_k)   (Hasany 2023)
    eigencam        EigenCAM: ReLU of A's projection on its first principal component (centred over the
                    pixels), by 256 power iterations done as 8 squarings of the C x C covariance (no SVD in
                    TensorRT), the sign chosen so
                    the projection correlates positively with sum_k A_k; gradient-free, so the same map
                    in every row                                                   (Muhammad 2020)
    fem             FEM: sum_k mean_xy(A_k) B_k, B_k = 1 where A_k >= mean_xy(A_k) + K std_xy(A_k) (the K-sigma
                    rule, population std), else 0; gradient-free and class-agnostic like EigenCAM, no ReLU
                    (the layers it reads follow one). K = `fem_k`, default 2: the authors' released code and
                    Xplique default to 2 (the "rare, strong" features, about the top 2% of a Gaussian channel);
                    the review reports K = 1 for their experiments, which marks about 16% of every channel.
                    pytorch-grad-cam's FEM is another formula (the share of pixels over the threshold times A_k)
                                                                                   (Fuad 2020; paper 003 eq. 26)

At the input of a final 1x1 conv z = W A + b (the segmentation U-Net's penultimate layer) the
gradient is known in closed form, G_ck = w_ck * region_c, and every method reduces to a few
(rows, C) x (C, h*w) products with no backward pass and no (rows, C, h, w) tensor; `CamContext.head`
carries (W, region, act = sum_k w_ck A_k) for that case, and each method uses it when present.
The tests check both forms against float64 autograd.

A method not in this table, or not possible for a target (Score-CAM needs a second model copy:
`_scorecam.py`; it is segmentation-only), fails by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx

from ._graph import Builder, ExplainError
from ._windows import Placed, add_window

EPS_GRADCAM_PP = 1e-6  # pytorch-grad-cam's
EPS_XGRADCAM = 1e-7  # pytorch-grad-cam's
EIGEN_SQUARINGS = 8
EIGEN_ITERATIONS = 2 ** EIGEN_SQUARINGS  # the power iterations the squarings amount to


@dataclass(frozen=True)
class Head:
    """Closed form at the input of a final 1x1 conv: dS_c/dA_k = w[c, k] * region_c."""

    weight: np.ndarray  # (rows, C) the conv's weights, one row per class
    region: str         # (rows, 1, h, w) float 0/1
    act: str            # (rows, 1, h, w) sum_k w_ck A_k (the logits less the bias)


@dataclass
class CamContext:
    b: Builder
    rows: int
    layer: str  # A, (1, C, h, w)
    grad: str | Placed | None = None  # G, (rows, C, h, w); or only each row's window of it (zero elsewhere)
    head: Head | None = None
    xres_window: int = 2
    fem_k: float = 2.0

    @property
    def channels(self) -> int:
        return self.b.shape(self.layer)[1]

    @property
    def hw(self) -> tuple[int, int]:
        return tuple(self.b.shape(self.layer)[2:])

    # --- shared pieces ---------------------------------------------------------------------------
    def sum_hw(self, x: str, hint: str) -> str:
        """Sum over the pixels, kept as (n, C, 1, 1): columns first, then rows (float32 stays close)."""
        return self.b.reduce("ReduceSum", self.b.reduce("ReduceSum", x, [3], 1, hint + "_cols"), [2], 1, hint)

    def weighted(self, alpha: str, hint: str = "cam") -> str:
        """sum_k alpha[r, k] A_k as one MatMul: (rows, C) x (C, h*w), reshaped to (rows, 1, h, w); or by the
        layer's channels-last pixels (h*w, C) where the graph has them already (windows cropped from it), so that a
        CPU engine's blocked layout is undone once for both readers."""
        b, c, (h, w) = self.b, self.channels, self.hw
        alpha_2d = b.op("Reshape", [alpha, b.ints([self.rows, c])], "alpha_2d")
        pixels = b.pixels_made(self.layer)
        if pixels is not None:
            flat = b.op("Gemm", [alpha_2d, pixels], hint + "_flat", transB=1)
        else:
            flat = b.op("MatMul", [alpha_2d, b.op("Reshape", [self.layer, b.ints([c, h * w])], "activations_2d")],
                        hint + "_flat")
        return b.op("Reshape", [flat, b.ints([self.rows, 1, h, w])], hint)

    def weighted_const(self, weight: np.ndarray, hint: str) -> str:
        return self.weighted(self.b.const(weight.astype(np.float32), hint + "_w"), hint)

    def activation_sums(self) -> str:
        """sum_xy A_k as (1, C)."""
        return self.b.op("Reshape", [self.sum_hw(self.layer, "activation_sum"), self.b.ints([1, self.channels])],
                         "activation_sum_2d")

    def region_sums(self) -> str:
        """sum over row r's region of A_k, (rows, C): (rows, h*w) x (h*w, C)."""
        b, c, (h, w) = self.b, self.channels, self.hw
        region = b.op("Reshape", [self.head.region, b.ints([self.rows, h * w])], "region_2d")
        acts = b.op("Transpose", [b.op("Reshape", [self.layer, b.ints([c, h * w])], "acts_2d")], "acts_t", perm=[1, 0])
        return b.op("MatMul", [region, acts], "region_activation_sums")

    def need_gradient(self, method: str) -> str:
        if self.grad is None:
            raise ExplainError(f"method {method!r} needs the gradient at {self.layer!r}, which was not computed")
        if isinstance(self.grad, Placed):  # the whole map, once, for the methods that read it pixel by pixel
            self.grad = add_window(self.b, None, self.grad)
        return self.grad

    def gradient_mean(self, method: str) -> str:
        """mean_xy(G), (rows, C, 1, 1): from the windows alone when G is only windows (they hold all of its sum)."""
        b = self.b
        if isinstance(self.grad, Placed):
            (h, w) = self.hw  # (the sum over the windows, then only this level's rows: K x C products, not K x C x n)
            total = self.grad.own(b, b.reduce("ReduceSum", self.grad.values, [2, 3], 1, "window_grad_sum"))
            return b.op("Mul", [total, b.const(1.0 / (h * w), "inverse_area")], "alpha")
        g = self.need_gradient(method)
        return b.reduce("ReduceMean", b.reduce("ReduceMean", g, [3], 1, "alpha_cols"), [2], 1, "alpha")

    def window_max(self, x: str, hint: str) -> str:
        """Max over xres_window x xres_window windows (partial ones at the edges included), spread back over
        each window: (n, c, h, w) -> (n, c, h, w)."""
        b, k, (h, w) = self.b, self.xres_window, self.hw
        pooled = b.op("MaxPool", [x], hint + "_pool", kernel_shape=[k, k], strides=[k, k], ceil_mode=1)
        spread = b.op("Resize", [pooled, "", b.const(np.array([1, 1, k, k], np.float32), "xres_scales")],
                      hint + "_spread", mode="nearest", coordinate_transformation_mode="asymmetric",
                      nearest_mode="floor")
        return b.op("Slice", [spread, b.ints([0, 0]), b.ints([h, w]), b.ints([2, 3])], hint + "_window")


@dataclass(frozen=True)
class CamMethod:
    name: str
    signed: bool  # maps may be negative
    gradient: bool  # needs dS/dA (or the closed form)
    build: Callable[[CamContext], str]  # -> (rows, 1, h, w)


CAMS: dict[str, CamMethod] = {}


def cam(name: str, signed: bool = False, gradient: bool = True):
    """Register a CAM method: the function maps a CamContext to the (rows, 1, h, w) map."""
    def register(fn):
        CAMS[name] = CamMethod(name, signed, gradient, fn)
        return fn
    return register


def _relu(ctx: CamContext, x: str, hint: str) -> str:
    return ctx.b.op("Relu", [x], hint)


def _mean_region_times_act(ctx: CamContext) -> str:
    b = ctx.b
    share = b.reduce("ReduceMean", b.reduce("ReduceMean", ctx.head.region, [3], 1, "share_cols"), [2], 1,
                     "region_share")
    return b.op("Mul", [share, ctx.head.act], "gradcam_signed_closed")


def _gradcam_signed(ctx: CamContext) -> str:
    if ctx.head is not None:  # mean_xy(w_ck region_c) = w_ck |R_c| / (h w)
        return _mean_region_times_act(ctx)
    return ctx.weighted(ctx.gradient_mean("gradcam"), "gradcam_signed")


@cam("gradcam")
def gradcam(ctx: CamContext) -> str:
    return _relu(ctx, _gradcam_signed(ctx), "gradcam")


@cam("gradcam_signed", signed=True)
def gradcam_signed(ctx: CamContext) -> str:
    return _gradcam_signed(ctx)


@cam("hires", signed=True)
def hires(ctx: CamContext) -> str:
    b = ctx.b
    if ctx.head is not None:
        return b.op("Mul", [ctx.head.region, ctx.head.act], "hires")
    g = ctx.need_gradient("hires")
    return b.reduce("ReduceSum", b.op("Mul", [g, ctx.layer], "grad_x_act"), [1], 1, "hires")


@cam("gradcam_pp")
def gradcam_pp(ctx: CamContext) -> str:
    b = ctx.b
    s = ctx.activation_sums()  # (1, C)
    if ctx.head is not None:
        # G = w region (region 0/1): where G != 0, alpha = w^2 / (2 w^2 + s w^3 + eps) at every region pixel,
        # so w_k = ReLU(w) alpha |R|: a (rows, C) weight, no (rows, C, h, w) tensor
        w = ctx.head.weight.astype(np.float32)
        w2, w3 = b.const(w * w, "w2"), b.const(w * w * w, "w3")
        denom = b.op("Add", [b.op("Add", [b.op("Mul", [b.const(2.0), w2]), b.op("Mul", [s, w3])]),
                             b.const(EPS_GRADCAM_PP)], "pp_denominator")
        a = b.op("Mul", [b.const(np.maximum(w, 0) * (w != 0)), b.op("Div", [w2, denom])], "pp_alpha")
        area = b.op("Reshape", [ctx.sum_hw(ctx.head.region, "region_area"), b.ints([ctx.rows, 1])], "area_2d")
        return _relu(ctx, ctx.weighted(b.op("Mul", [a, area], "pp_weights"), "gradcam_pp_cam"), "gradcam_pp")
    g = ctx.need_gradient("gradcam_pp")
    g2 = b.op("Mul", [g, g], "g2")
    g3 = b.op("Mul", [g2, g], "g3")
    s4 = b.op("Reshape", [s, b.ints([1, ctx.channels, 1, 1])], "activation_sum_4d")
    denom = b.op("Add", [b.op("Add", [b.op("Mul", [b.const(2.0), g2]), b.op("Mul", [s4, g3])]),
                         b.const(EPS_GRADCAM_PP)], "pp_denominator")
    # pytorch-grad-cam sets alpha to 0 where G == 0: there G^2 / (0 + 0 + eps) is 0 already, and ReLU(G) is 0 too
    alpha = b.op("Div", [g2, denom], "pp_alpha")
    weights = ctx.sum_hw(b.op("Mul", [b.op("Relu", [g], "g_pos"), alpha], "pp_terms"), "pp_weights")
    return _relu(ctx, ctx.weighted(weights, "gradcam_pp_cam"), "gradcam_pp")


@cam("xgradcam")
def xgradcam(ctx: CamContext) -> str:
    b = ctx.b
    s = ctx.activation_sums()  # (1, C)
    if ctx.head is not None:  # sum_xy(w region A) = w * (sum of A over the region)
        num = b.op("Mul", [b.const(ctx.head.weight.astype(np.float32), "head_w"), ctx.region_sums()], "xg_numerator")
    else:
        g = ctx.need_gradient("xgradcam")
        num = b.op("Reshape", [ctx.sum_hw(b.op("Mul", [g, ctx.layer], "g_times_a"), "xg_numerator_4d"),
                               b.ints([ctx.rows, ctx.channels])], "xg_numerator")
    weights = b.op("Div", [num, b.op("Add", [s, b.const(EPS_XGRADCAM)], "xg_denominator")], "xg_weights")
    return _relu(ctx, ctx.weighted(weights, "xgradcam_cam"), "xgradcam")


@cam("layercam")
def layercam(ctx: CamContext) -> str:
    b = ctx.b
    if ctx.head is not None:  # ReLU(w region) = ReLU(w) region
        pos = ctx.weighted_const(np.maximum(ctx.head.weight, 0), "layercam_act")
        return _relu(ctx, b.op("Mul", [ctx.head.region, pos], "layercam_cam"), "layercam")
    g = ctx.need_gradient("layercam")
    summed = b.reduce("ReduceSum", b.op("Mul", [b.op("Relu", [g], "g_pos"), ctx.layer], "relu_g_x_a"), [1], 1,
                      "layercam_cam")
    return _relu(ctx, summed, "layercam")


@cam("xres")
def xres(ctx: CamContext) -> str:
    b = ctx.b
    if ctx.head is not None:
        # max over a window of w region = w * max(region) for w >= 0, w * min(region) for w < 0
        w = ctx.head.weight
        up = ctx.window_max(ctx.head.region, "region_max")
        down = b.op("Neg", [ctx.window_max(b.op("Neg", [ctx.head.region]), "region_negmax")], "region_min")
        pos = b.op("Mul", [up, ctx.weighted_const(np.maximum(w, 0), "xres_pos")], "xres_pos_part")
        neg = b.op("Mul", [down, ctx.weighted_const(np.minimum(w, 0), "xres_neg")], "xres_neg_part")
        return _relu(ctx, b.op("Add", [pos, neg], "xres_cam"), "xres")
    g = ctx.need_gradient("xres")
    pooled = ctx.window_max(g, "grad_max")
    summed = b.reduce("ReduceSum", b.op("Mul", [pooled, ctx.layer], "pooled_g_x_a"), [1], 1, "xres_cam")
    return _relu(ctx, summed, "xres")


@cam("eigencam", gradient=False)
def eigencam(ctx: CamContext) -> str:
    b, c, (h, w) = ctx.b, ctx.channels, ctx.hw
    x = b.op("Reshape", [ctx.layer, b.ints([c, h * w])], "eigen_x")  # channels x pixels
    centred = b.op("Sub", [x, b.reduce("ReduceMean", x, [1], 1, "eigen_mean")], "eigen_centred")
    cov = b.op("MatMul", [centred, b.op("Transpose", [centred], "eigen_xt", perm=[1, 0])], "eigen_cov")  # (C, C)
    # power iteration by repeated squaring: M^(2^n) v0 is n MatMuls of C x C (each rescaled by its largest
    # entry so float32 neither overflows nor underflows), i.e. EIGEN_ITERATIONS = 2^n plain iterations
    power = cov
    for i in range(EIGEN_SQUARINGS):
        top = b.reduce("ReduceMax", b.op("Abs", [power]), [0, 1], 1, f"eigen_scale{i}")
        power = b.op("Div", [power, b.op("Add", [top, b.const(1e-30)])], f"eigen_scaled{i}")
        power = b.op("MatMul", [power, power], f"eigen_power{i + 1}")
    mv = b.op("MatMul", [power, b.const(np.full((c, 1), 1.0 / np.sqrt(c), np.float32), "eigen_v0")], "eigen_mv")
    norm = b.op("Sqrt", [b.op("Add", [b.reduce("ReduceSum", b.op("Mul", [mv, mv]), [0], 1), b.const(1e-30)])])
    v = b.op("Div", [mv, norm], "eigen_v")
    proj = b.op("MatMul", [b.op("Transpose", [v], "eigen_vt", perm=[1, 0]), centred], "eigen_projection")  # (1, hw)
    total = b.reduce("ReduceSum", x, [0], 1, "eigen_total")  # (1, hw): sum_k A_k
    agree = b.reduce("ReduceSum", b.op("Mul", [proj, total]), [1], 1, "eigen_agreement")
    sign = b.op("Where", [b.op("Less", [agree, b.const(0.0)], "eigen_flip"), b.const(-1.0), b.const(1.0)], "eigen_sign")
    cam1 = b.op("Reshape", [b.op("Mul", [proj, sign]), b.ints([1, 1, h, w])], "eigencam_one")
    return _relu(ctx, b.op("Expand", [cam1, b.ints([ctx.rows, 1, h, w])], "eigencam_rows"), "eigencam")


@cam("fem", gradient=False)
def fem(ctx: CamContext) -> str:
    b, c, (h, w) = ctx.b, ctx.channels, ctx.hw
    mean = b.reduce("ReduceMean", ctx.layer, [2, 3], 1, "fem_mean")  # (1, C, 1, 1)
    centred = b.op("Sub", [ctx.layer, mean], "fem_centred")
    std = b.op("Sqrt", [b.reduce("ReduceMean", b.op("Mul", [centred, centred]), [2, 3], 1, "fem_var")], "fem_std")
    threshold = b.op("Add", [mean, b.op("Mul", [std, b.const(float(ctx.fem_k), "fem_k")])], "fem_threshold")
    strong = b.op("Cast", [b.op("GreaterOrEqual", [ctx.layer, threshold], "fem_strong")], "fem_binary",
                  to=onnx.TensorProto.FLOAT)
    flat = b.op("MatMul", [b.op("Reshape", [mean, b.ints([1, c])], "fem_weights"),
                           b.op("Reshape", [strong, b.ints([c, h * w])], "fem_binary_2d")], "fem_flat")
    one = b.op("Reshape", [flat, b.ints([1, 1, h, w])], "fem_one")
    return b.op("Expand", [one, b.ints([ctx.rows, 1, h, w])], "fem")


def build_cam(name: str, ctx: CamContext) -> tuple[str, bool]:
    """(map tensor (rows, 1, h, w), signed) of a registered method."""
    if name not in CAMS:
        raise ExplainError(f"unknown CAM method {name!r}; registered: {sorted(CAMS)}")
    m = CAMS[name]
    return m.build(ctx), m.signed


