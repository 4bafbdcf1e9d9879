"""``prune: {method: wanda}`` handler: block-by-block calibration, per-row ``|W|·‖X‖`` masks."""
from __future__ import annotations

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.registry import register
from slimkit.prune.calibrated import note_sparsity, planned_sparsities, selected_linears
from slimkit.prune.calibration import calibrate_and_prune
from slimkit.prune.importance import InputNormStats, WandaImportance
from slimkit.prune.magnitude.core import apply_mask
from slimkit.prune.pattern import parse_pattern
from slimkit.prune.wanda.config import WandaPruneConfig
from slimkit.prune.wanda.core import wanda_mask

__all__ = ["prune_wanda"]


@register("prune", "wanda", WandaPruneConfig, needs=("calib",))
def prune_wanda(model: nn.Module, cfg: WandaPruneConfig, ctx: RunContext) -> nn.Module:
    """Zero the weights with the lowest ``|W| · ‖X‖`` in each output row (or N:M group)."""
    calib = ctx.require("calib", "prune")
    layers = selected_linears(model, cfg, ctx)
    nm = parse_pattern(cfg.pattern)
    sparsity = planned_sparsities(model, cfg, layers, ctx) if nm is None else {}

    def prune_layer(name: str, module: nn.Module, stats: InputNormStats) -> None:
        scores = WandaImportance({name: stats})(name, module)
        apply_mask(module.weight, wanda_mask(scores, sparsity[name] if nm is None else 0.0, nm))

    calibrate_and_prune(model, layers, calib, lambda n, m: InputNormStats(m.in_features), prune_layer, ctx)
    note_sparsity(model, layers, ctx)
    return model
