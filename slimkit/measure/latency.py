"""Wall-clock latency of a forward pass, measured the same way for every model.

Fixed protocol so that numbers from different models and compression steps compare: untimed
warm-up runs, then timed runs on the same inputs, with a fixed thread count, reporting the
median (robust to scheduler noise) and the 90th percentile (the tail).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import ConfigError
from slimkit.core.inputs import ModelInputs, call_model, move_inputs
from slimkit.core.modelstate import eval_mode, model_device

__all__ = ["measure_latency", "compare_latency", "runtime_name", "DEFAULT_RUNTIME"]

DEFAULT_RUNTIME = "torch-eager"


def measure_latency(
    model: nn.Module,
    example_inputs: ModelInputs,
    *,
    warmup: int = 3,
    runs: int = 20,
    threads: int | None = None,
    min_seconds: float = 0.0,
) -> dict[str, Any]:
    """Time ``model`` on ``example_inputs`` and return median and p90 latency in milliseconds.

    Runs ``warmup`` untimed passes, then at least ``runs`` timed passes, continuing until the
    timed passes add up to ``min_seconds``. The thread count is fixed to ``threads`` (default:
    the current ``torch.get_num_threads()``) for the measurement and restored afterwards. The
    ``runtime`` entry comes from :func:`runtime_name`.
    """
    _validate(warmup=warmup, runs=runs, threads=threads, min_seconds=min_seconds)
    device = model_device(model)
    inputs = move_inputs(example_inputs, device)
    n_threads = torch.get_num_threads() if threads is None else threads
    with _num_threads(n_threads), eval_mode(model), torch.inference_mode():
        for _ in range(warmup):
            _forward(model, inputs, device)
        times = _timed_runs(model, inputs, device, runs=runs, min_seconds=min_seconds)
    return {
        "latency_ms": statistics.median(times) * 1000.0,
        "latency_p90_ms": _percentile(sorted(times), 0.9) * 1000.0,
        "latency_runs": len(times),
        "threads": n_threads,
        "runtime": runtime_name(model),
    }


def compare_latency(
    models: dict[str, nn.Module],
    example_inputs: ModelInputs,
    *,
    warmup: int = 3,
    runs: int = 20,
    threads: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Time several models round-robin (one pass of each per round) on the same inputs.

    Machine noise on a shared CPU drifts over seconds; interleaving spreads it over every model
    alike, so the ratios between them are fair — unlike timing one model after another.
    """
    _validate(warmup=warmup, runs=runs, threads=threads, min_seconds=0.0)
    n_threads = torch.get_num_threads() if threads is None else threads
    prepared = {k: (m, move_inputs(example_inputs, model_device(m)), model_device(m)) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    with _num_threads(n_threads), torch.inference_mode():
        flags = [(mod, mod.training) for m in models.values() for mod in m.modules()]
        for m in models.values():
            m.eval()
        try:
            for m, inputs, device in prepared.values():
                for _ in range(warmup):
                    _forward(m, inputs, device)
            for _ in range(runs):
                for k, (m, inputs, device) in prepared.items():
                    times[k] += _timed_runs(m, inputs, device, runs=1, min_seconds=0.0)
        finally:
            for mod, training in flags:
                mod.training = training
    return {k: {"latency_ms": statistics.median(t) * 1000.0, "latency_p90_ms": _percentile(sorted(t), 0.9) * 1000.0,
                "latency_runs": len(t), "threads": n_threads, "runtime": runtime_name(models[k]),
                "latency_method": "interleaved"} for k, t in times.items()}


def runtime_name(model: nn.Module) -> str:
    """What executes the model: its ``slimkit_runtime`` attribute, else its layers', else torch eager.

    Compressed layers (an int8 Linear) name the kernel they run on; when only layers declare
    one, the distinct names are joined with "; " in module order, so a partly converted model
    still says which special kernels it uses.
    """
    own = getattr(model, "slimkit_runtime", None)
    if own is not None:
        return str(own)
    names: list[str] = []
    for module in model.modules():
        name = getattr(module, "slimkit_runtime", None)
        if name is not None and str(name) not in names:
            names.append(str(name))
    return "; ".join(names) if names else DEFAULT_RUNTIME


def _timed_runs(
    model: nn.Module, inputs: ModelInputs, device: torch.device, *, runs: int, min_seconds: float
) -> list[float]:
    """Seconds of each timed pass: at least ``runs`` passes and at least ``min_seconds`` in total."""
    times: list[float] = []
    while len(times) < runs or sum(times) < min_seconds:
        start = perf_counter()
        _forward(model, inputs, device)
        times.append(perf_counter() - start)
    return times


def _forward(model: nn.Module, inputs: ModelInputs, device: torch.device) -> None:
    """One pass; on CUDA, wait for the kernels so the time covers the work, not the launch."""
    call_model(model, inputs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile with linear interpolation between order statistics (numpy's default)."""
    position = q * (len(sorted_values) - 1)
    lower = int(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


@contextmanager
def _num_threads(n: int) -> Iterator[None]:
    """Fix torch's intra-op thread count to ``n`` and restore the previous count on exit."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _validate(*, warmup: int, runs: int, threads: int | None, min_seconds: float) -> None:
    """Raise :class:`ConfigError` naming the first argument outside its valid range."""
    if not _is_int(warmup) or warmup < 0:
        raise ConfigError(f"warmup must be an integer >= 0, got {warmup!r}")
    if not _is_int(runs) or runs < 1:
        raise ConfigError(f"runs must be an integer >= 1, got {runs!r}")
    if threads is not None and (not _is_int(threads) or threads < 1):
        raise ConfigError(f"threads must be None or an integer >= 1, got {threads!r}")
    if isinstance(min_seconds, bool) or not isinstance(min_seconds, (int, float)) or not 0 <= min_seconds < math.inf:
        raise ConfigError(f"min_seconds must be a finite number >= 0, got {min_seconds!r}")


def _is_int(value: object) -> bool:
    """True for ints, False for bools (``True`` is not a run count)."""
    return isinstance(value, int) and not isinstance(value, bool)
