"""``prune: {method: structured}`` handler: score dependency groups, remove units, record replay edits."""
from __future__ import annotations

import copy
import time
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError, DataError, UnsupportedModelError
from slimkit.core.heads import names_explicitly, protected_names
from slimkit.core.inputs import call_model, run_with_hooks
from slimkit.core.provenance import record_edit
from slimkit.core.registry import register
from slimkit.core.select import matching_names
from slimkit.measure.latency_table import build_latency_table
from slimkit.measure.macs import count_macs
from slimkit.prune.importance import OutputNormStats
from slimkit.prune.structured import edits as _edits  # noqa: F401  (registers the replay op)
from slimkit.prune.structured.config import StructuredPruneConfig
from slimkit.prune.structured.core import (build_graph, candidate_groups, group_ratios, lowest_units, prune_group,
                                           units_to_prune)
from slimkit.prune.structured.latency import allocate_latency, channel_groups
from slimkit.prune.structured.heads import (find_attentions, head_scores, heads_for_ratio, heads_from_map,
                                            remove_heads, unsupported_attentions)
from slimkit.prune.structured.width import apply_width, find_width_group, width_scores

__all__ = ["prune_structured"]

Scores = Any  # channel/neuron: {root path: unit scores}; head: {attention path: (q, kv)}; width: (group, scores)


def _example(ctx: RunContext) -> Any:
    """Inputs to trace the model with: example_inputs, else the first calibration batch."""
    if ctx.example_inputs is not None:
        return ctx.example_inputs
    if ctx.calib:
        return ctx.calib[0]
    raise DataError("step 'prune' (structured) needs example_inputs or calib data to trace the model")


def _kept_by_default(model: nn.Module, cfg: StructuredPruneConfig) -> set[str]:
    """The output head / embeddings that ``targets`` does not name: their groups stay whole."""
    return {n for n in protected_names(model) if not names_explicitly(cfg.targets, n)}


def _ignored(model: nn.Module, cfg: StructuredPruneConfig) -> list[nn.Module]:
    """Modules whose groups must stay: ``ignore`` rules, the output head / embeddings unless
    ``targets`` names them, and everything outside ``targets``."""
    names = matching_names(model, cfg.ignore, "prune.ignore") if cfg.ignore else set()
    names |= _kept_by_default(model, cfg)
    if cfg.targets is not None:
        wanted = matching_names(model, cfg.targets, "prune.targets")
        names |= {n for n, m in model.named_modules() if n and n not in wanted and isinstance(m, (nn.Linear, nn.Conv2d))}
    return [model.get_submodule(n) for n in names if n]


@torch.no_grad()
def _activation_scores(model: nn.Module, roots: list[str], calib: list[Any]) -> Scores:
    """Mean |output| per unit of every group root on the calibration data."""
    stats = {n: OutputNormStats(model.get_submodule(n).weight.shape[0]) for n in roots}
    run_with_hooks(model, calib, [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, s=stats[n]: s.add(m, i[0], o)) for n in roots])
    return {n: s.mean().float() for n, s in stats.items()}


def _group_scores(model: nn.Module, cfg: StructuredPruneConfig, ctx: RunContext, example: Any) -> Scores:
    """Importance of every unit of every candidate group, keyed by the group root's path."""
    if cfg.granularity == "head":
        return _head_scores(model, cfg, ctx)
    if cfg.granularity == "layer_width":
        return _width_scores(model, cfg, ctx, example)
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


def _head_scores(model: nn.Module, cfg: StructuredPruneConfig, ctx: RunContext) -> Scores:
    """Per-head scores of every attention layer that ``ignore`` / ``targets`` leave prunable."""
    atts = find_attentions(model)
    for name in unsupported_attentions(model, atts):
        ctx.skip(name, "attention layout not known to head pruning (known: q/k/v/o_proj + head_dim; BERT query/key/value)")
    ignored = set(_ignored(model, cfg))
    for path in list(atts):
        a = atts[path]
        if {a.q, a.k, a.v, a.o, a.owner, model.get_submodule(path)} & ignored:
            ctx.skip(path, "excluded by ignore / targets")
            del atts[path]
    if cfg.heads is not None:
        unknown = sorted(set(cfg.heads) - set(atts))
        if unknown:
            raise ConfigError(f"heads: {unknown} are not prunable attention layers; known: {sorted(atts)}")
        atts = {p: a for p, a in atts.items() if p in cfg.heads}
        for path, a in atts.items():
            heads_from_map(a, list(cfg.heads[path]))  # bad input fails before anything is sliced
    if not atts:
        raise UnsupportedModelError(f"no prunable head group found in {type(model).__name__}")
    if cfg.importance == "taylor":
        _accumulate_grads(model, ctx.require("train", "prune"))
    calib = ctx.require("calib", "prune") if cfg.importance == "activation" else None
    scores = head_scores(model, atts, cfg.importance, calib)
    model.zero_grad(set_to_none=True)
    return scores


def _width_scores(model: nn.Module, cfg: StructuredPruneConfig, ctx: RunContext, example: Any) -> Scores:
    """The residual-stream group and the importance of each hidden dimension."""
    if cfg.ignore or cfg.targets is not None:
        raise ConfigError("ignore / targets cannot be used with granularity layer_width: the residual stream is one "
                          "group, every member must shrink together")
    group = find_width_group(model, example)
    if group.added:  # members the dependency graph missed (see slimkit.prune.structured.width); named if few
        kinds: dict[str, int] = {}
        for path in group.added:
            kinds[type(model.get_submodule(path)).__name__] = kinds.get(type(model.get_submodule(path)).__name__, 0) + 1
        ctx.note("width_members_added_by_rule", group.added if len(group.added) <= 4 else kinds)
    if cfg.importance == "taylor":
        _accumulate_grads(model, ctx.require("train", "prune"))
    calib = ctx.require("calib", "prune") if cfg.importance == "activation" else None
    scores = width_scores(model, group, cfg.importance, calib)
    model.zero_grad(set_to_none=True)
    return group, scores


def _prune_heads(model: nn.Module, cfg: StructuredPruneConfig, ratio: float, scores: Scores, record: bool) -> int:
    """Remove heads of every scored attention layer (explicit map or ``ratio``); returns heads removed."""
    atts = find_attentions(model)
    removed = 0
    plan = {}
    for path, sc in scores.items():
        a = atts[path]
        plan[path] = heads_from_map(a, list(cfg.heads[path])) if cfg.heads is not None else heads_for_ratio(a, sc, ratio, cfg.gqa)
    for path, (q, kv) in plan.items():
        if not q:
            continue
        remove_heads(atts[path], q, kv)
        removed += len(q)
        if record:
            record_edit(model, {"op": "prune_heads", "attention": path, "query_heads": q, "kv_heads": kv})
    return removed


def _prune_width(model: nn.Module, cfg: StructuredPruneConfig, ratio: float, scores: Scores, example: Any,
                 record: bool) -> int:
    """Remove the least important hidden dimensions from the whole residual stream; returns how many."""
    group, score = scores
    idxs = units_to_prune(score, ratio, cfg.round_to)
    if not idxs:
        return 0
    new = apply_width(model, group.dims, group.tied, idxs, group.hidden)
    try:
        with torch.no_grad():
            call_model(model, example)
    except RuntimeError as exc:
        raise UnsupportedModelError(f"{type(model).__name__}: after shrinking the hidden size {group.hidden} -> {new} the "
                                    f"forward fails; a module coupled to the residual stream was not found: {exc}") from None
    if record:
        record_edit(model, {"op": "prune_width", "dims": [list(d) for d in group.dims],
                            "tied": [list(t) for t in group.tied], "removed": idxs,
                            "hidden_size": [group.hidden, new], "hf_config_before": {"hidden_size": group.hidden}})
    return len(idxs)


def _accumulate_grads(model: nn.Module, batches: list[Any]) -> None:
    """``∂L/∂w`` summed over up to 8 training batches (Taylor importance reads ``.grad``)."""
    from slimkit.prune.gradual.api import gradual_loss

    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for batch in batches[:8]:
            gradual_loss(model, batch).backward()


def _prune_model(model: nn.Module, cfg: StructuredPruneConfig, ratio: float, scores: Scores,
                 example: Any, record: bool, keep: dict[str, int] | None = None) -> int:
    """Prune every candidate group of ``model`` to ``ratio`` (or to ``keep`` units per group root,
    from latency allocation); returns the units removed."""
    if cfg.granularity == "head":
        return _prune_heads(model, cfg, ratio, scores, record)
    if cfg.granularity == "layer_width":
        return _prune_width(model, cfg, ratio, scores, example, record)
    names = {m: n for n, m in model.named_modules()}
    DG = build_graph(model, example)
    cands = candidate_groups(model, DG, cfg.granularity, _ignored(model, cfg))
    ratios = group_ratios(scores, [names[r] for r, _, _ in cands], ratio, cfg.allocation)
    removed = 0
    for root, fn, _ in cands:
        g = names[root]
        idxs = lowest_units(scores[g], keep[g]) if keep is not None else units_to_prune(scores[g], ratios[g], cfg.round_to)
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


def _latency_widths(model: nn.Module, cfg: StructuredPruneConfig, scores: Scores, example: Any,
                    ctx: RunContext) -> dict[str, int]:
    """Kept units per group from the latency table (built or read from the cache) and the greedy cut."""
    DG = build_graph(model, example)
    groups = channel_groups(model, DG, candidate_groups(model, DG, cfg.granularity, _ignored(model, cfg)))
    start = time.perf_counter()
    table = build_latency_table(model, example, groups, round_to=cfg.round_to, runtime=cfg.latency_runtime,
                                threads=cfg.latency_threads)
    alloc = allocate_latency(table, scores, float(cfg.target_latency or 0.0), cfg.round_to)
    measured = sum(t.measured for t in table.layers)
    ctx.note("latency_table", {"layers": len(table.layers), "measured": measured, "from_cache": len(table.layers) - measured,
                               "seconds": round(time.perf_counter() - start, 1), "runtime": table.runtime,
                               "threads": table.threads, "dense_predicted_ms": round(table.predict({}), 3)})
    ctx.note("latency_predicted_ratio", round(alloc.predicted_ratio, 4))
    ctx.note("kept_widths", {g: [w, table.full[g]] for g, w in alloc.widths.items()})
    if not alloc.reached:
        ctx.note("target_latency_missed", f"no further {cfg.granularity} cut saves time in the latency table: predicted "
                                          f"{alloc.predicted_ratio:.3f} of dense, above target_latency {cfg.target_latency}")
    return alloc.widths


def _note_head_policy(model: nn.Module, cfg: StructuredPruneConfig, ctx: RunContext) -> None:
    """Say what happened to the output head / embeddings (``layer_width`` resizes them by design)."""
    if cfg.granularity == "layer_width":
        resized = sorted(protected_names(model))
        if resized:
            ctx.note("head_embeddings_resized", resized)  # the hidden size is one group with them
        return
    kept = sorted(_kept_by_default(model, cfg))
    if kept and cfg.granularity != "head":
        ctx.note("head_embeddings_kept", kept)  # their groups stay whole unless targets names them


@register("prune", "structured", StructuredPruneConfig)
def prune_structured(model: nn.Module, cfg: StructuredPruneConfig, ctx: RunContext) -> nn.Module:
    """Remove the least important units of every prunable group; the module physically shrinks."""
    example = _example(ctx)
    model.eval()
    dense_macs = count_macs(model, example)
    scores = _group_scores(model, cfg, ctx, example)
    keep = _latency_widths(model, cfg, scores, example, ctx) if cfg.allocation == "latency" else None
    if cfg.target_macs is not None:
        ratio = _ratio_for_macs(model, cfg, scores, example, dense_macs)
    else:
        ratio = cfg.sparsity if cfg.sparsity is not None else 0.0  # 0.0: explicit heads map / latency widths
    removed = _prune_model(model, cfg, ratio, scores, example, record=True, keep=keep)
    _note_head_policy(model, cfg, ctx)
    ctx.note("groups", 1 if cfg.granularity == "layer_width" else len(scores))
    if cfg.granularity == "head":
        atts = find_attentions(model)
        ctx.note("heads_kept", {p: atts[p].n_q for p in scores})
    if cfg.allocation != "latency":
        ctx.note("group_ratio" if cfg.allocation == "uniform" else "global_cut", round(ratio, 4))
    if cfg.allocation == "global":
        ctx.note("group_ratios", {g: round(r, 4) for g, r in group_ratios(scores, list(scores), ratio, "global").items()})
    ctx.note("units_removed", removed)
    kept = count_macs(model, example) / dense_macs
    ctx.note("macs_kept", round(kept, 4))
    if cfg.target_macs is not None and kept > cfg.target_macs + 0.01:
        ctx.note("target_macs_missed", f"{cfg.granularity} pruning alone keeps {kept:.3f} of the MACs at most here, "
                                       f"above target_macs {cfg.target_macs}")
    return model
