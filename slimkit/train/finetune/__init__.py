"""Supervised fine-tuning step (``finetune``)."""
from slimkit.train.finetune.config import FinetuneConfig
from slimkit.train.finetune.core import supervised_loss

__all__ = ["FinetuneConfig", "supervised_loss"]
