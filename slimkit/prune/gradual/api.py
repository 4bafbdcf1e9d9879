"""``prune: {method: gradual}`` handler: the shared training loop with a cubic-schedule mask callback."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.heads import drop_protected
from slimkit.core.registry import register
from slimkit.core.select import select_modules
from slimkit.prune.gradual.config import GradualPruneConfig
from slimkit.prune.gradual.core import GradualMasker
from slimkit.prune.layer_report import note_weight_sparsity
from slimkit.train.finetune.core import supervised_loss
from slimkit.train.loop import train
from slimkit.train.optim import total_steps

__all__ = ["prune_gradual", "gradual_loss"]


def gradual_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """Supervised loss; a HF causal-LM batch without labels trains on next-token prediction."""
    if isinstance(batch, Mapping) and "labels" not in batch and "input_ids" in batch:
        batch = {**batch, "labels": batch["input_ids"]}
    return supervised_loss(model, batch)


@register("prune", "gradual", GradualPruneConfig, needs=("train",))
def prune_gradual(model: nn.Module, cfg: GradualPruneConfig, ctx: RunContext) -> nn.Module:
    """Fine-tune on ``train`` while the selected layers' sparsity follows the cubic schedule."""
    data = ctx.require("train", "prune")
    types = tuple(getattr(nn, t) for t in cfg.layer_types)
    layers = select_modules(model, types, targets=cfg.targets, ignore=cfg.ignore, field="prune")
    layers = drop_protected(model, layers, cfg.targets, ctx)
    opts = cfg.train_options()
    total = total_steps(opts, len(data))
    end = cfg.prune_end if cfg.prune_end is not None else max(cfg.prune_start + 1, (3 * total) // 4)
    masker = GradualMasker(layers, cfg.initial_sparsity, cfg.sparsity, cfg.prune_start, end, cfg.prune_every)
    result = train(model, data, gradual_loss, opts, ctx=ctx, callbacks=[masker])
    note_weight_sparsity(layers, ctx)
    ctx.note("schedule", masker.history)
    ctx.note("final_loss", result["final_loss"])
    return model
