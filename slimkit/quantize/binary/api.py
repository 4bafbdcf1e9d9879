"""``quantize: {method: binary | ternary}`` handlers: codes + per-channel scales, packed layers."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.provenance import record_edit
from slimkit.core.registry import register
from slimkit.core.select import select_modules
from slimkit.io.edits import replace_module
from slimkit.quantize.binary.config import BinaryConfig, TernaryConfig
from slimkit.quantize.binary.core import LowBitLayer, binarize, ternarize
from slimkit.core.select import tied_weight_names

__all__ = ["quantize_binary", "quantize_ternary"]

Quantizer = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _apply(model: nn.Module, cfg: BinaryConfig | TernaryConfig, quantizer: Quantizer, bits: int,
           ctx: RunContext) -> nn.Module:
    types = tuple(getattr(nn, t) for t in cfg.layer_types)
    tied = tied_weight_names(model)
    done = zeros = total = 0
    for name, module in select_modules(model, types, targets=cfg.targets, ignore=cfg.ignore, field="quantize"):
        if name in tied:
            ctx.skip(name, "weight is tied to another module (an embedding cannot share packed weights)")
            continue
        codes, alpha = quantizer(module.weight)
        layer = LowBitLayer.from_module(module, codes, alpha, bits)
        replace_module(model, name, layer)
        record_edit(model, {"op": "replace_module", "path": name, "kind": "lowbit_weight_layer", "spec": layer.spec()})
        done += 1
        zeros += int((codes == 0).sum())
        total += codes.numel()
    ctx.note("quantized_layers", done)
    if bits == 2:
        ctx.note("ternary_zero_fraction", round(zeros / max(total, 1), 4))
    return model


@register("quantize", "binary", BinaryConfig)
def quantize_binary(model: nn.Module, cfg: BinaryConfig, ctx: RunContext) -> nn.Module:
    """Selected layers to 1-bit weights with a per-output-channel scale."""
    return _apply(model, cfg, binarize, 1, ctx)


@register("quantize", "ternary", TernaryConfig)
def quantize_ternary(model: nn.Module, cfg: TernaryConfig, ctx: RunContext) -> nn.Module:
    """Selected layers to ternary weights with a per-output-channel scale."""
    return _apply(model, cfg, lambda w: ternarize(w, cfg.delta), 2, ctx)
