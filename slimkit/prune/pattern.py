"""N:M semi-structured sparsity: parse ``"N:M"``, build masks keeping N of every M weights.

An N:M pattern keeps ``N`` nonzeros in every group of ``M`` consecutive weights along the input
dimension (the last dim of a Linear weight, the flattened ``in*kh*kw`` of a conv filter), which is
the layout sparse tensor cores accelerate (2:4). Used by magnitude, Wanda and SparseGPT.
"""
from __future__ import annotations

import torch

from slimkit.core.errors import ConfigError, UnsupportedModelError

__all__ = ["parse_pattern", "nm_mask", "check_nm_width", "is_nm_sparse"]


def parse_pattern(pattern: str | None, field: str = "pattern") -> tuple[int, int] | None:
    """``"2:4"`` -> ``(2, 4)``; ``None`` -> ``None``; bad text or ``N >= M`` raises ConfigError."""
    if pattern is None:
        return None
    parts = pattern.split(":") if isinstance(pattern, str) else []
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"{field} = {pattern!r} is not valid; write it as 'N:M', e.g. '2:4' or '4:8'")
    n, m = (int(p) for p in parts)
    if not 0 < n < m:
        raise ConfigError(f"{field} = {pattern!r} is not valid: N must satisfy 0 < N < M (N={n}, M={m})")
    if m > 32:
        raise ConfigError(f"{field} = {pattern!r}: M must be at most 32")
    return n, m


def check_nm_width(name: str, weight: torch.Tensor, m: int) -> None:
    """Raise UnsupportedModelError when the layer's input width is not a multiple of ``m``."""
    width = weight[0].numel()
    if width % m:
        raise UnsupportedModelError(
            f"layer {name!r}: input width {width} is not a multiple of M={m}, so an N:{m} pattern cannot "
            f"tile it; ignore this layer (ignore: [{name}]) or choose another M"
        )


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask with the ``n`` highest scores of every ``m`` consecutive entries of each row."""
    rows = scores.reshape(scores.shape[0], -1)  # [out, in*k*k]
    groups = rows.reshape(rows.shape[0], -1, m).float()  # [out, in/m, m]
    top = torch.topk(groups, n, dim=-1).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return keep.reshape(scores.shape)


def is_nm_sparse(weight: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of ``m`` consecutive weights of each row holds at most ``n`` nonzeros."""
    rows = weight.reshape(weight.shape[0], -1)
    if rows.shape[1] % m:
        return False
    return bool(((rows.reshape(rows.shape[0], -1, m) != 0).sum(-1) <= n).all())
