"""Data parallel training: 2 CPU processes (gloo, DistributedDataParallel) give the single-process
result on the same global batches; launcher helpers."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from slimkit.core.errors import ConfigError, DataError
from slimkit.parallel import launch, shard_batch
from slimkit.train import TrainOptions, train


OPTS = dict(steps=12, lr=0.05, optimizer="sgd", momentum=0.9, grad_accum=2, clip_norm=1.0, scheduler="cosine",
            warmup_steps=2, seed=3)


def _setup() -> tuple[nn.Module, list]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return model, [(x[i:i + 8], y[i:i + 8]) for i in range(0, 64, 8)]  # global batches of 8 rows


def _loss(model: nn.Module, batch: tuple) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def _ddp_worker(rank: int, out: str) -> None:
    from slimkit.parallel import dist as pdist

    assert pdist.world_size() == 2 and pdist.rank() == rank
    model, data = _setup()
    res = train(model, data, _loss, TrainOptions(**OPTS))
    if rank == 0:
        tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
        tensors["final_loss"] = torch.tensor(res["final_loss"])
        save_file(tensors, out)


def test_ddp_two_processes_match_single_process(tmp_path: Path) -> None:
    out = tmp_path / "rank0.safetensors"
    launch.spawn(_ddp_worker, 2, (str(out),))
    ddp = load_file(str(out))
    model, data = _setup()
    res = train(model, data, _loss, TrainOptions(**OPTS))
    for k, v in model.state_dict().items():
        assert torch.allclose(ddp[k], v, atol=1e-5), k
    assert float(ddp["final_loss"]) == pytest.approx(res["final_loss"], rel=1e-5)
    first = _setup()[0]
    assert not torch.allclose(first[0].weight, model[0].weight, atol=1e-3)  # it did train


def test_shard_batch_splits_every_tensor_on_dim0() -> None:
    batch = ({"input_ids": torch.arange(12).reshape(6, 2)}, torch.arange(6))
    a, b = shard_batch(batch, 0, 2), shard_batch(batch, 1, 2)
    assert a[0]["input_ids"].tolist() == [[0, 1], [2, 3], [4, 5]] and b[1].tolist() == [3, 4, 5]
    with pytest.raises(DataError, match="cannot be split across 4"):
        shard_batch(torch.zeros(3, 2), 0, 4)


def test_torchrun_command_for_the_cli() -> None:
    argv = ["compress", "--model", "zoo:minilm-l6", "--nproc", "2", "--recipe", "r.yaml", "--nproc=3", "--out", "o"]
    cmd = launch.torchrun_command(argv, 2)
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert cmd[5:] == ["-m", "slimkit.cli.main", "compress", "--model", "zoo:minilm-l6", "--recipe", "r.yaml",
                       "--out", "o"]
    with pytest.raises(ConfigError, match="nproc"):
        launch.torchrun_command(argv, 0)
