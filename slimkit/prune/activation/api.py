"""``prune: {method: activation}`` handler: output-activation statistics, then zero weak units."""
from __future__ import annotations

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.heads import drop_protected
from slimkit.core.layer_notes import layer_summary
from slimkit.core.registry import register
from slimkit.core.select import select_modules
from slimkit.prune.activation.config import ActivationPruneConfig
from slimkit.prune.activation.core import weakest_units, zero_units
from slimkit.prune.calibration import calibrate_and_prune
from slimkit.prune.importance import OutputNormStats, unit_activation_scores

__all__ = ["prune_activation"]


@register("prune", "activation", ActivationPruneConfig, needs=("calib",))
def prune_activation(model: nn.Module, cfg: ActivationPruneConfig, ctx: RunContext) -> nn.Module:
    """Zero the ``sparsity`` fraction of output units with the weakest mean |activation| per layer."""
    calib = ctx.require("calib", "prune")
    types = tuple(getattr(nn, t) for t in cfg.layer_types)
    layers = select_modules(model, types, targets=cfg.targets, ignore=cfg.ignore, field="prune")
    layers = drop_protected(model, layers, cfg.targets, ctx)
    removed = total = 0
    per_layer: dict[str, str | float] = {}

    def prune_layer(name: str, module: nn.Module, stats: OutputNormStats) -> None:
        nonlocal removed, total
        units = weakest_units(unit_activation_scores(stats), cfg.sparsity)
        zero_units(module, units)
        removed += units.numel()
        total += module.weight.shape[0]
        per_layer[name] = round(units.numel() / max(module.weight.shape[0], 1), 4)

    calibrate_and_prune(model, layers, calib, lambda n, m: OutputNormStats(m.weight.shape[0]), prune_layer, ctx)
    ctx.note("layers", len(layers))
    ctx.note("unit_sparsity", round(removed / max(total, 1), 4))
    ctx.note("layer_unit_sparsity", layer_summary(per_layer))
    return model
