"""The ``evolution``, ``rl`` and ``gradient`` strategies of ``sk.search``: each improves on random
search on a tiny synthetic problem, is reproducible from its seed, resumes a killed study, and a
bad strategy name is a ConfigError naming it."""
from __future__ import annotations

import importlib
import statistics
import sys
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.search.recipes import RecipeSpace
from slimkit.search.recipes.api import STUDY_NAME, run_study
from slimkit.search.recipes.evaluate import model_fingerprint
from slimkit.search.recipes.goals import parse_constraints, parse_objectives
from slimkit.search.recipes.storage import Store, open_store

sys.path.insert(0, str(Path(__file__).parent))
from search_worker import SPACE, tiny_setup  # noqa: E402
from test_search_recipes import PER_LAYER_SPACE, AnalyticCost  # noqa: E402

engine = importlib.import_module("slimkit.search.recipes.engine")


def _analytic(strategy: str, seed: int, n_trials: int = 60, constraints=("quality_drop <= 0.15",)):
    objectives = parse_objectives(("bytes", "quality"), higher_is_better=True, has_inputs=False)
    cons = parse_constraints(list(constraints), higher_is_better=True, has_inputs=False)
    return run_study(RecipeSpace.from_dict(PER_LAYER_SPACE), AnalyticCost(), objectives, cons,
                     store=Store("memory", "memory"), settings={}, higher_is_better=True, strategy=strategy,
                     seed=seed, n_trials=n_trials)


def _smallest_feasible_bytes(strategy: str, seed: int) -> float:
    sr = _analytic(strategy, seed)
    assert sum(t.state == "COMPLETE" for t in sr.trials) == 60
    assert sr.best is not None, sr.reason
    return sr.best.metrics["bytes"]


def test_evolution_and_rl_beat_random_search_on_average() -> None:
    """12 per-layer knobs, goal: fewest bytes with quality_drop <= 0.15, 60 trials, 6 seeds."""
    mean = {s: statistics.mean(_smallest_feasible_bytes(s, seed) for seed in range(6))
            for s in ("random", "evolution", "rl")}
    assert mean["evolution"] < 0.95 * mean["random"], mean
    assert mean["rl"] < mean["random"], mean


class Bottleneck(nn.Module):
    """Two wide layers around an 8-unit bottleneck: pruning the narrow layers costs far more than
    pruning the wide ones, so a uniform sparsity is a poor allocation."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(32, 128), nn.Linear(128, 8)
        self.fc3, self.head = nn.Linear(8, 128), nn.Linear(128, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))))


def _nonzeros(model: nn.Module) -> int:
    return sum(int((m.weight != 0).sum()) for m in model.modules() if isinstance(m, nn.Linear))


def test_gradient_beats_uniform_sparsity_of_random_search_at_equal_budget() -> None:
    torch.manual_seed(0)
    model = Bottleneck().eval()
    gen = torch.Generator().manual_seed(1)
    calib = [torch.randn(32, 32, generator=gen) for _ in range(4)]
    held = [torch.randn(32, 32, generator=gen) for _ in range(4)]
    space = {"steps": [{"prune": {"method": "magnitude", "sparsity": {"choice": [0.5, 0.7]}}}]}
    before, fingerprint = {k: v.clone() for k, v in model.state_dict().items()}, model_fingerprint(model)
    found = {}
    for strategy in ("random", "gradient"):
        sr = sk.search(model, space, calib=calib, eval=sk.CosineFidelity(held), objectives=("quality", "bytes"),
                       strategy=strategy, n_trials=6, storage="memory", seed=0)
        found[strategy] = {}
        for t in sr.trials:
            if t.state == "COMPLETE" and not t.cached:
                pruned = sk.compress(model, t.recipe, calib=calib, progress=False, measure=False).model
                found[strategy][_nonzeros(pruned)] = (t.metrics["quality"], t.recipe.to_dict()["steps"][0]["prune"])
    assert list(model.state_dict()) == list(before) and model_fingerprint(model) == fingerprint  # untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(found["random"]) == len(found["gradient"]) == 2
    for uniform_count, learned_count in zip(sorted(found["random"]), sorted(found["gradient"])):
        assert abs(uniform_count - learned_count) <= 4  # the same budget, up to one weight per layer (rounding)
        uniform_q, learned_q = found["random"][uniform_count][0], found["gradient"][learned_count][0]
        step = found["gradient"][learned_count][1]
        count = uniform_count
        assert isinstance(step["sparsity"], dict) and len(set(step["sparsity"].values())) > 1
        assert 1 - learned_q < 0.5 * (1 - uniform_q), (count, learned_q, uniform_q)  # less than half the loss


@pytest.mark.parametrize("strategy", ["evolution", "rl"])
def test_seeded_runs_repeat_and_other_seeds_differ(strategy: str) -> None:
    def hashes(seed: int) -> list[str]:
        return [t.recipe_hash for t in _analytic(strategy, seed, n_trials=25).trials]

    first = hashes(3)
    assert hashes(3) == first
    assert hashes(4) != first
    assert len(set(first)) >= 20  # few repeats: proposals avoid candidates already tried


@pytest.mark.parametrize("bad", ["evolutoin", "RL", "grad"])
def test_bad_strategy_name_is_a_config_error_naming_it(bad: str, tmp_path) -> None:
    model, calib, fidelity = tiny_setup()
    with pytest.raises(sk.ConfigError, match=bad):
        sk.search(model, SPACE, calib=calib, eval=fidelity, n_trials=2, strategy=bad, out_dir=tmp_path / "o")
    with pytest.raises(sk.ConfigError, match=bad):
        engine.make_sampler(bad, 0, 10)


def test_gradient_needs_a_prune_step_and_a_model() -> None:
    model, calib, fidelity = tiny_setup()
    quant_only = {"steps": [{"quantize": {"method": "rtn", "bits": {"choice": [4, 8]}}}]}
    with pytest.raises(sk.ConfigError, match="prune step"):
        sk.search(model, quant_only, calib=calib, eval=fidelity, n_trials=2, strategy="gradient", storage="memory")
    with pytest.raises(sk.ConfigError, match="calib"):
        _analytic("gradient", 0, n_trials=2)


@pytest.mark.parametrize("strategy", ["evolution", "rl", "gradient"])
def test_a_resumed_study_continues_with_the_new_strategies(strategy: str, tmp_path) -> None:
    model, calib, fidelity = tiny_setup()
    out = tmp_path / "out"
    kwargs = dict(calib=calib, eval=fidelity, objectives=("quality", "bytes"), constraints=["quality_drop <= 0.05"],
                  strategy=strategy, out_dir=out, seed=1, save_best=False)
    first = sk.search(model, SPACE, n_trials=6, **kwargs)
    second = sk.search(model, SPACE, n_trials=12, **kwargs)
    assert len(first.trials) == 6 and len(second.trials) == 12
    assert [t.number for t in second.trials] == list(range(12))
    assert second.counts["evaluated"] + second.counts["cached"] + second.counts["failed"] + \
        second.counts.get("pruned", 0) == 6  # the first six were reused, not redone
    first_recipes = {t.number: t.recipe_hash for t in first.trials}
    assert all(second.trials[n].recipe_hash == h for n, h in first_recipes.items())
    if strategy == "gradient":  # the maps were learned once and kept in the study
        store = open_store(None, out)
        stored = optuna.load_study(study_name=STUDY_NAME, storage=store.storage).user_attrs["slimkit_gradient_maps"]
        store.close()
        learned = [m for pairs in stored["maps"]["0"].values() for _, m in pairs]
        used = [t.recipe.to_dict()["steps"][0]["prune"]["sparsity"] for t in second.trials
                if t.recipe is not None and "prune" in t.recipe.to_dict()["steps"][0]]
        assert used and all(m in learned for m in used)
