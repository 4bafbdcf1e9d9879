"""A knob's values as a finite list of *actions*: what the ``rl`` controller chooses among and what
``evolution`` steps along.

* a categorical knob: one action per choice;
* a stepped range (ints, or floats with ``step``) of at most ``MAX_GRID`` values: one action per value;
* any other range: ``BINS`` equal bins (in log space for ``log`` ranges); choosing a bin draws a
  value uniformly inside it (rounded to the range's step for wide int / stepped ranges).
"""
from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np

from slimkit.core.errors import ConfigError

__all__ = ["Actions", "MAX_GRID", "BINS"]

MAX_GRID = 32
BINS = 16


class Actions:
    """The discrete actions of one Optuna distribution; :meth:`index` maps a value back to its action."""

    def __init__(self, dist: Any) -> None:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        self.dist = dist
        self.choices: list[Any] | None = None
        self.grid: list[float] | None = None
        self.edges: list[float] = []  # bin edges; filled only for a binned range
        if isinstance(dist, CategoricalDistribution):
            self.choices = list(dist.choices)
            self.n = len(self.choices)
            return
        if not isinstance(dist, (IntDistribution, FloatDistribution)):
            raise ConfigError(f"search knob distribution {type(dist).__name__} is not supported by the rl / evolution "
                              "strategies; valid: categorical choices, int or float ranges")
        step = dist.step if not dist.log else None
        if step is not None:
            count = int(round((dist.high - dist.low) / step)) + 1
            if count <= MAX_GRID:
                self.grid = [min(dist.low + k * step, dist.high) for k in range(count)]
                self.n = count
                return
        self.log = bool(dist.log)
        lo, hi = (math.log(dist.low), math.log(dist.high)) if self.log else (float(dist.low), float(dist.high))
        self.edges = list(np.linspace(lo, hi, BINS + 1))
        self.n = BINS

    def index(self, value: Any) -> int:
        """The action that produced ``value`` (the nearest grid point / the bin containing it)."""
        if self.choices is not None:
            return self.choices.index(value)
        if self.grid is not None:
            return int(np.argmin([abs(g - float(value)) for g in self.grid]))
        x = math.log(float(value)) if self.log else float(value)
        return min(max(bisect.bisect_right(self.edges, x) - 1, 0), self.n - 1)

    def value(self, action: int, rng: np.random.Generator) -> Any:
        """A value of ``action``: the choice, the grid point, or a uniform draw inside the bin."""
        from optuna.distributions import IntDistribution

        if self.choices is not None:
            return self.choices[action]
        if self.grid is not None:
            return int(self.grid[action]) if isinstance(self.dist, IntDistribution) else float(self.grid[action])
        x = float(rng.uniform(self.edges[action], self.edges[action + 1]))
        x = math.exp(x) if self.log else x
        d = self.dist
        if d.step is not None and not d.log:
            x = d.low + round((x - d.low) / d.step) * d.step
        x = min(max(x, d.low), d.high)
        return int(round(x)) if isinstance(d, IntDistribution) else float(x)

    def neighbour(self, value: Any, rng: np.random.Generator, spread: float = 0.15) -> Any:
        """A value different from ``value`` near it: a categorical knob switches to another choice
        (uniformly); a range moves by a Gaussian jump of ``spread`` of its width (at least one grid
        step / a new draw in the bin for continuous ranges), clipped to the range."""
        if self.choices is not None:
            others = [c for c in self.choices if c != value]
            return others[int(rng.integers(len(others)))] if others else value
        if self.grid is not None:
            here = self.index(value)
            jump = int(round(rng.normal(0.0, max(1.0, spread * self.n))))
            if jump == 0:
                jump = 1 if rng.random() < 0.5 else -1
            there = min(max(here + jump, 0), self.n - 1)
            if there == here:
                there = here - jump if 0 <= here - jump < self.n else here
            return self.value(there, rng)
        d = self.dist
        lo, hi = (math.log(d.low), math.log(d.high)) if self.log else (float(d.low), float(d.high))
        x = math.log(float(value)) if self.log else float(value)
        x = min(max(x + rng.normal(0.0, spread * (hi - lo)), lo), hi)
        x = math.exp(x) if self.log else x
        if d.step is not None and not d.log:
            x = d.low + round((x - d.low) / d.step) * d.step
        from optuna.distributions import IntDistribution

        return int(round(min(max(x, d.low), d.high))) if isinstance(d, IntDistribution) else float(min(max(x, d.low), d.high))
