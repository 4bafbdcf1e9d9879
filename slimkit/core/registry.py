"""Registry of recipe steps: step name -> method name -> (config class, handler, needs).

Handlers have the signature ``handler(model, config, ctx) -> model``; they may modify ``model`` in
place (the runner hands them a private copy) and return it or a replacement. Orchestration lives
in each algorithm's ``api.py`` (which registers itself here); the math lives in its ``core.py``.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from typing import Any

from slimkit.core.config import StepConfig
from slimkit.core.errors import ConfigError

__all__ = ["STEP_NAMES", "MethodSpec", "register", "lookup", "methods_of", "load_builtin_steps"]

#: every step name of the recipe language (DESIGN.md)
STEP_NAMES: tuple[str, ...] = (
    "prune",
    "quantize",
    "distill",
    "drop_layers",
    "merge_layers",
    "grow",
    "share_weights",
    "low_rank",
    "finetune",
    "search",
)

#: what a step may need from the runner
NEEDS = frozenset({"calib", "train", "teacher", "example_inputs", "eval"})

#: packages whose algorithm folders (``<family>/<algorithm>/api.py``) register built-in steps
_FAMILIES = ("prune", "quantize", "distill", "surgery", "share", "lowrank", "search", "train")
_loaded = False


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    step: str
    method: str
    config_cls: type[StepConfig]
    handler: Callable[..., Any]
    needs: frozenset[str]
    default: bool


_REGISTRY: dict[str, dict[str, MethodSpec]] = {}


def register(
    step: str,
    method: str,
    config_cls: type[StepConfig],
    *,
    needs: tuple[str, ...] = (),
    default: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``handler`` for ``step: {method: ...}``.

    ``default=True`` makes this method the one used when a recipe omits ``method``.
    """
    if step not in STEP_NAMES:
        raise ValueError(f"unknown step {step!r}")
    unknown = set(needs) - NEEDS
    if unknown:
        raise ValueError(f"unknown needs {sorted(unknown)}")

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        spec = MethodSpec(step, method, config_cls, handler, frozenset(needs), default)
        _REGISTRY.setdefault(step, {})[method] = spec
        return handler

    return decorate


def load_builtin_steps() -> None:
    """Import every ``slimkit.<family>.<algorithm>.api`` module so that it registers itself.

    Discovery is by folder, so adding an algorithm never edits a shared list.
    """
    global _loaded
    if _loaded:
        return
    for family in _FAMILIES:
        try:
            package = importlib.import_module(f"slimkit.{family}")
        except ModuleNotFoundError:
            continue
        for info in pkgutil.iter_modules(package.__path__):
            if info.ispkg and importlib.util.find_spec(f"slimkit.{family}.{info.name}.api") is not None:
                importlib.import_module(f"slimkit.{family}.{info.name}.api")
    _loaded = True


def methods_of(step: str) -> list[str]:
    load_builtin_steps()
    return sorted(_REGISTRY.get(step, {}))


def lookup(step: str, method: str | None, *, where: str = "") -> MethodSpec:
    """The spec for ``step``/``method``; unknown names raise :class:`ConfigError` listing valid ones."""
    load_builtin_steps()
    prefix = f"{where}: " if where else ""
    if step not in STEP_NAMES:
        raise ConfigError(f"{prefix}unknown step {step!r}; valid steps are {list(STEP_NAMES)}")
    methods = _REGISTRY.get(step, {})
    if not methods:
        raise ConfigError(f"{prefix}step {step!r} has no method available in this version of slimkit")
    if method is None:
        defaults = [m for m in methods.values() if m.default]
        if not defaults:
            raise ConfigError(f"{prefix}step {step!r} needs a 'method'; valid methods are {sorted(methods)}")
        return defaults[0]
    if method not in methods:
        raise ConfigError(f"{prefix}unknown {step} method {method!r}; valid methods are {sorted(methods)}")
    return methods[method]
