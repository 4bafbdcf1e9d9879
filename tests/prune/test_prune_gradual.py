"""Gradual pruning: cubic schedule math, masks kept through training, exact final sparsity, reload."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.prune.gradual.core import cubic_sparsity


def test_cubic_schedule_values() -> None:
    assert cubic_sparsity(0, 0.0, 0.8, 0, 100) == 0.0
    assert cubic_sparsity(100, 0.0, 0.8, 0, 100) == 0.8
    assert cubic_sparsity(50, 0.0, 0.8, 0, 100) == pytest.approx(0.8 * (1 - 0.5 ** 3))
    assert cubic_sparsity(200, 0.1, 0.8, 0, 100) == 0.8
    # cubic: fast at first, slow at the end
    assert cubic_sparsity(10, 0.0, 0.8, 0, 100) - cubic_sparsity(0, 0.0, 0.8, 0, 100) > \
        cubic_sparsity(100, 0.0, 0.8, 0, 100) - cubic_sparsity(90, 0.0, 0.8, 0, 100)


def test_gradual_reaches_exact_sparsity_and_learns(make_mlp, tmp_path) -> None:
    model = make_mlp(d_in=16, hidden=32, d_out=4)
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(32, 16, generator=gen) for _ in range(4)]
    train = [(x, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()) for x in xs]
    res = sk.compress(model, {"steps": [{"prune": {"method": "gradual", "sparsity": 0.75, "steps": 40, "lr": 1e-2,
                                                   "prune_every": 4, "ignore": ["head"]}}]},
                      train=train, progress=False, measure=False)
    notes = res.report.steps[0]["notes"]
    for name in ("fc1", "fc2"):
        w = getattr(res.model, name).weight
        assert int((w == 0).sum()) == round(0.75 * w.numel()), name
    sched = [s for _, s in notes["schedule"]]
    assert sched == sorted(sched) and sched[0] == 0.0 and sched[-1] == 0.75 and len(sched) >= 5
    assert notes["final_loss"] < 1.2  # learned the 4-class task while pruning (chance is ln 4 = 1.39)
    sk.save(res.model, tmp_path / "c")
    again = sk.load(tmp_path / "c", model=make_mlp(d_in=16, hidden=32, d_out=4))
    assert torch.equal(again(xs[0]), res.model(xs[0]))


def test_gradual_needs_train_data_and_valid_schedule(make_mlp) -> None:
    with pytest.raises(sk.DataError, match="train"):
        sk.compress(make_mlp(), {"steps": [{"prune": {"method": "gradual", "steps": 2}}]}, progress=False, measure=False)
    with pytest.raises(sk.ConfigError, match="prune_end"):
        sk.Recipe.from_dict({"steps": [{"prune": {"method": "gradual", "prune_start": 10, "prune_end": 5}}]})
    with pytest.raises(sk.ConfigError, match="initial_sparsity"):
        sk.Recipe.from_dict({"steps": [{"prune": {"method": "gradual", "sparsity": 0.5, "initial_sparsity": 0.6}}]})
