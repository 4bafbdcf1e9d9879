"""``strategy: ddp|fsdp`` outside torchrun is never silent: the run trains in one process, warns,
and says so in the step's report notes; an unset strategy in one process says nothing."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.errors import ConfigError
from slimkit.train import TrainOptions


def _setup() -> tuple[nn.Module, list]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 8, generator=gen)
    y = (x[:, 0] > 0).long()
    return model, [(x[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8)]


def _finetune(strategy: str | None) -> dict:
    model, data = _setup()
    opts = {"steps": 2, "lr": 1e-2} | ({"strategy": strategy} if strategy else {})
    res = sk.compress(model, {"steps": [{"finetune": opts}]}, train=data, measure=False, progress=False)
    return res.report.to_dict()["steps"][0]["notes"]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_explicit_strategy_outside_torchrun_warns_and_is_noted(strategy: str, monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.warns(UserWarning, match=f"{strategy} requested, ran single-process: not launched under torchrun"):
        notes = _finetune(strategy)
    assert notes["strategy"] == f"{strategy} requested, ran single-process: not launched under torchrun"
    assert "world_size" not in notes


def test_world_size_one_is_named_in_the_note(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.warns(UserWarning, match="ddp requested"):
        notes = _finetune("ddp")
    assert notes["strategy"] == "ddp requested, ran single-process: WORLD_SIZE=1"


def test_unset_strategy_in_one_process_is_quiet(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        notes = _finetune(None)
    assert "strategy" not in notes and "world_size" not in notes
    assert notes["steps"] == 2


def test_strategy_is_validated() -> None:
    assert TrainOptions().strategy is None
    with pytest.raises(ConfigError, match="strategy = 'zero3'.*'ddp', 'fsdp'"):
        TrainOptions(strategy="zero3")
