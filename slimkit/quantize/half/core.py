"""Whole-model fp16 / bf16: every floating parameter and buffer cast, inputs and outputs bridged.

The model keeps its fp32 interface: a forward pre-hook casts floating inputs to the half dtype
(integer token ids pass through) and a forward hook casts floating outputs back to float32, so
evaluators and callers see no difference. The cast is a replayable edit op (``cast_dtype``):
``sk.load`` re-creates the half-precision model and its hooks before the half tensors load.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from slimkit.io.edits import register_edit_op

__all__ = ["HALF_DTYPES", "cast_model", "cast_floats"]

HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_HOOKED = "_slimkit_half_hooks"


def cast_floats(obj: Any, dtype: torch.dtype) -> Any:
    """``obj`` with every floating tensor (inside tuples, lists, dicts, HF ModelOutputs) cast to ``dtype``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() and obj.dtype != dtype else obj
    if isinstance(obj, Mapping):
        if hasattr(obj, "to_tuple"):  # HF ModelOutput: update in place, it keeps its class and fields
            for key in list(obj.keys()):
                obj[key] = cast_floats(obj[key], dtype)  # type: ignore[index]
            return obj
        return type(obj)({k: cast_floats(v, dtype) for k, v in obj.items()}) if isinstance(obj, dict) else obj
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(cast_floats(v, dtype) for v in obj)
    if isinstance(obj, list):
        return [cast_floats(v, dtype) for v in obj]
    return obj


class _InputCast:
    """Forward pre-hook: floating inputs to the model's half dtype (picklable, deepcopy-able)."""

    def __init__(self, dtype_name: str) -> None:
        self.dtype_name = dtype_name

    def __call__(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        dtype = HALF_DTYPES[self.dtype_name]
        return cast_floats(args, dtype), cast_floats(kwargs, dtype)


def _output_to_fp32(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    return cast_floats(output, torch.float32)


def cast_model(model: nn.Module, name: str, outputs_fp32: bool = True) -> None:
    """Cast ``model`` in place to ``HALF_DTYPES[name]`` and install the input/output bridging hooks."""
    model.to(HALF_DTYPES[name])
    if getattr(model, _HOOKED, None) is None:
        model.register_forward_pre_hook(_InputCast(name), with_kwargs=True)
        if outputs_fp32:
            model.register_forward_hook(_output_to_fp32)
        object.__setattr__(model, _HOOKED, name)


@register_edit_op("cast_dtype")
def _replay_cast(model: nn.Module, record: dict[str, Any]) -> None:
    cast_model(model, record["dtype"], bool(record.get("outputs_fp32", True)))
