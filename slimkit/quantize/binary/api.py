"""``quantize: {method: binary | ternary}`` handlers: codes + per-channel scales, packed layers."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.registry import register
from slimkit.core.swap import swap_layers, swappable_layers
from slimkit.quantize.binary.config import BinaryConfig, TernaryConfig
from slimkit.quantize.binary.core import LowBitLayer, binarize, ternarize

__all__ = ["quantize_binary", "quantize_ternary"]

Quantizer = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _apply(model: nn.Module, cfg: BinaryConfig | TernaryConfig, quantizer: Quantizer, bits: int,
           ctx: RunContext) -> nn.Module:
    types = tuple(getattr(nn, t) for t in cfg.layer_types)
    layers = swappable_layers(model, types, ctx, targets=cfg.targets, ignore=cfg.ignore, field="quantize",
                              tied_reason="weight is tied to another module (an embedding cannot share packed weights)")
    counts = {"zeros": 0, "total": 0}

    def build(_: str, module: nn.Module) -> nn.Module:
        codes, alpha = quantizer(module.weight)
        counts["zeros"] += int((codes == 0).sum())
        counts["total"] += codes.numel()
        return LowBitLayer.from_module(module, codes, alpha, bits)

    done = swap_layers(model, layers, build)
    ctx.note("quantized_layers", len(done))
    if bits == 2:
        ctx.note("ternary_zero_fraction", round(counts["zeros"] / max(counts["total"], 1), 4))
    return model


@register("quantize", "binary", BinaryConfig)
def quantize_binary(model: nn.Module, cfg: BinaryConfig, ctx: RunContext) -> nn.Module:
    """Selected layers to 1-bit weights with a per-output-channel scale."""
    return _apply(model, cfg, binarize, 1, ctx)


@register("quantize", "ternary", TernaryConfig)
def quantize_ternary(model: nn.Module, cfg: TernaryConfig, ctx: RunContext) -> nn.Module:
    """Selected layers to ternary weights with a per-output-channel scale."""
    return _apply(model, cfg, lambda w: ternarize(w, cfg.delta), 2, ctx)
