"""Plain layer kinds that structural edits swap in, with ``spec()`` / ``from_spec()`` for replay.

``sk.load`` rebuilds these from their spec and then fills their tensors from the checkpoint.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.io.edits import register_edit_op, register_module_kind

__all__ = ["SpecIdentity", "SpecLinear", "resize_linear", "add_bias"]


@register_module_kind("identity")
class SpecIdentity(nn.Identity):
    """Identity left where a folded layer was (a BatchNorm folded into its conv, a fused Linear)."""

    def spec(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "SpecIdentity":
        return cls()


@register_module_kind("linear")
class SpecLinear(nn.Linear):
    """An ``nn.Linear`` of a new shape (a fused pair of Linear layers, a widened layer)."""

    def spec(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "SpecLinear":
        return cls(int(spec["in_features"]), int(spec["out_features"]), bool(spec["bias"]))


def resize_linear(linear: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    """A fresh Linear of the new shape, same class/dtype/bias presence (weights filled later)."""
    new = nn.Linear(in_features, out_features, bias=linear.bias is not None,
                    dtype=linear.weight.dtype, device=linear.weight.device)
    return new


@register_edit_op("resize_linear")
def _replay_resize(model: nn.Module, record: dict[str, Any]) -> None:
    from slimkit.io.edits import replace_module

    old = model.get_submodule(record["path"])
    replace_module(model, record["path"], resize_linear(old, int(record["in_features"]), int(record["out_features"])))


def add_bias(module: nn.Module) -> None:
    """Give a conv/linear without bias a zero bias parameter (a folded BatchNorm needs one)."""
    out = module.weight.shape[0]
    module.bias = nn.Parameter(torch.zeros(out, dtype=module.weight.dtype, device=module.weight.device))


@register_edit_op("add_bias")
def _replay_add_bias(model: nn.Module, record: dict[str, Any]) -> None:
    module = model.get_submodule(record["path"])
    if module.bias is None:
        add_bias(module)
