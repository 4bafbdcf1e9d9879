"""``quantize: {method: dynamic_int8}`` handler: swap Linear layers for int8 ones, record edits."""
from __future__ import annotations

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.provenance import record_edit
from slimkit.core.registry import register
from slimkit.core.select import select_modules, tied_weight_names
from slimkit.io.edits import replace_module
from slimkit.quantize.dynamic_int8.config import DynamicInt8Config
from slimkit.quantize.dynamic_int8.core import Int8DynamicLinear

__all__ = ["quantize_dynamic_int8"]


@register("quantize", "dynamic_int8", DynamicInt8Config)
def quantize_dynamic_int8(model: nn.Module, cfg: DynamicInt8Config, ctx: RunContext) -> nn.Module:
    """Replace every selected ``nn.Linear`` by :class:`Int8DynamicLinear`."""
    tied = tied_weight_names(model)
    layers = select_modules(model, (nn.Linear,), targets=cfg.targets, ignore=cfg.ignore, field="quantize")
    done = 0
    for name, linear in layers:
        if name in tied and not cfg.quantize_tied:
            ctx.skip(name, "weight is tied to another module (set quantize_tied: true to store an int8 copy)")
            continue
        layer = Int8DynamicLinear.from_linear(linear, cfg.per_channel, cfg.activations)
        replace_module(model, name, layer)
        record_edit(model, {"op": "replace_module", "path": name, "kind": "int8_dynamic_linear", "spec": layer.spec()})
        done += 1
    ctx.note("quantized_linear_layers", done)
    return model
