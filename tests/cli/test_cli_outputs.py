"""``--out`` / ``--overwrite`` on the command line: a user's directory or file is never touched,
a directory slimkit wrote is replaced only with ``--overwrite``, and the refusal comes before any work."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import slimkit as sk
from slimkit.cli import demo as demo_module
from slimkit.cli import models as cli_models
from slimkit.cli import workloads
from slimkit.cli.main import EXIT_BAD_INPUT, main
from slimkit.io.outputs import MARKER

MAGNITUDE_YAML = "steps:\n  - prune: {method: magnitude, sparsity: 0.5}\n"


@pytest.fixture
def recipe(tmp_path: Path) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(MAGNITUDE_YAML, encoding="utf-8")
    return str(path)


@pytest.fixture
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) any attempt to load a model, by ``compress`` or by ``demo``."""
    calls: list[str] = []

    def refuse(ref, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(str(ref))
        raise RuntimeError("the model must not be loaded in this test")

    monkeypatch.setattr(cli_models, "load_model_ref", refuse)
    monkeypatch.setattr(sk.zoo, "load_model", refuse)
    return calls


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """A directory holding a user's files."""
    target = tmp_path / "work"
    (target / "data").mkdir(parents=True)
    (target / "thesis.tex").write_text("years of work")
    (target / "data" / "run1.csv").write_text("1,2,3")
    return target


def assert_user_dir_intact(target: Path) -> None:
    assert sorted(p.name for p in target.iterdir()) == ["data", "thesis.tex"]
    assert (target / "thesis.tex").read_text() == "years of work"
    assert (target / "data" / "run1.csv").read_text() == "1,2,3"


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ----------------------------------------------------------------------------- compress
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_compress_never_replaces_a_users_directory(recipe, user_dir, capsys, no_model_loading, overwrite) -> None:
    code = main(["compress", "--model", "zoo:minilm-l6", "--recipe", recipe, "--out", str(user_dir), *overwrite])
    assert code == EXIT_BAD_INPUT
    assert str(user_dir) in one_error_line(capsys.readouterr().err)
    assert_user_dir_intact(user_dir)
    assert no_model_loading == []  # refused before any work


def test_compress_never_replaces_a_file(recipe, tmp_path, capsys, no_model_loading) -> None:
    target = tmp_path / "model.bin"
    target.write_bytes(b"precious")
    code = main(["compress", "--model", "zoo:minilm-l6", "--recipe", recipe, "--out", str(target), "--overwrite"])
    assert code == EXIT_BAD_INPUT
    line = one_error_line(capsys.readouterr().err)
    assert str(target) in line and "is a file" in line
    assert target.read_bytes() == b"precious"
    assert no_model_loading == []


def _tiny_workload(task, tokenizer=None, **kw):  # noqa: ANN001, ANN003, ANN202
    """Two token batches for the tiny Llama and a constant quality: the data is not what is tested here."""
    gen = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(0, 100, (2, 12), generator=gen)} for _ in range(2)]
    return workloads.Workload(task, batches[:1], lambda model: 1.0, batches[1], 24)


def test_compress_overwrite_replaces_a_directory_slimkit_wrote(recipe, tmp_path, capsys, make_llama,
                                                               monkeypatch) -> None:
    monkeypatch.setattr(workloads, "workload_for", _tiny_workload)
    src = sk.save(make_llama(), tmp_path / "src")
    out = tmp_path / "out"
    assert main(["compress", "--model", str(src), "--recipe", recipe, "--out", str(out), "--json"]) == 0
    first = (out / "model.safetensors").read_bytes()
    capsys.readouterr()
    # again without --overwrite: refused, the first output untouched
    assert main(["compress", "--model", str(src), "--recipe", recipe, "--out", str(out), "--json"]) == EXIT_BAD_INPUT
    assert "--overwrite" in one_error_line(capsys.readouterr().err)
    assert (out / "model.safetensors").read_bytes() == first
    # with --overwrite: replaced by the new run (another sparsity, so other bytes)
    Path(recipe).write_text(MAGNITUDE_YAML.replace("0.5", "0.75"), encoding="utf-8")
    assert main(["compress", "--model", str(src), "--recipe", recipe, "--out", str(out), "--json",
                 "--overwrite"]) == 0
    assert (out / "model.safetensors").read_bytes() != first
    assert json.loads((out / "slimkit.json").read_text())["recipe"]["steps"][0]["prune"]["sparsity"] == 0.75
    assert json.loads((out / MARKER).read_text())["kind"] == "checkpoint"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left beside it


# ----------------------------------------------------------------------------- demo
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_demo_never_replaces_a_users_directory(user_dir, capsys, no_model_loading, overwrite) -> None:
    """``slimkit demo --out ~/work`` used to delete everything in it once the demo finished."""
    code = main(["demo", "--out", str(user_dir), *overwrite])
    assert code == EXIT_BAD_INPUT
    assert str(user_dir) in one_error_line(capsys.readouterr().err)
    assert_user_dir_intact(user_dir)
    assert no_model_loading == []  # refused before minutes of work, not after


def test_demo_refuses_its_own_old_report_without_overwrite(tmp_path, capsys, no_model_loading) -> None:
    out = tmp_path / "demo"
    sk.Report(name="old").save(str(out))
    before = (out / "report.json").read_bytes()
    assert main(["demo", "--out", str(out)]) == EXIT_BAD_INPUT
    assert "--overwrite" in one_error_line(capsys.readouterr().err)
    assert (out / "report.json").read_bytes() == before
    assert no_model_loading == []


def test_demo_overwrite_replaces_its_own_old_report(tmp_path, capsys, monkeypatch) -> None:
    """The real tiny demo pipeline, cut to one variant, writes over a report directory slimkit wrote."""
    one = [("magnitude 50%", {"steps": [{"prune": {"method": "magnitude", "sparsity": 0.5, "ignore": ["lm_head"]}}]})]
    monkeypatch.setattr(demo_module, "variants", lambda *a: one)
    monkeypatch.setattr(demo_module, "ORT_VARIANTS", ())
    out = tmp_path / "demo"
    sk.Report(name="old").save(str(out))
    assert main(["demo", "--tiny", "--out", str(out), "--eval-batches", "1", "--json", "--overwrite"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["name"] != "old"
    assert [v["label"] for v in report["variants"]] == ["fp32 baseline", "magnitude 50%"]
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "report.json", "report.md", "report.png"]
