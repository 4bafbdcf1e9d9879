"""``slimkit search`` and ``slimkit export`` through :func:`slimkit.cli.main.main` on a tiny Llama:
a space search and a goal search end to end (front, candidates that replay through ``slimkit
compress``, best), argument errors, and ``--out`` / ``--overwrite`` never touching a user's files.

The model is the saved 2-layer tiny Llama; the CLI's default data is replaced by random token
batches with the real :class:`slimkit.measure.Perplexity` evaluator, so every number below is
measured on the compressed models (the data is not what is tested, the command is).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import slimkit as sk
from slimkit.cli import workloads
from slimkit.cli.main import EXIT_BAD_INPUT, main
from slimkit.io.outputs import MARKER
from slimkit.measure import Perplexity
from tests.cli.test_cli_outputs import (  # noqa: F401 (fixtures)
    assert_user_dir_intact, no_model_loading, one_error_line, user_dir)

SPACE_YAML = """steps:
  - prune: {method: {choice: [magnitude, none]}, sparsity: {choice: [0.3, 0.6]}}
  - quantize: {method: {choice: [rtn, none]}, bits: {choice: [4, 8], when: {method: rtn}},
               group_size: {choice: [16], when: {method: rtn}}}
"""


def _tiny_lm_workload(task, tokenizer=None, **kw):  # noqa: ANN001, ANN003, ANN202
    """Two calibration batches and one held-out batch of seeded random tokens, scored by perplexity."""
    assert task == "causal-lm"
    gen = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(0, 100, (4, 16), generator=gen)} for _ in range(3)]
    return workloads.Workload(task, batches[:2], Perplexity(batches[2:]), batches[2], 64)


@pytest.fixture
def tiny_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workloads, "workload_for", _tiny_lm_workload)


@pytest.fixture
def src(tmp_path: Path, make_llama) -> Path:  # noqa: ANN001
    return Path(sk.save(make_llama(), tmp_path / "src"))


@pytest.fixture
def space(tmp_path: Path) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE_YAML, encoding="utf-8")
    return str(path)


def complete_trials(out: Path) -> list[dict]:
    """Every COMPLETE trial of the study in ``out``'s journal: its number, recipe and metrics."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(out / "search.journal")))
    trials = optuna.load_study(study_name="slimkit-search", storage=storage).get_trials(deepcopy=False)
    return [{"trial": t.number, "recipe": t.user_attrs["recipe"], "metrics": t.user_attrs["metrics"]}
            for t in trials if t.state.name == "COMPLETE"]


def dominates(a: dict, b: dict, objectives: list[dict]) -> bool:
    """``a`` at least as good as ``b`` on every objective and better on one (metrics dicts)."""
    sign = {"minimize": 1.0, "maximize": -1.0}
    pairs = [(sign[o["direction"]] * a[o["metric"]], sign[o["direction"]] * b[o["metric"]]) for o in objectives]
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


# ----------------------------------------------------------------------------- search: space mode
def test_search_space_end_to_end(tmp_path, src, space, tiny_data, capsys) -> None:
    out = tmp_path / "out"
    code = main(["search", "--model", str(src), "--space", space, "--out", str(out), "--n-trials", "6",
                 "--seed", "0", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    data = json.loads((out / "pareto.json").read_text())
    assert printed["pareto"] == data["pareto"] and printed["best"] == data["best"]
    assert [o["name"] for o in data["objectives"]] == ["quality", "bytes"]
    assert data["objectives"][0]["direction"] == "minimize"  # perplexity: lower is better
    assert data["n_trials"] == 6 and data["storage"] == str(out / "search.journal")
    assert json.loads((out / MARKER).read_text())["kind"] == "search"

    done = complete_trials(out)
    assert len(done) == data["n_complete"] >= 3
    front = data["pareto"]
    assert front and all(c["state"] == "COMPLETE" for c in front)
    # the front is non-dominated among every complete trial, and covers every trial off it
    for cand in front:
        assert not any(dominates(t["metrics"], cand["metrics"], data["objectives"]) for t in done), cand["trial"]
    front_metrics = [c["metrics"] for c in front]
    for t in done:
        assert t["metrics"] in front_metrics or any(dominates(m, t["metrics"], data["objectives"])
                                                    for m in front_metrics), t["trial"]
    # real measurements: something on the front is smaller than the fp32 baseline
    assert min(c["metrics"]["bytes"] for c in front) < 0.6 * data["baseline"]["bytes"]
    assert sorted(p.name for p in (out / "candidates").iterdir() if p.name != MARKER) == sorted(str(c["trial"]) for c in front)
    # best: the front's best quality (no constraints), saved loadable with its measured bytes
    assert data["best"]["metrics"]["quality"] == min(c["metrics"]["quality"] for c in front)
    best = sk.load(out / "best")
    assert sk.measure.checkpoint_bytes(best) == data["best"]["metrics"]["bytes"]


def test_search_candidate_recipe_replays_through_compress(tmp_path, src, space, tiny_data, capsys) -> None:
    out = tmp_path / "out"
    assert main(["search", "--model", str(src), "--space", space, "--out", str(out), "--n-trials", "5",
                 "--seed", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pareto"]
    for cand in data["pareto"]:
        recipe = out / "candidates" / str(cand["trial"]) / "recipe.yaml"
        assert sk.Recipe.from_yaml(recipe).to_dict() == cand["recipe"]
        replay = tmp_path / f"replay{cand['trial']}"
        assert main(["compress", "--model", str(src), "--recipe", str(recipe), "--out", str(replay), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["after"]["quality"] == pytest.approx(cand["metrics"]["quality"], rel=1e-6)
        assert sk.measure.checkpoint_bytes(sk.load(replay)) == cand["metrics"]["bytes"]


def test_search_resumes_the_same_out_dir(tmp_path, src, space, tiny_data, capsys) -> None:
    out = tmp_path / "out"
    assert main(["search", "--model", str(src), "--space", space, "--out", str(out), "--n-trials", "3", "--json"]) == 0
    first = {t["trial"]: t["metrics"] for t in complete_trials(out)}
    assert main(["search", "--model", str(src), "--space", space, "--out", str(out), "--n-trials", "6", "--json"]) == 0
    again = {t["trial"]: t["metrics"] for t in complete_trials(out)}
    assert json.loads((out / "pareto.json").read_text())["n_trials"] == 6
    assert all(again[n] == m for n, m in first.items())  # the first run's trials kept, not redone


# ----------------------------------------------------------------------------- search: goal mode
def test_search_goal_mode_on_the_builtin_space(tmp_path, src, tiny_data, capsys) -> None:
    out = tmp_path / "goal"
    code = main(["search", "--model", str(src), "--goal", "quality_drop<=1%", "--minimize", "bytes",
                 "--n-trials", "4", "--out", str(out), "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert [o["name"] for o in data["objectives"]] == ["bytes", "quality"]
    assert data["constraints"] == ["quality_drop <= 0.01"]
    done = complete_trials(out)
    assert done
    methods = {name: opts["method"] for t in done for s in t["recipe"]["steps"] for name, opts in s.items()}
    assert set(methods) <= {"prune", "quantize"}
    assert {m for m in methods.values()} <= {"wanda", "sparsegpt", "rtn", "gptq"}  # the causal-LM built-in space
    feasible = [t for t in done if t["metrics"]["quality_drop"] <= 0.01]
    if feasible:
        assert data["best"]["metrics"]["bytes"] == min(t["metrics"]["bytes"] for t in feasible)
        assert data["best"]["metrics"]["bytes"] < data["baseline"]["bytes"]
        assert sk.measure.checkpoint_bytes(sk.load(out / "best")) == data["best"]["metrics"]["bytes"]
    else:
        assert data["best"] is None and "quality_drop <= 0.01" in data["reason"]


@pytest.mark.parametrize(("goal", "needle"), [
    ("quality_drop<=two", "quality_drop<=two"),
    ("size<=0.5", "size"),
    ("quality_drop=2%", "quality_drop=2%"),
])
def test_search_bad_goal_names_the_value(tmp_path, src, tiny_data, capsys, goal, needle) -> None:
    out = tmp_path / "goal"
    code = main(["search", "--model", str(src), "--goal", goal, "--minimize", "bytes", "--n-trials", "2",
                 "--out", str(out)])
    assert code == EXIT_BAD_INPUT
    assert needle in one_error_line(capsys.readouterr().err)
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize(("args", "needle"), [
    (["--goal", "quality_drop<=2%"], "--minimize"),
    (["--minimize", "bytes"], "--goal"),
    (["--space", "SPACE", "--minimize", "bytes"], "--minimize belongs to goal mode"),
    (["--goal", "quality_drop<=2%", "--minimize", "bytes", "--constraint", "bytes<=0.5"], "--constraint"),
])
def test_search_mode_errors_come_before_loading(tmp_path, space, no_model_loading, capsys, args, needle) -> None:
    out = tmp_path / "out"
    args = [space if a == "SPACE" else a for a in args]
    assert main(["search", "--model", "zoo:smollm2-135m", "--out", str(out), *args]) == EXIT_BAD_INPUT
    assert needle in one_error_line(capsys.readouterr().err)
    assert no_model_loading == [] and not out.exists()


# ----------------------------------------------------------------------------- search: --out
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_search_never_replaces_a_users_directory(user_dir, space, capsys, no_model_loading, overwrite) -> None:
    code = main(["search", "--model", "zoo:smollm2-135m", "--space", space, "--out", str(user_dir),
                 "--n-trials", "2", *overwrite])
    assert code == EXIT_BAD_INPUT
    assert str(user_dir) in one_error_line(capsys.readouterr().err)
    assert_user_dir_intact(user_dir)
    assert no_model_loading == []  # refused before loading a model, not after


def test_search_never_replaces_a_file(tmp_path, space, capsys, no_model_loading) -> None:
    target = tmp_path / "pareto.bin"
    target.write_bytes(b"precious")
    code = main(["search", "--model", "zoo:smollm2-135m", "--space", space, "--out", str(target), "--overwrite"])
    assert code == EXIT_BAD_INPUT
    line = one_error_line(capsys.readouterr().err)
    assert str(target) in line and "is a file" in line
    assert target.read_bytes() == b"precious"
    assert no_model_loading == []


def test_search_never_replaces_its_input_model_directory(src, space, capsys, no_model_loading) -> None:
    """``--out`` = ``--model`` with ``--overwrite`` used to delete the saved input checkpoint (a
    directory slimkit wrote) to make room for the search directory."""
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    code = main(["search", "--model", str(src), "--space", space, "--out", str(src), "--n-trials", "2", "--overwrite"])
    assert code == EXIT_BAD_INPUT
    assert "input model directory" in one_error_line(capsys.readouterr().err)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    assert no_model_loading == []


def test_search_overwrite_keeps_a_users_file_in_a_search_dir(tmp_path, src, space, tiny_data, capsys) -> None:
    """A search directory a user has put a file into is refused by ``--overwrite`` (not deleted);
    without the file ``--overwrite`` starts the search over."""
    out = tmp_path / "out"
    assert main(["search", "--model", str(src), "--space", space, "--out", str(out), "--n-trials", "3", "--json"]) == 0
    pareto = (out / "pareto.json").read_bytes()
    (out / "notes.txt").write_text("my notes")
    capsys.readouterr()
    code = main(["search", "--model", str(src), "--space", space, "--out", str(out), "--n-trials", "2",
                 "--overwrite", "--json"])
    assert code == EXIT_BAD_INPUT
    line = one_error_line(capsys.readouterr().err)
    assert str(out) in line and "notes.txt" in line
    assert (out / "notes.txt").read_text() == "my notes" and (out / "pareto.json").read_bytes() == pareto
    assert len(complete_trials(out)) >= 1
    # the same directory without the user's file: --overwrite starts over (2 trials, not 3 + 2)
    (out / "notes.txt").unlink()
    assert main(["search", "--model", str(src), "--space", space, "--out", str(out), "--n-trials", "2",
                 "--overwrite", "--json"]) == 0
    assert json.loads((out / "pareto.json").read_text())["n_trials"] == 2


# ----------------------------------------------------------------------------- export: --out
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_export_never_replaces_a_users_directory(src, user_dir, capsys, overwrite) -> None:
    code = main(["export", str(src), "--format", "hf", "--out", str(user_dir), *overwrite])
    assert code == EXIT_BAD_INPUT
    assert str(user_dir) in one_error_line(capsys.readouterr().err)
    assert_user_dir_intact(user_dir)


def test_export_overwrite_keeps_a_users_file_in_an_export_dir(tmp_path, src, capsys) -> None:
    out = tmp_path / "hf"
    assert main(["export", str(src), "--format", "hf", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(out)
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "model.safetensors" in written and "config.json" in written
    # again without --overwrite: refused, untouched
    assert main(["export", str(src), "--format", "hf", "--out", str(out)]) == EXIT_BAD_INPUT
    assert "--overwrite" in one_error_line(capsys.readouterr().err)
    # a user's file inside: --overwrite refused, the file and the export untouched
    (out / "notes.txt").write_text("my notes")
    assert main(["export", str(src), "--format", "hf", "--out", str(out), "--overwrite"]) == EXIT_BAD_INPUT
    line = one_error_line(capsys.readouterr().err)
    assert str(out) in line and "notes.txt" in line
    assert (out / "notes.txt").read_text() == "my notes"
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "notes.txt"} == written
    # without it: --overwrite replaces the export (a 4-bit one now, so other weight bytes)
    (out / "notes.txt").unlink()
    q4 = tmp_path / "q4"
    sk.save(sk.compress(sk.load(src), {"steps": [{"quantize": {"method": "rtn", "bits": 4, "group_size": 16}}]},
                        progress=False, measure=False).model, q4)
    assert main(["export", str(q4), "--format", "hf", "--out", str(out), "--overwrite", "--dequantize"]) == 0
    assert (out / "model.safetensors").read_bytes() != written["model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left beside it
