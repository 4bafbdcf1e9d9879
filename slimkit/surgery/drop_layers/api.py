"""``drop_layers`` handler: find the block stack, score candidates, drop, record a replayable edit."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError
from slimkit.core.inputs import call_model, output_tensor
from slimkit.core.provenance import record_edit
from slimkit.core.registry import register
from slimkit.surgery.blocks import BlockList, drop_blocks, find_blocks
from slimkit.surgery.drop_layers.config import DropLayersConfig
from slimkit.surgery.drop_layers.core import block_influence, block_io_tensor, choose_blocks, output_drift

__all__ = ["drop_layers_influence", "drop_layers_quality", "drop_layers_last", "drop_layers_explicit",
           "score_blocks", "explicit_blocks"]


def _plan(model: nn.Module, cfg: DropLayersConfig) -> tuple[BlockList, int]:
    blocks = find_blocks(model, cfg.container)
    k = cfg.count(len(blocks))
    if cfg.blocks is not None:
        explicit_blocks(blocks, cfg.blocks)  # range first: a wrong index is the likelier mistake
    if k >= len(blocks):
        what = f"blocks = {cfg.blocks}" if cfg.blocks is not None else f"n = {k}"
        raise ConfigError(f"drop_layers.{what} would remove every block: {blocks.path} has {len(blocks)} blocks; "
                          f"valid range is [1, {len(blocks) - 1}] blocks")
    if k > len(blocks.droppable):
        raise ConfigError(f"drop_layers.n = {k}: only {len(blocks.droppable)} of the {len(blocks)} blocks of "
                          f"{blocks.path} keep their input shape and can be removed")
    return blocks, k


def explicit_blocks(blocks: BlockList, wanted: list[int]) -> list[int]:
    """The listed indices, sorted, checked against the block stack (range and shape-preserving)."""
    out_of_range = [i for i in wanted if i >= len(blocks)]
    if out_of_range:
        raise ConfigError(f"drop_layers.blocks = {wanted}: index(es) {out_of_range} out of range; {blocks.path} has "
                          f"{len(blocks)} blocks, valid indices are [0, {len(blocks) - 1}]")
    fixed = [i for i in wanted if i not in blocks.droppable]
    if fixed:
        raise ConfigError(f"drop_layers.blocks = {wanted}: block(s) {fixed} of {blocks.path} change the shape of their "
                          f"input and cannot be removed; removable blocks are {blocks.droppable}")
    return sorted(wanted)


def score_blocks(model: nn.Module, blocks: BlockList, method: str, batches: list[Any]) -> dict[int, float]:
    """Score each droppable block (lower = cheaper to remove) with the configured criterion."""
    if method == "last":
        return {i: -float(i) for i in blocks.droppable}
    if method == "influence":
        bi = block_influence(model, list(blocks.container), batches)
        return {i: bi[i] for i in blocks.droppable}
    with torch.no_grad():
        reference = [output_tensor(call_model(model, b)).float() for b in batches]
    scores = {}
    for i in blocks.droppable:  # bypass block i alone and measure the output drift
        handle = blocks.container[i].register_forward_hook(_bypass, with_kwargs=True)
        try:
            scores[i] = output_drift(model, reference, batches)
        finally:
            handle.remove()
    return scores


def _bypass(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    """Forward hook making a block return its input, in the structure of its output."""
    x = block_io_tensor(args if args else kwargs)
    if isinstance(output, tuple):
        return (x,) + tuple(output[1:])
    return x


def _drop(model: nn.Module, cfg: DropLayersConfig, ctx: RunContext) -> nn.Module:
    blocks, k = _plan(model, cfg)
    scores: dict[int, float] = {}
    if cfg.method == "explicit":
        chosen = explicit_blocks(blocks, cfg.blocks)
    else:
        batches = []
        if cfg.method != "last":
            batches = list(ctx.require("calib", f"drop_layers:{cfg.method}"))[: cfg.max_calib_batches]
        scores = score_blocks(model, blocks, cfg.method, batches)
        chosen = choose_blocks(scores, k)
    record_edit(model, drop_blocks(model, blocks.path, chosen))
    ctx.note("blocks_before", len(blocks))
    ctx.note("blocks_dropped", chosen)
    if cfg.method not in ("last", "explicit"):
        ctx.note("scores", {str(i): round(s, 5) for i, s in sorted(scores.items())})
    return model


@register("drop_layers", "influence", DropLayersConfig, needs=("calib",), default=True)
def drop_layers_influence(model: nn.Module, cfg: DropLayersConfig, ctx: RunContext) -> nn.Module:
    """Drop the blocks with the lowest block influence (ShortGPT) on calibration data."""
    return _drop(model, cfg, ctx)


@register("drop_layers", "quality", DropLayersConfig, needs=("calib",))
def drop_layers_quality(model: nn.Module, cfg: DropLayersConfig, ctx: RunContext) -> nn.Module:
    """Drop the blocks whose lone removal moves the model output least on calibration data."""
    return _drop(model, cfg, ctx)


@register("drop_layers", "last", DropLayersConfig)
def drop_layers_last(model: nn.Module, cfg: DropLayersConfig, ctx: RunContext) -> nn.Module:
    """Drop the last ``n`` droppable blocks (the usual baseline)."""
    return _drop(model, cfg, ctx)


@register("drop_layers", "explicit", DropLayersConfig)
def drop_layers_explicit(model: nn.Module, cfg: DropLayersConfig, ctx: RunContext) -> nn.Module:
    """Drop exactly the listed ``blocks`` (a search result, or a hand-made choice); no data needed."""
    return _drop(model, cfg, ctx)
