"""Layer-by-layer calibration: feed calibration data block by block and collect per-layer statistics.

Wanda, SparseGPT and activation pruning need statistics of each layer's input (or output) on
calibration data. Running the whole model with hooks on every layer at once would hold every
statistic (a SparseGPT Hessian per layer) and use the *dense* upstream activations. Instead, like
the reference implementations, the model's repeated blocks (:mod:`slimkit.core.sequential`,
shared with GPTQ / AWQ) are run one at a time: the inputs of block 0 are captured once, each block is run with hooks on its selected layers, pruned, then re-run to produce the
(pruned) inputs of the next block. Memory stays bounded by one block's statistics plus the
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
from slimkit.core.sequential import capture_block_inputs, next_block_inputs, repeated_blocks

__all__ = ["LayerStats", "calibrate_and_prune"]


class LayerStats(Protocol):
    """Accumulates what a pruner needs from one layer's forward passes."""

    def add(self, module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> None: ...


def _with_hooks(layers: dict[str, nn.Module], make_stats: Callable[[str, nn.Module], LayerStats],
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


@torch.no_grad()
def calibrate_and_prune(
    model: nn.Module,
    layers: list[tuple[str, nn.Module]],
    calib: Sequence[Any],
    make_stats: Callable[[str, nn.Module], LayerStats],
    prune_layer: Callable[[str, nn.Module, LayerStats], None],
    ctx: RunContext | None = None,
) -> None:
    """Collect stats for each selected layer on ``calib`` (block by block) and prune it in place."""
    pending = dict(layers)
    found = repeated_blocks(model)
    if found is not None:
        prefix, blocks = found
        states = capture_block_inputs(model, blocks[0], calib)
        indices = range(len(blocks))
        for i in ctx.progress(indices, "calibrating blocks") if ctx else indices:
            block_prefix = f"{prefix}.{i}."
            mine = {n: m for n, m in pending.items() if n.startswith(block_prefix)}
            block = blocks[i]

            def run_block() -> None:
                for args, kwargs in states:
                    block(*args, **kwargs)

            if mine:
                stats = _with_hooks(mine, make_stats, run_block)
                for name, module in mine.items():
                    prune_layer(name, module, stats.pop(name))
                    del pending[name]
            states = [next_block_inputs(block, args, kwargs) for args, kwargs in states]
    if pending:  # layers outside the blocks, or a model without repeated blocks: one full pass
        stats = _with_hooks(pending, make_stats, lambda: [call_model(model, b) for b in calib])
        for name, module in pending.items():
            prune_layer(name, module, stats.pop(name))
