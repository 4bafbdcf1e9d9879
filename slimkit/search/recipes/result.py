"""What a search returns: every trial as a :class:`Candidate`, the Pareto front, and the best one.

``best`` is the candidate meeting every constraint that is best on the first objective (ties
broken by the next objectives). When none meets them, ``best`` is ``None``, ``closest`` is the
candidate with the smallest total relative miss, and ``reason`` names each constraint it misses and
by how much: the result is never an exception.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from slimkit.core.recipe import Recipe
from slimkit.search.recipes.goals import Constraint, Objective

__all__ = ["Candidate", "SearchResult", "candidates_from_trials", "pareto_front", "choose_best"]


@dataclasses.dataclass
class Candidate:
    """One trial: its recipe and metrics (``state`` COMPLETE), or why it has none (FAIL / PRUNED)."""

    number: int
    state: str
    recipe: Recipe | None = None
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    recipe_hash: str | None = None
    cached: bool = False
    feasible: bool = False
    #: constraint text -> how far it is missed (0.0 when met)
    violations: dict[str, float] = dataclasses.field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"trial": self.number, "state": self.state, "recipe": self.recipe.to_dict() if self.recipe else None,
                "recipe_hash": self.recipe_hash, "metrics": self.metrics, "cached": self.cached,
                "feasible": self.feasible, "violations": self.violations, "error": self.error}


@dataclasses.dataclass
class SearchResult:
    """``sk.search``'s answer; see the module docstring for ``best`` / ``closest`` / ``reason``."""

    pareto: list[Candidate]
    best: Candidate | None
    closest: Candidate | None
    reason: str
    trials: list[Candidate]
    objectives: list[Objective]
    constraints: list[Constraint]
    baseline: dict[str, Any]
    strategy: str = "tpe"
    storage: str = ""
    out_dir: str | None = None
    interrupted: bool = False
    #: this call's work: candidates evaluated, cache hits, failures (resumed trials are in ``trials``)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "objectives": [{"name": o.name, "metric": o.key, "direction": o.direction} for o in self.objectives],
            "constraints": [str(c) for c in self.constraints],
            "strategy": self.strategy, "storage": self.storage, "baseline": self.baseline,
            "best": self.best.to_dict() if self.best else None,
            "closest": self.closest.to_dict() if self.closest else None,
            "reason": self.reason, "interrupted": self.interrupted, "counts": self.counts,
            "n_trials": len(self.trials),
            "n_complete": sum(t.state == "COMPLETE" for t in self.trials),
            "pareto": [c.to_dict() for c in self.pareto],
        }


def candidates_from_trials(trials: Sequence[Any], constraints: list[Constraint]) -> list[Candidate]:
    """Optuna FrozenTrials -> candidates, with feasibility judged by ``constraints`` now."""
    out = []
    for t in sorted(trials, key=lambda t: t.number):
        attrs = t.user_attrs
        recipe = Recipe.from_dict(attrs["recipe"]) if attrs.get("recipe") else None
        cand = Candidate(number=t.number, state=t.state.name, recipe=recipe, metrics=dict(attrs.get("metrics") or {}),
                         recipe_hash=attrs.get("recipe_hash"), cached=bool(attrs.get("cached", False)),
                         error=attrs.get("error") or attrs.get("failed_because") or attrs.get("pruned_because"))
        if cand.state == "COMPLETE":
            cand.violations = {str(c): c.violation(cand.metrics) for c in constraints}
            cand.feasible = not any(cand.violations.values())
        out.append(cand)
    return out


def _unique(cands: Sequence[Candidate]) -> list[Candidate]:
    """Complete candidates, one per recipe (the first trial that evaluated it)."""
    seen: set[str | None] = set()
    out = []
    for c in cands:
        if c.state == "COMPLETE" and c.recipe_hash not in seen:
            seen.add(c.recipe_hash)
            out.append(c)
    return out


def _dominates(a: Candidate, b: Candidate, objectives: list[Objective]) -> bool:
    better = False
    for o in objectives:
        x, y = float(a.metrics[o.key]), float(b.metrics[o.key])
        if o.maximize:
            x, y = -x, -y
        if x > y:
            return False
        better = better or x < y
    return better


def pareto_front(cands: Sequence[Candidate], objectives: list[Objective]) -> list[Candidate]:
    """The non-dominated complete candidates (one per recipe), sorted by the first objective."""
    pool = _unique(cands)
    front = [c for c in pool if not any(_dominates(o, c, objectives) for o in pool if o is not c)]
    return sorted(front, key=lambda c: _rank_key(c, objectives))


def _rank_key(c: Candidate, objectives: list[Objective]) -> tuple[float, ...]:
    return tuple(-float(c.metrics[o.key]) if o.maximize else float(c.metrics[o.key]) for o in objectives)


def choose_best(cands: Sequence[Candidate], objectives: list[Objective],
                constraints: list[Constraint]) -> tuple[Candidate | None, Candidate | None, str]:
    """``(best, closest, reason)`` as described in the module docstring."""
    pool = _unique(cands)
    if not pool:
        failed = [c for c in cands if c.state == "FAIL" and c.error]
        why = f"; e.g. trial {failed[0].number}: {failed[0].error}" if failed else ""
        return None, None, f"no trial completed ({len(cands)} started){why}"
    feasible = [c for c in pool if c.feasible]
    first = objectives[0]
    if feasible:
        best = min(feasible, key=lambda c: _rank_key(c, objectives))
        met = f"meets {', '.join(map(str, constraints))}; " if constraints else ""
        return best, None, (f"trial {best.number} {met}best {first.name} among {len(feasible)} of "
                            f"{len(pool)} candidates that meet the constraints")
    closest = min(pool, key=lambda c: (_total_miss(c, constraints), _rank_key(c, objectives)))
    misses = "; ".join(_miss_text(c, closest.metrics) for c in constraints if not c.met(closest.metrics))
    return None, closest, (f"no candidate of {len(pool)} meets the constraints; the closest, trial "
                           f"{closest.number}, misses {misses}")


def _total_miss(c: Candidate, constraints: list[Constraint]) -> float:
    return sum(k.violation(c.metrics) / max(abs(k.limit), 1e-3) for k in constraints)


def _miss_text(k: Constraint, metrics: dict[str, Any]) -> str:
    return f"{k} by {abs(k.slack(metrics)):.4g} ({k.metric} = {k.value(metrics):.4g})"
