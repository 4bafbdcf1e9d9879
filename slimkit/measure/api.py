"""``measure``: the size, compute and speed of a model in one dictionary.

This is what the runner records before and after each compression step, so every key has a
fixed meaning: ``params`` and ``nonzero_params`` follow :mod:`slimkit.measure.size`, ``bytes``
is the size of a real slimkit checkpoint, ``macs`` is one forward pass on the example inputs,
and the latency keys follow the protocol of :func:`measure_latency`.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from slimkit.core.inputs import ModelInputs, check_inputs, move_inputs
from slimkit.measure import size
from slimkit.core.modelstate import eval_mode, model_device
from slimkit.measure.latency import measure_latency
from slimkit.measure.macs import count_macs

__all__ = ["measure"]


def measure(
    model: nn.Module,
    example_inputs: ModelInputs | None = None,
    *,
    latency: bool = True,
    runs: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    checkpoint_bytes: bool = True,
) -> dict[str, Any]:
    """Measure ``model``: parameter counts and sparsity always, and optionally more.

    Keys: ``params``, ``nonzero_params``, ``sparsity`` (1 - nonzero/params); ``bytes`` when
    ``checkpoint_bytes`` (the model is saved to a temporary directory); ``macs`` when
    ``example_inputs`` are given; ``latency_ms``, ``latency_p90_ms``, ``latency_runs``,
    ``threads`` and ``runtime`` when ``example_inputs`` are given and ``latency`` is true.
    Example inputs are checked first by running the model once, so inputs that do not fit the
    model raise :class:`~slimkit.core.errors.DataError` before anything is timed.
    """
    if example_inputs is not None:
        with eval_mode(model):
            check_inputs(model, move_inputs(example_inputs, model_device(model)))
    result: dict[str, Any] = _size_metrics(model)
    if checkpoint_bytes:
        result["bytes"] = size.checkpoint_bytes(model)
    if example_inputs is not None:
        result["macs"] = count_macs(model, example_inputs)
        if latency:
            result.update(measure_latency(model, example_inputs, warmup=warmup, runs=runs, threads=threads))
    return result


def _size_metrics(model: nn.Module) -> dict[str, Any]:
    """``params``, ``nonzero_params`` and ``sparsity`` (0.0 for a model without weights)."""
    params = size.count_params(model)
    nonzero = size.count_nonzero(model)
    return {
        "params": params,
        "nonzero_params": nonzero,
        "sparsity": 1.0 - nonzero / params if params else 0.0,
    }
