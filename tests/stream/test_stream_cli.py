"""``slimkit compress --stream``: the same checkpoint as the Python API; bad inputs refused."""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

import slimkit as sk
from slimkit.cli.main import EXIT_BAD_INPUT, main
from tests.stream.test_stream_equal import stored_tensors


def recipe_file(tmp: Path, steps: list) -> Path:
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump({"steps": steps}))
    return path


def test_cli_stream_round_trip(tiny_llama_dir: Path, tmp_path: Path, capsys) -> None:
    steps = [{"quantize": {"method": "rtn", "bits": 4, "group_size": 32, "symmetric": True}}]
    out = tmp_path / "cli-out"
    assert main(["compress", "--model", str(tiny_llama_dir), "--recipe", str(recipe_file(tmp_path, steps)),
                 "--out", str(out), "--stream", "--no-progress"]) == 0
    assert "streamed 3 blocks" in capsys.readouterr().out
    api = sk.compress_stream(tiny_llama_dir, {"steps": steps}, tmp_path / "api-out", progress=False).path
    a, b = stored_tensors(out), stored_tensors(api)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    model = sk.load(out, lazy=True)
    assert type(model.model.layers[0].mlp.down_proj).__name__ == "WeightOnlyLinear"
    exported = sk.export(out, tmp_path / "hf", format="hf")  # the export formats accept a streamed checkpoint
    assert (exported / "config.json").is_file() and any(exported.glob("*.safetensors"))


def test_cli_stream_refuses_bad_inputs(tiny_llama_dir: Path, tmp_path: Path, capsys) -> None:
    gptq = recipe_file(tmp_path, [{"quantize": {"method": "gptq", "bits": 4}}])
    # calibration needs a tokenizer, which this directory lacks
    assert main(["compress", "--model", str(tiny_llama_dir), "--recipe", str(gptq), "--out", str(tmp_path / "o"),
                 "--stream", "--no-progress"]) == EXIT_BAD_INPUT
    assert "no tokenizer" in capsys.readouterr().err
    assert main(["compress", "--model", "zoo:smollm2-135m", "--recipe", str(gptq), "--out", str(tmp_path / "o"),
                 "--stream", "--no-progress"]) == EXIT_BAD_INPUT
    assert "Hugging Face model directory" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
