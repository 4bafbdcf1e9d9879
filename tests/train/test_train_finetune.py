"""``finetune: {method: supervised}`` through sk.compress: plain and Hugging Face batches, save/load."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import slimkit as sk
from slimkit.core.errors import ConfigError, DataError


def _xy(n: int = 256, bs: int = 16, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 32, generator=gen)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, n, bs)]


def _accuracy(model: torch.nn.Module, data: list) -> float:
    with torch.no_grad():
        hits = sum(int((model(x).argmax(-1) == y).sum()) for x, y in data)
    return hits / sum(len(y) for _, y in data)


def test_finetune_learns_labels_and_round_trips(make_mlp, tmp_path: Path) -> None:
    model = make_mlp()
    train, held = _xy(), _xy(seed=1)
    recipe = {"steps": [{"finetune": {"epochs": 10, "lr": 1e-2, "scheduler": "cosine", "warmup_steps": 5}}]}
    res = sk.compress(model, recipe, train=train, measure=False, progress=False)
    before, after = _accuracy(model, held), _accuracy(res.model, held)
    assert before < 0.4 and after > 0.75, (before, after)
    notes = res.report.to_dict()["steps"][0]["notes"]
    assert notes["steps"] == 160 and notes["final_loss"] < notes["first_loss"] / 2
    sk.save(res.model, tmp_path / "ft")
    loaded = sk.load(tmp_path / "ft", model=make_mlp(seed=5))
    x = train[0][0]
    assert torch.equal(loaded(x), res.model(x))


def test_finetune_uses_the_hf_loss_with_labels(make_llama, tmp_path: Path) -> None:
    model = make_llama()
    gen = torch.Generator().manual_seed(0)
    # a learnable pattern: token t+1 = (t + 1) % 100
    starts = torch.randint(0, 100, (8, 1), generator=gen)
    ids = (starts + torch.arange(16)) % 100
    batches = [{"input_ids": ids[i:i + 4], "labels": ids[i:i + 4]} for i in (0, 4)]
    res = sk.compress(model, {"steps": [{"finetune": {"steps": 40, "lr": 1e-2}}]}, train=batches,
                      measure=False, progress=False)
    notes = res.report.to_dict()["steps"][0]["notes"]
    assert notes["final_loss"] < 0.5 * notes["first_loss"]
    with torch.no_grad():
        assert float(res.model(**batches[0]).loss) < 0.5 * float(model(**batches[0]).loss)
    sk.save(res.model, tmp_path / "llama")
    loaded = sk.load(tmp_path / "llama")
    assert torch.equal(loaded(input_ids=ids).logits, res.model(input_ids=ids).logits)


def test_finetune_errors(make_mlp) -> None:
    with pytest.raises(DataError, match="train"):
        sk.compress(make_mlp(), {"steps": [{"finetune": {"steps": 1}}]}, measure=False, progress=False)
    with pytest.raises(DataError, match="labelled"):
        sk.compress(make_mlp(), {"steps": [{"finetune": {"steps": 1}}]}, train=[torch.randn(4, 32)],
                    measure=False, progress=False)
    with pytest.raises(ConfigError, match="lr"):
        sk.Recipe.from_dict({"steps": [{"finetune": {"lr": -1.0}}]})
    with pytest.raises(ConfigError, match="method"):
        sk.Recipe.from_dict({"steps": [{"finetune": {"method": "rlhf"}}]})
