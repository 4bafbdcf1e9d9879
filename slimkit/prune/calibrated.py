"""Shared orchestration of the calibration-based unstructured pruners (wanda, sparsegpt)."""
from __future__ import annotations

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.select import select_modules
from slimkit.prune.pattern import check_nm_width, parse_pattern
from slimkit.prune.wanda.config import CalibratedPruneConfig

__all__ = ["selected_linears", "note_sparsity"]


def selected_linears(model: nn.Module, cfg: CalibratedPruneConfig) -> list[tuple[str, nn.Module]]:
    """The selected layers, checked for N:M width; other prunable-looking layers are reported as skipped."""
    layers = select_modules(model, (nn.Linear,), targets=cfg.targets, ignore=cfg.ignore, field="prune")
    nm = parse_pattern(cfg.pattern)
    for name, module in layers if nm else ():
        check_nm_width(name, module.weight, nm[1])
    return layers


def note_sparsity(model: nn.Module, layers: list[tuple[str, nn.Module]], ctx: RunContext) -> None:
    """Report layer count and the exact overall weight sparsity of the pruned layers."""
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    total = sum(m.weight.numel() for _, m in layers)
    ctx.note("layers", len(layers))
    ctx.note("weight_sparsity", round(zeros / max(total, 1), 4))
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)) and name:
            ctx.skip(name, "convolutions are not handled by this calibration-based pruner (Linear only)")
