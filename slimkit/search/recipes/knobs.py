"""Recipe spaces: a recipe whose options may be choices or ranges, read from a dict or YAML.

A space lists recipe steps like a recipe does; any option (``method`` included) may be a *knob*:

```yaml
steps:
  - prune:
      method: {choice: [wanda, sparsegpt, none]}      # none: this candidate has no prune step
      sparsity: {low: 0.3, high: 0.7, step: 0.1}       # a range (ints when low/high/step are ints)
      pattern: {choice: ["2:4", "4:8"], when: {method: wanda}}   # only asked for wanda
  - quantize: {method: {choice: [rtn, gptq]}, bits: {choice: [4, 8]}, group_size: {choice: [32, 128]}}
```

Everything is checked when the space is read, before any model work: step names and methods
against the step registry, knob names against each method's config fields, every choice (and
range end) by building the method's config with it, and ``when:`` references. Each error is a
:class:`~slimkit.core.errors.ConfigError` naming the step, the knob and the bad value.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Protocol

import yaml

from slimkit.core.errors import ConfigError
from slimkit.core.registry import STEP_NAMES, lookup, methods_of

__all__ = ["RecipeSpace", "Knob", "StepSpace", "ParamSource", "recipe_hash", "NONE_METHOD"]

#: the method choice that leaves a step out of the candidate
NONE_METHOD = "none"
_PRIMITIVE = (str, int, float, bool, type(None))
_RANGE_KEYS = {"low", "high", "step", "log", "when"}


class ParamSource(Protocol):
    """What a space samples from: an Optuna trial (or anything with the same three methods)."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...


@dataclasses.dataclass(frozen=True)
class Knob:
    """One option of one step: fixed (``value``), a ``choice`` list or a ``low``/``high`` range."""

    name: str
    value: Any = None
    choice: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @property
    def is_range(self) -> bool:
        return self.low is not None

    @property
    def is_int(self) -> bool:
        return self.is_range and all(isinstance(v, int) and not isinstance(v, bool)
                                     for v in (self.low, self.high, self.step if self.step is not None else 1))

    def candidates(self) -> list[Any]:
        """Values checked at parse time: every choice, or a range's ends."""
        if self.choice is not None:
            return list(self.choice)
        if self.is_range:
            return [self.low, self.high]
        return [self.value]

    def active(self, chosen: dict[str, Any]) -> bool:
        return all(chosen.get(ref) in allowed for ref, allowed in self.when)

    def sample(self, source: ParamSource, param: str) -> Any:
        if self.choice is not None:
            if all(isinstance(c, _PRIMITIVE) for c in self.choice):
                return source.suggest_categorical(param, list(self.choice))
            return self.choice[source.suggest_categorical(param, list(range(len(self.choice))))]
        if self.is_int:
            return source.suggest_int(param, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.is_range:
            return source.suggest_float(param, float(self.low), float(self.high), step=self.step, log=self.log)
        return self.value

    def to_dict(self) -> Any:
        out: dict[str, Any]
        if self.choice is not None:
            out = {"choice": list(self.choice)}
        elif self.is_range:
            out = {"low": self.low, "high": self.high}
            if self.step is not None:
                out["step"] = self.step
            if self.log:
                out["log"] = True
        elif not self.when:
            return self.value
        else:
            out = {"value": self.value}
        if self.when:
            out["when"] = {ref: list(allowed) for ref, allowed in self.when}
        return out


@dataclasses.dataclass(frozen=True)
class StepSpace:
    """One step of a space: its name, its method knob and its other knobs (in order)."""

    index: int
    name: str
    method: Knob
    knobs: tuple[Knob, ...]

    def sample(self, source: ParamSource) -> dict[str, Any] | None:
        """The step's options for one candidate, or ``None`` when its method came out ``none``."""
        prefix = f"s{self.index}.{self.name}"
        chosen = {"method": self.method.sample(source, f"{prefix}.method")}
        if chosen["method"] == NONE_METHOD:
            return None
        for knob in self.knobs:
            if knob.active(chosen):
                chosen[knob.name] = knob.sample(source, f"{prefix}.{knob.name}")
        return chosen

    def to_dict(self) -> dict[str, Any]:
        return {self.name: {"method": self.method.to_dict(), **{k.name: k.to_dict() for k in self.knobs}}}


@dataclasses.dataclass(frozen=True)
class RecipeSpace:
    """A validated space of recipes; :meth:`sample` draws one candidate recipe as a dict."""

    steps: tuple[StepSpace, ...]
    #: early stopping of weak trials (a :class:`~slimkit.search.recipes.pruning.PrunerConfig`), or ``None``
    pruner: Any = None

    @classmethod
    def coerce(cls, space: "RecipeSpace | dict[str, Any] | list[Any] | str | Path") -> "RecipeSpace":
        """Accept a space, a dict / list of steps, or a path to a YAML file."""
        if isinstance(space, RecipeSpace):
            return space
        if isinstance(space, (str, Path)):
            return cls.from_yaml(space)
        return cls.from_dict(space)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RecipeSpace":
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"space file {str(p)!r} does not exist")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"space file {str(p)!r} is not valid YAML: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | list[Any]) -> "RecipeSpace":
        """Parse and validate (see the module docstring); errors name the step, knob and value."""
        if isinstance(data, list):
            data = {"steps": data}
        if not isinstance(data, dict) or set(data) - {"steps", "pruner"}:
            extra = sorted(set(data) - {"steps", "pruner"}) if isinstance(data, dict) else type(data).__name__
            raise ConfigError(f"space: expected a mapping with a 'steps' list (and optionally 'pruner'), got {extra!r}")
        raw = data.get("steps")
        if not isinstance(raw, list) or not raw:
            raise ConfigError("space: 'steps' must be a non-empty list of one-key mappings")
        space = cls(steps=tuple(_parse_step(i, item) for i, item in enumerate(raw)))
        return space.with_pruner(data.get("pruner"), where="space pruner")

    def with_pruner(self, spec: Any, where: str = "pruner") -> "RecipeSpace":
        """This space with ``spec`` (``none`` / ``successive_halving`` / ``hyperband`` or a mapping) as
        its pruner, checked against the space (a pruner needs a training step with ``eval_every``)."""
        from slimkit.search.recipes.pruning import parse_pruner, rung_resources

        cfg = parse_pruner(spec, where)
        if not cfg.active:
            return dataclasses.replace(self, pruner=None)
        rung_resources(self, cfg)
        return dataclasses.replace(self, pruner=cfg)

    def sample(self, source: ParamSource) -> dict[str, Any]:
        """One candidate recipe (``{"steps": [...]}``; possibly with no steps if every method is ``none``)."""
        steps = []
        for step in self.steps:
            options = step.sample(source)
            if options is not None:
                steps.append({step.name: options})
        return {"steps": steps}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"steps": [s.to_dict() for s in self.steps]}
        if self.pruner is not None:
            out["pruner"] = self.pruner.to_dict()
        return out

    def signature(self) -> str:
        """A hash of the space, to refuse resuming a study with a different space."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]

    def methods(self) -> list[tuple[str, str]]:
        """Every (step, method) a candidate may run (``none`` left out)."""
        return [(s.name, m) for s in self.steps for m in s.method.candidates() if m != NONE_METHOD]


def recipe_hash(recipe: dict[str, Any]) -> str:
    """Identity of a candidate: the hash of its canonical recipe (every option, defaults included)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- parsing
def _parse_step(index: int, raw: Any) -> StepSpace:
    where = f"space steps[{index}]"
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ConfigError(f"{where}: each step must be a one-key mapping like {{prune: {{...}}}}, got {raw!r}")
    (name, options), = raw.items()
    if name not in STEP_NAMES or name == "search":
        valid = [s for s in STEP_NAMES if s != "search"]
        raise ConfigError(f"{where}: unknown step {name!r}; valid steps are {valid}")
    where = f"{where}.{name}"
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: options must be a mapping, got {options!r}")
    options = dict(options)
    raw_method = options.pop("method") if "method" in options else lookup(name, None, where=where).method
    method = _parse_knob(where, "method", raw_method)
    _check_methods(where, name, method)
    knobs = tuple(_parse_knob(where, k, v) for k, v in options.items())
    _check_when(where, method, knobs)
    _check_knob_values(where, name, method, knobs)
    return StepSpace(index=index, name=name, method=method, knobs=knobs)


def _parse_knob(where: str, name: str, spec: Any) -> Knob:
    if not isinstance(name, str):
        raise ConfigError(f"{where}: knob names must be strings, got {name!r}")
    if not isinstance(spec, dict) or not ({"choice", "low", "high", "value"} & set(spec)):
        return Knob(name=name, value=spec)  # a fixed option (a plain value, list or mapping)
    when = _parse_when(f"{where}.{name}", spec.get("when"))
    if "choice" in spec:
        _only(where, name, spec, {"choice", "when"})
        choice = spec["choice"]
        if not isinstance(choice, list) or not choice:
            raise ConfigError(f"{where}.{name}: 'choice' must be a non-empty list, got {choice!r}")
        return Knob(name=name, choice=tuple(choice), when=when)
    if "value" in spec:
        _only(where, name, spec, {"value", "when"})
        return Knob(name=name, value=spec["value"], when=when)
    _only(where, name, spec, _RANGE_KEYS)
    return _range_knob(where, name, spec, when)


def _only(where: str, name: str, spec: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(spec) - allowed)
    if extra:
        raise ConfigError(f"{where}.{name}: unknown key(s) {extra} in a knob; valid keys are {sorted(allowed)}")


def _range_knob(where: str, name: str, spec: dict[str, Any], when: Any) -> Knob:
    lo, hi, step, log = spec.get("low"), spec.get("high"), spec.get("step"), spec.get("log", False)
    for key, val in (("low", lo), ("high", hi)) + ((("step", step),) if step is not None else ()):
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            raise ConfigError(f"{where}.{name}: range '{key}' must be a number, got {val!r}")
    if not lo < hi:
        raise ConfigError(f"{where}.{name}: range low = {lo!r} must be below high = {hi!r}")
    if step is not None and step <= 0:
        raise ConfigError(f"{where}.{name}: range step = {step!r} must be > 0")
    if not isinstance(log, bool) or (log and (lo <= 0 or step is not None)):
        raise ConfigError(f"{where}.{name}: log = {log!r} needs low > 0 and no step")
    return Knob(name=name, low=lo, high=hi, step=step, log=log, when=when)


def _parse_when(where: str, when: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if when is None:
        return ()
    if not isinstance(when, dict) or not when:
        raise ConfigError(f"{where}: 'when' must be a mapping like {{method: wanda}}, got {when!r}")
    return tuple((str(k), tuple(v) if isinstance(v, list) else (v,)) for k, v in when.items())


def _check_methods(where: str, step: str, method: Knob) -> None:
    if method.is_range or method.when:
        raise ConfigError(f"{where}.method: a method is a fixed name or a 'choice' list (no range, no 'when')")
    valid = methods_of(step)
    for m in method.candidates():
        if m != NONE_METHOD and m not in valid:
            raise ConfigError(f"{where}.method: unknown {step} method {m!r}; valid methods are "
                              f"{valid + [NONE_METHOD]}")


def _check_when(where: str, method: Knob, knobs: tuple[Knob, ...]) -> None:
    seen = {"method": method}
    for knob in knobs:
        for ref, allowed in knob.when:
            if ref not in seen:
                raise ConfigError(f"{where}.{knob.name}: 'when' refers to {ref!r}, which is not a knob listed "
                                  f"before it; knobs before it are {sorted(seen)}")
            possible = seen[ref].candidates() if not seen[ref].is_range else None
            bad = [a for a in allowed if possible is not None and a not in possible]
            if bad:
                raise ConfigError(f"{where}.{knob.name}: 'when' {ref} = {bad[0]!r} can never happen; "
                                  f"{ref} takes {possible}")
        seen[knob.name] = knob


def _check_knob_values(where: str, step: str, method: Knob, knobs: tuple[Knob, ...]) -> None:
    """Each knob is an option of every method it applies to, and each of its values is valid there.

    A value is checked by building the method's config with it and the first value of every other
    knob active alongside (so options that need each other, like structured pruning's
    ``granularity`` and ``sparsity``, are checked together).
    """
    for m in [c for c in method.candidates() if c != NONE_METHOD]:
        cls = lookup(step, m, where=where).config_cls
        fields = cls.field_names()
        base: dict[str, Any] = {"method": m}
        active = [k for k in knobs if k.active(base)]
        for knob in active:
            if knob.name == "method":
                raise ConfigError(f"{where}: 'method' is given twice")
            if knob.name not in fields:
                raise ConfigError(f"{where}.{knob.name}: unknown knob {knob.name!r} for {step} method {m!r}; valid "
                                  f"knobs are {sorted(f for f in fields if f != 'method')} (restrict it with "
                                  "'when: {method: [...]}' if it belongs to other methods only)")
            if knob.active(base):
                base[knob.name] = knob.candidates()[0]
        for knob in active:
            for value in knob.candidates():
                options = {k: v for k, v in {**base, knob.name: value}.items() if k != "method" or k in fields}
                try:
                    cls.from_dict(options)
                except ConfigError as exc:
                    raise ConfigError(f"{where}.{knob.name}: value {value!r} is not valid for {step} method {m!r} "
                                      f"(with {_others(base, knob.name)}): {exc}") from None


def _others(base: dict[str, Any], name: str) -> str:
    rest = {k: v for k, v in base.items() if k not in (name, "method")}
    return ", ".join(f"{k}={v!r}" for k, v in rest.items()) or "defaults otherwise"
