"""Math of structured pruning on Torch-Pruning's dependency graph: groups, scores, kept counts.

A *group* is the set of coupled dimensions that must shrink together (a conv's filters, its
BatchNorm, the next conv's input channels, every conv on the other side of a residual add, ...).
Torch-Pruning traces the model once to find them. slimkit adds: which groups a granularity may
touch, how many units to keep (``round_to``), and a record of every sliced module dimension so the
same slicing replays onto a fresh base model (see :mod:`slimkit.prune.structured.edits`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from slimkit.core.inputs import call_model, output_tensor
from slimkit.core.sequential import no_cache

__all__ = ["build_graph", "candidate_groups", "units_to_prune", "lowest_units", "group_ratios", "prune_group",
           "group_modules"]

_ATTENTION_WORDS = ("attn", "attention")


def build_graph(model: nn.Module, example_inputs: Any) -> tp.DependencyGraph:
    """Trace ``model`` on ``example_inputs`` (tensor / tuple / dict) into a dependency graph."""
    return tp.DependencyGraph().build_dependency(
        model, example_inputs=example_inputs,
        forward_fn=lambda m, x: call_model(m, no_cache(m, x)),  # a KV cache's concat confuses the graph
        output_transform=lambda out: output_tensor(out),
        verbose=False,
    )


def group_modules(group: Any, names: dict[nn.Module, str]) -> list[tuple[str, str, list[int]]]:
    """``(module path, handler name, indices)`` for every real module dimension a group slices."""
    out = []
    for dep, idxs in group:
        module = dep.target.module
        if module in names:
            plain = [int(i.idx) if hasattr(i, "idx") else int(i) for i in idxs]
            out.append((names[module], dep.handler.__name__, plain))
    return out


def _allowed(granularity: str, members: list[tuple[str, str, list[int]]], model: nn.Module) -> bool:
    """Whether a group fits the granularity and its units are consumed inside the model."""
    if not any(h == "prune_in_channels" for _, h, _ in members):
        return False  # nothing reads these units: they are the model's output (classifier, pooler)
    mods = [model.get_submodule(n) for n, _, _ in members]
    if granularity == "neuron":
        if not all(isinstance(m, nn.Linear) for m in mods):
            return False  # the residual stream (norms, embeddings) is layer_width, not neurons
        return not any(w in n.lower() for n, _, _ in members for w in _ATTENTION_WORDS)
    return all(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.modules.batchnorm._BatchNorm, nn.Linear))
               for m in mods) and any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in mods)


def candidate_groups(model: nn.Module, DG: tp.DependencyGraph, granularity: str,
                     ignored: list[nn.Module]) -> list[tuple[nn.Module, Callable, int]]:
    """``(root module, pruning fn, units)`` of every group the granularity may shrink."""
    names = {m: n for n, m in model.named_modules()}
    roots = (nn.Conv1d, nn.Conv2d, nn.Conv3d) if granularity == "channel" else (nn.Linear,)
    skip = set(ignored)
    seen: set[tuple[str, str]] = set()
    found = []
    for name, module in model.named_modules():
        if not isinstance(module, roots) or module in skip or (name, "prune_out_channels") in seen:
            continue
        if module not in DG.module2node:
            continue  # not reached by the traced forward pass (unused on these inputs): left as is
        if granularity == "neuron" and any(w in name.lower() for w in _ATTENTION_WORDS):
            continue  # attention projections are coupled through heads (tracing them also explodes)
        fn = DG.get_pruner_of_module(module).prune_out_channels
        n = DG.get_out_channels(module)
        group = DG.get_pruning_group(module, fn, list(range(n)))
        members = group_modules(group, names)
        seen.update((p, h) for p, h, _ in members)
        if any(model.get_submodule(p) in skip for p, _, _ in members):
            continue
        if members and _allowed(granularity, members, model):
            found.append((module, fn, n))
    return found


def units_to_prune(scores: torch.Tensor, ratio: float, round_to: int) -> list[int]:
    """Indices of the lowest scores to remove so that ``~(1-ratio)`` units stay, a multiple of ``round_to``."""
    n = scores.numel()
    keep = int(round(n * (1.0 - ratio)))
    if round_to > 1:
        keep = max(round_to, round_to * int(round(keep / round_to)))
    keep = min(max(keep, 1), n)
    if keep == n:
        return []
    return sorted(torch.topk(scores.float(), n - keep, largest=False).indices.tolist())


def lowest_units(scores: torch.Tensor, keep: int) -> list[int]:
    """Indices of the ``numel - keep`` lowest scores (the units to remove so that ``keep`` stay)."""
    n = scores.numel()
    keep = min(max(keep, 1), n)
    if keep == n:
        return []
    return sorted(torch.topk(scores.float(), n - keep, largest=False).indices.tolist())


#: no group loses more than this fraction under global allocation (a layer cut to nothing breaks)
MAX_GROUP_RATIO = 0.9


def group_ratios(scores: dict[str, torch.Tensor], groups: list[str], ratio: float, allocation: str) -> dict[str, float]:
    """Fraction of units to remove from each group.

    ``uniform``: ``ratio`` everywhere. ``global``: scores are divided by their group's mean (so
    layers of different scale compare), the ``ratio`` quantile of all of them is the cut, and each
    group removes its units below the cut (at most :data:`MAX_GROUP_RATIO`).
    """
    if allocation == "uniform" or not groups:
        return {g: ratio for g in groups}
    norm = {g: scores[g].float() / scores[g].float().mean().clamp_min(1e-12) for g in groups}
    every = torch.cat([norm[g] for g in groups])
    cut = torch.quantile(every, min(max(ratio, 0.0), 1.0)) if ratio > 0 else every.min() - 1
    return {g: min(float((norm[g] < cut).float().mean()), MAX_GROUP_RATIO) for g in groups}


def prune_group(DG: tp.DependencyGraph, root: nn.Module, fn: Callable, idxs: list[int],
                names: dict[nn.Module, str]) -> list[tuple[str, str, list[int]]]:
    """Prune ``idxs`` of a group in place; returns the sliced module dimensions for replay."""
    group = DG.get_pruning_group(root, fn, idxs)
    members = group_modules(group, names)
    group.prune(record_history=False)
    return members
