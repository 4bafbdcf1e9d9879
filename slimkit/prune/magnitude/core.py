"""Math of unstructured magnitude pruning: masks from scores, exact counts."""
from __future__ import annotations

import torch

__all__ = ["layer_mask", "global_threshold", "apply_mask"]


def layer_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean keep-mask removing exactly ``round(sparsity * numel)`` lowest scores."""
    n_prune = int(round(sparsity * scores.numel()))
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if n_prune > 0:
        idx = torch.topk(scores.reshape(-1).float(), n_prune, largest=False).indices
        keep[idx] = False
    return keep.reshape(scores.shape)


def global_threshold(all_scores: list[torch.Tensor], sparsity: float) -> float:
    """The score below which ``sparsity`` of all entries fall (k-th smallest over every layer)."""
    flat = torch.cat([s.reshape(-1).float() for s in all_scores])
    k = int(round(sparsity * flat.numel()))
    if k == 0:
        return float("-inf")
    return float(torch.kthvalue(flat, k).values)


def apply_mask(weight: torch.Tensor, keep: torch.Tensor) -> None:
    """Zero the pruned entries in place (the mask is folded into the weight)."""
    with torch.no_grad():
        weight.mul_(keep.to(weight.dtype))
