"""``search: {method: evolution}`` handler: build the level space and the reference outputs, evolve,
then run the wrapped step normally with the found per-layer map and record it in the recipe."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError
from slimkit.core.recipe import Recipe
from slimkit.core.registry import register
from slimkit.search.evolution.config import EvolutionSearchConfig
from slimkit.search.evolution.core import CostTable, EvolutionOutcome, GenerationRecord, evolve, peak_rss_mb
from slimkit.search.fitness import OutputDivergence
from slimkit.search.space import LevelSpace, SpaceOptions, space_factory

__all__ = ["search_evolution", "generation_seconds"]


@register("search", "evolution", EvolutionSearchConfig, needs=("calib",))
def search_evolution(model: nn.Module, cfg: EvolutionSearchConfig, ctx: RunContext) -> nn.Module:
    """Search per-layer levels of ``cfg.step`` under its exact budget; return the model the wrapped
    step makes with them (the result's recipe holds that step, see ``RunContext.replace_step``)."""
    start = time.perf_counter()
    deadline = start + cfg.budget_s if cfg.budget_s is not None else None
    wrapped = cfg.wrapped_step()
    database_calib, fitness_calib = cfg.split_calibration(list(ctx.require("calib", "search")))
    fitness = OutputDivergence(model, fitness_calib, cfg.pool_tokens(), cfg.fitness)
    options = SpaceOptions(levels=cfg.levels, level_step=cfg.level_step, calib=database_calib, seed=cfg.seed,
                           progress=ctx.show_progress, storage=cfg.level_storage, memory_limit_mb=cfg.memory_limit_mb,
                           database=cfg.database)
    space = space_factory(wrapped.name, wrapped.method)(model, wrapped, ctx, options)
    try:
        fitness.apply = lambda a: space.apply(model, a)
        costs = CostTable([[space.cost(u, lvl) for lvl in range(n)] for u, n in enumerate(space.n_levels)])
        _check_budget(space, costs)
        check = _first_evaluation(fitness, space, cfg, start)
        with _progress_bar(ctx, cfg) as on_generation:
            outcome = evolve(space.uniform(), costs, fitness, generations=cfg.generations, offspring=cfg.offspring,
                             selection=cfg.selection, rng=np.random.default_rng(cfg.seed), deadline=deadline,
                             on_generation=on_generation)
        search_seconds = time.perf_counter() - start
        searched = fitness.score(outcome.best, check["sample"])
        space.restore(model)
        found = space.to_step(outcome.best)
        _note(ctx, cfg, space, costs, fitness, outcome, check, searched, search_seconds)
    finally:
        space.close()
    return _run_found(model, found, ctx)


def generation_seconds(per_token_s: float, cfg: EvolutionSearchConfig, available: int) -> float:
    """Estimated wall seconds of one generation: every stage's evaluations times its tokens."""
    pool, total = cfg.offspring, 0.0
    for k, (survivors, tokens) in enumerate(cfg.selection):
        pool += 1 if k == len(cfg.selection) - 1 else 0
        total += pool * min(int(tokens), available) * per_token_s
        pool = int(survivors)
    return total


def _check_budget(space: LevelSpace, costs: CostTable) -> None:
    uniform = costs.total(space.uniform())
    if uniform != space.budget():  # a level space that disagrees with itself is a bug, never user input
        raise RuntimeError(f"level space budget {space.budget()} != cost of its uniform assignment {uniform}")


def _first_evaluation(fitness: OutputDivergence, space: LevelSpace, cfg: EvolutionSearchConfig, start: float) -> dict[str, Any]:
    """Score the uniform assignment on the last stage's tokens (the baseline the report compares
    with) and, from its time, refuse a ``budget_s`` too small for one generation."""
    tokens = min(int(cfg.selection[-1][1]), fitness.available_tokens)
    sample = fitness.sample(np.random.default_rng([cfg.seed, 1]), tokens)
    began = time.perf_counter()
    uniform = fitness.score(space.uniform(), sample)
    per_token = (time.perf_counter() - began) / max(tokens, 1)
    estimate = generation_seconds(per_token, cfg, fitness.available_tokens)
    elapsed = time.perf_counter() - start
    if cfg.budget_s is not None and elapsed + estimate > cfg.budget_s:
        raise ConfigError(f"budget_s = {cfg.budget_s!r} is too small for one generation: building the levels and "
                          f"reference took {elapsed:.1f} s and one generation is estimated at {estimate:.1f} s; "
                          f"give at least {elapsed + estimate:.1f} s, or fewer offspring / tokens")
    return {"sample": sample, "tokens": tokens, "uniform": uniform, "per_token_s": per_token}


@contextlib.contextmanager
def _progress_bar(ctx: RunContext, cfg: EvolutionSearchConfig) -> Iterator[Any]:
    """A rich progress bar of generations with the best fitness (nothing when progress is off)."""
    if not ctx.show_progress:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("search generation"), BarColumn(), MofNCompleteColumn(),
               TextColumn("best fitness {task.fields[best]}"), TimeElapsedColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("search", total=cfg.generations, best="-")

        def update(record: GenerationRecord) -> None:
            bar.update(task, completed=record.generation, best=f"{record.best_fitness:.5g}")

        yield update


def _note(ctx: RunContext, cfg: EvolutionSearchConfig, space: LevelSpace, costs: CostTable, fitness: OutputDivergence,
          outcome: EvolutionOutcome, check: dict[str, Any], searched: float, seconds: float) -> None:
    """Everything the report shows about the search (and the plot draws)."""
    store = getattr(space, "store", None)
    ctx.note("search", {
        "wrapped": cfg.step, "units": list(space.units), "value_name": space.value_name,
        "budget": space.budget(), "budget_found": costs.total(outcome.best),
        "uniform": space.values(space.uniform()), "allocation": dict(zip(space.units, space.values(outcome.best))),
        "generations": [{"generation": r.generation, "best_fitness": r.best_fitness, "trials": r.trials,
                         "seconds": round(r.seconds, 4), "peak_rss_mb": round(r.peak_rss_mb, 1),
                         "allocation": [round(v, 6) for v in space.values(r.assignment)]} for r in outcome.history],
        "trials": outcome.trials, "stopped_by": outcome.stopped_by, "search_seconds": round(seconds, 3),
        "budget_s": cfg.budget_s, "fitness": fitness.kind, "check_tokens": check["tokens"],
        "fitness_holdout": cfg.fitness_holdout, "fitness_tokens": fitness.available_tokens, "database": cfg.database,
        "uniform_fitness": check["uniform"], "searched_fitness": searched,
        "fitness_improvement": (check["uniform"] / searched) if searched > 0 else None,
        "level_storage": ("disk" if store.on_disk else "memory") if store is not None else None,
        "level_database_mb": round(store.bytes / 2**20, 2) if store is not None else None,
        "reference_mb": round(fitness.reference_bytes() / 2**20, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
    })


def _run_found(model: nn.Module, found: dict[str, Any], ctx: RunContext) -> nn.Module:
    """Run the found step with its registered handler, exactly as a recipe would, and record it."""
    step = Recipe.from_dict([found]).steps[0]
    began = time.perf_counter()
    out = step.spec.handler(model, step.config, ctx)
    ctx.notes["search"]["final_run_seconds"] = round(time.perf_counter() - began, 3)
    unique = {(s["layer"], s["reason"]): s for s in ctx.skipped}
    ctx.skipped[:] = list(unique.values())  # the level space and the final run report the same skipped heads
    ctx.replace_step(found)
    return out if out is not None else model
