"""The HSI-Drive U-Net in PyTorch, with stable layer names explanations target.

Default shape is HSI-Drive's: depth 4, 32/64/128/256 filters, 512 in the bottleneck,
two 3x3 conv + BN + ReLU per block, 2x2 max-pool down, 2x2 stride-2 transposed conv
up, skip concatenation, 32 channels into a final 1x1 conv (about 7.8M parameters).

Layer names (module names, and after export the ONNX tensor names of their outputs):

    enc1 .. enc{depth}   encoder blocks (enc1: full resolution, 32 ch by default; it is
                         the "second conv block" of paper 000, skip-linked to the last block)
    bottleneck           the deepest block
    up{depth} .. up1     transposed convolutions
    dec{depth} .. dec1   decoder blocks (dec1: the features before the final 1x1 conv)
    head                 the final 1x1 conv; its output tensor is `logits`
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 25
    num_classes: int = 5
    depth: int = 4
    base_filters: int = 32

    def filters(self, level: int) -> int:
        """Channels of encoder level `level` (1-based); level depth+1 is the bottleneck."""
        return self.base_filters * 2 ** (level - 1)

    def to_dict(self) -> dict:
        return asdict(self)


class ConvBlock(nn.Sequential):
    """Two 3x3 conv + BN + ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = c = config
        cin = c.in_channels
        for level in range(1, c.depth + 1):
            self.add_module(f"enc{level}", ConvBlock(cin, c.filters(level)))
            cin = c.filters(level)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ConvBlock(cin, c.filters(c.depth + 1))
        cin = c.filters(c.depth + 1)
        for level in range(c.depth, 0, -1):
            self.add_module(f"up{level}", nn.ConvTranspose2d(cin, c.filters(level), 2, stride=2))
            self.add_module(f"dec{level}", ConvBlock(2 * c.filters(level), c.filters(level)))
            cin = c.filters(level)
        self.head = nn.Conv2d(cin, c.num_classes, 1)

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** self.config.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level in range(1, self.config.depth + 1):
            x = getattr(self, f"enc{level}")(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for level in range(self.config.depth, 0, -1):
            x = getattr(self, f"up{level}")(x)
            x = getattr(self, f"dec{level}")(torch.cat([skips[level - 1], x], dim=1))
        return self.head(x)

    def layer_names(self) -> list[str]:
        """Names of the blocks whose outputs explanations may target, input to output."""
        d = self.config.depth
        return ([f"enc{i}" for i in range(1, d + 1)] + ["bottleneck"]
                + [f"dec{i}" for i in range(d, 0, -1)] + ["logits"])


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
