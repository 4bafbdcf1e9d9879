"""``sk.search`` over recipe spaces on a tiny MLP: the front, replays, constraints, outputs, bad spaces,
and the strategies against random search on an analytic problem."""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

import slimkit as sk
from slimkit.search.recipes import RecipeSpace
from slimkit.search.recipes.api import run_study
from slimkit.search.recipes.goals import parse_objectives
from slimkit.search.recipes.storage import Store

sys.path.insert(0, str(Path(__file__).parent))
from search_worker import MLP, SPACE, tiny_setup  # noqa: E402


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory):
    model, calib, fidelity = tiny_setup()
    out = tmp_path_factory.mktemp("search") / "out"
    sr = sk.search(model, SPACE, calib=calib, eval=fidelity, objectives=("quality", "bytes"),
                   constraints=["quality_drop <= 0.02", "bytes <= 0.5"], n_trials=14, out_dir=out, seed=3)
    return model, calib, fidelity, out, sr


def _dominates(a, b) -> bool:
    qa, qb, ba, bb = a.metrics["quality"], b.metrics["quality"], a.metrics["bytes"], b.metrics["bytes"]
    return qa >= qb and ba <= bb and (qa > qb or ba < bb)


def test_front_is_non_dominated_among_all_trials(searched) -> None:
    _, _, _, _, sr = searched
    done = [t for t in sr.trials if t.state == "COMPLETE"]
    assert len(sr.trials) == 14 and len(done) >= 8
    assert sr.pareto and all(not any(_dominates(t, p) for t in done) for p in sr.pareto)
    # every complete trial off the front is dominated by (or equal to) a front member
    front_hashes = {p.recipe_hash for p in sr.pareto}
    for t in done:
        if t.recipe_hash not in front_hashes:
            assert any(_dominates(p, t) or p.metrics == t.metrics for p in sr.pareto), t.number


def test_every_front_candidate_replays_to_its_metrics(searched) -> None:
    model, calib, fidelity, _, sr = searched
    for cand in sr.pareto:
        replay = sk.compress(model, cand.recipe, calib=calib, progress=False, measure=False).model
        assert sk.measure.checkpoint_bytes(replay) == cand.metrics["bytes"]
        assert fidelity(replay) == pytest.approx(cand.metrics["quality"], abs=1e-6)


def test_best_meets_the_constraints_and_is_best_on_quality(searched) -> None:
    _, _, _, _, sr = searched
    assert sr.best is not None, sr.reason
    m = sr.best.metrics
    assert m["quality_drop"] <= 0.02 and m["bytes_ratio"] <= 0.5
    assert m["bytes_ratio"] == pytest.approx(m["bytes"] / sr.baseline["bytes"])
    feasible = [t for t in sr.trials if t.state == "COMPLETE" and t.metrics["quality_drop"] <= 0.02
                and t.metrics["bytes_ratio"] <= 0.5]
    assert m["quality"] == max(t.metrics["quality"] for t in feasible)


def test_outputs_pareto_json_png_candidates_and_best(searched) -> None:
    _, _, _, out, sr = searched
    data = json.loads((out / "pareto.json").read_text())
    assert [c["trial"] for c in data["pareto"]] == [c.number for c in sr.pareto]
    assert data["best"]["trial"] == sr.best.number and data["n_trials"] == 14
    assert (out / "pareto.png").stat().st_size > 10_000
    for cand in sr.pareto:
        assert sk.Recipe.from_yaml(out / "candidates" / str(cand.number) / "recipe.yaml").to_dict() == cand.recipe.to_dict()
    best = sk.load(out / "best", model=MLP())
    assert sk.measure.checkpoint_bytes(best) == sr.best.metrics["bytes"]


def test_nothing_meets_the_constraints_gives_closest_and_reason(tmp_path) -> None:
    model, calib, fidelity = tiny_setup()
    sr = sk.search(model, SPACE, calib=calib, eval=fidelity, objectives=("bytes", "quality"),
                   constraints=["quality_drop <= 0.0", "bytes <= 0.05"], n_trials=5, out_dir=tmp_path / "o")
    assert sr.best is None and sr.closest is not None
    assert "bytes <= 0.05" in sr.reason and f"trial {sr.closest.number}" in sr.reason
    assert sr.closest.metrics["bytes_ratio"] > 0.05
    assert not (tmp_path / "o" / "best").exists()
    assert json.loads((tmp_path / "o" / "pareto.json").read_text())["best"] is None


def test_a_user_directory_is_refused_untouched(tmp_path) -> None:
    model, calib, fidelity = tiny_setup()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(sk.CheckpointError, match="mine"):
        sk.search(model, SPACE, calib=calib, eval=fidelity, n_trials=2, out_dir=tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


BAD_SPACES = [
    ({"steps": [{"prunee": {"sparsity": 0.5}}]}, "prunee"),
    ({"steps": [{"prune": {"method": {"choice": ["wanda", "wandaa"]}}}]}, "wandaa"),
    ({"steps": [{"prune": {"method": "magnitude", "sparsityy": {"choice": [0.5]}}}]}, "sparsityy"),
    ({"steps": [{"prune": {"method": "magnitude", "sparsity": {"choice": []}}}]}, "sparsity"),
    ({"steps": [{"prune": {"method": "magnitude", "sparsity": {"choice": [0.5, 1.5]}}}]}, "1.5"),
    ({"steps": [{"prune": {"method": "magnitude", "sparsity": {"low": 0.7, "high": 0.3}}}]}, "0.7"),
    ({"steps": [{"quantize": {"method": "rtn", "bits": {"choice": [4], "when": {"mode": 1}}}}]}, "mode"),
    ({"steps": [{"prune": {"method": {"choice": ["wanda", "magnitude"]}, "owl_lambda": 0.1}}]}, "owl_lambda"),
]


@pytest.mark.parametrize(("space", "needle"), BAD_SPACES)
def test_bad_spaces_name_the_value(space, needle) -> None:
    with pytest.raises(sk.ConfigError, match=needle):
        RecipeSpace.from_dict(space)


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"constraints": ["bytes <= 0"]}, "bytes <= 0"),
    ({"constraints": ["size <= 0.5"]}, "size"),
    ({"constraints": ["quality_drop <= -2"]}, "-2"),
    ({"objectives": ("quality", "speed")}, "speed"),
    ({"strategy": "annealing"}, "annealing"),
    ({"objectives": ("latency",)}, "example_inputs"),
])
def test_bad_goals_are_config_errors(kwargs, needle, tmp_path) -> None:
    model, calib, fidelity = tiny_setup()
    with pytest.raises(sk.ConfigError, match=needle):
        sk.search(model, SPACE, calib=calib, eval=fidelity, n_trials=2, out_dir=tmp_path / "o", **kwargs)
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_a_method_needing_calibration_is_refused_up_front(tmp_path) -> None:
    model, _, fidelity = tiny_setup()
    with pytest.raises(sk.ConfigError, match="wanda.*calib"):
        sk.search(model, SPACE, eval=fidelity, n_trials=2, out_dir=tmp_path / "o")


# ----------------------------------------------------------------------------- strategies vs random
LAYERS = {"fc1": (1.0, 0.5, 0.2), "fc2": (4.0, 0.1, 0.05), "fc3": (4.0, 0.3, 0.3), "fc4": (2.0, 0.05, 0.02),
          "fc5": (2.0, 1.0, 0.6), "fc6": (1.0, 0.2, 0.1)}  # layer: (share of weights, prune / quant sensitivity)
PER_LAYER_SPACE = {"steps": (
    [{"prune": {"method": "magnitude", "targets": [n], "sparsity": {"low": 0.0, "high": 0.9, "step": 0.05}}}
     for n in LAYERS]
    + [{"quantize": {"method": "rtn", "targets": [n], "bits": {"low": 2, "high": 8}}} for n in LAYERS])}


class AnalyticCost:
    """A cheap stand-in for compress + measure: per-layer sparsity / bits -> (quality, bytes fraction).
    Quality loses ``p * s^2 / 5 + q * 2^-bits`` per layer; bytes shrink with bits and (70 % of) sparsity."""

    def baseline(self) -> dict:
        return {"quality": 1.0, "bytes": 1.0, "params": 1}

    def __call__(self, recipe: dict) -> dict:
        chosen: dict[str, dict] = {"prune": {}, "quantize": {}}
        for step in recipe["steps"]:
            (name, options), = step.items()
            chosen[name][options["targets"][0]] = options.get("sparsity", options.get("bits"))
        total = sum(w for w, _, _ in LAYERS.values())
        drop = sum(p * chosen["prune"][n] ** 2 / 5 + q * 2.0 ** -chosen["quantize"][n] for n, (_, p, q) in LAYERS.items())
        size = sum(w / total * (1 - 0.7 * chosen["prune"][n]) * chosen["quantize"][n] / 32
                   for n, (w, _, _) in LAYERS.items())
        return {"quality": 1.0 - drop, "bytes": size, "params": 1}


def _hypervolume(front, ref_quality: float = 0.8, ref_bytes: float = 0.25) -> float:
    pts = sorted((c.metrics["bytes"], c.metrics["quality"]) for c in front)
    edges = [p[0] for p in pts[1:]] + [ref_bytes]
    return sum(max(q - ref_quality, 0) * max(min(nxt, ref_bytes) - x, 0) for (x, q), nxt in zip(pts, edges))


def _front_volume(strategy: str, seed: int, n_trials: int = 80) -> float:
    objectives = parse_objectives(("bytes", "quality"), higher_is_better=True, has_inputs=False)
    sr = run_study(RecipeSpace.from_dict(PER_LAYER_SPACE), AnalyticCost(), objectives, [],
                   store=Store("memory", "memory"), settings={}, higher_is_better=True, strategy=strategy,
                   seed=seed, n_trials=n_trials)
    assert sum(t.state == "COMPLETE" for t in sr.trials) == n_trials
    return _hypervolume(sr.pareto)


def test_tpe_and_nsga2_beat_random_search_on_average() -> None:
    """12 per-layer knobs, 80 trials, 4 seeds: the dominated area (hypervolume) of the front."""
    mean = {s: statistics.mean(_front_volume(s, seed) for seed in range(4)) for s in ("random", "tpe", "nsga2")}
    assert mean["tpe"] > mean["random"] * 1.03, mean
    assert mean["nsga2"] > mean["random"] * 1.03, mean


def test_an_exhausted_space_stops_the_search(tmp_path) -> None:
    """Two candidates only: once both are evaluated every proposal is a cached re-run, and the search
    stops after STALE_PROPOSALS of them instead of running to its budget."""
    from slimkit.search.recipes.engine import STALE_PROPOSALS

    model, calib, fidelity = tiny_setup()
    space = {"steps": [{"quantize": {"method": {"choice": ["rtn", "none"]}, "bits": 8, "group_size": 32}}]}
    sr = sk.search(model, space, calib=calib, eval=fidelity, objectives=("quality", "bytes"), budget_s=600,
                   out_dir=tmp_path / "o", seed=0)
    assert sr.counts["exhausted"] == 1
    assert sr.counts["evaluated"] == 1  # rtn; 'none' is the input model, pruned without running
    assert sr.counts["cached"] + sr.counts["pruned"] - 1 >= STALE_PROPOSALS  # re-proposals until the stop
    assert sr.best is not None and sr.best.recipe is not None


def test_latency_in_onnxruntime_times_the_exported_candidates(tmp_path) -> None:
    model, calib, fidelity = tiny_setup()
    space = {"steps": [{"prune": {"method": "structured", "granularity": "neuron",
                                  "sparsity": {"choice": [0.25, 0.5, 0.75]}}}]}
    sr = sk.search(model, space, calib=calib, eval=fidelity, objectives=("latency", "quality"), n_trials=5,
                   example_inputs=calib[0], runtime="onnxruntime", seed=0, out_dir=tmp_path / "o", save_best=False)
    assert sr.baseline["runtime"].startswith("onnxruntime") and sr.baseline["latency_ms"] > 0
    complete = [t for t in sr.trials if t.state == "COMPLETE"]
    for t in complete:
        assert t.metrics["runtime"].startswith("onnxruntime") and t.metrics["latency_ms"] > 0
        # the timed file is the candidate's own export: fewer neurons, a smaller ONNX file than the input's
        assert t.metrics["onnx_bytes"] < sr.baseline["onnx_bytes"]
        assert t.metrics["onnx_bytes"] < t.metrics["bytes"] * 1.5
    by_sparsity = {t.recipe.to_dict()["steps"][0]["prune"]["sparsity"]: t.metrics["onnx_bytes"] for t in complete}
    assert len(by_sparsity) >= 2
    ordered = [by_sparsity[k] for k in sorted(by_sparsity)]
    assert ordered == sorted(ordered, reverse=True) and len(set(ordered)) == len(ordered)
    # quality is scored on the exported model too: the evaluator saw ONNX Runtime sessions only
    # (baseline + every complete trial), and a candidate's score is its export's, not its torch model's
    seen = []

    class Recording(sk.CosineFidelity):
        def __call__(self, m):  # noqa: ANN001, ANN204
            seen.append(type(m).__name__)
            return super().__call__(m)

    rec = Recording(calib)
    sr2 = sk.search(model, space, calib=calib, eval=rec, objectives=("latency", "quality"), n_trials=1,
                    example_inputs=calib[0], runtime="onnxruntime", seed=0, out_dir=tmp_path / "o2", save_best=False)
    assert seen and set(seen) == {"OrtModel"}
    t = next(t for t in sr2.trials if t.state == "COMPLETE")
    from slimkit.export.ort_model import OrtModel

    torch_side = sk.CosineFidelity(calib)
    torch_side.prepare(model)
    built = sk.compress(model, t.recipe, calib=calib, example_inputs=calib[0], progress=False, measure=False).model
    onnx_side = torch_side(OrtModel(sk.export(built, tmp_path / "replay", example_inputs=calib[0])))
    assert t.metrics["quality"] == pytest.approx(onnx_side, abs=1e-9)
    with pytest.raises(sk.ConfigError, match="runtime = 'onnxruntime'.*needs example_inputs"):
        sk.search(model, space, calib=calib, eval=fidelity, objectives=("quality",), n_trials=1, runtime="onnxruntime")
    with pytest.raises(sk.ConfigError, match="runtime = 'tvm'.*'torch', 'onnxruntime'"):
        sk.search(model, space, calib=calib, eval=fidelity, objectives=("latency", "quality"), n_trials=1,
                  example_inputs=calib[0], runtime="tvm")
