"""``prune: {method: sparsegpt}`` handler: block-by-block Hessians, prune + reconstruct each Linear."""
from __future__ import annotations

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import UnsupportedModelError
from slimkit.core.registry import register
from slimkit.prune.calibrated import note_sparsity, planned_sparsities, selected_linears
from slimkit.prune.calibration import calibrate_and_prune
from slimkit.prune.pattern import parse_pattern
from slimkit.prune.sparsegpt.config import SparseGPTPruneConfig
from slimkit.prune.sparsegpt.core import HessianStats, sparsegpt_prune

__all__ = ["prune_sparsegpt"]


@register("prune", "sparsegpt", SparseGPTPruneConfig, needs=("calib",))
def prune_sparsegpt(model: nn.Module, cfg: SparseGPTPruneConfig, ctx: RunContext) -> nn.Module:
    """Prune every selected Linear with SparseGPT's OBS sweep, sequentially through the blocks."""
    calib = ctx.require("calib", "prune")
    layers = selected_linears(model, cfg, ctx)
    nm = parse_pattern(cfg.pattern)
    sparsity = planned_sparsities(model, cfg, layers, ctx) if nm is None else {}

    def prune_layer(name: str, module: nn.Module, stats: HessianStats) -> None:
        try:
            new = sparsegpt_prune(module.weight, stats.H, sparsity[name] if nm is None else 0.0, nm,
                                  cfg.blocksize, cfg.percdamp)
        except torch.linalg.LinAlgError as exc:
            raise UnsupportedModelError(f"layer {name!r}: SparseGPT Hessian factorisation failed ({exc})") from None
        with torch.no_grad():
            module.weight.copy_(new)

    calibrate_and_prune(model, layers, calib, lambda n, m: HessianStats(m.in_features), prune_layer, ctx)
    note_sparsity(model, layers, ctx)
    return model
