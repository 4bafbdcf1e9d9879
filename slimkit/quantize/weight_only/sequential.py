"""Statistics hooks for weight-only quantization's sequential calibration.

The block-by-block runner itself is shared with pruning (:mod:`slimkit.core.sequential`); this
module adds what GPTQ / AWQ / mixed need on top: the chosen layers inside a block, forward hooks
that hand each layer's input to a statistics accumulator, and the driver of the methods that
replace every layer from its statistics (GPTQ, AWQ), the counterpart of pruning's
:func:`slimkit.prune.calibration.calibrate_and_prune`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.inputs import call_model
from slimkit.core.sequential import no_cache, run_blocks
from slimkit.quantize.weight_only.apply import heads_to_quantize, install, layer_bits, quantize_heads, select_linears
from slimkit.quantize.weight_only.config import WeightOnlyConfig

__all__ = ["run_blocks", "block_layers", "StatsHook", "calibrate_and_quantize"]


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


def calibrate_and_quantize(model: nn.Module, cfg: WeightOnlyConfig, ctx: RunContext, step: str,
                           make_stats: Callable[[str, nn.Linear], Any],
                           make_layer: Callable[[str, nn.Linear, Any, int], nn.Module],
                           calibrate_heads: bool = False) -> int:
    """Replace every selected Linear, one block at a time, by ``make_layer(name, linear, stats, bits)``
    (``bits``: the layer's width from ``cfg.bits``, a number or a per-layer map).

    ``make_stats(name, linear)`` builds an accumulator with ``add(x2d)``, fed the layer's inputs
    while the block runs on the outputs of the already-quantized prefix. Linears outside the
    calibrated blocks are reported as skipped; the head / embeddings follow ``cfg``. With
    ``calibrate_heads`` the output heads are built by ``make_layer`` too (at ``head_bits``), from
    their inputs in one forward of the quantized model over ``calib``. Returns how many layers
    were replaced.
    """
    calib = ctx.require("calib", step)
    layers = select_linears(model, cfg, ctx, "quantize")
    chosen, bits = dict(layers), layer_bits(cfg, layers, ctx)
    done: list[str] = []

    def visit(block_name: str, block: nn.Module, replay: Callable[[], None]) -> None:
        local = block_layers(block_name, block, chosen)
        if not local:
            return
        stats = {n: make_stats(n, m) for n, m in local.items()}
        with StatsHook(local, lambda n, x: stats[n].add(x)):
            replay()
        for name, linear in local.items():
            install(model, name, make_layer(name, linear, stats.pop(name), bits[name]))
            done.append(name)

    run_blocks(model, calib, visit, ctx.progress)
    for name in sorted(set(chosen) - set(done)):
        ctx.skip(name, "Linear outside the calibrated blocks was never reached by calibration data")
    heads = _calibrated_heads(model, cfg, calib, make_stats, make_layer) if calibrate_heads else {}
    quantize_heads(model, cfg, ctx, heads)
    return len(done)


def _calibrated_heads(model: nn.Module, cfg: WeightOnlyConfig, calib: list[Any],
                      make_stats: Callable[[str, nn.Linear], Any],
                      make_layer: Callable[[str, nn.Linear, Any, int], nn.Module]) -> dict[str, nn.Module]:
    """``make_layer`` for each head to quantize, its statistics gathered while the (already
    quantized) model runs every calibration batch."""
    local = {n: model.get_submodule(n) for n in heads_to_quantize(model, cfg)}
    if not local:
        return {}
    stats = {n: make_stats(n, m) for n, m in local.items()}
    with torch.no_grad(), StatsHook(local, lambda n, x: stats[n].add(x)):
        for batch in calib:
            call_model(model, no_cache(model, batch))
    bits = cfg.resolved_head_bits()
    return {n: make_layer(n, m, stats.pop(n), bits) for n, m in local.items()}
