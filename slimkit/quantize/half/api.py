"""``quantize: {method: fp16 | bf16}`` handlers: cast the model, record the replayable cast."""
from __future__ import annotations

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.provenance import record_edit
from slimkit.core.registry import register
from slimkit.quantize.half.config import Bf16Config, Fp16Config
from slimkit.quantize.half.core import cast_model

__all__ = ["quantize_fp16", "quantize_bf16"]


def _cast(model: nn.Module, name: str, outputs_fp32: bool, ctx: RunContext) -> nn.Module:
    cast_model(model, name, outputs_fp32)
    record_edit(model, {"op": "cast_dtype", "dtype": name, "outputs_fp32": outputs_fp32})
    ctx.note("cast_tensors", sum(1 for _ in model.parameters()) + sum(1 for _ in model.buffers()))
    return model


@register("quantize", "fp16", Fp16Config)
def quantize_fp16(model: nn.Module, cfg: Fp16Config, ctx: RunContext) -> nn.Module:
    """Every floating tensor to float16."""
    return _cast(model, "fp16", cfg.outputs_fp32, ctx)


@register("quantize", "bf16", Bf16Config)
def quantize_bf16(model: nn.Module, cfg: Bf16Config, ctx: RunContext) -> nn.Module:
    """Every floating tensor to bfloat16."""
    return _cast(model, "bf16", cfg.outputs_fp32, ctx)
