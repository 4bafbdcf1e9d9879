"""Mixed precision math: per-layer cost/error of each bit width and the greedy allocation.

Levels of a layer are its candidate bit widths in increasing order (float32 last when allowed).
The allocation starts every layer at its cheapest level and repeatedly takes the upgrade with the
largest error reduction per extra byte; the sequence of upgrades is the "upgrade path", cut where
the byte budget is exhausted, or searched for the cheapest point meeting a quality bound.
"""
from __future__ import annotations

import heapq

import torch

from slimkit.quantize.weight_only.core import codes_per_byte, dequantize_groups, n_groups, quantize_groups

__all__ = ["FLOAT", "layer_bytes", "layer_error", "upgrade_path"]

#: level value meaning "kept in float32"
FLOAT = 32


def layer_bytes(out_features: int, in_features: int, bits: int, group_size: int | None, symmetric: bool) -> int:
    """Stored bytes of a [out, in] weight at ``bits`` (codes + fp16 scales + uint8 zeros); fp32 at FLOAT."""
    if bits == FLOAT:
        return 4 * out_features * in_features
    g = n_groups(in_features, group_size)
    per = codes_per_byte(bits)
    return out_features * (-(-in_features // per) + 2 * g + (0 if symmetric else g))


def layer_error(weight: torch.Tensor, h: torch.Tensor, bits: int, group_size: int | None, symmetric: bool) -> float:
    """Output error ``tr(ΔW H ΔWᵀ)`` of round-to-nearest at ``bits`` (0 at FLOAT)."""
    if bits == FLOAT:
        return 0.0
    w = weight.detach().float()
    dw = w - dequantize_groups(*quantize_groups(w, bits, group_size, symmetric), group_size)
    return float(((dw @ h) * dw).sum())


def upgrade_path(levels: list[int], costs: dict[str, list[int]], errors: dict[str, list[float]]) -> list[tuple[str, int]]:
    """Greedy upgrades ``(layer, level index)`` by error reduction per extra byte, best first.

    Each layer's upgrades stay in order (level 1, then 2, ...); the gain of a layer's next upgrade
    is computed when its previous one is taken.
    """
    heap: list[tuple[float, str, int]] = []

    def push(name: str, nxt: int) -> None:
        if nxt < len(levels):
            gain = (errors[name][nxt - 1] - errors[name][nxt]) / max(costs[name][nxt] - costs[name][nxt - 1], 1)
            heapq.heappush(heap, (-gain, name, nxt))

    for name in costs:
        push(name, 1)
    path = []
    while heap:
        _, name, idx = heapq.heappop(heap)
        path.append((name, idx))
        push(name, idx + 1)
    return path
