"""``distill: {method: logit}`` handler."""
from __future__ import annotations

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.registry import register
from slimkit.distill.logit.config import LogitKDConfig
from slimkit.distill.logit.core import logit_spec
from slimkit.distill.run import run_distill

__all__ = ["distill_logit"]


@register("distill", "logit", LogitKDConfig, needs=("train",), default=True)
def distill_logit(model: nn.Module, cfg: LogitKDConfig, ctx: RunContext) -> nn.Module:
    """Train ``model`` (or the student built from it) to match the teacher's output distribution."""
    return run_distill(model, cfg, ctx, lambda student, teacher: logit_spec(cfg))
