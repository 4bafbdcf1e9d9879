"""``quantize: {method: dynamic_int8}`` handler: swap Linear layers for int8 ones, record edits."""
from __future__ import annotations

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.registry import register
from slimkit.core.swap import swap_layers, swappable_layers
from slimkit.quantize.dynamic_int8.config import TIED_REASON, DynamicInt8Config
from slimkit.quantize.dynamic_int8.core import Int8DynamicLinear

__all__ = ["quantize_dynamic_int8"]


@register("quantize", "dynamic_int8", DynamicInt8Config)
def quantize_dynamic_int8(model: nn.Module, cfg: DynamicInt8Config, ctx: RunContext) -> nn.Module:
    """Replace every selected ``nn.Linear`` by :class:`Int8DynamicLinear`."""
    layers = swappable_layers(model, (nn.Linear,), ctx, targets=cfg.targets, ignore=cfg.ignore, field="quantize",
                              tied_reason=None if cfg.quantize_tied else TIED_REASON)
    done = swap_layers(model, layers, lambda _, linear: Int8DynamicLinear.from_linear(
        linear, cfg.per_channel, cfg.activations))
    ctx.note("quantized_linear_layers", len(done))
    return model
