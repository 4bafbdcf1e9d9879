"""What the history-driven strategies (``evolution``, ``rl``) read from a study, and how they score it.

Both samplers are stateless between trials: before each trial they re-read the study (every
worker's trials, resumed ones included) and derive their proposal from it, so several workers and
a resumed study behave like one long search. This module turns trials into :class:`Scored`
records and scores them on one scale where lower is better:

* a feasible trial scores its augmented Chebyshev scalarization (ParEGO, Knowles 2006) of the
  objectives, each min-max normalized over the study's complete trials and turned into
  minimization: ``max_i w_i z_i + 0.05 * sum_i w_i z_i``, in ``[0, 1.05]``;
* a trial that misses a constraint scores ``1.1`` plus the sum of its constraint misses (so every
  infeasible trial ranks below every feasible one, and nearer misses rank higher);
* a failed trial (a knob combination a step refused) scores ``FAILED_SCORE``.

It also holds the per-trial random streams (seeded by the strategy seed and the trial number, so a
trial's proposal does not depend on what other trials this process sampled before) and the uniform
draw of a value from an Optuna distribution.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from slimkit.core.errors import ConfigError

__all__ = ["Scored", "scored_trials", "scores", "random_weights", "trial_rng", "uniform_value", "fits", "params_key",
           "INFEASIBLE_SCORE", "FAILED_SCORE"]

#: score of a trial missing constraints, before adding its misses
INFEASIBLE_SCORE = 1.1
#: score of a failed trial (only the ``rl`` strategy learns from those)
FAILED_SCORE = 2.5
_AUGMENT = 0.05


@dataclasses.dataclass(frozen=True)
class Scored:
    """One finished trial: its parameters, objective values as minimization (``None`` when it
    failed) and its total constraint miss (0 when every constraint is met)."""

    number: int
    params: dict[str, Any]
    distributions: dict[str, Any]
    values: tuple[float, ...] | None
    violation: float


def scored_trials(study: Any, *, include_failed: bool = False) -> list[Scored]:
    """The study's COMPLETE trials (and FAIL ones with ``include_failed``), by trial number."""
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.FAIL) if include_failed else (TrialState.COMPLETE,)
    signs = [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions]
    out = []
    for t in study.get_trials(deepcopy=False, states=states):
        if t.state == TrialState.COMPLETE and t.values is not None:
            values: tuple[float, ...] | None = tuple(s * float(v) for s, v in zip(signs, t.values))
            if not all(math.isfinite(v) for v in values):
                continue
        elif t.state == TrialState.FAIL and t.params:
            values = None
        else:
            continue
        miss = sum(max(float(c), 0.0) for c in t.constraints.values())
        out.append(Scored(t.number, dict(t.params), dict(t.distributions), values, miss))
    return sorted(out, key=lambda s: s.number)


def scores(trials: Sequence[Scored], weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """Scores of ``trials`` (lower is better) under objective ``weights``; see the module docstring."""
    done = [t.values for t in trials if t.values is not None]
    out = np.full(len(trials), FAILED_SCORE, dtype=np.float64)
    if not done:
        return out
    table = np.asarray(done, dtype=np.float64)
    low, span = table.min(axis=0), table.max(axis=0) - table.min(axis=0)
    span[span <= 0] = 1.0
    w = np.asarray(weights, dtype=np.float64)
    for i, t in enumerate(trials):
        if t.values is None:
            continue
        if t.violation > 0:
            out[i] = INFEASIBLE_SCORE + t.violation
            continue
        z = w * (np.asarray(t.values) - low) / span
        out[i] = float(z.max() + _AUGMENT * z.sum())
    return out


def random_weights(rng: np.random.Generator, n_objectives: int) -> np.ndarray:
    """Objective weights drawn uniformly from the simplex (one objective: ``[1.0]``)."""
    return rng.dirichlet(np.ones(n_objectives)) if n_objectives > 1 else np.ones(1)


def trial_rng(seed: int, number: int, salt: int) -> np.random.Generator:
    """The random stream of one trial of one strategy (``salt`` tells strategies apart)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(number), int(salt)])


def uniform_value(dist: Any, rng: np.random.Generator) -> Any:
    """A value drawn uniformly from an Optuna distribution (grids for stepped ranges, log-uniform for log)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return dist.choices[int(rng.integers(len(dist.choices)))]
    if isinstance(dist, IntDistribution):
        if dist.log:
            return int(min(max(round(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high + 1)) - 0.5)),
                               dist.low), dist.high))
        return int(dist.low + dist.step * int(rng.integers((dist.high - dist.low) // dist.step + 1)))
    if isinstance(dist, FloatDistribution):
        if dist.step is not None:
            n = int(round((dist.high - dist.low) / dist.step))
            return float(min(dist.low + dist.step * int(rng.integers(n + 1)), dist.high))
        if dist.log:
            return float(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high))))
        return float(rng.uniform(dist.low, dist.high))
    raise ConfigError(f"search knob distribution {type(dist).__name__} is not supported by this strategy; valid: "
                      "categorical choices, int or float ranges")


def fits(dist: Any, value: Any) -> bool:
    """Whether ``value`` is a valid value of ``dist`` (a proposal made for another distribution is not)."""
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def params_key(params: dict[str, Any]) -> str:
    """A hashable identity of a parameter set (to avoid proposing an already tried candidate)."""
    return json.dumps(sorted(params.items()), default=str)

