"""Layer-by-layer calibration: feed calibration data block by block and collect per-layer statistics.

Wanda, SparseGPT and activation pruning need statistics of each layer's input (or output) on
calibration data. Running the whole model with hooks on every layer at once would hold every
statistic (a SparseGPT Hessian per layer) and use the *dense* upstream activations. Instead, like
the reference implementations, the model's repeated blocks are run one at a time by
:func:`slimkit.core.sequential.run_blocks` (shared with GPTQ / AWQ): the inputs of block 0 are
captured once, each block is run with hooks on its selected layers, pruned, then re-run to produce
the (pruned) inputs of the next block. Memory stays bounded by one block's statistics plus the
calibration hidden states. Selected layers outside the blocks (or models without blocks) get a
final full-model pass.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.inputs import call_model
from slimkit.core.sequential import no_cache, run_blocks

__all__ = ["LayerStats", "calibrate_and_prune", "collect_stats"]


class LayerStats(Protocol):
    """Accumulates what a pruner needs from one layer's forward passes."""

    def add(self, module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> None: ...


def collect_stats(layers: dict[str, nn.Module], make_stats: Callable[[str, nn.Module], LayerStats],
                run: Callable[[], None]) -> dict[str, LayerStats]:
    """Run ``run()`` with forward hooks feeding a fresh stats object per layer."""
    stats = {name: make_stats(name, m) for name, m in layers.items()}
    handles = [
        m.register_forward_hook(lambda mod, inp, out, s=stats[name]: s.add(mod, inp[0].detach(), out.detach()))
        for name, m in layers.items()
    ]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return stats


def calibrate_and_prune(
    model: nn.Module,
    layers: list[tuple[str, nn.Module]],
    calib: Sequence[Any],
    make_stats: Callable[[str, nn.Module], LayerStats],
    prune_layer: Callable[[str, nn.Module, LayerStats], None],
    ctx: RunContext | None = None,
) -> None:
    """Collect stats for each selected layer on ``calib`` (block by block) and prune it in place.

    The block-by-block pass is :func:`slimkit.core.sequential.run_blocks` (shared with GPTQ / AWQ):
    a block's layers are pruned before the block produces the next block's inputs.
    """
    pending = dict(layers)
    batches = list(calib)

    def visit(block_name: str, _block: nn.Module, replay: Callable[[], None]) -> None:
        prefix = f"{block_name}." if block_name else ""
        mine = {n: m for n, m in pending.items() if n.startswith(prefix)}
        if not mine:
            return
        stats = collect_stats(mine, make_stats, replay)
        for name, module in mine.items():
            prune_layer(name, module, stats.pop(name))
            del pending[name]

    run_blocks(model, batches, visit, ctx.progress if ctx else None)
    if pending:  # layers outside the repeated blocks: one full pass on the pruned model
        with torch.no_grad():
            visit("", model, lambda: [call_model(model, no_cache(model, b)) for b in batches])
