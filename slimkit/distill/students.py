"""Students by construction (DistilBERT style): a smaller model made from the teacher itself, so it
starts close to it. Depth: keep every k-th block (or chosen blocks), via the block-dropping edit of
:mod:`slimkit.surgery.blocks`; width: structured pruning (``prune: {method: structured}``). Both are
recorded as structural edits, so ``sk.save`` / ``sk.load`` rebuild the student.
A user architecture needs nothing here: pass it as the model and the teacher as ``teacher=``.
"""
from __future__ import annotations

import copy
from typing import Any

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError
from slimkit.core.provenance import record_edit

__all__ = ["keep_blocks", "every_kth", "shrink_width", "build_student"]


def every_kth(n_blocks: int, k: int) -> list[int]:
    """Blocks 0, k, 2k, ... of ``n_blocks`` (DistilBERT keeps one layer out of two)."""
    return list(range(0, n_blocks, k))


def keep_blocks(model: nn.Module, keep: list[int], field: str = "keep_layers") -> nn.Module:
    """Remove every block of the model's block stack not in ``keep`` (in place; edit recorded)."""
    from slimkit.surgery.blocks import drop_blocks, find_blocks

    blocks = find_blocks(model)
    bad = [i for i in keep if i >= len(blocks)]
    if bad:
        raise ConfigError(f"{field} = {keep}: block(s) {bad} do not exist; {blocks.path} has {len(blocks)} blocks "
                          f"(valid indices 0..{len(blocks) - 1})")
    drop = [i for i in range(len(blocks)) if i not in set(keep)]
    not_droppable = sorted(set(drop) - set(blocks.droppable))
    if not_droppable:
        raise ConfigError(f"{field}: blocks {not_droppable} of {blocks.path} change the tensor shape and cannot be removed")
    if drop:
        record_edit(model, drop_blocks(model, blocks.path, drop))
    return model


def shrink_width(model: nn.Module, fraction: float, example_inputs: Any, granularity: str = "auto",
                 ctx: RunContext | None = None) -> nn.Module:
    """Remove ``fraction`` of the MLP neurons (transformers) or conv channels (CNNs), physically,
    by magnitude, with the structured pruning step (which records its own edits)."""
    from slimkit.core.registry import lookup

    if granularity == "auto":
        granularity = "neuron" if getattr(model, "config", None) is not None else "channel"
    spec = lookup("prune", "structured")
    cfg = spec.config_cls(granularity=granularity, sparsity=fraction)
    sub = RunContext(example_inputs=example_inputs, calib=[example_inputs], show_progress=False)
    model = spec.handler(model, cfg, sub) or model
    if ctx is not None:
        ctx.note("width_units_removed", sub.notes.get("units_removed"))
    return model


def build_student(model: nn.Module, *, keep_every: int | None = None, keep_layers: list[int] | None = None,
                  shrink: float | None = None, granularity: str = "auto", example_inputs: Any = None,
                  ctx: RunContext | None = None, inplace: bool = True) -> nn.Module:
    """A student from ``model``: fewer blocks (``keep_every`` / ``keep_layers``), then narrower (``shrink``)."""
    student = model if inplace else copy.deepcopy(model)
    if keep_every is not None:
        from slimkit.surgery.blocks import find_blocks

        keep_blocks(student, every_kth(len(find_blocks(student)), keep_every), field="keep_every")
    elif keep_layers is not None:
        keep_blocks(student, sorted(set(keep_layers)))
    if shrink is not None:
        if example_inputs is None:
            raise ConfigError("shrink_width needs example inputs (the first training batch is used)")
        student = shrink_width(student, shrink, example_inputs, granularity, ctx)
    return student
