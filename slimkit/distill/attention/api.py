"""``distill: {method: attention}`` handler."""
from __future__ import annotations

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.registry import register
from slimkit.distill.attention.config import AttentionKDConfig
from slimkit.distill.attention.core import attention_spec
from slimkit.distill.run import run_distill

__all__ = ["distill_attention"]


@register("distill", "attention", AttentionKDConfig, needs=("train",))
def distill_attention(model: nn.Module, cfg: AttentionKDConfig, ctx: RunContext) -> nn.Module:
    """Train the student's attention maps (and logits) towards the teacher's."""
    return run_distill(model, cfg, ctx, lambda student, teacher: attention_spec(cfg, student, teacher))
