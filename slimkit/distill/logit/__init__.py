"""Logit knowledge distillation (temperature KL + hard labels; token-level for causal LMs)."""
from slimkit.distill.logit.config import LogitKDConfig
from slimkit.distill.logit.core import logit_spec

__all__ = ["LogitKDConfig", "logit_spec"]
