"""Round-to-nearest weight quantization of one layer (the math is shared in weight_only.core)."""
from __future__ import annotations

import torch
from torch import nn

from slimkit.quantize.weight_only.core import quantize_groups
from slimkit.quantize.weight_only.layer import WeightOnlyLinear

__all__ = ["rtn_linear"]


def rtn_linear(linear: nn.Linear, bits: int, group_size: int | None, symmetric: bool,
               runtime: str = "auto", clip_search: int = 0) -> WeightOnlyLinear:
    """A :class:`WeightOnlyLinear` holding ``linear``'s weight rounded to nearest per group
    (``clip_search`` > 0: each group's range searched for the least squared rounding error)."""
    with torch.no_grad():
        w = linear.weight.detach()
        codes = quantize_groups(w, bits, group_size, symmetric, clip_search=clip_search)
        return WeightOnlyLinear.from_weight(w, linear.bias, bits, group_size, symmetric, runtime, codes=codes)
