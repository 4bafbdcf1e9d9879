"""Math of OWL (Yin et al. 2024, "Outlier Weighed Layerwise Sparsity"): outlier ratios and the
band allocation with an exactly preserved budget."""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["outlier_ratio", "owl_block_sparsities"]


def outlier_ratio(scores: Sequence[torch.Tensor], threshold: float) -> float:
    """OWL's ``D``: the fraction of entries of the Wanda scores ``|W|·‖X‖`` (all of a block's
    layers together) greater than ``threshold`` × their mean."""
    flat = torch.cat([s.reshape(-1).double() for s in scores])
    return float((flat > threshold * flat.mean()).double().mean())


def owl_block_sparsities(ratios: Sequence[float], sizes: Sequence[int], target: float, lam: float) -> list[float]:
    """Per-block sparsity from outlier ratios ``ratios`` and weights per block ``sizes``.

    The ratios are mapped linearly onto ``[target - lam, target + lam]``, the highest outlier ratio
    to the *lowest* sparsity (outlier-rich blocks matter more), then shifted by one constant so that
    the weight-count-weighted mean is exactly ``target`` (``sum(s_l n_l) == target * sum(n_l)``), so
    the total pruned weights equal the uniform step's up to rounding. All ratios equal (or
    ``lam == 0``): every block gets ``target``.
    """
    d = torch.tensor(list(ratios), dtype=torch.float64)
    n = torch.tensor(list(sizes), dtype=torch.float64)
    spread = float(d.max() - d.min()) if d.numel() else 0.0
    if spread <= 0.0 or lam == 0.0:
        return [float(target)] * d.numel()
    s = target + lam - 2.0 * lam * (d - d.min()) / spread
    s = s + (target - float((s * n).sum() / n.sum()))
    return [float(v) for v in s]
