"""Reports: ratios, the Markdown table, and the three files (JSON, Markdown, PNG)."""
from __future__ import annotations

import json

import pytest
import torch

import slimkit as sk
from slimkit.core.errors import CheckpointError
from slimkit.io.outputs import MARKER
from slimkit.report import RATIO_KEYS, Report, ratios

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RECIPE = {"steps": [{"prune": {"method": "magnitude", "sparsity": 0.5}}, {"quantize": {"method": "dynamic_int8"}}]}


def test_ratios_function() -> None:
    got = ratios({"params": 50, "bytes": 25, "latency_ms": 3.0, "quality": 0.9, "sparsity": 0.5, "macs": 10},
                 {"params": 100, "bytes": 100, "latency_ms": 0, "quality": 1.0, "sparsity": 0.0})
    assert got == {"params": 0.5, "bytes": 0.25, "quality": 0.9}  # zero / missing baselines and non-ratio keys skipped
    assert set(got) <= set(RATIO_KEYS)


@pytest.fixture
def compressed(make_mlp):
    model = make_mlp(hidden=128)
    x = torch.randn(4, 32)
    ref = model(x).detach()

    def fidelity(m):  # noqa: ANN001, ANN202
        with torch.no_grad():
            return float(torch.nn.functional.cosine_similarity(m(x), ref, dim=1).mean())

    return sk.compress(model, RECIPE, example_inputs=x, eval=fidelity, progress=False, latency_runs=3, name="tiny mlp")


def test_ratios_in_compress_report(compressed) -> None:
    d = compressed.report.to_dict()
    before, after = d["before"], d["after"]
    for key in ("params", "nonzero_params", "bytes", "macs", "latency_ms", "quality"):
        assert d["ratios"][key] == pytest.approx(after[key] / before[key]), key
    for step in d["steps"]:
        for key, value in step["ratios"].items():
            assert value == pytest.approx(step["metrics"][key] / before[key]), (step["name"], key)
    # the numbers behind the ratios are real: 50 % of the weights pruned, bytes of real checkpoints
    weights = 32 * 128 + 128 * 128 + 128 * 8
    assert before["params"] - d["steps"][0]["metrics"]["nonzero_params"] == weights // 2
    assert d["ratios"]["bytes"] < 0.35
    assert d["steps"][0]["ratios"]["bytes"] < 0.70
    assert d["ratios"]["macs"] == pytest.approx(1.0)  # pruning + int8 do not change the count of MACs


def test_before_bytes_is_the_saved_checkpoint_size(make_mlp, tmp_path) -> None:
    model = make_mlp()
    res = sk.compress(model, {"steps": [{"prune": {"sparsity": 0.5}}]}, progress=False)
    out = sk.save(model, tmp_path / "dense")
    on_disk = sum(p.stat().st_size for p in out.iterdir())
    assert res.report.before["bytes"] == on_disk


def test_to_dict_is_json_serialisable(compressed) -> None:
    d = json.loads(json.dumps(compressed.report.to_dict()))
    assert d["name"] == "tiny mlp"
    assert d["quality"] == {"name": "fidelity", "higher_is_better": True}
    assert d["environment"]["torch"] == torch.__version__


def test_markdown_has_a_row_per_step(compressed) -> None:
    md = compressed.report.to_markdown()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 1 + 2  # header, before, two steps
    assert table[1].startswith("| before |")
    assert table[2].startswith("| 1. prune:magnitude")
    assert table[3].startswith("| 2. quantize:dynamic_int8")
    ncols = table[0].count("|")
    assert all(line.count("|") == ncols for line in table)
    ratio = compressed.report.to_dict()["ratios"]["bytes"]
    assert f"(×{ratio:.2f})" in table[3]
    assert "fidelity (higher is better)" in table[0]


def test_save_writes_json_markdown_png(compressed, tmp_path) -> None:
    paths = compressed.report.save(str(tmp_path / "rep"))
    out = tmp_path / "rep"
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "report.json", "report.md", "report.png"]
    assert json.loads((out / "report.json").read_text())["steps"][1]["name"] == "quantize"
    assert (out / "report.md").read_text() == compressed.report.to_markdown()
    png = (out / "report.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 1000
    assert {k: p for k, p in paths.items()} == {k: str(out / f"report.{k}") for k in ("json", "md", "png")}


def test_save_without_quality_still_writes_every_file(make_mlp, tmp_path) -> None:
    """No evaluator: size and latency per step still exist, and ``save`` promises report.png."""
    res = sk.compress(make_mlp(), RECIPE, example_inputs=torch.randn(2, 32), progress=False, latency_runs=2)
    paths = res.report.save(str(tmp_path / "rep"))
    for kind, path in paths.items():
        with open(path, "rb") as fh:
            assert fh.read(1), kind
    assert (tmp_path / "rep" / "report.png").read_bytes()[:8] == PNG_MAGIC


def test_variants_report(tmp_path) -> None:
    rep = Report(name="cmp", quality={"name": "ppl", "higher_is_better": False})
    rep.add_variant("base", {"bytes": 1000, "latency_ms": 10.0, "quality": 20.0})
    rep.add_variant("small", {"bytes": 250, "latency_ms": 5.0, "quality": 21.0})
    rep.add_variant("slow", {"bytes": 500, "latency_ms": 20.0, "quality": 20.5})
    rows = rep.rows()
    assert rows[1]["ratios"] == {"bytes": 0.25, "latency_ms": 0.5, "quality": 1.05}
    assert [r["slower"] for r in rows] == [False, False, True]
    assert len(rep.warnings) == 1 and "'slow'" in rep.warnings[0]
    md = rep.to_markdown()
    assert "| slow ⚠ slower |" in md and "ppl (lower is better)" in md
    rep.save(str(tmp_path / "v"))
    assert (tmp_path / "v" / "report.png").read_bytes()[:8] == PNG_MAGIC


# ----------------------------------------------------------------------------- never over a user's files
def _small_report(quality: float) -> Report:
    rep = Report(name="cmp", quality={"name": "ppl", "higher_is_better": False})
    rep.add_variant("base", {"bytes": 1000, "latency_ms": 10.0, "quality": quality})
    return rep


@pytest.mark.parametrize("overwrite", [False, True])
def test_save_never_replaces_a_users_directory(tmp_path, overwrite) -> None:
    """``Report.save`` used to default to overwrite=True and delete everything in the directory."""
    target = tmp_path / "work"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    with pytest.raises(CheckpointError, match=str(target)):
        _small_report(20.0).save(str(target), overwrite=overwrite)
    assert [p.name for p in target.iterdir()] == ["thesis.tex"]
    assert (target / "thesis.tex").read_text() == "years of work"


def test_save_defaults_to_no_overwrite_and_replaces_its_own_report(tmp_path) -> None:
    target = tmp_path / "rep"
    _small_report(20.0).save(str(target))
    with pytest.raises(CheckpointError, match="already exists"):
        _small_report(30.0).save(str(target))
    assert json.loads((target / "report.json").read_text())["variants"][0]["metrics"]["quality"] == 20.0
    _small_report(30.0).save(str(target), overwrite=True)
    assert json.loads((target / "report.json").read_text())["variants"][0]["metrics"]["quality"] == 30.0
    assert json.loads((target / MARKER).read_text())["kind"] == "report"
