"""``quantize: {method: rtn}`` handler: swap Linear layers for packed weight-only layers."""
from __future__ import annotations

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.registry import register
from slimkit.quantize.rtn.config import RTNConfig
from slimkit.quantize.rtn.core import rtn_linear
from slimkit.quantize.weight_only.apply import finish_notes, install, layer_bits, quantize_heads, select_linears

__all__ = ["quantize_rtn"]


@register("quantize", "rtn", RTNConfig)
def quantize_rtn(model: nn.Module, cfg: RTNConfig, ctx: RunContext) -> nn.Module:
    """Round every selected Linear's weight to ``bits`` per group; head/embeddings by explicit choice."""
    layers = select_linears(model, cfg, ctx, "quantize")
    bits = layer_bits(cfg, layers, ctx)
    for name, linear in ctx.progress(layers, "rtn"):
        install(model, name, rtn_linear(linear, bits[name], cfg.group_size, cfg.symmetric, cfg.runtime,
                                        cfg.clip_search))
    quantize_heads(model, cfg, ctx)
    finish_notes(model, ctx, len(layers))
    return model
