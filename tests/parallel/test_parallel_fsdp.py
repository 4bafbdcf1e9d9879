"""FSDP2 (``strategy: fsdp``) data parallelism: 2 CPU processes (gloo, ``fully_shard``) give the
single-process result on the same global batches, for the plain loop and for feature + logit
distillation through ``sk.compress``; the result is a plain module; unsupported options raise."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

import slimkit as sk
from slimkit.core.errors import ConfigError
from slimkit.parallel import launch
from slimkit.train import TrainOptions, train

OPTS = dict(steps=12, lr=0.05, optimizer="sgd", momentum=0.9, grad_accum=2, clip_norm=1.0, scheduler="cosine",
            warmup_steps=2, seed=3, strategy="fsdp")
KD = {"distill": {"method": "feature", "layer_map": {"0": "0"}, "feature_weight": 0.5, "temperature": 2.0,
                  "alpha": 0.7, "steps": 8, "lr": 1e-2, "optimizer": "adam", "strategy": "fsdp"}}


def _setup() -> tuple[nn.Module, list]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return model, [(x[i:i + 8], y[i:i + 8]) for i in range(0, 64, 8)]  # global batches of 8 rows


def _teacher() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Linear(8, 48), nn.ReLU(), nn.Linear(48, 3))  # wider: the feature map needs a projection


def _loss(model: nn.Module, batch: tuple) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def _fsdp_worker(rank: int, out: str) -> None:
    model, data = _setup()
    res = train(model, data, _loss, TrainOptions(**OPTS))
    student, _ = _setup()
    kd = sk.compress(student, {"steps": [KD]}, train=data, teacher=_teacher(), measure=False, progress=False).model
    plain = all(type(p) is nn.Parameter for p in [*model.parameters(), *kd.parameters()])
    if rank == 0:
        tensors = {f"loop.{k}": v.contiguous() for k, v in model.state_dict().items()}
        tensors.update({f"kd.{k}": v.contiguous() for k, v in kd.state_dict().items()})
        tensors["final_loss"] = torch.tensor(res["final_loss"])
        tensors["plain"] = torch.tensor(plain)
        save_file(tensors, out)


def test_fsdp_two_processes_match_single_process(tmp_path: Path) -> None:
    out = tmp_path / "rank0.safetensors"
    launch.spawn(_fsdp_worker, 2, (str(out),))
    got = load_file(str(out))
    assert bool(got["plain"])  # gathered back into ordinary parameters, not DTensors
    model, data = _setup()
    res = train(model, data, _loss, TrainOptions(**OPTS))  # single process: strategy has no effect
    for k, v in model.state_dict().items():
        assert torch.allclose(got[f"loop.{k}"], v, atol=1e-5), k
    assert float(got["final_loss"]) == pytest.approx(res["final_loss"], rel=1e-5)
    assert not torch.allclose(_setup()[0][0].weight, model[0].weight, atol=1e-3)  # it did train
    student, _ = _setup()
    kd = sk.compress(student, {"steps": [KD]}, train=data, teacher=_teacher(), measure=False, progress=False).model
    for k, v in kd.state_dict().items():
        assert torch.allclose(got[f"kd.{k}"], v, atol=1e-5), k
    assert not torch.allclose(_setup()[0][0].weight, kd[0].weight, atol=1e-3)


@pytest.mark.parametrize("field,value", [("eval_every", 5), ("checkpoint_dir", "runs/x")])
def test_fsdp_refuses_options_that_need_the_live_model(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"{field}.*fsdp"):
        TrainOptions(steps=2, strategy="fsdp", **{field: value})
