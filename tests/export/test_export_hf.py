"""``sk.export(format="hf")``: the directory loads in plain transformers with slimkit blocked, and
its outputs equal slimkit's model; edits the stock config cannot describe are refused by name."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import slimkit as sk
from slimkit.export.hf_tensors import pack_int32

try:
    import compressed_tensors  # noqa: F401
    HAVE_CT = True
except ImportError:
    HAVE_CT = False

#: loads every exported directory with slimkit made unimportable, writes each model's main output
_LOADER = r"""
import json, sys
sys.modules["slimkit"] = None
import torch, transformers
from safetensors.torch import load_file, save_file
torch.set_num_threads(1)
for case in json.load(open(sys.argv[1])):
    cls = getattr(transformers, case["auto"])
    model = cls.from_pretrained(case["dir"]).eval()
    inputs = load_file(case["inputs"])
    with torch.no_grad():
        out = model(**inputs)
    main = out.logits if hasattr(out, "logits") else out.last_hidden_state
    save_file({"out": main.contiguous()}, case["out"])
"""


def _compress(model: torch.nn.Module, step: dict[str, Any], batch: dict[str, torch.Tensor]) -> torch.nn.Module:
    return sk.compress(model, {"steps": [step]}, calib=[batch], example_inputs=batch, progress=False).model


def _reference(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch)
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state).float()


def _load_plain(cases: list[dict[str, Any]], tmp: Path) -> dict[str, torch.Tensor]:
    """Run every case through plain transformers in ONE subprocess (slimkit blocked)."""
    spec = tmp / "cases.json"
    spec.write_text(json.dumps(cases))
    proc = subprocess.run([sys.executable, "-c", _LOADER, str(spec)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {c["name"]: load_file(c["out"])["out"] for c in cases}


def test_exports_load_in_plain_transformers_and_match(make_llama, make_bert, make_gpt2, token_batch, tmp_path):
    """Dropped layers, uniform neuron pruning, magnitude pruning, rtn int4 dequantized (and as
    compressed-tensors when installed), BERT and GPT-2 (Conv1D): plain transformers' outputs equal slimkit's."""
    ids = {"input_ids": token_batch["input_ids"]}
    save_file(ids, str(tmp_path / "ids.safetensors"))
    save_file(token_batch, str(tmp_path / "bert.safetensors"))
    rtn = {"quantize": {"method": "rtn", "bits": 4, "group_size": 32, "symmetric": True}}
    plan = [  # name, model, step, dequantize, auto class, inputs
        ("llama_drop", make_llama(), {"drop_layers": {"method": "last", "n": 1}}, False, "AutoModelForCausalLM", ids),
        ("llama_neuron", make_llama(), {"prune": {"method": "structured", "granularity": "neuron", "sparsity": 0.25}},
         False, "AutoModelForCausalLM", ids),
        ("llama_magnitude", make_llama(), {"prune": {"method": "magnitude", "sparsity": 0.5}}, False,
         "AutoModelForCausalLM", ids),
        ("llama_rtn_dequant", make_llama(), rtn, True, "AutoModelForCausalLM", ids),
        ("bert_neuron", make_bert(), {"prune": {"method": "structured", "granularity": "neuron", "sparsity": 0.25}},
         False, "AutoModel", token_batch),
        ("gpt2_magnitude", make_gpt2(), {"prune": {"method": "magnitude", "sparsity": 0.5}}, False,
         "AutoModelForCausalLM", ids),
        ("gpt2_rtn_dequant", make_gpt2(), rtn, True, "AutoModelForCausalLM", ids),
    ]
    if HAVE_CT:
        plan.append(("llama_rtn_ct", make_llama(), rtn, False, "AutoModelForCausalLM", ids))
    cases, models, refs = [], {}, {}
    for name, model, step, dequantize, auto, batch in plan:
        models[name] = _compress(model, step, batch)
        refs[name] = _reference(models[name], batch)
        out = sk.export(models[name], tmp_path / name, format="hf", dequantize=dequantize)
        assert out == tmp_path / name
        inputs = "bert.safetensors" if batch is token_batch else "ids.safetensors"
        cases.append({"name": name, "dir": str(out), "auto": auto, "inputs": str(tmp_path / inputs),
                      "out": str(tmp_path / f"{name}.out.safetensors")})
    got = _load_plain(cases, tmp_path)

    for name in refs:
        assert got[name].shape == refs[name].shape, name
        torch.testing.assert_close(got[name], refs[name], atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")

    cfg = {n: json.loads((tmp_path / n / "config.json").read_text()) for n in refs}
    files = {n: load_file(str(tmp_path / n / "model.safetensors")) for n in refs}
    # dropped block: one layer left, numbered 0
    assert cfg["llama_drop"]["num_hidden_layers"] == 1
    assert {k.split(".")[2] for k in files["llama_drop"] if k.startswith("model.layers.")} == {"0"}
    # uniform neuron pruning: intermediate_size follows the modules; head_dim kept explicit
    assert cfg["llama_neuron"]["intermediate_size"] == models["llama_neuron"].model.layers[0].mlp.up_proj.out_features == 48
    assert cfg["llama_neuron"]["head_dim"] == 16
    assert cfg["bert_neuron"]["intermediate_size"] == models["bert_neuron"].encoder.layer[0].intermediate.dense.out_features
    assert cfg["bert_neuron"]["intermediate_size"] < 64
    # magnitude pruning: the zeros are the file's zeros
    w = files["llama_magnitude"]["model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(w == 0, models["llama_magnitude"].model.layers[0].mlp.up_proj.weight == 0)
    assert 0.45 < float((w == 0).float().mean()) < 0.55
    # GPT-2: Conv1D layout [in, out] again
    assert files["gpt2_magnitude"]["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)
    assert files["gpt2_rtn_dequant"]["transformer.h.0.mlp.c_fc.weight"].shape == (32, 64)
    # dequantized: a plain float checkpoint; the tied head was untied by quantization
    assert "quantization_config" not in cfg["llama_rtn_dequant"]
    assert cfg["llama_rtn_dequant"]["tie_word_embeddings"] is False
    assert cfg["llama_drop"]["tie_word_embeddings"] is True and "lm_head.weight" not in files["llama_drop"]
    if HAVE_CT:
        q = cfg["llama_rtn_ct"]["quantization_config"]
        assert q["quant_method"] == "compressed-tensors" and q["format"] == "pack-quantized"
        assert files["llama_rtn_ct"]["model.layers.0.mlp.down_proj.weight_packed"].dtype == torch.int32
        assert files["llama_rtn_ct"]["model.layers.0.mlp.down_proj.weight_packed"].shape == (32, 64 // 8)


def test_pack_int32_matches_compressed_tensors():
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    gen = torch.Generator().manual_seed(0)
    for bits, cols in ((4, 64), (4, 40), (8, 36), (2, 48)):
        q = torch.randint(-(2 ** (bits - 1)), 2 ** (bits - 1), (5, cols), generator=gen)
        assert torch.equal(pack_int32(q, bits), helpers.pack_to_int32(q.to(torch.int8), bits)), (bits, cols)


def _export_error(model: torch.nn.Module, tmp_path: Path, **kw: Any) -> str:
    with pytest.raises(sk.UnsupportedModelError) as info:
        sk.export(model, tmp_path / "out", format="hf", **kw)
    assert not (tmp_path / "out").exists()
    return str(info.value)


def test_non_uniform_pruning_is_refused_with_layer_and_limit(make_llama, token_batch, tmp_path):
    step = {"prune": {"method": "structured", "granularity": "neuron", "sparsity": 0.25,
                      "targets": ["re:model\\.layers\\.1\\.mlp\\..*"]}}
    model = _compress(make_llama(), step, {"input_ids": token_batch["input_ids"]})
    assert model.model.layers[1].mlp.up_proj.out_features < model.model.layers[0].mlp.up_proj.out_features
    msg = _export_error(model, tmp_path)
    assert "model.layers.1.mlp has intermediate_size 48 while layer 0 has 64" in msg
    assert "LlamaConfig holds one intermediate_size" in msg


def test_bert_head_pruning_is_refused(make_bert, token_batch, tmp_path):
    model = _compress(make_bert(), {"prune": {"method": "structured", "granularity": "head", "sparsity": 0.5}},
                      token_batch)
    msg = _export_error(model, tmp_path)
    assert "encoder.layer.0.attention has 1 heads of size 16 in a hidden size 32" in msg


@pytest.mark.parametrize("step, layer, words", [
    ({"quantize": {"method": "rtn", "bits": 4, "group_size": 32}}, "model.layers.0.self_attn.q_proj", "asymmetric"),
    ({"quantize": {"method": "dynamic_int8"}}, "model.layers.0.self_attn.q_proj", "Int8DynamicLinear"),
    ({"low_rank": {"method": "svd", "rank": 4}}, "model.layers.0.self_attn.q_proj", "LowRankLinear"),
])
def test_quantized_or_factorized_needs_dequantize(make_llama, token_batch, tmp_path, step, layer, words):
    batch = {"input_ids": token_batch["input_ids"]}
    model = _compress(make_llama(), step, batch)
    msg = _export_error(model, tmp_path)
    assert msg.startswith(layer) and words in msg and "dequantize=True" in msg
    out = sk.export(model, tmp_path / "float", format="hf", dequantize=True)  # float weights are accepted
    tensors = load_file(str(out / "model.safetensors"))
    assert tensors[f"{layer}.weight"].dtype == torch.float32
    assert tensors[f"{layer}.weight"].shape == (32, 32)


def test_quantized_gpt2_conv1d_is_refused_without_dequantize(make_gpt2, token_batch, tmp_path):
    step = {"quantize": {"method": "rtn", "bits": 4, "group_size": 32, "symmetric": True}}
    model = _compress(make_gpt2(), step, {"input_ids": token_batch["input_ids"]})
    msg = _export_error(model, tmp_path)
    assert msg.startswith("transformer.h.0.attn.c_attn") and "Conv1D" in msg


def test_a_model_without_a_transformers_class_is_refused(make_mlp, tmp_path):
    msg = _export_error(make_mlp(), tmp_path)
    assert "TinyMLP" in msg and "format='onnx'" in msg
