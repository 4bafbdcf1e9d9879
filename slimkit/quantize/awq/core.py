"""AWQ (Lin et al. 2023): activation-aware per-input-channel scaling before weight quantization.

Input channels that carry large activations matter more; multiplying their weight column by
``s_j > 1`` (and the input by ``1 / s_j``) shrinks their relative rounding error. ``s = mean|x|^α``
(normalised so that ``sqrt(max · min) = 1``), with ``α`` searched on a grid to minimise the layer's
output error on calibration rows; ``α = 0`` is plain round-to-nearest, so the search never does
worse than RTN on the calibration data. The ``1 / s`` factor is kept in the quantized layer
(``input_scale``, K floats) rather than folded into the previous norm, so every Linear can be
scaled on its own.
"""
from __future__ import annotations

import torch

from slimkit.quantize.weight_only.core import dequantize_groups, quantize_groups

__all__ = ["ActivationStats", "awq_search"]


class ActivationStats:
    """Mean |x| per input channel over all rows, plus up to ``keep`` sampled rows for the search."""

    def __init__(self, in_features: int, keep: int, seed: int = 0) -> None:
        self.abs_sum = torch.zeros(in_features, dtype=torch.float64)
        self.n = 0
        self.keep = keep
        self.rows: list[torch.Tensor] = []
        self.gen = torch.Generator().manual_seed(seed)

    def add(self, x: torch.Tensor) -> None:
        self.abs_sum += x.abs().sum(0).double()
        self.n += x.shape[0]
        take = min(x.shape[0], self.keep)
        idx = torch.randperm(x.shape[0], generator=self.gen)[:take]
        self.rows.append(x[idx].clone())

    def mean_abs(self) -> torch.Tensor:
        return (self.abs_sum / max(self.n, 1)).float()

    def sample(self) -> torch.Tensor:
        rows = torch.cat(self.rows)
        idx = torch.randperm(rows.shape[0], generator=self.gen)[:self.keep]
        return rows[idx]


def awq_search(weight: torch.Tensor, x: torch.Tensor, mean_abs: torch.Tensor, bits: int, group_size: int | None,
               symmetric: bool, grid: int = 20,
               clip_search: int = 0) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor], float]:
    """Best per-channel scale for ``weight`` [N, K] on rows ``x`` [T, K].

    Returns (input_scale = 1/s [K], (codes, scale, zero) of ``W · diag(s)``, chosen α). With
    ``clip_search`` > 0 the groups of the chosen scaled weight are then re-fitted by the range
    search, each column weighted by ``E[x_j²] / s_j²`` (its rounding error reaches the output
    divided by ``s_j`` and multiplied by ``x_j``); kept only if the output error drops.
    """
    w = weight.detach().float()
    ref = x @ w.t()  # [T, N]
    best: tuple[float, torch.Tensor, tuple, float] | None = None
    base = mean_abs.clamp_min(1e-6)
    for i in range(grid + 1):
        alpha = i / grid
        s = base.pow(alpha)
        s = s / torch.sqrt(s.max() * s.min())
        q = quantize_groups(w * s, bits, group_size, symmetric)
        w_hat = dequantize_groups(*q, group_size) / s  # effective weight [N, K]
        err = float((x @ w_hat.t() - ref).pow(2).mean())
        if best is None or err < best[0]:
            best = (err, s, q, alpha)
    err, s, q, alpha = best
    if clip_search > 0:
        col_weight = x.pow(2).mean(0) / s.pow(2)
        q2 = quantize_groups(w * s, bits, group_size, symmetric, clip_search=clip_search, col_weight=col_weight)
        if float((x @ (dequantize_groups(*q2, group_size) / s).t() - ref).pow(2).mean()) < err:
            q = q2
    return 1.0 / s, q, alpha
