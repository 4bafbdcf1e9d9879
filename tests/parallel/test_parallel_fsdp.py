"""FSDP2 (``strategy: fsdp``) data parallelism: 2 CPU processes (gloo, ``fully_shard``) really shard
the parameters (each rank trains on its half) and give the single-process result on the same global
batches, for the plain loop and for feature + logit distillation through ``sk.compress``; the result
is a plain module; the report records world size 2; unsupported options raise."""
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


def _local_numel(p: torch.Tensor) -> int:
    """Elements this rank holds of ``p`` (its shard for a DTensor, everything for a plain tensor)."""
    return p.to_local().numel() if hasattr(p, "to_local") else p.numel()


class _ShardProbe:
    """A loss that also records, per parameter of the model the loop trains, (local, full) numel."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[int, int]] = {}

    def __call__(self, model: nn.Module, batch: tuple) -> torch.Tensor:
        self.seen = {n: (_local_numel(p), p.numel()) for n, p in model.named_parameters()}
        return _loss(model, batch)


def _fsdp_worker(rank: int, out: str) -> None:
    from slimkit.parallel import dist as pdist

    model, data = _setup()
    probe = _ShardProbe()
    res = train(model, data, probe, TrainOptions(**OPTS))
    student, _ = _setup()
    kd_res = sk.compress(student, {"steps": [KD]}, train=data, teacher=_teacher(), measure=False, progress=False)
    kd = kd_res.model
    notes = kd_res.report.to_dict()["steps"][0]["notes"]
    plain = all(type(p) is nn.Parameter for p in [*model.parameters(), *kd.parameters()])
    if rank == 0:
        tensors = {f"loop.{k}": v.contiguous() for k, v in model.state_dict().items()}
        tensors.update({f"kd.{k}": v.contiguous() for k, v in kd.state_dict().items()})
        tensors["final_loss"] = torch.tensor(res["final_loss"])
        tensors["plain"] = torch.tensor(plain)
        tensors["world_size"] = torch.tensor([pdist.world_size(), notes["world_size"]])
        tensors["strategy_fsdp"] = torch.tensor(notes["strategy"] == "fsdp")
        names = sorted(probe.seen)
        tensors["shard_numel"] = torch.tensor([probe.seen[n] for n in names])  # [n_params, (local, full)]
        tensors["full_numel"] = torch.tensor([dict(model.named_parameters())[n].numel() for n in names])
        save_file(tensors, out)


def test_fsdp_two_processes_match_single_process(tmp_path: Path) -> None:
    out = tmp_path / "rank0.safetensors"
    launch.spawn(_fsdp_worker, 2, (str(out),))
    got = load_file(str(out))
    assert got["world_size"].tolist() == [2, 2]  # two ranks, and the step's report says so
    assert bool(got["strategy_fsdp"])
    local, full = got["shard_numel"][:, 0], got["shard_numel"][:, 1]
    assert torch.equal(full, got["full_numel"])  # the trained copy has the model's parameters
    assert len(full) == 4 and bool((local < full).all())  # rank 0 holds only part of every one
    assert int(local.sum()) == pytest.approx(int(full.sum()) / 2, rel=0.1)  # about half of all weights
    # sorted names 0.bias, 0.weight, 2.bias, 2.weight; 0.weight [32, 8]: rows 0..15 on rank 0 (Shard(0))
    assert local.tolist() == [16, 16 * 8, 2, 2 * 32] and full.tolist() == [32, 32 * 8, 3, 3 * 32]
    assert bool(got["plain"])  # gathered back into ordinary parameters, not DTensors
    model, data = _setup()
    with pytest.warns(UserWarning, match="fsdp requested, ran single-process"):  # one process: said, not silent
        res = train(model, data, _loss, TrainOptions(**OPTS))
    for k, v in model.state_dict().items():
        assert torch.allclose(got[f"loop.{k}"], v, atol=1e-5), k
    assert float(got["final_loss"]) == pytest.approx(res["final_loss"], rel=1e-5)
    assert not torch.allclose(_setup()[0][0].weight, model[0].weight, atol=1e-3)  # it did train
    student, _ = _setup()
    with pytest.warns(UserWarning, match="fsdp requested"):
        kd = sk.compress(student, {"steps": [KD]}, train=data, teacher=_teacher(), measure=False,
                         progress=False).model
    for k, v in kd.state_dict().items():
        assert torch.allclose(got[f"kd.{k}"], v, atol=1e-5), k
    assert not torch.allclose(_setup()[0][0].weight, kd[0].weight, atol=1e-3)


@pytest.mark.parametrize("field,value", [("eval_every", 5), ("checkpoint_dir", "runs/x")])
def test_fsdp_refuses_options_that_need_the_live_model(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"{field}.*fsdp"):
        TrainOptions(steps=2, strategy="fsdp", **{field: value})
