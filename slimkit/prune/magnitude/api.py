"""``prune: {method: magnitude}`` handler: select layers, score, mask, fold, report sparsity."""
from __future__ import annotations

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.heads import drop_protected
from slimkit.core.registry import register
from slimkit.core.select import select_modules
from slimkit.prune.importance import MagnitudeImportance
from slimkit.prune.layer_report import note_weight_sparsity
from slimkit.prune.magnitude.config import MagnitudePruneConfig
from slimkit.prune.magnitude.core import apply_mask, global_threshold, layer_mask
from slimkit.prune.pattern import check_nm_width, nm_mask, parse_pattern
from slimkit.prune.sparsity import layer_sparsities

__all__ = ["prune_magnitude", "weight_sparsity"]


def _layers(model: nn.Module, cfg: MagnitudePruneConfig, ctx: RunContext) -> list[tuple[str, nn.Module]]:
    """Selected layers of ``layer_types``; the output head / embeddings only when ``targets`` names them."""
    types = tuple(getattr(nn, t) for t in cfg.layer_types)
    chosen = select_modules(model, types, targets=cfg.targets, ignore=cfg.ignore, field="prune")
    return drop_protected(model, chosen, cfg.targets, ctx)


@register("prune", "magnitude", MagnitudePruneConfig, default=True)
def prune_magnitude(model: nn.Module, cfg: MagnitudePruneConfig, ctx: RunContext) -> nn.Module:
    """Zero the smallest weights of the selected layers; sparse storage makes the checkpoint shrink."""
    layers = _layers(model, cfg, ctx)
    nm = parse_pattern(cfg.pattern)
    for name, module in layers if nm else ():
        check_nm_width(name, module.weight, nm[1])
    importance = MagnitudeImportance()
    scores = {name: importance(name, m) for name, m in layers}
    threshold = global_threshold(list(scores.values()), cfg.sparsity) if cfg.scope == "global" else None
    sparsity = layer_sparsities(cfg.sparsity, layers, ctx) if nm is None and threshold is None else {}
    for name, module in layers:
        s = scores[name]
        if nm is not None:
            keep = nm_mask(s, *nm)
        else:
            keep = s > threshold if threshold is not None else layer_mask(s, sparsity[name])
        apply_mask(module.weight, keep)
    note_weight_sparsity(layers, ctx)
    return model


def weight_sparsity(model: nn.Module, names: list[str]) -> float:
    """Fraction of exact zeros over the weights of the named layers (used by tests/reports)."""
    zeros = total = 0
    for n in names:
        w = model.get_submodule(n).weight
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(total, 1)

