"""Validated step configs.

Every algorithm has one config dataclass deriving from :class:`StepConfig`. Validation happens on
construction (``__post_init__`` calls :meth:`StepConfig.validate`), so a bad value is reported when
the recipe is read, before any model is loaded. Errors name the field, the bad value and the valid
range, and unknown keys list the valid ones.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from slimkit.core.errors import ConfigError

__all__ = [
    "StepConfig",
    "check_range",
    "check_choice",
    "check_int",
    "check_bool",
    "check_str_list",
]


@dataclasses.dataclass
class StepConfig:
    """Base of every step config: strict construction from a mapping, validation, round trip."""

    #: where this config sits in a recipe, for error messages (e.g. ``"steps[1].prune"``)
    location: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check field values; subclasses raise :class:`ConfigError` naming the field."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "") -> "StepConfig":
        """Build from a mapping; unknown keys raise :class:`ConfigError` listing the valid ones."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where or cls.__name__}: expected a mapping of options, got {type(data).__name__}")
        valid = cls.field_names()
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ConfigError(
                f"{where or cls.__name__}: unknown key(s) {unknown}; valid keys are {sorted(valid)}"
            )
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None
        except TypeError as exc:  # a missing required field
            raise ConfigError(f"{where or cls.__name__}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """All fields (defaults included), JSON/YAML-able."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def check_range(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """Check that a number lies in a range; the message shows the interval in math notation."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
    if bad_lo or bad_hi:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        interval = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise ConfigError(f"{name} = {value!r} is out of range; valid range is {interval}")
    return value


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """Check that ``value`` is an integer within [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    check_range(name, value, lo, hi)
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Check that ``value`` is one of ``choices``."""
    options = list(choices)
    if value not in options:
        raise ConfigError(f"{name} = {value!r} is not valid; choose one of {options}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def check_str_list(name: str, value: Any) -> list[str]:
    """Check a list of strings (a single string is not accepted, to avoid char-by-char surprises)."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name} must be a list of strings, got {value!r}")
    return list(value)
