"""Provenance carried on a model object: where it came from and the structural edits applied.

Both live as plain attributes on the root module so that ``copy.deepcopy`` carries them and
``sk.save`` can write them into ``slimkit.json``:

* ``base``: a JSON-able reference that rebuilds the original architecture, e.g.
  ``{"zoo": "mobilenet-v2"}`` or ``{"hf_class": "LlamaForCausalLM", "hf_config": {...}}``.
* ``edits``: an ordered list of JSON-able edit records, replayed by ``sk.load`` onto a fresh
  instance of the base architecture (see :mod:`slimkit.io.edits`).
"""
from __future__ import annotations

from typing import Any

from torch import nn

__all__ = [
    "get_base", "set_base", "get_edits", "record_edit",
    "set_recipe", "get_recipe", "set_source", "get_source",
]

_BASE_ATTR = "_slimkit_base"
_EDITS_ATTR = "_slimkit_edits"


def set_base(model: nn.Module, ref: dict[str, Any]) -> None:
    """Attach the reference that rebuilds ``model``'s original architecture."""
    object.__setattr__(model, _BASE_ATTR, dict(ref))


def get_base(model: nn.Module) -> dict[str, Any] | None:
    """The base reference set by :func:`set_base` or by the zoo, if any."""
    return getattr(model, _BASE_ATTR, None)


def get_edits(model: nn.Module) -> list[dict[str, Any]]:
    """The structural edits applied so far (a copy; empty for an unedited model)."""
    return [dict(e) for e in getattr(model, _EDITS_ATTR, [])]


def record_edit(model: nn.Module, edit: dict[str, Any]) -> None:
    """Append one JSON-able structural edit (must carry an ``"op"`` key) to the model's log."""
    if "op" not in edit:
        raise ValueError("an edit record needs an 'op' key")
    log = list(getattr(model, _EDITS_ATTR, []))
    log.append(dict(edit))
    object.__setattr__(model, _EDITS_ATTR, log)


_RECIPE_ATTR = "_slimkit_recipe"
_SOURCE_ATTR = "_slimkit_source"


def set_recipe(model: nn.Module, recipe: dict[str, Any]) -> None:
    """Remember the recipe (as a dict) that produced ``model``; written into ``slimkit.json``."""
    object.__setattr__(model, _RECIPE_ATTR, recipe)


def get_recipe(model: nn.Module) -> dict[str, Any] | None:
    return getattr(model, _RECIPE_ATTR, None)


def set_source(model: nn.Module, path: str) -> None:
    """Remember the directory a model was loaded from, so saving never overwrites its input."""
    object.__setattr__(model, _SOURCE_ATTR, path)


def get_source(model: nn.Module) -> str | None:
    return getattr(model, _SOURCE_ATTR, None)
