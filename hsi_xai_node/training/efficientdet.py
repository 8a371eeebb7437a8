"""A compact EfficientDet (Tan et al. 2020) in PyTorch, with stable names for explanations.

Backbone: a stem conv and EfficientNet MBConv stages (1x1 expand, depthwise conv,
squeeze-and-excitation, 1x1 project, residual), SiLU throughout. Features at strides
4, 8, 16 and 32 (P2..P5: this data's objects are small, so the pyramid starts at P2
instead of EfficientDet's P3..P7) feed a BiFPN: top-down then bottom-up paths, each
node a fast normalised fusion (ReLU weights / (sum + eps)) followed by SiLU and a
depthwise-separable conv + BN. Class and box nets are shared across levels (their BN
is per level, as in EfficientDet).

Names (module names, and after export the ONNX tensor names of these outputs):

    bifpn_p2 .. bifpn_p5   the last BiFPN layer's outputs = the class-head inputs;
                           bifpn_p2 receives gradient from every level's boxes (the
                           bottom-up path carries it), so it is the default explain layer
    class_logits           (N, anchors, classes) before the sigmoid
    scores, boxes          export outputs: sigmoid scores and decoded (x0, y0, x1, y1)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..detection.anchors import AnchorConfig, generate_anchors
from ..detection.boxes import MAX_LOG_SCALE

LEVELS = (2, 3, 4, 5)


@dataclass(frozen=True)
class EfficientDetConfig:
    in_channels: int = 4
    num_classes: int = 5
    stem: int = 16
    # (expand ratio, channels, repeats, stride, kernel) per MBConv stage; strides 2..32 after the stem
    stages: tuple = ((1, 16, 1, 1, 3), (4, 24, 2, 2, 3), (4, 40, 2, 2, 5), (4, 80, 2, 2, 3), (4, 112, 1, 2, 5))
    fpn_channels: int = 64
    fpn_layers: int = 2
    head_layers: int = 2
    anchors: AnchorConfig = field(default_factory=lambda: AnchorConfig(sizes=(6.0, 12.0, 24.0, 48.0)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EfficientDetConfig":
        d = dict(d)
        d["stages"] = tuple(tuple(s) for s in d["stages"])
        d["anchors"] = AnchorConfig(**{k: tuple(v) for k, v in d["anchors"].items()})
        return cls(**d)


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.SiLU()) if act else nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(channels, reduced, 1), nn.Conv2d(reduced, channels, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(s))))


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, stride: int, kernel: int):
        super().__init__()
        mid = cin * expand
        self.expand = conv_bn(cin, mid) if expand != 1 else nn.Identity()
        self.depthwise = conv_bn(mid, mid, kernel, stride, groups=mid)
        self.se = SqueezeExcite(mid, max(1, cin // 4))
        self.project = conv_bn(mid, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class SeparableConv(nn.Sequential):
    """Depthwise 3x3 + pointwise 1x1 + BN (EfficientDet's BiFPN and head conv)."""

    def __init__(self, cin: int, cout: int, bn: bool = True):
        layers = [nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=not bn)]
        super().__init__(*layers, nn.BatchNorm2d(cout)) if bn else super().__init__(*layers)


class FastFusion(nn.Module):
    """sum_i relu(w_i) x_i / (sum_i relu(w_i) + eps), then SiLU and a separable conv."""

    def __init__(self, inputs: int, channels: int):
        super().__init__()
        self.weights = nn.Parameter(torch.ones(inputs))
        self.conv = SeparableConv(channels, channels)

    def forward(self, xs):
        w = F.relu(self.weights)
        w = w / (w.sum() + 1e-4)
        return self.conv(F.silu(sum(wi * x for wi, x in zip(w, xs))))


class BiFPNLayer(nn.Module):
    def __init__(self, channels: int, levels: int):
        super().__init__()
        self.levels = levels
        self.top_down = nn.ModuleList(FastFusion(2, channels) for _ in range(levels - 1))  # for levels n-2 .. 0
        self.bottom_up = nn.ModuleList(FastFusion(3 if i < levels - 1 else 2, channels)
                                       for i in range(1, levels))                        # for levels 1 .. n-1

    def forward(self, feats):
        n = self.levels
        td = [None] * n
        td[-1] = feats[-1]
        for i in range(n - 2, -1, -1):
            td[i] = self.top_down[n - 2 - i]([feats[i], F.interpolate(td[i + 1], scale_factor=2.0, mode="nearest")])
        out = [td[0]]
        for i in range(1, n):
            down = F.max_pool2d(out[-1], 3, 2, 1)
            ins = [feats[i], td[i], down] if i < n - 1 else [feats[i], down]
            out.append(self.bottom_up[i - 1](ins))
        return out


class Head(nn.Module):
    """Shared separable convs across levels (BN per level), then a shared prediction conv."""

    def __init__(self, channels: int, outputs: int, layers: int, levels: int, bias_init: float = 0.0):
        super().__init__()
        self.convs = nn.ModuleList(SeparableConv(channels, channels, bn=False) for _ in range(layers))
        self.bns = nn.ModuleList(nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(layers))
                                 for _ in range(levels))
        self.predict = SeparableConv(channels, outputs, bn=False)
        nn.init.constant_(self.predict[1].bias, bias_init)

    def forward(self, feats, per_anchor: int):
        out = []
        for level, x in enumerate(feats):
            for conv, bn in zip(self.convs, self.bns[level]):
                x = F.silu(bn(conv(x)))
            y = self.predict(x)  # (N, anchors_per_cell * per_anchor, H, W)
            n, _, h, w = y.shape
            out.append(y.permute(0, 2, 3, 1).reshape(n, h * w * (y.shape[1] // per_anchor), per_anchor))
        return torch.cat(out, 1)


class EfficientDet(nn.Module):
    def __init__(self, config: EfficientDetConfig = EfficientDetConfig()):
        super().__init__()
        self.config = c = config
        if len(c.anchors.strides) != len(LEVELS) or c.anchors.strides != tuple(2 ** lv for lv in LEVELS):
            raise ValueError(f"anchor strides must be {tuple(2 ** lv for lv in LEVELS)}, got {c.anchors.strides}")
        self.stem = conv_bn(c.in_channels, c.stem, 3, 2)
        blocks, cin, taps = [], c.stem, []
        for expand, cout, repeats, stride, kernel in c.stages:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, expand, stride if r == 0 else 1, kernel))
                cin = cout
            taps.append(len(blocks) - 1)
        self.blocks = nn.Sequential(*blocks)
        self.taps = taps[1:]  # stage outputs at strides 4, 8, 16, 32
        widths = [s[1] for s in c.stages[1:]]
        self.lateral = nn.ModuleList(conv_bn(w, c.fpn_channels, act=False) for w in widths)
        self.bifpn = nn.ModuleList(BiFPNLayer(c.fpn_channels, len(LEVELS)) for _ in range(c.fpn_layers))
        per_cell = c.anchors.per_cell
        prior = -math.log((1 - 0.01) / 0.01)  # focal-loss prior: every anchor starts at p = 0.01
        self.class_net = Head(c.fpn_channels, per_cell * c.num_classes, c.head_layers, len(LEVELS), prior)
        self.box_net = Head(c.fpn_channels, per_cell * 4, c.head_layers, len(LEVELS))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The class-head inputs bifpn_p2 .. bifpn_p5."""
        x = self.stem(x)
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                taps.append(x)
        feats = [lat(t) for lat, t in zip(self.lateral, taps)]
        for layer in self.bifpn:
            feats = layer(feats)
        return feats

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits (N, A, classes), box deltas (N, A, 4))."""
        feats = self.features(x)
        return self.class_net(feats, self.config.num_classes), self.box_net(feats, 4)


def decode_boxes(deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Torch twin of detection.boxes.decode (exported as ONNX ops)."""
    wh = anchors[:, 2:] - anchors[:, :2]
    centre = anchors[:, :2] + wh / 2
    xy = centre + deltas[..., :2] * wh
    size = wh * torch.exp(torch.clamp(deltas[..., 2:], max=MAX_LOG_SCALE))
    return torch.cat([xy - size / 2, xy + size / 2], -1)


class DetectorExport(nn.Module):
    """The exported graph: image -> (scores, boxes), anchors decoded inside."""

    def __init__(self, model: EfficientDet, input_hw: tuple[int, int]):
        super().__init__()
        self.model = model
        anchors = generate_anchors(model.config.anchors, input_hw)
        self.register_buffer("anchors", torch.from_numpy(np.ascontiguousarray(anchors)))

    def forward(self, x):
        logits, deltas = self.model(x)
        return torch.sigmoid(logits), decode_boxes(deltas, self.anchors)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
