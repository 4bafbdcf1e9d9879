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

__all__ = ["swappable_layers", "swap_layers", "install_layer", "custom_forward"]

#: ``reject(name, module)``: why this layer cannot be swapped, or None when it can
Reject = Callable[[str, nn.Module], "str | None"]
#: ``build(name, module)``: the replacement layer
Build = Callable[[str, nn.Module], nn.Module]


def custom_forward(module: nn.Module) -> str | None:
    """Why ``module`` cannot be swapped for a compressed layer of its base type, or None.

    A subclass of Linear / Conv that overrides ``forward`` computes more than its base class (e.g.
    EfficientNet's ``Conv2dStaticSamePadding`` pads the input first); a replacement built from its
    weight alone would silently drop that, so such a layer is named and kept.
    """
    for base in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding):
        if isinstance(module, base) and type(module).forward is not base.forward:
            return (f"{type(module).__name__} overrides {base.__name__}.forward (its own computation, e.g. padding); "
                    "a compressed replacement would not compute the same thing")
    return None


def swappable_layers(model: nn.Module, types: tuple[type[nn.Module], ...], ctx: RunContext, *,
                     targets: Sequence[str] | None, ignore: Sequence[str], field: str,
                     tied_reason: str | None, reject: Reject | None = None) -> dict[str, nn.Module]:
    """Selected layers of ``types`` a step may replace, in model order.

    A layer whose weight is tied to another module is skipped with ``tied_reason`` (pass None when
    the step stores a separate compressed copy on purpose, e.g. ``quantize_tied: true``); a layer
    whose class overrides its base's ``forward`` (:func:`custom_forward`) and a layer for which
    ``reject`` returns a reason are skipped with that reason. Nothing is skipped silently.
    """
    tied = tied_weight_names(model) if tied_reason is not None else set()
    chosen: dict[str, nn.Module] = {}
    for name, module in select_modules(model, types, targets=targets, ignore=ignore, field=field):
        reason = tied_reason if name in tied else custom_forward(module)
        if reason is None and reject is not None:
            reason = reject(name, module)
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
