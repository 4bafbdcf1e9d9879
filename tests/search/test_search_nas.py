"""NAS for students: a student space derived from a tiny residual CNN teacher trained on sklearn's
digits, searched with a short distillation as the fidelity and successive halving (Optuna's pruner)
stopping weak students at a rung; found recipes replay; bad student knobs are ConfigErrors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import slimkit as sk
from slimkit.search.recipes import RecipeSpace, student_space
from slimkit.search.recipes.pruning import PrunerConfig


class Block(nn.Module):
    """A residual conv block (shape preserving, so the student space may drop it)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class ResCNN(nn.Module):
    def __init__(self, c: int = 16, depth: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.blocks = nn.Sequential(*[Block(c) for _ in range(depth)])
        self.head = nn.Linear(c * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.avg_pool2d(self.blocks(F.relu(self.stem(x))), 2).flatten(1))


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    train = sk.zoo.load_data("digits", "train")
    val = sk.zoo.load_data("digits", "validation")
    teacher = ResCNN()
    opt = torch.optim.Adam(teacher.parameters(), lr=3e-3)
    for _ in range(8):
        for x, y in train:
            opt.zero_grad()
            F.cross_entropy(teacher(x), y).backward()
            opt.step()
    teacher.eval()
    return teacher, train, val


SPACE_ARGS = dict(depths=[1, 2, 3, 4], widths=[0.25, 0.5, 0.75, 1.0], steps=40, eval_every=10,
                  distill={"method": "logit", "lr": 3e-3, "temperature": 2.0})


@pytest.fixture(scope="module")
def searched(digits, tmp_path_factory):
    teacher, train, val = digits
    space = student_space(teacher, **SPACE_ARGS, pruner={"name": "successive_halving", "reduction_factor": 2})
    sr = sk.search(teacher, space, train=train, eval=sk.Accuracy(val), example_inputs=train[0][0][:8],
                   objectives=("quality", "macs"), n_trials=14, seed=1,
                   out_dir=tmp_path_factory.mktemp("nas") / "out", save_best=False)
    return teacher, train, val, sr


def test_teacher_is_trained(digits) -> None:
    teacher, _, val = digits
    assert sk.Accuracy(val)(teacher) > 0.9


def test_successive_halving_prunes_some_students(searched) -> None:
    _, _, _, sr = searched
    states = [t.state for t in sr.trials]
    assert states.count("PRUNED") > 0 and states.count("COMPLETE") >= 3, states
    assert sr.counts["pruned"] == states.count("PRUNED")
    for t in sr.trials:
        if t.state == "PRUNED":
            assert "successive_halving stopped it at step" in t.error


def test_pruned_students_were_the_worse_ones_at_their_rung(searched) -> None:
    """Each pruned trial stopped before the end, and some trial had a strictly better quality at
    the step where it was stopped (successive halving keeps the top half of a rung)."""
    import optuna

    _, _, _, sr = searched
    study = optuna.load_study(study_name="slimkit-search", storage=_journal(sr.out_dir))
    rungs = {t.number: t.user_attrs.get("rungs") for t in study.get_trials(deepcopy=False)}
    n_pruned = 0
    for t in sr.trials:
        if t.state != "PRUNED":
            continue
        step, value = rungs[t.number][-1]
        assert step < SPACE_ARGS["steps"]
        others = [v for n, r in rungs.items() if n != t.number and r for s, v in r if s == step]
        assert others and max(others) > value, (t.number, step, value, others)
        n_pruned += 1
    assert n_pruned > 0
    # the complete students reach a better final quality than the pruned ones had when stopped
    last = [rungs[t.number][-1][1] for t in sr.trials if t.state == "PRUNED"]
    final = [t.metrics["quality"] for t in sr.trials if t.state == "COMPLETE"]
    assert max(final) > max(last)


def test_found_students_replay_and_are_smaller(searched) -> None:
    teacher, train, val, sr = searched
    assert sr.pareto
    for cand in sr.pareto[:3]:
        steps = cand.recipe.to_dict()["steps"]
        assert [next(iter(s)) for s in steps] == ["distill"]
        replay = sk.compress(teacher, cand.recipe, train=train, eval=sk.Accuracy(val), progress=False,
                             measure=False).model
        assert sk.Accuracy(val)(replay) == pytest.approx(cand.metrics["quality"], abs=1e-9)
        assert sk.measure.count_params(replay) == cand.metrics["params"]
    smallest = min(sr.pareto, key=lambda c: c.metrics["macs"])
    assert smallest.metrics["macs_ratio"] < 0.6 and smallest.metrics["quality"] > 0.5


def test_hyperband_pruner_runs(digits) -> None:
    teacher, train, val = digits
    space = student_space(teacher, depths=[1, 4], widths=[0.25, 1.0], steps=20, eval_every=5,
                          distill={"method": "logit", "lr": 3e-3}, pruner="hyperband")
    sr = sk.search(teacher, space, train=train, eval=sk.Accuracy(val), objectives="quality", n_trials=5, seed=0,
                   storage="memory")
    assert len(sr.trials) == 5 and sum(t.state == "COMPLETE" for t in sr.trials) >= 1
    assert PrunerConfig(name="hyperband").make(5, 20).__class__.__name__ == "HyperbandPruner"


@pytest.mark.parametrize("kwargs, needle", [
    ({"depths": [0]}, "depths: 0 is not a number of blocks"),
    ({"depths": [5]}, "depths: 5 is not a number of blocks"),
    ({"depths": []}, "depths = [] must be a non-empty list"),
    ({"widths": [1.5]}, "widths: 1.5 is not a kept fraction"),
    ({"widths": [0.0]}, "widths: 0.0 is not a kept fraction"),
    ({"heads": [0.5]}, "heads = [0.5]: ResCNN has no attention heads"),
    ({"eval_every": 50, "steps": 40}, "eval_every = 50 is more than steps = 40"),
    ({"pruner": "halving"}, "pruner = 'halving' is not a pruner"),
    ({"pruner": {"name": "successive_halving", "reduction_factor": 1}}, "reduction_factor"),
    ({"distill": {"keep_every": 2}}, "['keep_every'] are set by the student knobs"),
    ({"distill": {"method": "logit", "lr": -1.0}}, "lr"),
])
def test_bad_student_knobs_name_the_value(digits, kwargs, needle) -> None:
    teacher, _, _ = digits
    with pytest.raises(sk.ConfigError, match=None) as info:
        RecipeSpace.from_dict(student_space(teacher, **{**SPACE_ARGS, **kwargs}))
    assert needle in str(info.value), str(info.value)


def test_a_pruner_without_a_training_rung_is_refused(digits) -> None:
    teacher, train, val = digits
    space = {"steps": [{"distill": {"method": "logit", "steps": 10}}], "pruner": "successive_halving"}
    with pytest.raises(sk.ConfigError, match="needs a distill or finetune step with eval_every"):
        RecipeSpace.from_dict(space)
    with pytest.raises(sk.ConfigError, match="eval_every must be one fixed number"):
        RecipeSpace.from_dict({"steps": [{"distill": {"steps": 10, "eval_every": {"choice": [2, 5]}}}],
                               "pruner": "hyperband"})
    fixed = {"steps": [{"distill": {"method": "logit", "steps": 10, "eval_every": 5}}], "pruner": "hyperband"}
    with pytest.raises(sk.ConfigError, match="differs from the space's pruner"):
        sk.search(teacher, fixed, train=train, eval=sk.Accuracy(val), n_trials=1, storage="memory",
                  pruner="successive_halving")
    with pytest.raises(sk.ConfigError, match="pruner = 'bogus' is not a pruner"):
        sk.search(teacher, {"steps": fixed["steps"]}, train=train, eval=sk.Accuracy(val), n_trials=1,
                  storage="memory", pruner="bogus")


def _journal(out_dir: str) -> object:
    from pathlib import Path

    from slimkit.search.recipes.storage import open_store

    return open_store(None, Path(out_dir)).storage
