"""``distill: {method: feature}`` handler."""
from __future__ import annotations

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.registry import register
from slimkit.distill.feature.config import FeatureKDConfig
from slimkit.distill.feature.core import feature_spec
from slimkit.distill.run import run_distill

__all__ = ["distill_feature"]


@register("distill", "feature", FeatureKDConfig, needs=("train",))
def distill_feature(model: nn.Module, cfg: FeatureKDConfig, ctx: RunContext) -> nn.Module:
    """Train the student's features (through learned projections) and logits towards the teacher's."""
    return run_distill(model, cfg, ctx, lambda student, teacher: feature_spec(cfg, student, teacher))
