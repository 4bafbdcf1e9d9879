"""Replayable structural edits.

A step that changes a model's structure records an edit (see
:func:`slimkit.core.provenance.record_edit`); ``sk.load`` rebuilds the base architecture and replays
the edits in order before loading tensors. Two registries make this extensible:

* edit ops: ``op name -> fn(model, record)``, e.g. ``replace_module``;
* module kinds: ``kind -> class`` with ``from_spec(spec) -> nn.Module`` and ``spec() -> dict``, for
  the layers slimkit swaps in (int8 Linear, factorized Linear, ...).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from slimkit.core.errors import CheckpointError

__all__ = ["register_edit_op", "register_module_kind", "replay_edits", "module_kind", "replace_module"]

_OPS: dict[str, Callable[[nn.Module, dict[str, Any]], None]] = {}
_KINDS: dict[str, type[nn.Module]] = {}


def register_edit_op(op: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        _OPS[op] = fn
        return fn
    return decorate


def register_module_kind(kind: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: the class must define ``from_spec(spec)`` and ``spec()``."""
    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        _KINDS[kind] = cls
        cls.slimkit_kind = kind  # type: ignore[attr-defined]
        return cls
    return decorate


def module_kind(kind: str) -> type[nn.Module]:
    from slimkit.core.registry import load_builtin_steps

    load_builtin_steps()  # algorithm modules register their layer kinds on import
    if kind not in _KINDS:
        raise CheckpointError(f"checkpoint uses layer kind {kind!r} that this slimkit does not know; known: {sorted(_KINDS)}")
    return _KINDS[kind]


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted ``path`` inside ``model``."""
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@register_edit_op("replace_module")
def _replay_replace(model: nn.Module, record: dict[str, Any]) -> None:
    cls = module_kind(record["kind"])
    replace_module(model, record["path"], cls.from_spec(record["spec"]))  # type: ignore[attr-defined]


def replay_edits(model: nn.Module, edits: list[dict[str, Any]]) -> None:
    """Apply recorded edits, in order, to a fresh base model."""
    from slimkit.core.registry import load_builtin_steps

    load_builtin_steps()
    for i, record in enumerate(edits):
        op = record.get("op")
        if op not in _OPS:
            raise CheckpointError(f"edit #{i} has unknown op {op!r}; known ops: {sorted(_OPS)}")
        try:
            _OPS[op](model, record)
        except (AttributeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"cannot replay edit #{i} ({op}) onto this model: {exc}") from None
