"""Recipes: an ordered list of validated steps, read from / written to YAML or dicts.

```yaml
steps:
  - prune:    {method: magnitude, sparsity: 0.5, scope: global, ignore: [lm_head]}
  - quantize: {method: dynamic_int8, per_channel: true}
```
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from slimkit.core.config import StepConfig
from slimkit.core.errors import ConfigError
from slimkit.core.registry import MethodSpec, lookup

__all__ = ["Recipe", "Step"]

_TOP_KEYS = ("steps", "name", "description")


@dataclasses.dataclass(frozen=True)
class Step:
    """One validated recipe step."""

    name: str
    method: str
    config: StepConfig
    spec: MethodSpec

    def to_dict(self) -> dict[str, Any]:
        options = {"method": self.method, **{k: v for k, v in self.config.to_dict().items() if k != "method"}}
        return {self.name: options}


@dataclasses.dataclass
class Recipe:
    """An ordered list of steps; build with :meth:`from_dict` or :meth:`from_yaml`."""

    steps: list[Step]
    name: str = ""
    description: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | list[Any]) -> "Recipe":
        """Parse and validate; every error is a :class:`ConfigError` naming the step and field."""
        if isinstance(data, list):
            data = {"steps": data}
        if not isinstance(data, dict):
            raise ConfigError(f"a recipe must be a mapping with a 'steps' list, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_TOP_KEYS))
        if unknown:
            raise ConfigError(f"recipe: unknown key(s) {unknown}; valid keys are {list(_TOP_KEYS)}")
        raw_steps = data.get("steps")
        if not isinstance(raw_steps, list) or not raw_steps:
            raise ConfigError("recipe: 'steps' must be a non-empty list of one-key mappings")
        steps = [_parse_step(i, raw) for i, raw in enumerate(raw_steps)]
        return cls(steps=steps, name=str(data.get("name", "")), description=str(data.get("description", "")))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Recipe":
        """Read a YAML recipe file."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"recipe file {str(p)!r} does not exist")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"recipe file {str(p)!r} is not valid YAML: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def coerce(cls, recipe: "Recipe | dict[str, Any] | list[Any] | str | Path") -> "Recipe":
        """Accept a Recipe, a dict/list, or a path to a YAML file."""
        if isinstance(recipe, Recipe):
            return recipe
        if isinstance(recipe, (str, Path)):
            return cls.from_yaml(recipe)
        return cls.from_dict(recipe)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        if self.description:
            out["description"] = self.description
        out["steps"] = [s.to_dict() for s in self.steps]
        return out

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The recipe as YAML text; also written to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def needs(self) -> set[str]:
        """Everything the steps need from the runner (calibration data, a teacher, ...)."""
        return set().union(*(s.spec.needs for s in self.steps))


def _parse_step(index: int, raw: Any) -> Step:
    where = f"steps[{index}]"
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ConfigError(f"{where}: each step must be a one-key mapping like {{prune: {{...}}}}, got {raw!r}")
    (name, options), = raw.items()
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise ConfigError(f"{where}.{name}: options must be a mapping, got {options!r}")
    options = dict(options)
    method = options.pop("method", None)
    spec = lookup(name, method, where=f"{where}.{name}")
    if "method" in spec.config_cls.field_names():
        options["method"] = spec.method
    config = spec.config_cls.from_dict(options, where=f"{where}.{name}")
    return Step(name=name, method=spec.method, config=config, spec=spec)
