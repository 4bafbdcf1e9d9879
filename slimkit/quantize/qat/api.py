"""``quantize: {method: qat}`` handler: wrap layers in fake quantization, train, convert, record."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.inputs import call_model, output_tensor
from slimkit.core.provenance import record_edit
from slimkit.core.registry import register
from slimkit.core.select import select_modules
from slimkit.io.edits import replace_module
from slimkit.core.select import tied_weight_names
from slimkit.quantize.dynamic_int8.core import Int8DynamicLinear
from slimkit.quantize.qat.config import QATConfig
from slimkit.quantize.qat.core import FakeQuantLayer, IntWeightLayer
from slimkit.train.finetune.core import split_labels, supervised_loss
from slimkit.train.loop import train

__all__ = ["quantize_qat", "distill_loss"]


def distill_loss(teacher: nn.Module, temperature: float) -> Any:
    """``loss_fn(model, batch)``: KL(teacher ‖ student) of the softmax outputs at ``temperature``."""
    teacher.eval()

    def loss_fn(model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, _ = split_labels(batch)
        with torch.no_grad():
            target = output_tensor(call_model(teacher, inputs)).float() / temperature
        student = output_tensor(call_model(model, inputs)).float() / temperature
        vocab = student.shape[-1]
        return F.kl_div(F.log_softmax(student.reshape(-1, vocab), -1), F.log_softmax(target.reshape(-1, vocab), -1),
                        reduction="batchmean", log_target=True) * temperature**2

    return loss_fn


def _wrap(model: nn.Module, cfg: QATConfig, ctx: RunContext) -> list[str]:
    types = tuple(getattr(nn, t) for t in cfg.layer_types)
    tied = tied_weight_names(model)
    names = []
    for name, module in select_modules(model, types, targets=cfg.targets, ignore=cfg.ignore, field="quantize"):
        if name in tied:
            ctx.skip(name, "weight is tied to another module; its integer copy would untie it")
            continue
        replace_module(model, name, FakeQuantLayer(module, cfg.bits, cfg.per_channel))
        names.append(name)
    return names


def _convert(model: nn.Module, names: list[str], cfg: QATConfig) -> None:
    for name in names:
        inner = model.get_submodule(name).inner
        if cfg.bits == 8 and isinstance(inner, nn.Linear):
            new: nn.Module = Int8DynamicLinear.from_linear(inner, cfg.per_channel)
            kind = "int8_dynamic_linear"
        else:
            new = IntWeightLayer.from_module(inner, cfg.bits, cfg.per_channel)
            kind = "int_weight_layer"
        replace_module(model, name, new)
        record_edit(model, {"op": "replace_module", "path": name, "kind": kind, "spec": new.spec()})  # type: ignore[operator]


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
