"""The run context handed to every step handler: data, teacher, progress and the step's notes.

Data feeding is not the algorithms' business: a step declares what it needs (``needs=`` in
:func:`slimkit.core.registry.register`) and reads it from here.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

from slimkit.core.errors import DataError

__all__ = ["RunContext"]

T = TypeVar("T")


@dataclasses.dataclass
class RunContext:
    """What the runner supplies to steps, plus a per-step scratch record for the report."""

    calib: list[Any] | None = None
    train: list[Any] | None = None
    teacher: nn.Module | None = None
    original: nn.Module | None = None
    example_inputs: Any = None
    evaluate: Callable[[nn.Module], float] | None = None
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    show_progress: bool = True
    #: filled by the running step: notes (numbers worth reporting) and skipped layers with reasons
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
    #: set by :meth:`replace_step`: the ordinary step the result's recipe records instead of this one
    replacement: dict[str, Any] | None = None

    def require(self, what: str, step: str) -> Any:
        """The named input (``calib``, ``train``, ``teacher``, ``example_inputs``) or a DataError."""
        value = getattr(self, what)
        if value is None or (isinstance(value, list) and not value):
            hint = {"calib": "calib=[...] / --calib", "train": "train=[...]", "teacher": "teacher=model",
                    "example_inputs": "example_inputs=..."}.get(what, what)
            raise DataError(f"step {step!r} needs {what} data but none was given (pass {hint})")
        return value

    def note(self, key: str, value: Any) -> None:
        """Record a number or fact about the running step for the report."""
        self.notes[key] = value

    def skip(self, layer: str, reason: str) -> None:
        """Report a layer the step could not or chose not to handle (never skip silently)."""
        self.skipped.append({"layer": layer, "reason": reason})

    def progress(self, items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
        """Iterate with a rich progress bar when progress display is on."""
        if not self.show_progress:
            yield from items
            return
        from rich.progress import track

        yield from track(items, description=description, total=total, transient=True)

    def replace_step(self, step: dict[str, Any]) -> None:
        """Record ``step`` (a one-key recipe mapping) in the result's recipe in place of the running
        step: a ``search`` step puts the ordinary step it found there, so re-running the recipe (or
        ``sk.load`` reading it) needs no search. The runner validates it like any recipe step."""
        self.replacement = dict(step)

    def begin_step(self) -> None:
        self.notes = {}
        self.skipped = []
        self.replacement = None
