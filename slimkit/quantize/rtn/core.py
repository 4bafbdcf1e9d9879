"""Round-to-nearest weight quantization of one layer (the math is shared in weight_only.core)."""
from __future__ import annotations

import torch
from torch import nn

from slimkit.quantize.weight_only.layer import WeightOnlyLinear

__all__ = ["rtn_linear"]


def rtn_linear(linear: nn.Linear, bits: int, group_size: int | None, symmetric: bool,
               runtime: str = "auto") -> WeightOnlyLinear:
    """A :class:`WeightOnlyLinear` holding ``linear``'s weight rounded to nearest per group."""
    with torch.no_grad():
        return WeightOnlyLinear.from_weight(linear.weight.detach(), linear.bias, bits, group_size, symmetric, runtime)
