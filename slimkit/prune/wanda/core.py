"""Math of Wanda pruning: per-output-row masks from ``|W| · ‖X‖`` scores."""
from __future__ import annotations

import torch

from slimkit.prune.pattern import nm_mask

__all__ = ["row_mask", "wanda_mask"]


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask removing exactly ``round(sparsity * in)`` lowest scores of every row of ``[out, in]``."""
    k = int(round(sparsity * scores.shape[1]))
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        drop = torch.topk(scores.float(), k, dim=1, largest=False).indices
        keep.scatter_(1, drop, False)
    return keep


def wanda_mask(scores: torch.Tensor, sparsity: float, nm: tuple[int, int] | None) -> torch.Tensor:
    """The keep-mask for one layer: N:M groups when ``nm`` is given, else per-row sparsity."""
    return nm_mask(scores, *nm) if nm is not None else row_mask(scores, sparsity)
