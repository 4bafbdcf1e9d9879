"""Latency protocol: keys, run counts, thread handling, statistics (no timing thresholds)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from slimkit.core.errors import ConfigError
from slimkit.measure import latency as latency_module
from slimkit.measure import measure_latency


class ThreadRecorder(nn.Module):
    """Records the thread count and the input identity seen by each forward call."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.threads_seen: list[int] = []
        self.inputs_seen: list[int] = []
        self.training_seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.threads_seen.append(torch.get_num_threads())
        self.inputs_seen.append(x.data_ptr())
        self.training_seen.append(self.training)
        return self.linear(x)


class FakeClock:
    """perf_counter stand-in: each timed run lasts the next of ``durations`` seconds."""

    def __init__(self, durations: list[float]) -> None:
        self.durations = durations
        self.now = 0.0
        self.calls = 0

    def __call__(self) -> float:
        if self.calls % 2 == 1:  # the end of a run
            self.now += self.durations[(self.calls // 2) % len(self.durations)]
        self.calls += 1
        return self.now


def test_result_keys_and_values() -> None:
    model = ThreadRecorder()
    result = measure_latency(model, torch.randn(2, 4), warmup=2, runs=5)
    assert set(result) == {"latency_ms", "latency_p90_ms", "latency_runs", "threads", "runtime"}
    assert result["latency_ms"] > 0
    assert result["latency_p90_ms"] >= result["latency_ms"]
    assert result["latency_runs"] == 5
    assert result["threads"] == torch.get_num_threads()
    assert result["runtime"] == "torch-eager"
    assert len(model.threads_seen) == 2 + 5
    assert len(set(model.inputs_seen)) == 1  # same inputs every run
    assert model.training_seen == [False] * 7
    assert model.training  # training flag restored


def test_threads_are_fixed_then_restored() -> None:
    before = torch.get_num_threads()
    model = ThreadRecorder()
    result = measure_latency(model, torch.randn(2, 4), warmup=1, runs=3, threads=1)
    assert result["threads"] == 1
    assert model.threads_seen == [1] * 4
    assert torch.get_num_threads() == before


def test_threads_restored_when_model_fails() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        measure_latency(Broken(), torch.randn(1), threads=1)
    assert torch.get_num_threads() == before


def test_runtime_attribute_is_reported() -> None:
    model = ThreadRecorder()
    model.slimkit_runtime = "fbgemm-int8"
    assert measure_latency(model, torch.randn(1, 4), runs=1)["runtime"] == "fbgemm-int8"


def test_runtime_of_compressed_layers_is_reported() -> None:
    class Int8Layer(nn.Identity):
        slimkit_runtime = "int8-kernel"

    model = nn.Sequential(Int8Layer(), nn.ReLU(), Int8Layer())
    assert measure_latency(model, torch.randn(1, 4), runs=1)["runtime"] == "int8-kernel"
    model.slimkit_runtime = "whole-model-runtime"  # the model's own attribute wins
    assert measure_latency(model, torch.randn(1, 4), runs=1)["runtime"] == "whole-model-runtime"


def test_median_and_p90_from_run_times(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock([0.001 * k for k in (3, 1, 10, 2, 9, 4, 8, 5, 7, 6)])
    monkeypatch.setattr(latency_module, "perf_counter", clock)
    result = measure_latency(ThreadRecorder(), torch.randn(1, 4), warmup=4, runs=10)
    assert clock.calls == 20  # warm-up runs are not timed
    assert result["latency_ms"] == pytest.approx(5.5)
    assert result["latency_p90_ms"] == pytest.approx(9.1)  # linear interpolation, as numpy


def test_min_seconds_extends_the_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    step = 2.0**-10  # exact in binary, so the running sum is exact
    monkeypatch.setattr(latency_module, "perf_counter", FakeClock([step]))
    result = measure_latency(ThreadRecorder(), torch.randn(1, 4), warmup=0, runs=5, min_seconds=40 * step)
    assert result["latency_runs"] == 40


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"runs": 0}, "runs"),
        ({"warmup": -1}, "warmup"),
        ({"threads": 0}, "threads"),
        ({"min_seconds": -1.0}, "min_seconds"),
        ({"min_seconds": float("inf")}, "min_seconds"),
        ({"runs": 2.5}, "runs"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        measure_latency(ThreadRecorder(), torch.randn(1, 4), **kwargs)
