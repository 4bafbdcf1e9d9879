"""Loss terms of logit KD: the temperature-softened KL plus the hard-label mix, nothing else."""
from __future__ import annotations

from slimkit.distill.engine import LossSpec
from slimkit.distill.logit.config import LogitKDConfig

__all__ = ["logit_spec"]


def logit_spec(cfg: LogitKDConfig) -> LossSpec:
    """The objective of ``method: logit``."""
    return LossSpec(temperature=cfg.temperature, alpha=cfg.alpha, logit_weight=cfg.logit_weight)
