"""Math of activation (output-based) pruning: choose the weakest units and zero them."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["weakest_units", "zero_units"]


def weakest_units(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Indices of the ``round(sparsity * units)`` lowest-scoring units (``scores``: ``[units]``)."""
    k = int(round(sparsity * scores.numel()))
    return torch.topk(scores, k, largest=False).indices if k else torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def zero_units(module: nn.Module, units: torch.Tensor) -> None:
    """Zero the weight rows / filters (dim 0) and bias entries of the given output units."""
    module.weight[units] = 0
    if getattr(module, "bias", None) is not None:
        module.bias[units] = 0
