"""Training steps from the command line, on a tiny causal LM: ``finetune`` learns the next token of
the train-split text (labels = input ids), and ``--nproc 2`` trains in two processes (torchrun, gloo)
with every rank given a row.

The model is a random 2-block Llama (hidden 32) over SmolLM2's 49,152-token vocabulary, saved as a
slimkit checkpoint whose base reference names ``smollm2-135m``: that is how the CLI finds the
tokenizer for its default data (Shakespeare train plays for training, test plays for perplexity).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import slimkit as sk
from slimkit.cli.main import main
from slimkit.cli.workloads import Workload, train_batches
from slimkit.core.errors import DataError
from slimkit.core.provenance import set_base

SLIMKIT = str(Path(sys.executable).with_name("slimkit"))
FINETUNE_YAML = "steps:\n  - finetune: {steps: 4, lr: 1.0e-2}\n"
NPROC_YAML = ("steps:\n  - finetune: {steps: 3, lr: 1.0e-2}\n"
              "  - distill: {method: logit, steps: 2, lr: 1.0e-3}\n")
SMALL = ["--calib-batches", "4", "--eval-batches", "1", "--no-progress", "--json"]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=49152, max_position_embeddings=256,
                                   tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(cfg).eval()
    set_base(model, {"zoo": "smollm2-135m"})  # the tokenizer the CLI loads for the default data
    return sk.save(model, tmp_path_factory.mktemp("tiny") / "tiny-llama")


def _recipe(tmp_path: Path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _changed(a: torch.nn.Module, b: torch.nn.Module) -> list[str]:
    sb = b.state_dict()
    return [k for k, v in a.state_dict().items() if not torch.allclose(v, sb[k])]


def _lm_workload(n: int) -> Workload:
    calib = [{"input_ids": torch.arange(i * 4, i * 4 + 4).reshape(1, 4)} for i in range(n)]
    return Workload("causal-lm", calib, None, calib[0], 4)


def test_train_batches_label_causal_lm_text_with_its_tokens_one_row_per_process() -> None:
    one = train_batches(_lm_workload(5), 1)
    assert len(one) == 5 and torch.equal(one[2]["labels"], one[2]["input_ids"])
    assert one[2]["input_ids"].tolist() == [[8, 9, 10, 11]]
    two = train_batches(_lm_workload(5), 2)  # the fifth sequence cannot be split across 2 ranks
    assert [b["input_ids"].shape[0] for b in two] == [2, 2]
    assert two[1]["labels"].tolist() == [[8, 9, 10, 11], [12, 13, 14, 15]]
    with pytest.raises(DataError, match="3 processes.*--calib-batches 3"):
        train_batches(_lm_workload(2), 3)
    images = Workload("image-classification", [torch.zeros(4, 3, 8, 8)], None, None, None)
    assert train_batches(images, 2)[0].shape == (4, 3, 8, 8)  # unlabelled batches pass as they are


def test_finetune_a_causal_lm_from_the_cli(tiny_lm: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ft"
    code = main(["compress", "--model", str(tiny_lm), "--recipe", _recipe(tmp_path, FINETUNE_YAML), "--out", str(out),
                 *SMALL])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    (step,) = report["steps"]
    notes = step["notes"]
    assert step["name"] == "finetune" and notes["steps"] == 4
    # a random model starts at the uniform next-token loss ln(49152) = 10.80 and learns from the labels
    assert notes["first_loss"] == pytest.approx(10.80, abs=0.1)
    assert notes["final_loss"] < notes["first_loss"] - 0.2
    assert report["after"]["quality"] < report["before"]["quality"]  # held-out perplexity went down
    changed = _changed(sk.load(out), sk.load(tiny_lm))
    assert "model.layers.0.mlp.up_proj.weight" in changed and "model.embed_tokens.weight" in changed


def test_compress_nproc_2_trains_in_two_processes(tiny_lm: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    proc = subprocess.run([SLIMKIT, "compress", "--model", str(tiny_lm), "--recipe", _recipe(tmp_path, NPROC_YAML),
                           "--out", str(out), "--nproc", "2", *SMALL], capture_output=True, text=True, timeout=300,
                          env={**_env(), "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)  # printed once: only rank 0 writes
    finetune, distill = report["steps"]
    for step in (finetune, distill):
        assert step["notes"]["world_size"] == 2 and step["notes"]["strategy"] == "ddp"
    assert finetune["notes"]["steps"] == 3 and distill["notes"]["steps"] == 2
    assert finetune["notes"]["final_loss"] < finetune["notes"]["first_loss"]
    assert distill["notes"]["hard_label_weight"] == 0.5  # the causal-LM batches carry their labels
    assert json.loads((out / "report.json").read_text())["steps"][0]["notes"]["world_size"] == 2
    assert _changed(sk.load(out), sk.load(tiny_lm))


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
