"""Sparsity levels for ``search`` over ``prune: {method: sparsegpt | wanda | magnitude}``.

Each selected layer gets a grid of sparsities around its target, ``target + j * h`` for
``j = -levels .. levels`` (clipped to [0, 0.95]), ``h`` being ``level_step`` rounded so that every
level prunes exactly the same number of extra weights (:func:`sparsity_grid`); the recipe stores
the same floats, so it replays the exact same counts. The level database is built ONCE,
block by block (one block's statistics in memory at a time) from the inputs that the earlier
blocks give at their uniform level (``database: sequential``, as the wrapped step itself runs), or
EvoPress-style from the *dense* model's inputs (``database: dense``), with the wrapped method's
own math (SparseGPT's OBS sweep with weight reconstruction, Wanda's per-row ``|W|·‖X‖`` masks,
magnitude's per-layer masks).

Cost = the layer's nonzero weights at that level (counted on the level's weights), so the budget
is the uniform step's exact total of nonzeros. Layers of the same shape share a grid with equal
cost steps, and a level switch moves sparsity between them; so do layers of equal size (a Llama's
gate/up/down projections), since every pruner prunes exactly ``round(s · numel)`` weights.

Storage (``level_storage``): levels are kept as float16 (bfloat16/float16 models: their own dtype)
in memory, or spilled to a temporary directory of safetensors files read back memory-mapped
(``auto``: disk when the database exceeds ``memory_limit_mb``). The original weights are kept
exactly (their dtype) so :meth:`PruneLevelSpace.restore` is exact.
"""
from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError, UnsupportedModelError
from slimkit.core.inputs import call_model
from slimkit.core.sequential import no_cache, run_blocks
from slimkit.prune.calibrated import selected_linears
from slimkit.prune.importance import InputNormStats, MagnitudeImportance, WandaImportance
from slimkit.prune.magnitude.api import _layers as magnitude_layers
from slimkit.prune.magnitude.core import layer_mask
from slimkit.prune.sparsegpt.core import HessianStats, sparsegpt_prune
from slimkit.prune.sparsity import layer_sparsities
from slimkit.prune.wanda.core import row_mask
from slimkit.search.space import SpaceOptions, register_space

__all__ = ["PruneLevelSpace", "prune_space", "sparsity_grid", "MAX_SPARSITY", "DEFAULT_LEVELS", "DEFAULT_STEP"]

MAX_SPARSITY = 0.95
DEFAULT_LEVELS = 4
DEFAULT_STEP = 0.05


def sparsity_grid(target: float, levels: int, step: float, granularity: int) -> tuple[list[float], int]:
    """Sparsities ``target + j·h`` (``j = -levels .. levels``) inside [0, MAX_SPARSITY], ascending, and
    the target's index. ``h`` is ``step`` rounded to a multiple of ``1 / granularity``, the finest
    change that moves every rounded count of the method by a whole number (see :func:`granularity`),
    so each level prunes exactly the same number of extra weights: equal cost steps between
    same-shaped layers, which is what budget-keeping level switches need."""
    h = max(round(step * granularity), 1) / granularity
    grid = [target + j * h for j in range(-levels, levels + 1)]
    inside = [s for j, s in enumerate(grid, -levels) if j == 0 or 0.0 <= s <= MAX_SPARSITY]
    return inside, inside.index(target)


def granularity(weight: torch.Tensor) -> int:
    """``G`` such that adding a multiple of ``1/G`` to a sparsity adds a whole number of pruned
    weights: every unstructured pruner prunes exactly ``round(s · numel)`` of a layer (Wanda spreads
    it over rows, SparseGPT over column blocks), so ``G = numel``."""
    return weight.numel()


def _layers(model: nn.Module, step: Any, ctx: RunContext) -> list[tuple[str, nn.Module]]:
    """The wrapped step's layers, selected by its handler's own function (targets / ignore / head
    rules exactly as ``prune`` applies them); their start sparsities come from the same resolver
    (:func:`slimkit.prune.sparsity.layer_sparsities` over :mod:`slimkit.core.per_layer`)."""
    cfg = step.config
    if getattr(cfg, "pattern", None) is not None:
        raise ConfigError(f"step.prune.pattern = {cfg.pattern!r}: an N:M pattern has no sparsity levels to search; "
                          f"search unstructured pruning (pattern: null)")
    if getattr(cfg, "allocation", "uniform") != "uniform":
        raise ConfigError(f"step.prune.allocation = {cfg.allocation!r}: the search starts from the step as written; "
                          f"use allocation: uniform, or OWL's resolved per-layer map as sparsity")
    if step.method == "magnitude" and cfg.scope != "layer":
        raise ConfigError(f"step.prune.scope = {cfg.scope!r}: search needs per-layer sparsity (scope: layer)")
    # the prune handlers' own selection, so the search and the step it writes choose the same layers
    return magnitude_layers(model, cfg, ctx) if step.method == "magnitude" else selected_linears(model, cfg, ctx)


class PruneLevelSpace:
    """Level space over per-layer sparsity (see the module docstring)."""

    value_name = "sparsity"

    def __init__(self, step: Any, names: list[str], grids: list[list[float]], uniform: list[int],
                 storage: "_LevelStore", originals: dict[str, torch.Tensor]) -> None:
        self.step, self.units, self.grids, self._uniform = step, names, grids, uniform
        self.n_levels = [len(g) for g in grids]
        self.store, self.originals = storage, originals
        self.costs = [[storage.nonzeros[(u, lvl)] for lvl in range(len(g))] for u, g in enumerate(grids)]
        self._current: dict[int, int | None] = {}

    def cost(self, unit: int, level: int) -> int:
        return self.costs[unit][level]

    def budget(self) -> int:
        return sum(self.cost(u, lvl) for u, lvl in enumerate(self._uniform))

    def uniform(self) -> list[int]:
        return list(self._uniform)

    def values(self, assignment: Sequence[int]) -> list[float]:
        return [self.grids[u][int(lvl)] for u, lvl in enumerate(assignment)]

    def apply(self, model: nn.Module, assignment: Sequence[int]) -> None:
        with torch.no_grad():
            for u, lvl in enumerate(assignment):
                if self._current.get(u) == int(lvl):
                    continue
                weight = model.get_submodule(self.units[u]).weight
                weight.copy_(self.store.get(u, int(lvl)).to(weight.dtype))
                self._current[u] = int(lvl)

    def restore(self, model: nn.Module) -> None:
        with torch.no_grad():
            for name, original in self.originals.items():
                model.get_submodule(name).weight.copy_(original)
        self._current = {}

    def to_step(self, assignment: Sequence[int]) -> dict[str, Any]:
        (name, options), = self.step.to_dict().items()
        return {name: {**options, "sparsity": dict(zip(self.units, self.values(assignment)))}}

    def close(self) -> None:
        self.store.close()


class _LevelStore:
    """Level weights in memory or in a temporary directory of safetensors files (memory-mapped)."""

    def __init__(self, on_disk: bool) -> None:
        self.on_disk = on_disk
        self.memory: dict[tuple[int, int], torch.Tensor] = {}
        self.nonzeros: dict[tuple[int, int], int] = {}
        self.dir = tempfile.TemporaryDirectory(prefix="slimkit-levels-") if on_disk else None
        self.bytes = 0

    def put(self, unit: int, levels: list[torch.Tensor], dtype: torch.dtype) -> None:
        stored = [w.to(dtype).contiguous() for w in levels]
        for lvl, w in enumerate(stored):
            self.nonzeros[(unit, lvl)] = int(torch.count_nonzero(levels[lvl]))
            self.bytes += w.numel() * w.element_size()
        if self.dir is None:
            self.memory.update({(unit, lvl): w for lvl, w in enumerate(stored)})
            return
        from safetensors.torch import save_file

        save_file({str(lvl): w for lvl, w in enumerate(stored)}, str(Path(self.dir.name) / f"{unit}.safetensors"))

    def get(self, unit: int, level: int) -> torch.Tensor:
        if self.dir is None:
            return self.memory[(unit, level)]
        from safetensors import safe_open

        with safe_open(str(Path(self.dir.name) / f"{unit}.safetensors"), framework="pt") as f:
            return f.get_tensor(str(level))

    def close(self) -> None:
        self.memory.clear()
        if self.dir is not None:
            self.dir.cleanup()
            self.dir = None


def _level_weights(method: str, module: nn.Module, name: str, stats: Any, grid: list[float], cfg: Any) -> list[torch.Tensor]:
    """The layer's weight at every sparsity of ``grid``, computed from the dense weight."""
    w = module.weight.detach()
    if method == "sparsegpt":
        try:
            return [sparsegpt_prune(w, stats.H, s, None, cfg.blocksize, cfg.percdamp) for s in grid]
        except torch.linalg.LinAlgError as exc:
            raise UnsupportedModelError(f"layer {name!r}: SparseGPT Hessian factorisation failed ({exc})") from None
    if method == "wanda":
        scores = WandaImportance({name: stats})(name, module)
        return [w * row_mask(scores, s).to(w.dtype) for s in grid]
    scores = MagnitudeImportance()(name, module)
    return [w * layer_mask(scores, s).to(w.dtype) for s in grid]


def _storage_dtype(weight: torch.Tensor) -> torch.dtype:
    if weight.dtype in (torch.float16, torch.bfloat16):
        return weight.dtype
    return torch.float16 if float(weight.detach().abs().max()) < 6e4 else torch.float32


@register_space("prune", ("sparsegpt", "wanda", "magnitude"))
def prune_space(model: nn.Module, step: Any, ctx: RunContext, options: SpaceOptions) -> PruneLevelSpace:
    """Build the level database of every selected layer (see the module docstring)."""
    levels = DEFAULT_LEVELS if options.levels is None else options.levels
    if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= 50:
        raise ConfigError(f"levels = {levels!r}: for prune, the number of levels on each side of the target, "
                          f"an integer in [1, 50]")
    step_size = DEFAULT_STEP if options.level_step is None else float(options.level_step)
    layers = _layers(model, step, ctx)
    names = [n for n, _ in layers]
    targets = layer_sparsities(step.config.sparsity, layers, ctx)
    grids, uniform = zip(*(sparsity_grid(targets[n], levels, step_size, granularity(m.weight)) for n, m in layers))
    weight_bytes = sum(len(g) * m.weight.numel() * 2 for g, (_, m) in zip(grids, layers))
    on_disk = options.storage == "disk" or (options.storage == "auto" and weight_bytes > options.memory_limit_mb * 2**20)
    store = _LevelStore(on_disk)
    originals = {n: m.weight.detach().clone() for n, m in layers}
    index = {n: i for i, n in enumerate(names)}

    def build(name: str, module: nn.Module, stats: Any) -> None:
        u = index[name]
        weights = _level_weights(step.method, module, name, stats, grids[u], step.config)
        store.put(u, weights, _storage_dtype(module.weight))
        if options.database == "sequential":  # later blocks see this layer at its uniform level
            with torch.no_grad():
                module.weight.copy_(weights[uniform[u]])

    try:
        if step.method == "magnitude":
            for name, module in layers:
                build(name, module, None)
        else:
            calib = options.calibration(ctx)
            make = (lambda n, m: HessianStats(m.in_features)) if step.method == "sparsegpt" else (
                lambda n, m: InputNormStats(m.in_features))
            _block_stats(model, layers, calib, make, build, ctx)
    finally:
        with torch.no_grad():  # the database leaves the model as it found it
            for n, m in layers:
                m.weight.copy_(originals[n])
    return PruneLevelSpace(step, names, [list(g) for g in grids], list(uniform), store, originals)


def _block_stats(model: nn.Module, layers: list[tuple[str, nn.Module]], calib: list[Any], make: Any,
                 build: Any, ctx: RunContext) -> None:
    """Statistics of every layer on the model's activations, block by block; ``build`` is called per
    layer before the block's outputs become the next block's inputs (a ``build`` that changes the
    layer, as the sequential database does, changes what later blocks see)."""
    pending = dict(layers)

    def visit(block_name: str, _block: nn.Module, replay: Any) -> None:
        prefix = f"{block_name}." if block_name else ""
        mine = {n: m for n, m in pending.items() if n.startswith(prefix)}
        if not mine:
            return
        stats = {n: make(n, m) for n, m in mine.items()}
        handles = [m.register_forward_hook(lambda mod, inp, out, s=stats[n]: s.add(mod, inp[0].detach(), out.detach()))
                   for n, m in mine.items()]
        try:
            replay()
        finally:
            for h in handles:
                h.remove()
        for n, m in mine.items():
            build(n, m, stats.pop(n))
            del pending[n]

    batches = list(calib)
    run_blocks(model, batches, visit, ctx.progress if ctx.show_progress else None)
    if pending:
        with torch.no_grad():
            visit("", model, lambda: [call_model(model, no_cache(model, b)) for b in batches])
