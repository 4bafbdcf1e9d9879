"""Which student attention layer learns which teacher layer, checked against the layer counts."""
from __future__ import annotations

from torch import nn

from slimkit.core.errors import ConfigError, UnsupportedModelError
from slimkit.distill.attention.config import AttentionKDConfig
from slimkit.distill.engine import LossSpec
from slimkit.distill.feature.core import pair_layers

__all__ = ["count_layers", "attention_spec"]


def count_layers(model: nn.Module) -> int:
    """Number of attention layers: ``config.num_hidden_layers`` of a Hugging Face transformer."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if not isinstance(n, int):
        raise UnsupportedModelError(f"{type(model).__name__}: attention distillation needs a Hugging Face "
                                    "transformer (config.num_hidden_layers and attention outputs)")
    return n


def attention_spec(cfg: AttentionKDConfig, student: nn.Module, teacher: nn.Module) -> LossSpec:
    """The objective of ``method: attention`` (raises on layers that do not exist)."""
    n_s, n_t = count_layers(student), count_layers(teacher)
    amap = dict(cfg.layer_map) if cfg.layer_map is not None else pair_layers(n_s, n_t)
    for i, j in amap.items():
        if i >= n_s or j >= n_t:
            raise ConfigError(f"layer_map: {i} -> {j} names a layer that does not exist (student has {n_s} "
                              f"layers, teacher {n_t}; indices start at 0)")
    return LossSpec(temperature=cfg.temperature, alpha=cfg.alpha, logit_weight=cfg.logit_weight,
                    attention_map=amap, attention_weight=cfg.attention_weight)
