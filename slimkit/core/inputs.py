"""Calling a model with the three input forms slimkit accepts, and checking them.

Model inputs are a tensor, a tuple/list of tensors (positional arguments) or a mapping of
tensors (keyword arguments, the Hugging Face convention).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import DataError

__all__ = ["run_with_hooks", "ModelInputs", "call_model", "move_inputs", "first_tensor", "check_inputs", "output_tensor",
           "as_batches"]

ModelInputs = Any  # torch.Tensor | tuple[torch.Tensor, ...] | Mapping[str, torch.Tensor]


def call_model(model: nn.Module, inputs: ModelInputs) -> Any:
    """Run ``model`` on ``inputs``: a tensor, a tuple of positional tensors, or a dict of kwargs."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def run_with_hooks(model: nn.Module, batches: Iterable[ModelInputs], handles: Iterable[Any]) -> None:
    """Call ``model`` on every batch without gradients, then remove the hook ``handles`` (also on
    error): the calibration pass of every statistics-collecting step."""
    try:
        with torch.no_grad():
            for batch in batches:
                call_model(model, batch)
    finally:
        for handle in handles:
            handle.remove()


def move_inputs(inputs: ModelInputs, device: torch.device | str) -> ModelInputs:
    """The same structure with every tensor moved to ``device``."""
    if isinstance(inputs, Mapping):
        return {k: move_inputs(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(move_inputs(v, device) for v in inputs)
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    return inputs


def first_tensor(inputs: ModelInputs) -> torch.Tensor:
    """The first tensor in ``inputs`` (used for batch size and device)."""
    if isinstance(inputs, torch.Tensor):
        return inputs
    values = inputs.values() if isinstance(inputs, Mapping) else inputs
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    raise DataError(f"model inputs contain no tensor: got {type(inputs).__name__}")


def output_tensor(output: Any) -> torch.Tensor:
    """The main tensor of a model output: logits, last_hidden_state, or the tensor itself."""
    if isinstance(output, torch.Tensor):
        return output
    for key in ("logits", "last_hidden_state"):
        value = getattr(output, key, None)
        if value is None and isinstance(output, Mapping):
            value = output.get(key)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise DataError(f"cannot find the output tensor in a {type(output).__name__}")


def check_inputs(model: nn.Module, inputs: ModelInputs, what: str = "example_inputs") -> Any:
    """Run the model once on ``inputs`` and turn a shape/type failure into a :class:`DataError`."""
    try:
        first_tensor(inputs)
        with torch.no_grad():
            return call_model(model, inputs)
    except DataError:
        raise
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        shapes = _describe(inputs)
        raise DataError(f"{what} do not fit the model ({shapes}): {str(exc).splitlines()[0]}") from exc


def _describe(inputs: ModelInputs) -> str:
    if isinstance(inputs, torch.Tensor):
        return f"tensor of shape {tuple(inputs.shape)}"
    if isinstance(inputs, Mapping):
        return ", ".join(f"{k}: {_describe(v)}" for k, v in inputs.items())
    if isinstance(inputs, (tuple, list)):
        return ", ".join(_describe(v) for v in inputs)
    return type(inputs).__name__


def as_batches(data: Any, what: str = "calib") -> list[Any]:
    """``data`` (an iterable of batches) as a list, refusing a single batch passed on its own.

    A lone tensor or dict is iterable too, but ``list()`` of it yields a tensor's rows or a dict's
    keys, never what the caller meant: that is a :class:`DataError` saying to wrap it, ``[batch]``.
    """
    if isinstance(data, (torch.Tensor, Mapping, str, bytes)):
        raise DataError(f"{what} must be an iterable of model inputs (batches), got a single {_kind(data)}; "
                        f"pass a list of batches, e.g. {what}=[batch]")
    try:
        return list(data)
    except TypeError:
        raise DataError(f"{what} must be an iterable of model inputs (batches), got {type(data).__name__}; "
                        f"pass a list of batches, e.g. {what}=[batch]") from None


def _kind(data: Any) -> str:
    if isinstance(data, Mapping):
        return f"dict with keys {list(data)[:6]}"
    return _describe(data) if isinstance(data, torch.Tensor) else f"{type(data).__name__} {data!r:.40}"
