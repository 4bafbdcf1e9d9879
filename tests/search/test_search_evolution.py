"""``search: {method: evolution}``: exact budget, replayable recipe, seeded, beats uniform on a
model with one fragile layer, budget_s / Ctrl-C stops, ConfigErrors, report plot."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import slimkit as sk
from slimkit.search.evolution.core import CostTable, evolve, make_offspring

VOCAB = 128


def tiny_llama(seed: int = 0, layers: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=VOCAB, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def token_batches(n: int, seed: int, rows: int = 2, length: int = 64) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, VOCAB, (rows, length), generator=g)} for _ in range(n)]


def search_recipe(prune: dict, **extra) -> list[dict]:
    options = {"method": "evolution", "step": {"prune": prune}, "generations": 6, "offspring": 8,
               "selection": [[2, 64], [1, 128]], **extra}
    return [{"search": options}]


def run(model: nn.Module, recipe, calib) -> sk.Result:
    return sk.compress(model, recipe, calib=calib, progress=False, measure=False)


def linear_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().clone() for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and n != "lm_head"}


def nonzeros(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(w)) for w in linear_weights(model).values())


@torch.no_grad()
def kl_to(reference: nn.Module, model: nn.Module, batches) -> float:
    total = 0.0
    for b in batches:
        logp = F.log_softmax(reference(**b).logits.float(), -1)
        logq = F.log_softmax(model(**b).logits.float(), -1)
        total += float((logp.exp() * (logp - logq)).sum(-1).mean())
    return total / len(batches)


@pytest.mark.parametrize("method", ["sparsegpt", "wanda", "magnitude"])
def test_budget_exact_and_recipe_replays(method: str, tmp_path) -> None:
    model, calib = tiny_llama(), token_batches(4, seed=1)
    prune = {"method": method, "sparsity": 0.6}
    res = run(model, search_recipe(prune), calib)
    uniform = run(model, [{"prune": prune}], calib)
    assert nonzeros(res.model) == nonzeros(uniform.model)  # the wrapped step's exact global budget
    note = res.report.steps[0]["notes"]["search"]
    assert note["budget_found"] == note["budget"] == nonzeros(uniform.model)
    assert len(set(note["allocation"].values())) > 1  # it really moved sparsity between layers
    (step,) = res.recipe.to_dict()["steps"]
    assert list(step) == ["prune"] and step["prune"]["sparsity"] == note["allocation"]
    replay = run(model, res.recipe.to_dict(), calib)  # no search: the ordinary step reproduces the model
    for name, w in linear_weights(res.model).items():
        assert torch.equal(w, linear_weights(replay.model)[name]), name
    res.save(tmp_path / "out")
    loaded = sk.load(tmp_path / "out")
    assert all(torch.equal(w, linear_weights(loaded)[n]) for n, w in linear_weights(res.model).items())
    assert sk.Recipe.from_dict(res.recipe.to_dict()).steps[0].name == "prune"
    png = tmp_path / "out" / "search_1.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_allocation_other_seed_differs() -> None:
    model, calib = tiny_llama(), token_batches(4, seed=1)
    prune = {"method": "magnitude", "sparsity": 0.5}
    notes = [run(model, search_recipe(prune, seed=s), calib).report.steps[0]["notes"]["search"] for s in (3, 3, 4)]
    assert notes[0]["allocation"] == notes[1]["allocation"]
    assert [g["best_fitness"] for g in notes[0]["generations"]] == [g["best_fitness"] for g in notes[1]["generations"]]
    assert notes[0]["allocation"] != notes[2]["allocation"]


def fragile_llama() -> nn.Module:
    """Layer 0's MLP output is scaled up 8x (its down_proj and the next block's input norms see
    large-scale values): pruning its weights costs much more than pruning any other same-sized layer."""
    model = tiny_llama(seed=2)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(8.0)
    return model


def test_search_beats_uniform_on_a_model_with_one_fragile_layer() -> None:
    model, calib, held_out = fragile_llama(), token_batches(6, seed=1), token_batches(4, seed=9)
    prune = {"method": "magnitude", "sparsity": 0.6}
    res = run(model, search_recipe(prune, generations=25, offspring=12, selection=[[3, 128], [1, 384]]), calib)
    uniform = run(model, [{"prune": prune}], calib)
    searched_kl, uniform_kl = kl_to(model, res.model, held_out), kl_to(model, uniform.model, held_out)
    assert searched_kl < 0.8 * uniform_kl, (searched_kl, uniform_kl)  # on held-out tokens the search never saw
    allocation = res.report.steps[0]["notes"]["search"]["allocation"]
    assert allocation["model.layers.0.mlp.down_proj"] < 0.6  # the fragile layer is spared
    assert nonzeros(res.model) == nonzeros(uniform.model)


def test_budget_s_is_honoured() -> None:
    model, calib = tiny_llama(), token_batches(4, seed=1)
    began = time.perf_counter()
    res = run(model, search_recipe({"method": "wanda", "sparsity": 0.5}, generations=10**6, budget_s=2.0), calib)
    wall = time.perf_counter() - began
    note = res.report.steps[0]["notes"]["search"]
    assert note["stopped_by"] == "budget_s" and len(note["generations"]) >= 1
    assert note["search_seconds"] <= 2.0 + 0.25  # stops within one evaluation of the deadline
    assert wall < 2.0 + 5.0


def test_ctrl_c_keeps_the_best_so_far_and_finishes_the_step() -> None:
    """KeyboardInterrupt raised inside the model's forward (as Ctrl-C would) during the search."""
    model, calib = tiny_llama(), token_batches(4, seed=1)
    calls = {"n": 0, "raised": False}

    def interrupt(_module, _args, _kwargs):
        calls["n"] += 1
        if calls["n"] == 40 and not calls["raised"]:  # setup takes 4 forwards; this one is mid-search
            calls["raised"] = True
            raise KeyboardInterrupt

    res_model = model
    handle = res_model.register_forward_pre_hook(interrupt, with_kwargs=True)
    try:
        res = run(res_model, search_recipe({"method": "magnitude", "sparsity": 0.5}, generations=1000), calib)
    finally:
        handle.remove()
    note = res.report.steps[0]["notes"]["search"]
    assert calls["raised"] and note["stopped_by"] == "interrupted"
    assert 1 <= len(note["generations"]) < 1000
    assert note["budget_found"] == note["budget"]
    assert res.recipe.to_dict()["steps"][0]["prune"]["sparsity"] == note["allocation"]


@pytest.mark.parametrize("step,needle", [
    ({"finetune": {"epochs": 1}}, "'finetune'"),
    ({"prune": {"method": "structured", "sparsity": 0.3}}, "'structured'"),
    ({"prune": {"method": "wanda", "sparsity": 0.5, "pattern": "2:4"}}, "'2:4'"),
    ({"quantize": {"method": "dynamic_int8"}}, "'dynamic_int8'"),
])
def test_config_errors_name_the_value(step: dict, needle: str) -> None:
    with pytest.raises(sk.ConfigError, match=needle):
        run(tiny_llama(), [{"search": {"method": "evolution", "step": step}}], token_batches(1, seed=1))


def test_budget_too_small_for_one_generation_is_a_config_error() -> None:
    with pytest.raises(sk.ConfigError, match=r"budget_s = 0\.001 is too small"):
        run(tiny_llama(), search_recipe({"method": "magnitude", "sparsity": 0.5}, budget_s=0.001),
            token_batches(2, seed=1))


def test_fitness_draws_from_every_calibration_token_unless_capped() -> None:
    # stages of 32 / 64 tokens draw from the whole pool (512 tokens), not from one stage's worth,
    # so a long search is not scored on the same 64 tokens in every generation
    model, calib = tiny_llama(), token_batches(4, seed=1)
    prune = {"method": "magnitude", "sparsity": 0.5}
    pool = run(model, search_recipe(prune, selection=[[2, 32], [1, 64]], generations=2), calib)
    assert pool.report.steps[0]["notes"]["search"]["fitness_tokens"] == 4 * 2 * 64
    capped = run(model, search_recipe(prune, selection=[[2, 32], [1, 64]], generations=2, max_calib_tokens=128), calib)
    assert capped.report.steps[0]["notes"]["search"]["fitness_tokens"] == 128


def test_fitness_holdout_keeps_its_batches_from_the_level_database(monkeypatch) -> None:
    from slimkit.search.evolution import api

    model, calib = tiny_llama(), token_batches(4, seed=1)
    prune = {"method": "sparsegpt", "sparsity": 0.6}
    seen: list[list[torch.Tensor]] = []
    real_factory = api.space_factory

    def observed_factory(name: str, method: str):  # records what the real factory is given, changes nothing
        factory = real_factory(name, method)

        def build(model, step, ctx, options):
            seen.append([b["input_ids"] for b in options.calibration(ctx)])
            return factory(model, step, ctx, options)
        return build

    monkeypatch.setattr(api, "space_factory", observed_factory)
    stages = [[2, 64], [1, 1024]]  # more tokens than the calibration has: the fitness keeps all it is given
    res = run(model, search_recipe(prune, fitness_holdout=1, selection=stages), calib)
    (database,) = seen
    assert len(database) == 3 and all(torch.equal(a, b["input_ids"]) for a, b in zip(database, calib[:3]))
    note = res.report.steps[0]["notes"]["search"]
    assert note["fitness_holdout"] == 1 and note["fitness_tokens"] == 2 * 64  # one batch of 2 rows x 64 tokens
    assert nonzeros(res.model) == nonzeros(run(model, [{"prune": prune}], calib).model)
    shared = run(model, search_recipe(prune, selection=stages), calib).report.steps[0]["notes"]["search"]
    assert shared["fitness_holdout"] == 0 and shared["fitness_tokens"] == 4 * 2 * 64
    with pytest.raises(sk.ConfigError, match=r"fitness_holdout = 4 leaves no calibration batch.*\[0, 3\]"):
        run(model, search_recipe(prune, fitness_holdout=4), calib)


@pytest.mark.parametrize("field,value", [("selection", [[2, 64], [2, 128]]), ("selection", [[99, 64], [1, 128]]),
                                         ("generations", 0), ("budget_s", -1), ("fitness", "ppl"),
                                         ("fitness_holdout", -1)])
def test_bad_fields(field: str, value) -> None:
    with pytest.raises(sk.ConfigError, match=field.split("[")[0]):
        sk.Recipe.from_dict(search_recipe({"method": "magnitude", "sparsity": 0.5}, **{field: value}))


def test_level_switches_keep_the_budget_exact() -> None:
    rng = np.random.default_rng(0)
    costs = CostTable([[300, 200, 100]] * 4 + [[90, 60, 30, 0]] * 3 + [[7, 5]])  # three equal-step groups + a loner
    start = [1, 1, 1, 1, 1, 2, 1, 0]
    kids = make_offspring(start, costs, rng, 50)
    assert len(kids) == 50 and len({tuple(k) for k in kids}) == 50
    assert all(costs.total(k) == costs.total(start) for k in kids)
    assert all(k[7] == 0 for k in kids)  # the unit without a partner keeps its level


class _Quadratic:
    """Toy fitness: distance to a target assignment; raises KeyboardInterrupt after ``stop`` scores."""

    def __init__(self, target, stop=None):
        self.target, self.stop, self.calls = np.array(target), stop, 0

    def sample(self, rng, tokens):
        return tokens

    def score(self, assignment, sample):
        self.calls += 1
        if self.stop is not None and self.calls > self.stop:
            raise KeyboardInterrupt
        return float(((np.array(assignment) - self.target) ** 2).sum())


def test_evolve_finds_the_optimum_and_ctrl_c_keeps_the_best() -> None:
    costs = CostTable([[40, 30, 20, 10, 0]] * 6)
    target = [0, 4, 0, 4, 2, 2]  # same total cost as the uniform start [2] * 6
    out = evolve([2] * 6, costs, _Quadratic(target), generations=60, offspring=8, selection=[[2, 1], [1, 1]],
                 rng=np.random.default_rng(0))
    assert out.best == target and out.stopped_by == "generations"
    fitness = _Quadratic(target, stop=25)
    out = evolve([2] * 6, costs, fitness, generations=60, offspring=8, selection=[[2, 1], [1, 1]],
                 rng=np.random.default_rng(0))
    assert out.stopped_by == "interrupted" and out.history and out.best == out.history[-1].assignment
    assert out.best_fitness < _Quadratic(target).score([2] * 6, None)


def test_disk_level_database_gives_the_memory_result(capsys) -> None:
    model, calib = tiny_llama(), token_batches(4, seed=1)
    prune = {"method": "sparsegpt", "sparsity": 0.5}
    mem = run(model, search_recipe(prune, level_storage="memory"), calib).report.steps[0]["notes"]["search"]
    disk = sk.compress(model, search_recipe(prune, level_storage="disk"), calib=calib, progress=True,
                       measure=False).report.steps[0]["notes"]["search"]
    assert (mem["level_storage"], disk["level_storage"]) == ("memory", "disk")
    assert mem["allocation"] == disk["allocation"] and mem["level_database_mb"] == disk["level_database_mb"] > 0


def test_plain_model_uses_mse_to_the_input_outputs() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32),
                          nn.ReLU(), nn.Linear(32, 4)).eval()
    calib = [torch.randn(8, 16) for _ in range(4)]
    res = run(model, search_recipe({"method": "magnitude", "sparsity": 0.5}, selection=[[2, 8], [1, 16]]), calib)
    note = res.report.steps[0]["notes"]["search"]
    assert note["fitness"] == "mse" and note["budget_found"] == note["budget"]
    assert note["searched_fitness"] <= note["uniform_fitness"]


@pytest.mark.parametrize("database", ["sequential", "dense"])
def test_sequential_database_starts_from_the_wrapped_steps_model(database: str) -> None:
    from slimkit.core.context import RunContext
    from slimkit.core.recipe import Recipe
    from slimkit.search.prune_levels import prune_space
    from slimkit.search.space import SpaceOptions

    model, calib = tiny_llama(layers=3), token_batches(4, seed=1)
    prune = {"method": "sparsegpt", "sparsity": 0.6}
    before = linear_weights(model)
    step = Recipe.from_dict([{"prune": prune}]).steps[0]
    space = prune_space(model, step, RunContext(calib=calib, show_progress=False),
                        SpaceOptions(levels=1, calib=calib, database=database))
    assert all(torch.equal(w, linear_weights(model)[n]) for n, w in before.items())  # the build leaves it as it was
    stepped = linear_weights(run(model, [{"prune": prune}], calib).model)
    space.apply(model, space.uniform())
    start = linear_weights(model)
    space.restore(model)
    last = [n for n in start if n.startswith("model.layers.2.")]
    # block 0 sees the same inputs either way; the last block sees pruned inputs in the step and the
    # sequential database, dense ones in the dense database (levels are stored as float16)
    gap = max(float((start[n] - stepped[n]).abs().max()) for n in last)
    first = max(float((start[n] - stepped[n]).abs().max()) for n in start if n.startswith("model.layers.0."))
    assert first < 2e-3
    if database == "sequential":
        assert gap < 2e-3
    else:
        assert gap > 1e-2
