"""Hugging Face ``Conv1D`` (GPT-2, GPT-J-style models) as ``nn.Linear``, so every step handles it.

``transformers.pytorch_utils.Conv1D(nf, nx)`` is a Linear layer whose weight is stored transposed
(``[nx, nf]``, ``y = x @ W + b``). Rather than teaching every pruner, quantizer, factorizer and
clusterer a second weight layout, the runner swaps each Conv1D of the working copy for an
``nn.Linear(nx, nf)`` holding ``W.T`` before the first step: the outputs are identical, and every
step that handles Linear then handles GPT-2's attention and MLP projections too.

The swap is a structural edit (``conv1d_as_linear``) replayed by ``sk.load`` before tensors are
loaded, so a saved GPT-2 checkpoint round-trips. A Conv1D whose weight is shared with another
module is left alone (swapping it would untie the weight) and reported by the caller.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.core.provenance import record_edit
from slimkit.io.edits import register_edit_op, replace_module

__all__ = ["is_conv1d", "conv1d_as_linear", "linear_from_conv1d"]

EDIT_OP = "conv1d_as_linear"


def is_conv1d(module: nn.Module) -> bool:
    """True for ``transformers``' Conv1D (checked by class name: transformers is optional here)."""
    return type(module).__name__ == "Conv1D" and isinstance(getattr(module, "weight", None), nn.Parameter) \
        and hasattr(module, "nf")


def linear_from_conv1d(conv: nn.Module) -> nn.Linear:
    """An ``nn.Linear`` computing exactly what ``conv`` computes (weight transposed, bias kept)."""
    nx, nf = conv.weight.shape
    bias = getattr(conv, "bias", None)
    linear = nn.Linear(nx, nf, bias=bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.t())
        if bias is not None:
            linear.bias.copy_(bias)
    linear.weight.requires_grad_(conv.weight.requires_grad)
    return linear


def _shared_weights(model: nn.Module) -> set[int]:
    seen: dict[int, int] = {}
    for module in model.modules():
        w = getattr(module, "weight", None)
        if isinstance(w, nn.Parameter):
            seen[id(w)] = seen.get(id(w), 0) + 1
    return {k for k, n in seen.items() if n > 1}


def conv1d_as_linear(model: nn.Module) -> tuple[list[str], list[str]]:
    """Swap every untied Conv1D of ``model`` for an equivalent Linear, in place.

    Returns ``(converted, tied)``: the names swapped (recorded as one replayable edit) and the names
    left as Conv1D because their weight is shared. Idempotent: a model without Conv1D is untouched.
    """
    shared = _shared_weights(model)
    found = [(n, m) for n, m in model.named_modules() if n and is_conv1d(m)]
    converted = [n for n, m in found if id(m.weight) not in shared]
    tied = [n for n, m in found if id(m.weight) in shared]
    for name in converted:
        replace_module(model, name, linear_from_conv1d(model.get_submodule(name)))
    if converted:
        record_edit(model, {"op": EDIT_OP, "paths": converted})
    return converted, tied


@register_edit_op(EDIT_OP)
def _replay(model: nn.Module, record: dict[str, Any]) -> None:
    for name in record["paths"]:
        module = model.get_submodule(name)
        if not is_conv1d(module):
            raise KeyError(f"{name} is a {type(module).__name__}, not a Conv1D")
        replace_module(model, name, linear_from_conv1d(module))
