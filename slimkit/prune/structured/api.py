"""``prune: {method: structured}`` handler: score dependency groups, remove units, record replay edits."""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import DataError, UnsupportedModelError
from slimkit.core.inputs import call_model
from slimkit.core.provenance import record_edit
from slimkit.core.registry import register
from slimkit.core.select import matching_names
from slimkit.measure.macs import count_macs
from slimkit.prune.importance import OutputNormStats
from slimkit.prune.structured import edits as _edits  # noqa: F401  (registers the replay op)
from slimkit.prune.structured.config import StructuredPruneConfig
from slimkit.prune.structured.core import build_graph, candidate_groups, prune_group, units_to_prune

__all__ = ["prune_structured"]

Scores = dict[str, torch.Tensor]


def _example(ctx: RunContext) -> Any:
    """Inputs to trace the model with: example_inputs, else the first calibration batch."""
    if ctx.example_inputs is not None:
        return ctx.example_inputs
    if ctx.calib:
        return ctx.calib[0]
    raise DataError("step 'prune' (structured) needs example_inputs or calib data to trace the model")


def _ignored(model: nn.Module, cfg: StructuredPruneConfig) -> list[nn.Module]:
    """Modules whose groups must stay: ``ignore`` rules, and everything outside ``targets``."""
    names = matching_names(model, cfg.ignore, "prune.ignore") if cfg.ignore else set()
    if cfg.targets is not None:
        wanted = matching_names(model, cfg.targets, "prune.targets")
        names |= {n for n, m in model.named_modules() if n and n not in wanted and isinstance(m, (nn.Linear, nn.Conv2d))}
    return [model.get_submodule(n) for n in names if n]


@torch.no_grad()
def _activation_scores(model: nn.Module, roots: list[str], calib: list[Any]) -> Scores:
    """Mean |output| per unit of every group root on the calibration data."""
    stats = {n: OutputNormStats(model.get_submodule(n).weight.shape[0]) for n in roots}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, s=stats[n]: s.add(m, i[0], o)) for n in roots]
    try:
        for batch in calib:
            call_model(model, batch)
    finally:
        for h in hooks:
            h.remove()
    return {n: s.mean().float() for n, s in stats.items()}


def _group_scores(model: nn.Module, cfg: StructuredPruneConfig, ctx: RunContext, example: Any) -> Scores:
    """Importance of every unit of every candidate group, keyed by the group root's path."""
    names = {m: n for n, m in model.named_modules()}
    DG = build_graph(model, example)
    cands = candidate_groups(model, DG, cfg.granularity, _ignored(model, cfg))
    if not cands:
        raise UnsupportedModelError(f"no prunable {cfg.granularity} group found in {type(model).__name__}")
    if cfg.importance == "activation":
        return _activation_scores(model, [names[r] for r, _, _ in cands], ctx.require("calib", "prune"))
    if cfg.importance == "taylor":
        _accumulate_grads(model, ctx.require("train", "prune"))
        imp: Any = tp.importance.GroupTaylorImportance()
    else:
        imp = tp.importance.GroupMagnitudeImportance(p=2)
    scores = {names[r]: imp(DG.get_pruning_group(r, fn, list(range(n)))).detach() for r, fn, n in cands}
    model.zero_grad(set_to_none=True)
    return scores


def _accumulate_grads(model: nn.Module, batches: list[Any]) -> None:
    """``∂L/∂w`` summed over up to 8 training batches (Taylor importance reads ``.grad``)."""
    from slimkit.prune.gradual.api import gradual_loss

    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for batch in batches[:8]:
            gradual_loss(model, batch).backward()


def _prune_model(model: nn.Module, cfg: StructuredPruneConfig, ratio: float, scores: Scores,
                 example: Any, record: bool) -> int:
    """Prune every candidate group of ``model`` to ``ratio``; returns the units removed."""
    names = {m: n for n, m in model.named_modules()}
    DG = build_graph(model, example)
    cands = candidate_groups(model, DG, cfg.granularity, _ignored(model, cfg))
    removed = 0
    for root, fn, _ in cands:
        idxs = units_to_prune(scores[names[root]], ratio, cfg.round_to)
        if not idxs:
            continue
        slices = prune_group(DG, root, fn, idxs, names)
        removed += len(idxs)
        if record:
            record_edit(model, {"op": "prune_channels", "granularity": cfg.granularity, "slices": slices})
    return removed


def _ratio_for_macs(model: nn.Module, cfg: StructuredPruneConfig, scores: Scores, example: Any,
                    dense_macs: int) -> float:
    """Bisection on the per-group ratio so that the pruned copy keeps ~``target_macs`` of the MACs."""
    lo, hi = 0.0, 0.95
    for _ in range(7):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        _prune_model(trial, cfg, mid, scores, example, record=False)
        if count_macs(trial, example) / dense_macs > cfg.target_macs:
            lo = mid
        else:
            hi = mid
    return hi


@register("prune", "structured", StructuredPruneConfig)
def prune_structured(model: nn.Module, cfg: StructuredPruneConfig, ctx: RunContext) -> nn.Module:
    """Remove the least important units of every prunable group; the module physically shrinks."""
    example = _example(ctx)
    model.eval()
    dense_macs = count_macs(model, example)
    scores = _group_scores(model, cfg, ctx, example)
    ratio = cfg.sparsity if cfg.sparsity is not None else _ratio_for_macs(model, cfg, scores, example, dense_macs)
    removed = _prune_model(model, cfg, ratio, scores, example, record=True)
    ctx.note("groups", len(scores))
    ctx.note("group_ratio", round(ratio, 4))
    ctx.note("units_removed", removed)
    ctx.note("macs_kept", round(count_macs(model, example) / dense_macs, 4))
    return model
