"""The measure() dictionary."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from slimkit.core.errors import DataError
from slimkit.measure import measure


def _mlp() -> nn.Module:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        model[0].weight[:4] = 0.0  # 32 zeros out of 212 parameters
    return model


def test_measure_size_only() -> None:
    result = measure(_mlp(), checkpoint_bytes=False)
    assert result == {"params": 212, "nonzero_params": 180, "sparsity": pytest.approx(32 / 212)}


def test_measure_with_inputs() -> None:
    result = measure(_mlp(), torch.randn(3, 8), runs=2, warmup=0, threads=1, checkpoint_bytes=False)
    assert result["macs"] == 3 * (8 * 16 + 16 * 4)
    assert result["latency_runs"] == 2
    assert result["threads"] == 1
    assert result["latency_ms"] > 0
    assert result["runtime"] == "torch-eager"


def test_measure_without_latency() -> None:
    result = measure(_mlp(), torch.randn(3, 8), latency=False, checkpoint_bytes=False)
    assert "macs" in result and "latency_ms" not in result


def test_measure_wrong_input_shape_raises_data_error() -> None:
    with pytest.raises(DataError, match="do not fit"):
        measure(_mlp(), torch.randn(3, 5), checkpoint_bytes=False)


def test_measure_model_without_parameters() -> None:
    assert measure(nn.ReLU(), checkpoint_bytes=False)["sparsity"] == 0.0


def test_measure_includes_checkpoint_bytes() -> None:
    """Needs slimkit.io.checkpoint.save (written by the lead)."""
    result = measure(_mlp())
    assert result["bytes"] > 4 * 212
