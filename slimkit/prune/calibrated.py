"""Shared orchestration of the calibration-based unstructured pruners (wanda, sparsegpt)."""
from __future__ import annotations

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.heads import drop_protected
from slimkit.core.select import select_modules
from slimkit.prune.layer_report import note_weight_sparsity
from slimkit.prune.owl.api import note_owl, owl_allocation
from slimkit.prune.pattern import check_nm_width, parse_pattern
from slimkit.prune.sparsity import layer_sparsities
from slimkit.prune.wanda.config import CalibratedPruneConfig

__all__ = ["selected_linears", "note_sparsity", "planned_sparsities"]


def selected_linears(model: nn.Module, cfg: CalibratedPruneConfig, ctx: RunContext) -> list[tuple[str, nn.Module]]:
    """The selected layers, checked for N:M width; the output head / embeddings only when ``targets``
    names them (each one left alone is reported)."""
    layers = select_modules(model, (nn.Linear,), targets=cfg.targets, ignore=cfg.ignore, field="prune")
    layers = drop_protected(model, layers, cfg.targets, ctx)
    nm = parse_pattern(cfg.pattern)
    for name, module in layers if nm else ():
        check_nm_width(name, module.weight, nm[1])
    return layers


def planned_sparsities(model: nn.Module, cfg: CalibratedPruneConfig, layers: list[tuple[str, nn.Module]],
                       ctx: RunContext) -> dict[str, float]:
    """Each selected layer's sparsity: ``sparsity`` (a number or a per-layer map) for
    ``allocation: uniform``; OWL's outlier-weighted allocation (:mod:`slimkit.prune.owl`) for
    ``allocation: owl``, which needs a dense calibration pass first and notes what it found."""
    if cfg.allocation == "owl":
        allocation = owl_allocation(model, cfg, layers, ctx.require("calib", "prune"), ctx.progress)
        note_owl(allocation, ctx)
        return allocation.per_layer
    return layer_sparsities(cfg.sparsity, layers, ctx)


def note_sparsity(model: nn.Module, layers: list[tuple[str, nn.Module]], ctx: RunContext) -> None:
    """Report layer count, overall and per-layer weight sparsity of the pruned layers; convs skipped."""
    note_weight_sparsity(layers, ctx)
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)) and name:
            ctx.skip(name, "convolutions are not handled by this calibration-based pruner (Linear only)")
