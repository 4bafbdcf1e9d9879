"""The evolutionary search itself (EvoPress, Sieberling et al. 2025), independent of models.

A (1 + λ) evolution over level assignments: each generation makes ``offspring`` children of the
parent by *level switches* (one unit one level up, another one level down, with exactly opposite
cost changes, so every child has the parent's budget), then a multi-step selection scores the pool
on a few calibration tokens, keeps the best, scores the survivors on more tokens, and so on; the
parent joins the last stage (elitism), whose single survivor becomes the next parent.

The fitness is a :class:`Fitness`: ``sample(rng, tokens)`` draws the calibration tokens of one
stage, ``score(assignment, sample)`` returns a loss (lower is better). Stopping: ``generations``,
the wall-clock ``deadline`` (checked before every evaluation, so the search stops within one
evaluation of it) or ``KeyboardInterrupt`` (Ctrl-C); each keeps the best assignment found so far.
"""
from __future__ import annotations

import dataclasses
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from slimkit.core.errors import UnsupportedModelError

__all__ = ["Fitness", "GenerationRecord", "EvolutionOutcome", "CostTable", "evolve", "make_offspring",
           "peak_rss_mb"]


class Fitness(Protocol):
    def sample(self, rng: np.random.Generator, tokens: int) -> Any: ...

    def score(self, assignment: Sequence[int], sample: Any) -> float: ...


@dataclasses.dataclass
class GenerationRecord:
    """One generation for the report: the parent's fitness on the last stage's tokens."""

    generation: int
    best_fitness: float
    trials: int
    seconds: float
    peak_rss_mb: float
    assignment: list[int]


@dataclasses.dataclass
class EvolutionOutcome:
    best: list[int]
    best_fitness: float | None
    history: list[GenerationRecord]
    trials: int
    stopped_by: str  # "generations" | "budget_s" | "interrupted"


class _OutOfTime(Exception):
    pass


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class CostTable:
    """Per-unit level costs as an array (``-1`` past a unit's last level) for fast level switches."""

    def __init__(self, costs: Sequence[Sequence[int]]) -> None:
        width = max(len(c) for c in costs)
        self.n_levels = np.array([len(c) for c in costs], dtype=np.int64)
        self.table = np.full((len(costs), width), -1, dtype=np.int64)
        for u, c in enumerate(costs):
            self.table[u, :len(c)] = c

    def total(self, assignment: Sequence[int]) -> int:
        return int(self.table[np.arange(len(assignment)), np.asarray(assignment)].sum())

    def deltas(self, assignment: np.ndarray, direction: int) -> np.ndarray:
        """Cost change of moving each unit one level in ``direction``; NaN-free: impossible moves get None mask."""
        target = assignment + direction
        ok = (target >= 0) & (target < self.n_levels)
        rows = np.arange(len(assignment))
        delta = np.zeros(len(assignment), dtype=np.int64)
        delta[ok] = self.table[rows[ok], target[ok]] - self.table[rows[ok], assignment[ok]]
        return np.where(ok, delta, np.iinfo(np.int64).min)


def _switch(child: np.ndarray, costs: CostTable, rng: np.random.Generator) -> bool:
    """One level switch in place: a random unit moves a level, a partner with the exactly opposite
    cost change moves the other way. False when the drawn unit has no such partner."""
    unit = int(rng.integers(len(child)))
    direction = int(rng.choice((-1, 1)))
    moves = costs.deltas(child, direction)
    if moves[unit] == np.iinfo(np.int64).min:
        return False
    need = -moves[unit]
    partners = [(j, e) for e in (-1, 1) for j in np.flatnonzero(costs.deltas(child, e) == need) if j != unit]
    if not partners:
        return False
    j, e = partners[int(rng.integers(len(partners)))]
    child[unit] += direction
    child[j] += e
    return True


def make_offspring(parent: Sequence[int], costs: CostTable, rng: np.random.Generator, count: int) -> list[list[int]]:
    """Up to ``count`` distinct children of ``parent``, each 1-3 level switches away (fewer more
    likely, as EvoPress: ``min`` of two uniform draws), all with the parent's exact total cost."""
    budget = costs.total(parent)
    seen = {tuple(parent)}
    kids: list[list[int]] = []
    for _ in range(50 * count):
        if len(kids) == count:
            break
        child = np.array(parent, dtype=np.int64)
        flips = min(int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        for _ in range(flips):
            _switch(child, costs, rng)
        key = tuple(int(v) for v in child)
        if key in seen:
            continue
        if costs.total(key) != budget:  # cannot happen: every switch is cost-neutral
            raise RuntimeError(f"level switch broke the budget: {costs.total(key)} != {budget}")
        seen.add(key)
        kids.append(list(key))
    return kids


def evolve(
    start: Sequence[int],
    costs: CostTable,
    fitness: Fitness,
    *,
    generations: int,
    offspring: int,
    selection: Sequence[Sequence[int]],
    rng: np.random.Generator,
    deadline: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
    on_generation: Callable[[GenerationRecord], None] | None = None,
) -> EvolutionOutcome:
    """Run the search from ``start`` (the uniform assignment); see the module docstring."""
    state = _State(parent=list(start), clock=clock, deadline=deadline)
    stopped_by = "generations"
    try:
        for gen in range(generations):
            began = clock()
            kids = make_offspring(state.parent, costs, rng, offspring)
            if not kids:
                raise UnsupportedModelError(
                    "no budget-preserving level switch exists from the uniform assignment: no two units "
                    "have levels with equal and opposite cost steps")
            best, fit = _select(kids, state, fitness, selection, rng)
            state.parent, state.fitness = best, fit
            record = GenerationRecord(gen + 1, fit, state.trials, clock() - began, peak_rss_mb(), list(best))
            state.history.append(record)
            if on_generation is not None:
                on_generation(record)
    except _OutOfTime:
        stopped_by = "budget_s"
    except KeyboardInterrupt:
        stopped_by = "interrupted"
    return EvolutionOutcome(state.parent, state.fitness, state.history, state.trials, stopped_by)


@dataclasses.dataclass
class _State:
    parent: list[int]
    clock: Callable[[], float]
    deadline: float | None
    fitness: float | None = None
    trials: int = 0
    history: list[GenerationRecord] = dataclasses.field(default_factory=list)

    def score(self, fitness: Fitness, assignment: list[int], sample: Any) -> float:
        if self.deadline is not None and self.clock() >= self.deadline:
            raise _OutOfTime
        self.trials += 1
        return float(fitness.score(assignment, sample))


def _select(kids: list[list[int]], state: _State, fitness: Fitness, selection: Sequence[Sequence[int]],
            rng: np.random.Generator) -> tuple[list[int], float]:
    """Multi-step selection; the parent joins the last stage. Returns the survivor and its fitness."""
    pool, scores = kids, []
    for k, (survivors, tokens) in enumerate(selection):
        if k == len(selection) - 1 and state.parent not in pool:
            pool = pool + [state.parent]
        sample = fitness.sample(rng, int(tokens))
        scores = [state.score(fitness, c, sample) for c in pool]
        order = sorted(range(len(pool)), key=lambda i: (scores[i], i))[:int(survivors)]
        pool, scores = [pool[i] for i in order], [scores[i] for i in order]
    return pool[0], scores[0]
