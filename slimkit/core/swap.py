"""The layer swap every compressing step does: select → skip tied → replace → record edit.

Quantizers (dynamic / static int8, SmoothQuant, binary / ternary, QAT) and k-means weight sharing
all replace selected layers by compressed ones. They differ only in *what* they build (and in
whether they need calibration statistics first), so the sequence itself lives here once:

* :func:`swappable_layers` selects the layers (the selection grammar of
  :func:`slimkit.core.select.select_modules`) and reports every layer whose weight is tied to
  another module (a compressed copy would untie the pair) with ``ctx.skip`` instead of swapping it,
  unless the step allows tied weights; an optional ``reject`` check names further layers the step
  cannot handle.
* :func:`swap_layers` builds each replacement, puts it in place and records the replayable
  ``replace_module`` edit (kind taken from the class's ``register_module_kind`` name), so
  ``sk.load`` rebuilds it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.provenance import record_edit
from slimkit.core.select import select_modules, tied_weight_names
from slimkit.io.edits import replace_module

__all__ = ["swappable_layers", "swap_layers", "install_layer"]

#: ``reject(name, module)``: why this layer cannot be swapped, or None when it can
Reject = Callable[[str, nn.Module], "str | None"]
#: ``build(name, module)``: the replacement layer
Build = Callable[[str, nn.Module], nn.Module]


def swappable_layers(model: nn.Module, types: tuple[type[nn.Module], ...], ctx: RunContext, *,
                     targets: Sequence[str] | None, ignore: Sequence[str], field: str,
                     tied_reason: str | None, reject: Reject | None = None) -> dict[str, nn.Module]:
    """Selected layers of ``types`` a step may replace, in model order.

    A layer whose weight is tied to another module is skipped with ``tied_reason`` (pass None when
    the step stores a separate compressed copy on purpose, e.g. ``quantize_tied: true``); a layer
    for which ``reject`` returns a reason is skipped with that reason. Nothing is skipped silently.
    """
    tied = tied_weight_names(model) if tied_reason is not None else set()
    chosen: dict[str, nn.Module] = {}
    for name, module in select_modules(model, types, targets=targets, ignore=ignore, field=field):
        reason = tied_reason if name in tied else (reject(name, module) if reject is not None else None)
        if reason is not None:
            ctx.skip(name, reason)
        else:
            chosen[name] = module
    return chosen


def install_layer(model: nn.Module, name: str, layer: nn.Module) -> None:
    """Put ``layer`` at ``name`` and record the ``replace_module`` edit that replays it on load.

    ``layer``'s class must be registered with :func:`slimkit.io.edits.register_module_kind`
    (which gives it ``slimkit_kind``) and define ``spec()``.
    """
    replace_module(model, name, layer)
    record_edit(model, {"op": "replace_module", "path": name, "kind": layer.slimkit_kind,  # type: ignore[attr-defined]
                        "spec": layer.spec()})  # type: ignore[operator]


def swap_layers(model: nn.Module, layers: dict[str, nn.Module] | Iterable[tuple[str, nn.Module]], build: Build, *,
                record: bool = True) -> dict[str, nn.Module]:
    """Replace each ``(name, module)`` of ``layers`` by ``build(name, module)``; returns {name: new}.

    ``record=False`` swaps without recording an edit, for temporary wrappers that the step itself
    replaces again before it ends (QAT's fake-quantized layers).
    """
    items = layers.items() if isinstance(layers, dict) else layers
    swapped: dict[str, nn.Module] = {}
    for name, module in items:
        new = build(name, module)
        if record:
            install_layer(model, name, new)
        else:
            replace_module(model, name, new)
        swapped[name] = new
    return swapped
