"""``quantize: {method: gptq}`` handler: block-by-block Hessians, GPTQ per Linear, packed layers."""
from __future__ import annotations

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.registry import register
from slimkit.quantize.gptq.config import GPTQConfig
from slimkit.quantize.gptq.core import HessianAccumulator, gptq_quantize
from slimkit.quantize.weight_only.apply import finish_notes
from slimkit.quantize.weight_only.layer import WeightOnlyLinear
from slimkit.quantize.weight_only.sequential import calibrate_and_quantize

__all__ = ["quantize_gptq"]


@register("quantize", "gptq", GPTQConfig, needs=("calib",))
def quantize_gptq(model: nn.Module, cfg: GPTQConfig, ctx: RunContext) -> nn.Module:
    """GPTQ every selected Linear, one decoder block at a time (inputs from the already-quantized prefix)."""

    def make_layer(_name: str, linear: nn.Linear, hess: HessianAccumulator, bits: int) -> WeightOnlyLinear:
        codes = gptq_quantize(linear.weight, hess.take(), bits, cfg.group_size, cfg.symmetric,
                              cfg.damp, cfg.act_order, cfg.block_size, cfg.clip_search)
        with torch.no_grad():
            return WeightOnlyLinear.from_weight(linear.weight, linear.bias, bits, cfg.group_size,
                                                cfg.symmetric, cfg.runtime, codes=codes)

    done = calibrate_and_quantize(model, cfg, ctx, "quantize:gptq",
                                  lambda _n, m: HessianAccumulator(m.in_features), make_layer,
                                  calibrate_heads=cfg.head_method == "gptq")
    finish_notes(model, ctx, done)
    return model
