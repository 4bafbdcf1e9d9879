"""``slimkit demo --tiny`` end to end through the CLI entry point: every variant really compressed,
measured and written to the report files (the full demo runs the same code on SmolLM2-135M)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from slimkit.cli.demo import ORT_VARIANTS, TINY, variants
from slimkit.cli.main import main

NUMERIC = ("params", "nonzero_params", "bytes", "macs", "quality", "latency_ms", "tokens_per_s", "decode_tokens_per_s")


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "report"
    code = main(["demo", "--tiny", "--out", str(out), "--eval-batches", "2", "--json"])
    report = json.loads((out / "report.json").read_text(encoding="utf-8")) if (out / "report.json").is_file() else {}
    return code, out, report


def test_tiny_demo_writes_every_report_file(tiny_demo) -> None:
    code, out, _ = tiny_demo
    assert code == 0
    for name in ("report.json", "report.md", "report.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name


def test_every_variant_row_has_numeric_metrics(tiny_demo) -> None:
    _, out, report = tiny_demo
    expected = (["fp32 baseline"] + [label for label, _ in variants(TINY.n_blocks, TINY.drop, TINY.heal_steps)]
                + [f"{label} → ONNX Runtime" for label in ORT_VARIANTS])
    assert [v["label"] for v in report["variants"]] == expected
    markdown = (out / "report.md").read_text(encoding="utf-8")
    for row in report["variants"]:
        assert row["label"] in markdown
        for key in NUMERIC:
            value = row["metrics"][key]
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (row["label"], key, value)
            assert math.isfinite(value) and value > 0, (row["label"], key, value)


def test_variants_really_compress(tiny_demo) -> None:
    """The rows are measurements of compressed models, not copies of the baseline."""
    rows = {v["label"]: v["metrics"] for v in tiny_demo[2]["variants"]}
    base = rows["fp32 baseline"]
    assert rows["magnitude 50%"]["nonzero_params"] < 0.7 * base["nonzero_params"]
    assert rows["dynamic int8"]["bytes"] < 0.5 * base["bytes"]
    assert rows["gptq int4 g64"]["bytes"] < rows["dynamic int8"]["bytes"]
    assert rows[f"drop {TINY.drop} of {TINY.n_blocks} blocks"]["macs"] < base["macs"]
    assert rows["magnitude 50% + int8"]["bytes"] < rows["dynamic int8"]["bytes"]
    # held-out perplexity of a random model over 256 byte tokens: near the uniform 256, not NaN or 1
    assert 50 < base["quality"] < 2000


def test_onnx_rows_run_in_onnx_runtime_with_the_torch_models_quality(tiny_demo) -> None:
    """The exported int8 / int4 models are really run by ORT and give (nearly) the torch perplexity."""
    rows = {v["label"]: v["metrics"] for v in tiny_demo[2]["variants"]}
    for label in ORT_VARIANTS:
        ort, torch_row = rows[f"{label} → ONNX Runtime"], rows[label]
        assert "onnxruntime" in ort["runtime"]
        assert abs(ort["quality"] / torch_row["quality"] - 1) < 0.02, (label, ort["quality"], torch_row["quality"])
