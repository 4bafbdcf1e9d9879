"""``slimkit compress --model HF_DIR --data FILE``: the user's own model directory and text file.

The model is a random 2-block Llama over SmolLM2's vocabulary, saved with ``save_pretrained`` next
to SmolLM2's tokenizer: a plain Hugging Face directory, not a slimkit checkpoint.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import slimkit as sk
from slimkit.cli.main import main

RECIPE = "steps:\n  - quantize: {method: dynamic_int8}\n"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import transformers

    tok = sk.zoo.load_tokenizer("smollm2-135m")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=len(tok), max_position_embeddings=128,
                                   tie_word_embeddings=True, architectures=["LlamaForCausalLM"])
    path = tmp_path_factory.mktemp("user") / "my-llama"
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    paragraphs = [f"Note {i}. The river ran past the mill and the miller counted {i} sacks of grain before "
                  "the evening bell rang over the quiet town." for i in range(30)]
    path = tmp_path / "notes.txt"
    path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    return path


def test_compress_hf_dir_with_own_data_round_trip(hf_dir, notes, tmp_path, capsys) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE, encoding="utf-8")
    out = tmp_path / "slim"
    code = main(["compress", "--model", str(hf_dir), "--recipe", str(recipe), "--data", str(notes), "--seq-len", "32",
                 "--calib-batches", "2", "--eval-batches", "2", "--out", str(out), "--no-progress", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    before, after = report["before"]["quality"], report["after"]["quality"]
    assert 1.0 < before < 1e6 and abs(after / before - 1) < 0.05  # int8 keeps the perplexity on held-out notes
    assert (out / "slimkit.json").is_file()
    assert json.loads((out / "slimkit.json").read_text())["base"]["hf_dir"] == str(hf_dir.resolve())
    code = main(["eval", "--model", str(out), "--data", str(notes), "--seq-len", "32", "--eval-batches", "2", "--json"])
    assert code == 0


def test_bad_data_is_one_error_line(hf_dir, tmp_path, capsys) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE, encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    code = main(["compress", "--model", str(hf_dir), "--recipe", str(recipe), "--data", str(empty),
                 "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 2
    assert f"error: {empty} is empty" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_pickle_only_model_dir_is_refused(tmp_path, capsys) -> None:
    d = tmp_path / "old"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
    (d / "pytorch_model.bin").write_bytes(b"\x80\x02not really")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE, encoding="utf-8")
    assert main(["compress", "--model", str(d), "--recipe", str(recipe), "--out", str(tmp_path / "o")]) == 2
    assert "only pickled weights" in capsys.readouterr().err


def test_export_then_eval_the_onnx_file_gives_the_same_perplexity(hf_dir, notes, tmp_path, capsys) -> None:
    common = ["--data", str(notes), "--seq-len", "32", "--eval-batches", "2", "--json"]
    assert main(["eval", "--model", str(hf_dir), *common]) == 0
    torch_report = json.loads(capsys.readouterr().out)
    assert main(["export", str(hf_dir), "--format", "onnx", "--out", str(tmp_path / "onnx"), "--json"]) == 0
    onnx_path = json.loads(capsys.readouterr().out)["path"]
    assert onnx_path.endswith("model.onnx")
    assert main(["eval", "--model", onnx_path, *common]) == 0
    ort_report = json.loads(capsys.readouterr().out)
    ppl_torch = torch_report["variants"][0]["metrics"]["quality"]
    ppl_ort = ort_report["variants"][0]["metrics"]["quality"]
    assert abs(ppl_ort / ppl_torch - 1) < 1e-3
    assert "onnxruntime" in ort_report["variants"][0]["metrics"]["runtime"]
