"""Objectives and constraints of a recipe search, and how a candidate's metrics meet them.

Objectives (all optimized together; the first one ranks :attr:`SearchResult.best`):
``quality`` (the evaluator's direction: accuracy up, perplexity down), ``bytes`` (saved
checkpoint), ``latency`` (median ms, torch eager on this machine), ``macs``, ``params``.

Constraints are strings ``"<metric> <op> <value>"`` (or a mapping ``{metric: value}`` meaning
``<=``), with ``op`` one of ``<= < >= >`` and a value that may end in ``%``:

* ``quality_drop <= 0.02``: relative drop of quality against the input model (``2%`` works too);
* ``bytes <= 0.25``, ``latency <= 0.5``, ``macs <= 0.6``, ``params <= 0.5``: fractions of the input model;
* ``quality >= 0.9``: the evaluator's absolute value.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from slimkit.core.errors import ConfigError

__all__ = ["OBJECTIVES", "CONSTRAINT_METRICS", "Objective", "Constraint", "parse_objectives", "parse_constraints",
           "relative_metrics"]

#: objective name -> key in a candidate's metrics
OBJECTIVES = {"quality": "quality", "bytes": "bytes", "latency": "latency_ms", "macs": "macs", "params": "params"}
#: constraint metric -> key in a candidate's metrics (ratios are against the input model)
CONSTRAINT_METRICS = {"quality_drop": "quality_drop", "quality": "quality", "bytes": "bytes_ratio",
                      "latency": "latency_ratio", "macs": "macs_ratio", "params": "params_ratio"}
_RATIOS = ("bytes", "latency", "macs", "params")
_OPS = ("<=", ">=", "<", ">")
_PATTERN = re.compile(r"^\s*([a-z_]+)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*(%?)\s*$")


@dataclasses.dataclass(frozen=True)
class Objective:
    name: str
    key: str
    maximize: bool

    @property
    def direction(self) -> str:
        return "maximize" if self.maximize else "minimize"


@dataclasses.dataclass(frozen=True)
class Constraint:
    """``metric op limit``; :meth:`violation` is how far a candidate misses it (0 when met)."""

    metric: str
    op: str
    limit: float

    @property
    def key(self) -> str:
        return CONSTRAINT_METRICS[self.metric]

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.limit:g}"

    def value(self, metrics: Mapping[str, Any]) -> float:
        return float(metrics[self.key])

    def slack(self, metrics: Mapping[str, Any]) -> float:
        """Optuna's convention: <= 0 when met (strict comparisons count equality as a miss of 0)."""
        v = self.value(metrics)
        return v - self.limit if self.op in ("<=", "<") else self.limit - v

    def met(self, metrics: Mapping[str, Any]) -> bool:
        v = self.value(metrics)
        return {"<=": v <= self.limit, "<": v < self.limit, ">=": v >= self.limit, ">": v > self.limit}[self.op]

    def violation(self, metrics: Mapping[str, Any]) -> float:
        return 0.0 if self.met(metrics) else max(self.slack(metrics), 0.0)


def parse_objectives(objectives: Sequence[str] | str, *, higher_is_better: bool | None,
                     has_inputs: bool) -> list[Objective]:
    """Validate objective names; ``quality`` needs an evaluator, ``latency``/``macs`` example inputs."""
    names = [objectives] if isinstance(objectives, str) else list(objectives)
    if not names:
        raise ConfigError("objectives must name at least one of " + str(sorted(OBJECTIVES)))
    out = []
    for name in names:
        if name not in OBJECTIVES:
            raise ConfigError(f"unknown objective {name!r}; valid objectives are {sorted(OBJECTIVES)}")
        if names.count(name) > 1:
            raise ConfigError(f"objective {name!r} is given twice")
        _check_available(f"objective {name!r}", name, higher_is_better, has_inputs)
        maximize = bool(higher_is_better) if name == "quality" else False
        out.append(Objective(name=name, key=OBJECTIVES[name], maximize=maximize))
    return out


def parse_constraints(constraints: Sequence[str] | Mapping[str, float] | str | None, *,
                      higher_is_better: bool | None, has_inputs: bool) -> list[Constraint]:
    """Parse and check constraints; an unknown metric or a limit nothing can meet is a ConfigError."""
    if constraints is None:
        return []
    if isinstance(constraints, str):
        items = [constraints]
    elif isinstance(constraints, Mapping):
        items = [f"{k} <= {v}" for k, v in constraints.items()]
    else:
        items = list(constraints)
    return [_parse_one(text, higher_is_better, has_inputs) for text in items]


def _parse_one(text: Any, higher_is_better: bool | None, has_inputs: bool) -> Constraint:
    if not isinstance(text, str):
        raise ConfigError(f"constraint {text!r}: write it as a string like 'quality_drop <= 0.02'")
    m = _PATTERN.match(text)
    if m is None:
        raise ConfigError(f"constraint {text!r} is not of the form '<metric> <op> <value>' with op in {list(_OPS)} "
                          "(e.g. 'quality_drop <= 0.02', 'bytes <= 25%')")
    metric, op, number, pct = m.groups()
    if metric not in CONSTRAINT_METRICS:
        raise ConfigError(f"constraint {text!r}: unknown metric {metric!r}; valid metrics are "
                          f"{sorted(CONSTRAINT_METRICS)}")
    try:
        limit = float(number) / (100.0 if pct else 1.0)
    except ValueError:
        raise ConfigError(f"constraint {text!r}: {number!r} is not a number") from None
    if not math.isfinite(limit):
        raise ConfigError(f"constraint {text!r}: the limit must be finite")
    _check_possible(text, metric, op, limit)
    _check_available(f"constraint {text!r}", "quality" if metric.startswith("quality") else metric,
                     higher_is_better, has_inputs)
    return Constraint(metric=metric, op=op, limit=limit)


def _check_possible(text: str, metric: str, op: str, limit: float) -> None:
    """Refuse limits no model can meet (a size of 0, a quality drop of more than 100 % below zero)."""
    if metric in _RATIOS and op in ("<=", "<") and limit <= 0:
        raise ConfigError(f"constraint {text!r}: {metric} is a fraction of the input model's, always > 0, so "
                          f"{metric} {op} {limit:g} can never be met; use a positive fraction like 0.25")
    if metric == "quality_drop" and op in ("<=", "<") and limit <= -1:
        raise ConfigError(f"constraint {text!r}: a relative quality drop of {limit:g} or less is impossible "
                          "(a drop is > -1 for positive quality); use e.g. 0.02")
    if metric == "quality_drop" and op in (">=", ">"):
        raise ConfigError(f"constraint {text!r}: a lower bound on quality_drop asks for a worse model; "
                          "use quality_drop <= value")


def _check_available(what: str, name: str, higher_is_better: bool | None, has_inputs: bool) -> None:
    if name == "quality" and higher_is_better is None:
        raise ConfigError(f"{what} needs eval= (a callable model -> float or an sk evaluator)")
    if name in ("latency", "macs") and not has_inputs:
        raise ConfigError(f"{what} needs example_inputs= (the inputs to time and count MACs on)")


def relative_metrics(metrics: dict[str, Any], baseline: Mapping[str, Any], higher_is_better: bool | None) -> None:
    """Add ``quality_drop`` and ``*_ratio`` entries (against ``baseline``) to ``metrics`` in place."""
    for name in _RATIOS:
        key = OBJECTIVES[name]
        if key in metrics and baseline.get(key):
            metrics[f"{name}_ratio"] = float(metrics[key]) / float(baseline[key])
    if "quality" in metrics and "quality" in baseline and higher_is_better is not None:
        q0, q = float(baseline["quality"]), float(metrics["quality"])
        drop = (q0 - q) if higher_is_better else (q - q0)
        metrics["quality_drop"] = drop / abs(q0) if q0 else drop
