"""Math of Wanda pruning: per-output-row masks from ``|W| · ‖X‖`` scores."""
from __future__ import annotations

import torch

from slimkit.prune.pattern import nm_mask

__all__ = ["row_counts", "row_mask", "wanda_mask"]


def row_counts(rows: int, cols: int, sparsity: float) -> torch.Tensor:
    """How many entries each row of ``[rows, cols]`` loses: ``round(sparsity * rows * cols)`` in all,
    spread as evenly as possible (``sparsity * cols`` each when that is a whole number; otherwise
    the rows differ by at most one), so a layer's sparsity is exact to one weight, which the
    per-layer allocations (OWL, search) rely on for an exact global budget."""
    total = int(round(sparsity * rows * cols))
    bounds = torch.arange(rows + 1, dtype=torch.int64) * total // rows
    return bounds[1:] - bounds[:-1]


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask removing the lowest scores of every row of ``[out, in]``, :func:`row_counts` per row
    (``round(sparsity * in)`` in every row when ``sparsity * in`` is whole)."""
    counts = row_counts(scores.shape[0], scores.shape[1], sparsity)
    keep = torch.ones_like(scores, dtype=torch.bool)
    k_max = int(counts.max()) if counts.numel() else 0
    if k_max > 0:
        order = torch.topk(scores.float(), k_max, dim=1, largest=False).indices  # [out, k_max], lowest first
        drop = torch.arange(k_max).reshape(1, -1) < counts.reshape(-1, 1)
        keep.scatter_(1, order, ~drop)
    return keep


def wanda_mask(scores: torch.Tensor, sparsity: float, nm: tuple[int, int] | None) -> torch.Tensor:
    """The keep-mask for one layer: N:M groups when ``nm`` is given, else per-row sparsity."""
    return nm_mask(scores, *nm) if nm is not None else row_mask(scores, sparsity)
