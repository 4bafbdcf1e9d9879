"""Wanda pruning (Sun et al. 2023): weight magnitude times input activation norm."""
from slimkit.prune.wanda.config import CalibratedPruneConfig, WandaPruneConfig

__all__ = ["WandaPruneConfig", "CalibratedPruneConfig"]
