"""Which rule applies where, for each white-box method (Zennit's composites, over this package's op rules).

    propagation = composite("lrp_epsilon_plus_flat", b, input_name, LrpOptions())

Every composite is a `rules.Propagation`: op type -> rule, over the gradient's table, with its own rules for the
model's first linear layer where it has them. Shared by all LRP composites (Zennit's `layer_map_base`):
activations pass their relevance on unchanged, sums and average pools share it out in proportion to their inputs,
batch normalisation passes it on (the bundled models have it folded into their convolutions; fold a model's
before exporting it to have it count as part of a linear layer), max pooling keeps its gradient (the winner takes
all), and every shape op (Concat, Slice, Reshape, Resize, ...) its gradient (relevance split by position); a
product with a constant or with a sigmoid gate (SiLU, squeeze-excitation: the detector's) passes it to the signal,
a division by a constant to the dividend (rules.relevance.gate, scale). Any other op on the path (Softmax, Exp, a
product of two signals) fails the build naming it: its gradient is not a relevance rule.

    gradient                 the plain gradient
    guided_backprop          the ReLU passes only positive gradient where its input was positive (Springenberg 2015)
    deconvnet                the ReLU rectifies the gradient whatever its input (Zeiler 2014)
    lrp_epsilon              epsilon on every linear layer (`bias=False`: without the bias in the denominator)
    lrp_zplus                z+ on every linear layer (alpha 1, beta 0)
    lrp_alpha2_beta1         alpha 2, beta 1 on every linear layer
    lrp_gamma                gamma on every linear layer
    lrp_epsilon_plus_flat    Flat on the first layer, z+ on the other convolutions (the 1x1 head too), epsilon on
                             dense layers (Zennit's EpsilonPlusFlat)
    lrp_deep_taylor          z-box on the first layer (as above), z+ on every other linear layer: deep Taylor
                             decomposition's rules for a ReLU network with a bounded input (Montavon 2017)
    lrp_epsilon_gamma_box    z-box on the first layer with the input's range per band (of the frame explained),
                             gamma on the other convolutions, epsilon on dense layers (Zennit's EpsilonGammaBox)
    deeplift                 DeepLIFT's rescale rule on element-wise nonlinearities and Captum's rule on max pooling,
                             against a reference forward (`reference`, rules/deeplift.py); linear ops their gradient
    deeplift_maxpool_gradient  the same with max pooling by its gradient (the original implementation's)
"""

from __future__ import annotations

from dataclasses import dataclass

from ._graph import Builder, ExplainError
from .rules import GRADIENT, LINEAR_OPS, Propagation
from .rules import deeplift as _deeplift
from .rules.relevance import (alpha_beta, epsilon, flat, gamma, gate, norm, passthrough, relu_deconvnet, relu_guided,
                              scale, zbox, zplus)

CONVOLUTIONS = ("Conv", "ConvTranspose")
DENSE = ("Gemm", "MatMul")


@dataclass(frozen=True)
class LrpOptions:
    epsilon: float = 0.01  # the epsilon rule's stabiliser: 1e-6 lets LRP-epsilon without bias blow up (~1e16)
    gamma: float = 0.25  # Zennit's default
    stabilizer: float = 1e-6  # of every other rule (Zennit's default)

    def validated(self) -> "LrpOptions":
        if not (self.epsilon > 0 and self.stabilizer > 0 and self.gamma >= 0):
            raise ExplainError(f"LRP options need epsilon > 0, stabilizer > 0 and gamma >= 0, got {self}")
        return self


# activations hand relevance on (Zennit's Pass); a sigmoid inside a gate receives none (rules.relevance.gate)
ACTIVATIONS = ("Relu", "LeakyRelu", "Clip", "Elu", "Selu", "Softplus", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh")
# ops whose gradient moves relevance to where it came from without creating or destroying it (Resize's weights sum
# to 1 per output pixel; max pooling: the winner takes all); every other op without an LRP rule fails the build
REDISTRIBUTING = frozenset({"Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Concat",
                            "Split", "Cast", "Pad", "Resize", "MaxPool"})


def _base(stabilizer: float) -> dict:
    share = norm(stabilizer)
    return ({op: passthrough for op in (*ACTIVATIONS, "BatchNormalization")}
            | {"Add": share, "Sum": share, "AveragePool": share, "GlobalAveragePool": share, "ReduceMean": share,
               "Mul": gate, "Div": scale})


def _lrp(name: str, conv_rule, dense_rule, stabilizer: float, first_rule=None) -> Propagation:
    layers = _base(stabilizer) | {op: conv_rule for op in CONVOLUTIONS} | {op: dense_rule for op in DENSE}
    first = {op: first_rule for op in LINEAR_OPS} if first_rule is not None else {}
    return Propagation(name, layers, first, inherits=REDISTRIBUTING)


def _input_bounds(b: Builder, input_name: str):
    """(low, high) of the model input per band over the frame explained, (1, C, 1, 1): the z-box's box."""
    def bounds(_):
        rank = len(b.shape(input_name))
        axes = [0, *range(2, rank)]
        return (b.reduce("ReduceMin", input_name, axes, 1, "input_low"),
                b.reduce("ReduceMax", input_name, axes, 1, "input_high"))
    return bounds


COMPOSITES = ("gradient", "guided_backprop", "deconvnet", "lrp_epsilon", "lrp_epsilon_nobias", "lrp_zplus",
              "lrp_alpha2_beta1", "lrp_gamma", "lrp_epsilon_plus_flat", "lrp_epsilon_gamma_box", "lrp_deep_taylor",
              "deeplift", "deeplift_maxpool_gradient")


def composite(name: str, b: Builder, input_name: str, options: LrpOptions = LrpOptions(),
              reference: dict[str, str] | None = None) -> Propagation:
    """`reference`: forward tensor -> the reference forward's (DeepLIFT only)."""
    o = options.validated()
    if name in ("deeplift", "deeplift_maxpool_gradient") and reference is None:
        raise ExplainError("the deeplift composites need the reference forward's tensors")
    if name in ("deeplift", "deeplift_maxpool_gradient"):
        layers = ({op: _deeplift.rescale(reference) for op in _deeplift.ELEMENTWISE}
                  | {op: _deeplift.linear for op in LINEAR_OPS}
                  | {"Mul": _deeplift.product(reference)})
        if name == "deeplift":
            return Propagation(name, layers | {"MaxPool": _deeplift.maxpool(reference)}, inherits=_deeplift.LINEAR)
        return Propagation(name, layers, inherits=_deeplift.LINEAR | {"MaxPool"})
    s = o.stabilizer
    if name == "gradient":
        return GRADIENT
    if name == "guided_backprop":
        return Propagation(name, {"Relu": relu_guided})
    if name == "deconvnet":
        return Propagation(name, {"Relu": relu_deconvnet})
    if name in ("lrp_epsilon", "lrp_epsilon_nobias"):
        rule = epsilon(o.epsilon, bias=name == "lrp_epsilon")
        return _lrp(name, rule, rule, s)
    if name == "lrp_zplus":
        return _lrp(name, zplus(s), zplus(s), s)
    if name == "lrp_alpha2_beta1":
        return _lrp(name, alpha_beta(2.0, 1.0, s), alpha_beta(2.0, 1.0, s), s)
    if name == "lrp_gamma":
        return _lrp(name, gamma(o.gamma, s), gamma(o.gamma, s), s)
    if name == "lrp_epsilon_plus_flat":
        return _lrp(name, zplus(s), epsilon(o.epsilon), s, first_rule=flat(s))
    if name == "lrp_epsilon_gamma_box":
        return _lrp(name, gamma(o.gamma, s), epsilon(o.epsilon), s, first_rule=zbox(_input_bounds(b, input_name), s))
    if name == "lrp_deep_taylor":
        return _lrp(name, zplus(s), zplus(s), s, first_rule=zbox(_input_bounds(b, input_name), s))
    raise ExplainError(f"unknown composite {name!r}; known: {list(COMPOSITES)}")
