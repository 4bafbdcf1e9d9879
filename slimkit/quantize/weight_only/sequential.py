"""Sequential (block-by-block) calibration through a model's repeated blocks.

GPTQ, AWQ and the mixed-precision sensitivity pass need, for every Linear, statistics of its
input on calibration data. Running the whole model once with hooks on every layer would hold all
layers' statistics at once; instead the inputs of the first decoder block are captured once, then
each block is run on them, its layers are processed (``visit``), and the block is run again to
produce the next block's inputs (with the block already quantized, so later blocks see and
correct the error of earlier ones). Peak memory: one model copy + one block's activations.

Blocks are the longest ``nn.ModuleList`` of same-class modules holding Linear layers
(``model.model.layers`` of a Llama); a model without one is treated as a single block fed with
the calibration inputs themselves.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from slimkit.core.inputs import call_model

__all__ = ["find_blocks", "run_blocks", "block_layers", "StatsHook"]


class _Stop(Exception):
    """Raised by the capture hook: the rest of the model is not needed."""


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The repeated blocks (qualified name, module), or ``[("", model)]`` when there are none."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        if len({type(m) for m in module}) != 1 or not any(isinstance(s, nn.Linear) for s in module[0].modules()):
            continue
        if best is None or len(module) > len(best[1]):
            best = (name, module)
    if best is None:
        return [("", model)]
    return [(f"{best[0]}.{i}", m) for i, m in enumerate(best[1])]


def _capture_first(model: nn.Module, block: nn.Module, calib: Iterable[Any]) -> list[tuple[tuple, dict]]:
    """(args, kwargs) the first block receives for each calibration batch."""
    seen: list[tuple[tuple, dict]] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        seen.append((args, kwargs))
        raise _Stop

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in calib:
            try:
                call_model(model, _no_cache(model, batch))
            except _Stop:
                pass
    finally:
        handle.remove()
    return seen


def _no_cache(model: nn.Module, batch: Any) -> Any:
    """HF decoders: no KV cache during calibration (a cache would grow across blocks)."""
    if isinstance(batch, dict) and getattr(getattr(model, "config", None), "use_cache", None) is not None:
        return {**batch, "use_cache": False}
    return batch


def _first_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _next_inputs(block: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The block's output in place of its hidden-state input (positional, or ``hidden_states=``)."""
    out = _first_output(block(*args, **kwargs))
    if args:
        return (out,) + tuple(args[1:]), kwargs
    return args, {**kwargs, "hidden_states": out}


def run_blocks(model: nn.Module, calib: list[Any], visit: Callable[[str, nn.Module, Callable[[], None]], None],
               progress: Callable[[Iterable[Any], str], Iterable[Any]] | None = None) -> None:
    """Call ``visit(block_name, block, replay)`` for each block in order.

    ``replay()`` runs the block on the current calibration inputs (``visit`` hooks the block's
    layers around it to collect statistics, as often as it needs); after ``visit`` returns, the
    block is run once more to produce the inputs of the next block.
    """
    blocks = find_blocks(model)
    with torch.no_grad():
        if blocks[0][0] == "":
            visit("", model, lambda: [call_model(model, _no_cache(model, b)) for b in calib])
            return
        states = _capture_first(model, blocks[0][1], calib)
        items = progress(blocks, "calibrating blocks") if progress else blocks
        for name, block in items:
            def replay(block: nn.Module = block) -> None:
                for args, kwargs in states:
                    block(*args, **kwargs)
            visit(name, block, replay)
            states = [_next_inputs(block, args, kwargs) for args, kwargs in states]


def block_layers(block_name: str, block: nn.Module, chosen: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """The chosen layers (by qualified name) that live inside ``block``."""
    prefix = f"{block_name}." if block_name else ""
    return {prefix + n: m for n, m in block.named_modules() if prefix + n in chosen}


class StatsHook:
    """Forward hooks on Linear layers calling ``fn(name, x2d)`` with each input as [tokens, in] float32."""

    def __init__(self, layers: dict[str, nn.Module], fn: Callable[[str, torch.Tensor], None]) -> None:
        self.handles = [m.register_forward_hook(self._make(n, fn)) for n, m in layers.items()]

    @staticmethod
    def _make(name: str, fn: Callable[[str, torch.Tensor], None]) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple, _out: Any) -> None:
            x = args[0]
            fn(name, x.detach().reshape(-1, x.shape[-1]).float())
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def __enter__(self) -> "StatsHook":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()
