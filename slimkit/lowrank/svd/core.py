"""SVD math (rank choice, factors) and the :class:`LowRankLinear` layer kind."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from slimkit.io.edits import register_module_kind

__all__ = ["choose_rank", "factorize", "LowRankLinear"]


def choose_rank(s: torch.Tensor, in_f: int, out_f: int, *, energy: float | None = None,
                params_ratio: float | None = None, rank: int | None = None, multiple: int = 1) -> int:
    """Rank from an energy threshold, a parameter ratio or a fixed value (``s``: singular values)."""
    if energy is not None:
        cum = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum().clamp_min(1e-30)
        r = int(torch.searchsorted(cum, torch.tensor(energy, dtype=cum.dtype) - 1e-12).item()) + 1
    elif params_ratio is not None:
        r = max(1, math.floor(params_ratio * in_f * out_f / (in_f + out_f)))
    else:
        r = int(rank)  # type: ignore[arg-type]
    if params_ratio is None:
        r = int(math.ceil(r / multiple) * multiple)
    return min(r, s.numel())


def factorize(weight: torch.Tensor, r: int,
              svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``W ≈ B @ A`` with ``A = sqrt(S_r) V_r^T`` [r, in], ``B = U_r sqrt(S_r)`` [out, r].

    Returns (A, B, relative Frobenius error). The SVD (``svd`` when already computed) runs in
    float64 for stable small ranks; the error follows from the dropped singular values.
    """
    u, s, vh = svd if svd is not None else torch.linalg.svd(weight.detach().double(), full_matrices=False)
    root = s[:r].sqrt()
    a = root[:, None] * vh[:r]          # [r, in]
    b = u[:, :r] * root[None, :]        # [out, r]
    err = float(s[r:].pow(2).sum().sqrt() / s.pow(2).sum().sqrt().clamp_min(1e-30))
    return a.to(weight.dtype), b.to(weight.dtype), err


@register_module_kind("low_rank_linear")
class LowRankLinear(nn.Module):
    """``y = second(first(x))``: ``first`` Linear(in, r, no bias), ``second`` Linear(r, out, bias)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.first = nn.Linear(in_features, rank, bias=False)
        self.second = nn.Linear(rank, out_features, bias=bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, r: int,
                    svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> tuple["LowRankLinear", float]:
        layer = cls(linear.in_features, linear.out_features, r, linear.bias is not None)
        layer.to(dtype=linear.weight.dtype, device=linear.weight.device)
        a, b, err = factorize(linear.weight, r, svd)
        with torch.no_grad():
            layer.first.weight.copy_(a)
            layer.second.weight.copy_(b)
            if linear.bias is not None:
                layer.second.bias.copy_(linear.bias)
        return layer, err

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    def spec(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "rank": self.rank,
                "bias": self.second.bias is not None}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "LowRankLinear":
        return cls(int(spec["in_features"]), int(spec["out_features"]), int(spec["rank"]), bool(spec["bias"]))
