"""``allocation: latency``: spend the channel cut where the latency table says it buys the most time.

MACs allocation removes units where they cost the fewest MACs per unit of importance. On a CPU
the time per MAC differs a lot between layers (memory-bound 1x1 convs on large maps, depthwise
convs, tiny late layers), so at equal MACs two allocations can differ a lot in speed. Here every
group's units are removed greedily, one ``round_to`` chunk at a time, always from the group whose
next chunk loses the least importance per millisecond it saves, as predicted by the per-layer
latency table (:mod:`slimkit.measure.latency_table`), until the table predicts ``target_latency``
of the dense model's time. Importance is each unit's score divided by its group's mean score
(as ``global`` allocation does), so groups of different scale compare. No group goes below the
narrowest width the table measured for it (``DEFAULT_KEEP_RATIOS[0]`` of its units).

```yaml
- prune: {method: structured, granularity: channel, allocation: latency, target_latency: 0.55, round_to: 8}
```
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from slimkit.core.errors import ConfigError
from slimkit.measure.latency_table import LatencyTable
from slimkit.prune.structured.core import build_graph, candidate_groups, group_modules, lowest_units, prune_group

__all__ = ["channel_groups", "LatencyAllocation", "allocate_latency", "prune_to_widths"]


def channel_groups(model: nn.Module, DG: tp.DependencyGraph, cands: list[tuple[nn.Module, Any, int]]
                   ) -> dict[str, list[tuple[str, str]]]:
    """``{group root path: [(module path, "in" | "out")]}`` of every candidate group's sliced layer sides."""
    names = {m: n for n, m in model.named_modules()}
    out = {}
    for root, fn, n in cands:
        members = group_modules(DG.get_pruning_group(root, fn, list(range(n))), names)
        out[names[root]] = sorted({(p, "in" if h == "prune_in_channels" else "out") for p, h, _ in members})
    return out


@dataclasses.dataclass
class LatencyAllocation:
    """Kept units per group, and the table's predicted latency ratio before stopping."""

    widths: dict[str, int]
    predicted_ratio: float
    reached: bool  # False: no further cut saves time in the table, target not reached


def _next_width(w: int, round_to: int) -> int:
    """The next narrower multiple of ``round_to`` (first cut realigns a width that is not one)."""
    return ((w - 1) // round_to) * round_to


def _local_ms(table: LatencyTable, layers: dict[str, list[Any]], group: str, widths: dict[str, int]) -> float:
    return sum(t.at(widths) for t in layers[group])


def allocate_latency(table: LatencyTable, scores: dict[str, torch.Tensor], target: float,
                     round_to: int = 1) -> LatencyAllocation:
    """Greedy widths: cut the chunk with the least normalized importance per predicted ms saved,
    until ``table.ratio(widths) <= target`` or no chunk saves time."""
    groups = [g for g in scores if g in table.full]
    ordered = {g: torch.sort(scores[g].float() / scores[g].float().mean().clamp_min(1e-12)).values.tolist()
               for g in groups}
    widths = {g: table.full[g] for g in groups}
    floor = {g: table.min_width(g) for g in groups}
    layers = {g: table.layers_of(g) for g in groups}
    dense = sum(t.at({}) for t in table.layers)  # ratios of the layers' sum = ratios of predict()
    total = dense
    while total / dense > target:
        best: tuple[float, str, int, float] | None = None
        for g in groups:
            nxt = _next_width(widths[g], round_to)
            if nxt < max(floor[g], 1):
                continue
            removed = table.full[g] - widths[g]
            lost = sum(ordered[g][removed:table.full[g] - nxt])
            trial = dict(widths)
            trial[g] = nxt
            saved = _local_ms(table, layers, g, widths) - _local_ms(table, layers, g, trial)
            if saved <= 0:
                continue
            if best is None or lost / saved < best[0]:
                best = (lost / saved, g, nxt, saved)
        if best is None:
            return LatencyAllocation(widths, total / dense, False)
        _, g, nxt, saved = best
        widths[g] = nxt
        total -= saved
    return LatencyAllocation(widths, table.ratio(widths), True)


def prune_to_widths(model: nn.Module, example: Any, widths: dict[str, int], scores: dict[str, torch.Tensor] | None = None,
                    granularity: str = "channel", ignored: list[nn.Module] | None = None) -> nn.Module:
    """Shrink every group named in ``widths`` (by root path) to that many units, in place; returns ``model``.

    ``scores`` picks the units that stay (highest); without them the first units stay (enough to
    time a candidate width assignment, as the latency-table validation does). Edits are not recorded.
    """
    names = {m: n for n, m in model.named_modules()}
    DG = build_graph(model, example)
    cands = {names[r]: (r, fn, n) for r, fn, n in candidate_groups(model, DG, granularity, ignored or [])}
    unknown = sorted(set(widths) - set(cands))
    if unknown:
        raise ConfigError(f"widths: {unknown} are not prunable groups of {type(model).__name__}; known: {sorted(cands)}")
    for g, keep in widths.items():
        root, fn, n = cands[g]
        sc = scores[g] if scores is not None else -torch.arange(n, dtype=torch.float32)
        idxs = lowest_units(sc, keep)
        if idxs:
            prune_group(DG, root, fn, idxs, names)
    return model
