"""What a pruning step tells the report: layer count, overall and per-layer weight sparsity.

The per-layer sparsity is folded over block indices (:func:`slimkit.core.layer_notes.layer_summary`)
so a 30-block model gives one line per kind of layer; the output head and embeddings a step kept
by default appear among the step's skipped layers.
"""
from __future__ import annotations

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.layer_notes import layer_summary

__all__ = ["note_weight_sparsity"]


def note_weight_sparsity(layers: list[tuple[str, nn.Module]], ctx: RunContext) -> None:
    """Notes ``layers`` (count), ``weight_sparsity`` (exact zeros over all pruned weights) and
    ``layer_sparsity`` (each layer's fraction of exact zeros, folded)."""
    zeros = total = 0
    per_layer: dict[str, str | float] = {}
    for name, module in layers:
        z, n = int((module.weight == 0).sum()), module.weight.numel()
        zeros, total = zeros + z, total + n
        per_layer[name] = round(z / max(n, 1), 4)
    ctx.note("layers", len(layers))
    ctx.note("weight_sparsity", round(zeros / max(total, 1), 4))
    ctx.note("layer_sparsity", layer_summary(per_layer))
