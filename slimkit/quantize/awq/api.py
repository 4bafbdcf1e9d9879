"""``quantize: {method: awq}`` handler: block-by-block activation stats, scale search, packed layers."""
from __future__ import annotations

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.registry import register
from slimkit.quantize.awq.config import AWQConfig
from slimkit.quantize.awq.core import ActivationStats, awq_search
from slimkit.quantize.weight_only.apply import finish_notes
from slimkit.quantize.weight_only.layer import WeightOnlyLinear
from slimkit.quantize.weight_only.sequential import calibrate_and_quantize

__all__ = ["quantize_awq"]


@register("quantize", "awq", AWQConfig, needs=("calib",))
def quantize_awq(model: nn.Module, cfg: AWQConfig, ctx: RunContext) -> nn.Module:
    """Search AWQ scales for every selected Linear, one decoder block at a time."""
    calib = ctx.require("calib", "quantize:awq")
    per_batch = max(1, cfg.n_tokens // len(calib))
    alphas: list[float] = []

    def make_layer(_name: str, linear: nn.Linear, st: ActivationStats, bits: int) -> WeightOnlyLinear:
        st.keep = cfg.n_tokens
        inv, codes, alpha = awq_search(linear.weight, st.sample(), st.mean_abs(), bits, cfg.group_size,
                                       cfg.symmetric, cfg.grid, cfg.clip_search)
        alphas.append(alpha)
        with torch.no_grad():
            return WeightOnlyLinear.from_weight(linear.weight, linear.bias, bits, cfg.group_size,
                                                cfg.symmetric, cfg.runtime, input_scale=inv, codes=codes)

    done = calibrate_and_quantize(model, cfg, ctx, "quantize:awq",
                                  lambda _n, m: ActivationStats(m.in_features, per_batch), make_layer)
    ctx.note("mean_alpha", round(sum(alphas) / max(len(alphas), 1), 3))
    finish_notes(model, ctx, done)
    return model
