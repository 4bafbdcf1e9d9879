"""``quantize: {method: qat}`` handler: wrap layers in fake quantization, train, convert, record."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.inputs import call_model, output_tensor
from slimkit.core.registry import register
from slimkit.core.swap import swap_layers, swappable_layers
from slimkit.distill.losses import logit_kd
from slimkit.quantize.dynamic_int8.core import Int8DynamicLinear
from slimkit.quantize.qat.config import QATConfig
from slimkit.quantize.qat.core import FakeQuantLayer, IntWeightLayer
from slimkit.train.finetune.core import split_labels, supervised_loss
from slimkit.train.loop import train

__all__ = ["quantize_qat", "distill_loss"]


def distill_loss(teacher: nn.Module, temperature: float) -> Any:
    """``loss_fn(model, batch)``: logit KD (:func:`slimkit.distill.losses.logit_kd`) from ``teacher``."""
    teacher.eval()

    def loss_fn(model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, _ = split_labels(batch)
        with torch.no_grad():
            target = output_tensor(call_model(teacher, inputs))
        return logit_kd(output_tensor(call_model(model, inputs)), target, temperature)

    return loss_fn


def _wrap(model: nn.Module, cfg: QATConfig, ctx: RunContext) -> list[str]:
    """Fake-quantize the selected layers in place (a temporary swap: no edit recorded)."""
    types = tuple(getattr(nn, t) for t in cfg.layer_types)
    layers = swappable_layers(model, types, ctx, targets=cfg.targets, ignore=cfg.ignore, field="quantize",
                              tied_reason="weight is tied to another module; its integer copy would untie it")
    return list(swap_layers(model, layers, lambda _, m: FakeQuantLayer(m, cfg.bits, cfg.per_channel), record=False))


def _integer_layer(inner: nn.Module, cfg: QATConfig) -> nn.Module:
    """The stored form of a trained layer: int8 Linear on the integer kernel, else integer weights."""
    if cfg.bits == 8 and isinstance(inner, nn.Linear):
        return Int8DynamicLinear.from_linear(inner, cfg.per_channel)
    return IntWeightLayer.from_module(inner, cfg.bits, cfg.per_channel)


def _convert(model: nn.Module, names: list[str], cfg: QATConfig) -> None:
    wrapped = [(name, model.get_submodule(name)) for name in names]
    swap_layers(model, wrapped, lambda _, fake: _integer_layer(fake.inner, cfg))


@register("quantize", "qat", QATConfig, needs=("train",))
def quantize_qat(model: nn.Module, cfg: QATConfig, ctx: RunContext) -> nn.Module:
    """Fake-quantize the selected layers, train through them, store the learned integers."""
    batches = ctx.require("train", "quantize")
    names = _wrap(model, cfg, ctx)
    if cfg.distill:
        loss_fn = distill_loss(ctx.teacher or ctx.require("original", "quantize"), cfg.temperature)
    else:
        loss_fn = supervised_loss
    result = train(model, batches, loss_fn, cfg, ctx=ctx)
    _convert(model, names, cfg)
    ctx.note("quantized_layers", len(names))
    ctx.note("train_steps", result["steps"])
    ctx.note("final_loss", round(float(result["final_loss"]), 5))
    return model.eval()
