"""The ``slimkit`` command line: exit codes, one-line errors, no tracebacks, atomic output."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import slimkit as sk
from slimkit.cli import models as cli_models
from slimkit.cli import workloads
from slimkit.cli.main import EXIT_BAD_INPUT, EXIT_INTERRUPTED, main

SLIMKIT = str(Path(sys.executable).with_name("slimkit"))
SUBCOMMANDS = ("demo", "compress", "eval", "inspect", "zoo")
MAGNITUDE_YAML = "steps:\n  - prune: {method: magnitude, sparsity: 0.5}\n"
INT8_YAML = "steps:\n  - quantize: {method: dynamic_int8}\n"


@pytest.fixture
def recipe(tmp_path):
    def write(text: str, name: str = "recipe.yaml") -> str:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write


@pytest.fixture
def no_model_loading(monkeypatch):
    """Record (and refuse) any attempt to load a model."""
    calls: list[str] = []

    def refuse(ref):  # noqa: ANN001, ANN202
        calls.append(str(ref))
        raise RuntimeError("the model must not be loaded in this test")

    monkeypatch.setattr(cli_models, "load_model_ref", refuse)
    return calls


@pytest.fixture
def small_workload(monkeypatch):
    """The CLI's real default workload, cut to one 8 x 32 batch (2 x 16 for latency) so MiniLM runs in
    seconds on 2 shared cores."""
    real = workloads.workload_for

    def small(task, tokenizer=None, **kw):  # noqa: ANN001, ANN003, ANN202
        w = real(task, tokenizer, calib_batches=1, eval_batches=1)
        assert task == "embedding"

        def trim(b):  # noqa: ANN001, ANN202
            return {k: v[:8, :32] for k, v in b.items()}

        test = [trim(w.evaluator.batches[0])]
        example = {k: v[:2, :16] for k, v in test[0].items()}  # what latency is timed on (20 runs x 2)
        return workloads.Workload(task, [trim(w.calib[0])], type(w.evaluator)(test), example, 2 * 16)

    monkeypatch.setattr(workloads, "workload_for", small)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ----------------------------------------------------------------------------- help
@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_of_every_subcommand(command, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: slimkit {command}")
    assert "--json" in out or command == "inspect" and "dir" in out


def test_top_level_help_lists_commands(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in SUBCOMMANDS:
        assert command in out


def test_missing_required_argument_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["compress", "--model", "zoo:minilm-l6"])
    assert info.value.code == 2
    assert "--recipe" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad input, before loading
def test_unknown_step_fails_before_the_model_is_loaded(recipe, tmp_path, capsys, no_model_loading) -> None:
    path = recipe("steps:\n  - prunee: {sparsity: 0.5}\n")
    code = main(["compress", "--model", "zoo:minilm-l6", "--recipe", path, "--out", str(tmp_path / "out")])
    assert code == EXIT_BAD_INPUT
    assert_one_line_error(capsys.readouterr().err, "prunee", "prune", "quantize")
    assert no_model_loading == []
    assert not (tmp_path / "out").exists()


def test_bad_sparsity_fails_before_the_model_is_loaded(recipe, tmp_path, capsys, no_model_loading) -> None:
    path = recipe("steps:\n  - prune: {method: magnitude, sparsity: 1.0}\n")
    code = main(["compress", "--model", "zoo:minilm-l6", "--recipe", path, "--out", str(tmp_path / "out")])
    assert code == EXIT_BAD_INPUT
    assert_one_line_error(capsys.readouterr().err, "sparsity")
    assert no_model_loading == []


def test_missing_recipe_file(tmp_path, capsys, no_model_loading) -> None:
    code = main(["compress", "--model", "zoo:minilm-l6", "--recipe", str(tmp_path / "none.yaml"),
                 "--out", str(tmp_path / "out")])
    assert code == EXIT_BAD_INPUT
    assert_one_line_error(capsys.readouterr().err, "none.yaml")
    assert no_model_loading == []


def test_model_path_that_does_not_exist(recipe, tmp_path, capsys, no_model_loading) -> None:
    missing = str(tmp_path / "no-such-model")
    code = main(["compress", "--model", missing, "--recipe", recipe(MAGNITUDE_YAML), "--out", str(tmp_path / "out")])
    assert code == EXIT_BAD_INPUT
    assert_one_line_error(capsys.readouterr().err, "no-such-model", "no such directory")
    assert no_model_loading == []


def test_model_path_that_is_a_file(recipe, tmp_path, capsys, no_model_loading) -> None:
    (tmp_path / "model.bin").write_bytes(b"not a checkpoint")
    code = main(["compress", "--model", str(tmp_path / "model.bin"), "--recipe", recipe(MAGNITUDE_YAML),
                 "--out", str(tmp_path / "out")])
    assert code == EXIT_BAD_INPUT
    assert_one_line_error(capsys.readouterr().err, "model.bin", "directory")
    assert no_model_loading == []


def test_unknown_zoo_model_lists_names(recipe, tmp_path, capsys, no_model_loading) -> None:
    code = main(["compress", "--model", "zoo:gpt-17", "--recipe", recipe(MAGNITUDE_YAML), "--out", str(tmp_path / "o")])
    assert code == EXIT_BAD_INPUT
    assert_one_line_error(capsys.readouterr().err, "gpt-17", "minilm-l6", "smollm2-135m")


def test_existing_out_without_overwrite(recipe, tmp_path, capsys, no_model_loading) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code = main(["compress", "--model", "zoo:minilm-l6", "--recipe", recipe(MAGNITUDE_YAML), "--out", str(out)])
    assert code == EXIT_BAD_INPUT
    assert_one_line_error(capsys.readouterr().err, "--overwrite")
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert (out / "precious.txt").read_text() == "keep me"
    assert no_model_loading == []


def test_out_equal_to_input_dir_is_refused(recipe, tmp_path, capsys, no_model_loading, make_bert) -> None:
    src = sk.save(make_bert(), tmp_path / "src")
    code = main(["compress", "--model", str(src), "--recipe", recipe(MAGNITUDE_YAML), "--out", str(src), "--overwrite"])
    assert code == EXIT_BAD_INPUT
    assert_one_line_error(capsys.readouterr().err, "--out")
    assert no_model_loading == []
    assert sorted(p.name for p in src.iterdir()) == [".slimkit-output", "model.safetensors", "slimkit.json"]


def test_unknown_step_in_a_real_process_prints_no_traceback(recipe, tmp_path) -> None:
    path = recipe("steps:\n  - prunee: {sparsity: 0.5}\n")
    proc = subprocess.run([SLIMKIT, "compress", "--model", "zoo:minilm-l6", "--recipe", path, "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, "prunee")
    assert proc.stdout == ""
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- inspect / zoo
@pytest.fixture
def saved_checkpoint(make_bert, tmp_path) -> Path:
    res = sk.compress(make_bert(), {"steps": [{"prune": {"sparsity": 0.5}}, {"quantize": {"method": "dynamic_int8"}}]},
                      progress=False, measure=False)
    return res.save(tmp_path / "ckpt")


def test_inspect_prints_base_and_edits(saved_checkpoint, capsys) -> None:
    assert main(["inspect", str(saved_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "BertModel" in out
    assert "replace_module" in out
    assert "edits" in out and "encodings" in out


def test_inspect_json(saved_checkpoint, capsys) -> None:
    assert main(["inspect", str(saved_checkpoint), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    n_linear = 2 * 6 + 1  # q, k, v, attn-out, intermediate, output per layer + pooler
    assert data["base"]["hf_class"] == "BertModel"
    assert data["edits"] == n_linear and data["edit_ops"] == ["replace_module"]
    assert data["format_version"] == 1
    assert data["recipe"]["steps"][0]["prune"]["sparsity"] == 0.5
    assert data["encodings"]["bitmask"] >= n_linear  # the pruned int8 weights are stored sparse
    assert data["bytes"] == sum(p.stat().st_size for p in saved_checkpoint.iterdir())
    assert data["report"]["steps"][1]["name"] == "quantize"


def test_inspect_missing_dir(tmp_path, capsys) -> None:
    assert main(["inspect", str(tmp_path / "nothing")]) == EXIT_BAD_INPUT
    assert_one_line_error(capsys.readouterr().err, "nothing")


def test_zoo_json(capsys) -> None:
    assert main(["zoo", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    names = {e["name"] for e in entries}
    assert {"smollm2-135m", "minilm-l6", "shakespeare"} <= names
    minilm = next(e for e in entries if e["name"] == "minilm-l6")
    assert minilm["kind"] == "model" and minilm["installed"] is True


def test_zoo_table(capsys) -> None:
    assert main(["zoo"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out


# ----------------------------------------------------------------------------- real runs on MiniLM
@pytest.mark.real
def test_compress_minilm_end_to_end(recipe, tmp_path, capsys, small_workload) -> None:
    out = tmp_path / "minilm-pruned"
    code = main(["compress", "--model", "zoo:minilm-l6", "--recipe", recipe(MAGNITUDE_YAML), "--out", str(out),
                 "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == [".slimkit-output", "model.safetensors", "report.json",
                                                       "report.md", "report.png", "slimkit.json"]
    report = json.loads(captured.out)
    assert [s["name"] for s in report["steps"]] == ["prune"]
    assert report["quality"]["name"] == "cosine"
    assert 0.0 < report["after"]["quality"] < 1.0
    assert json.loads((out / "report.json").read_text())["steps"][0]["method"] == "magnitude"
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    loaded = sk.load(out)
    w = loaded.encoder.layer[0].attention.self.query.weight
    assert int((w == 0).sum()) == round(0.5 * w.numel())
    manifest = json.loads((out / "slimkit.json").read_text())
    assert manifest["base"]["zoo"] == "minilm-l6"
    assert manifest["recipe"]["steps"][0]["prune"]["sparsity"] == 0.5


@pytest.mark.real
def test_compress_from_a_saved_directory(minilm, recipe, tmp_path, capsys, small_workload) -> None:
    """DESIGN: ``--model`` is a zoo name, a hub id *or a saved directory*; a MiniLM checkpoint needs its
    tokenizer back for the default data, which the zoo base reference in slimkit.json identifies."""
    model, _ = minilm
    src = sk.compress(model, {"steps": [{"prune": {"sparsity": 0.5}}]}, progress=False, measure=False).model
    sk.save(src, tmp_path / "src")
    out = tmp_path / "int8"
    code = main(["compress", "--model", str(tmp_path / "src"), "--recipe", recipe(INT8_YAML), "--out", str(out),
                 "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["after"]["quality"] > 0.9
    loaded = sk.load(out)
    assert type(loaded.encoder.layer[0].attention.self.query).__name__ == "Int8DynamicLinear"
    assert (out / "model.safetensors").stat().st_size < (tmp_path / "src" / "model.safetensors").stat().st_size


@pytest.mark.real
def test_eval_minilm_json(capsys, small_workload) -> None:
    assert main(["eval", "--model", "zoo:minilm-l6", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (row,) = data["variants"]
    assert row["label"] == "zoo:minilm-l6"
    assert row["metrics"]["quality"] == pytest.approx(1.0, abs=1e-6)  # the model against itself
    assert row["metrics"]["params"] == 22_713_216
    assert row["metrics"]["bytes"] > 4 * 22_000_000  # fp32 on disk
    assert row["metrics"]["macs"] > 0 and row["metrics"]["latency_ms"] > 0


@pytest.mark.real
def test_ctrl_c_leaves_no_output(recipe, tmp_path) -> None:
    out = tmp_path / "interrupted"
    proc = subprocess.Popen([SLIMKIT, "compress", "--model", "zoo:minilm-l6", "--recipe", recipe(MAGNITUDE_YAML),
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, start_new_session=True)
    seen: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            seen.append(line)
            if "Loading weights" in line or "step" in line:
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started.wait(timeout=60)  # the model is being loaded
    time.sleep(3.0)  # now loading data / measuring the baseline
    assert proc.poll() is None, "".join(seen)  # still running: the interrupt lands mid-run
    os.kill(proc.pid, signal.SIGINT)
    try:
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    err = "".join(seen)
    assert code == EXIT_INTERRUPTED, err
    assert "Traceback" not in err
    assert "interrupted" in err
    assert not out.exists()
    assert not list(tmp_path.glob(".interrupted.tmp-*"))
    assert not list(tmp_path.glob(".interrupted.*"))
