"""``finetune: {method: supervised}`` handler: the shared loop with the supervised loss."""
from __future__ import annotations

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.registry import register
from slimkit.train.finetune.config import FinetuneConfig
from slimkit.train.finetune.core import supervised_loss
from slimkit.train.loop import train

__all__ = ["finetune_supervised"]


@register("finetune", "supervised", FinetuneConfig, needs=("train",), default=True)
def finetune_supervised(model: nn.Module, cfg: FinetuneConfig, ctx: RunContext) -> nn.Module:
    """Train every trainable parameter of ``model`` on ``ctx.train``; notes the loss curve ends."""
    data = ctx.require("train", "finetune")
    result = train(model, data, supervised_loss, cfg.train_options(), ctx=ctx)
    ctx.note("steps", result["steps"])
    ctx.note("first_loss", round(result["history"][0]["loss"], 5) if result["history"] else None)
    ctx.note("final_loss", round(result["final_loss"], 5) if result["final_loss"] is not None else None)
    if result["best_metric"] is not None:
        ctx.note("best_metric", result["best_metric"])
    if result["stopped_early"]:
        ctx.note("stopped_early_at", result["steps"])
    return model
