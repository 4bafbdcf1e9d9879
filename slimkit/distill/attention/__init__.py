"""Attention-map distillation for transformers."""
from slimkit.distill.attention.config import AttentionKDConfig
from slimkit.distill.attention.core import attention_spec, count_layers

__all__ = ["AttentionKDConfig", "attention_spec", "count_layers"]
