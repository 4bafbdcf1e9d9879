"""ONNX decoder export of Llama-family causal LMs: ORT logits and KV-cache greedy decoding equal
slimkit's model in torch, and MatMulNBits holds slimkit's own codes (no re-quantization)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import slimkit as sk
from slimkit.export.api import ExportOptions
from slimkit.export.onnx_decoder import export_decoder
from slimkit.quantize.weight_only.layer import WeightOnlyEmbedding, WeightOnlyLinear

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from slimkit.export.ort_int8 import ort_u8s8_exact  # noqa: E402

SATURATING_ORT = pytest.mark.skipif(
    not ort_u8s8_exact(), reason="ONNX Runtime's uint8 x int8 GEMM saturates int16 pairs on this CPU (x86 without "
    "VNNI), so its int8 outputs cannot match slimkit's exact integer math")

VOCAB, LAYERS, KV_HEADS, HEAD_DIM = 100, 2, 1, 16


def _compress(model: torch.nn.Module, method: str) -> torch.nn.Module:
    if method == "fp32":
        return model
    torch.manual_seed(1)
    calib = [torch.randint(0, VOCAB, (1, 16)) for _ in range(4)]
    recipe = {"steps": [{"quantize": {"method": method, "bits": 4, "group_size": 32}}]}
    return sk.compress(model, recipe, calib=calib, progress=False).model


def _export(model: torch.nn.Module, tmp_path: Path, accuracy_level: int = 0) -> "ort.InferenceSession":
    name = export_decoder(model, tmp_path, ExportOptions(accuracy_level=accuracy_level))
    assert name == "model.onnx"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(tmp_path / name), opts, providers=["CPUExecutionProvider"])


def _empty_past(batch: int = 1) -> dict[str, np.ndarray]:
    return {f"past_key_values.{i}.{k}": np.zeros((batch, KV_HEADS, 0, HEAD_DIM), np.float32)
            for i in range(LAYERS) for k in ("key", "value")}


def _run(sess: "ort.InferenceSession", ids: np.ndarray, past: dict[str, np.ndarray], total: int) -> tuple[np.ndarray, dict]:
    feed = {"input_ids": ids, "attention_mask": np.ones((ids.shape[0], total), np.int64), **past}
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(None, feed)))
    present = {f"past_key_values.{i}.{k}": out[f"present.{i}.{k}"] for i in range(LAYERS) for k in ("key", "value")}
    return out["logits"], present


def _torch_logits(model: torch.nn.Module, ids: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(ids).logits.float().numpy()


@pytest.mark.parametrize("method", ["fp32", "rtn", "gptq"])
def test_prompt_logits_match_slimkit_model(make_llama, tmp_path, method):
    """accuracy_level 0: ORT computes in fp32 from the same dequantized weights -> 1e-5 agreement."""
    model = _compress(make_llama(), method)
    sess = _export(model, tmp_path, accuracy_level=0)
    ids = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(3))
    logits, present = _run(sess, ids.numpy(), _empty_past(), 12)
    ref = _torch_logits(model, ids)
    assert logits.shape == (1, 12, VOCAB)
    assert np.abs(logits - ref).max() < 1e-5
    assert present["past_key_values.1.key"].shape == (1, KV_HEADS, 12, HEAD_DIM)


def test_int8_activation_kernels_stay_close(make_llama, tmp_path):
    """The default accuracy_level 4 (int8 activations inside MatMulNBits, as the peer ships) stays within 2 %."""
    model = _compress(make_llama(), "rtn")
    sess = _export(model, tmp_path, accuracy_level=4)
    ids = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(4))
    logits, _ = _run(sess, ids.numpy(), _empty_past(), 12)
    ref = _torch_logits(model, ids)
    err = np.abs(logits - ref).max()
    assert 0 < err < 0.02 * np.abs(ref).max()


@pytest.mark.parametrize("method", ["fp32", "rtn", "gptq"])
def test_kv_cache_greedy_decoding_matches_torch(make_llama, tmp_path, method):
    """Prefill then 8 single-token steps feeding present -> past give torch's greedy tokens (full recompute)."""
    model = _compress(make_llama(seed=2), method)
    sess = _export(model, tmp_path, accuracy_level=0)
    prompt = torch.randint(0, VOCAB, (1, 6), generator=torch.Generator().manual_seed(5))

    seq = prompt.clone()
    for _ in range(9):
        nxt = int(_torch_logits(model, seq)[0, -1].argmax())
        seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
    want = seq[0, 6:].tolist()

    logits, past = _run(sess, prompt.numpy(), _empty_past(), 6)
    got = [int(logits[0, -1].argmax())]
    for step in range(8):
        logits, past = _run(sess, np.array([[got[-1]]], np.int64), past, 7 + step)
        assert logits.shape == (1, 1, VOCAB)
        got.append(int(logits[0, -1].argmax()))
    assert past["past_key_values.0.value"].shape == (1, KV_HEADS, 14, HEAD_DIM)
    assert got == want


def _initializers(path: Path) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def _nibbles(b: np.ndarray, n: int, k: int) -> np.ndarray:
    flat = b.reshape(n, -1)
    return np.stack([flat & 0xF, flat >> 4], axis=-1).reshape(n, -1)[:, :k]


def test_matmul_nbits_hold_slimkit_codes(make_llama, tmp_path):
    """Every MatMulNBits / GatherBlockQuantized initializer decodes to slimkit's codes, scales and zeros."""
    model = _compress(make_llama(), "gptq")
    export_decoder(model, tmp_path, ExportOptions())
    inits = _initializers(tmp_path / "model.onnx")
    proto = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("MatMulNBits") == LAYERS * 5 + 1  # qkv, o, gate, up, down per layer + lm_head
    assert "MatMul" not in ops

    for i, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
        codes = torch.cat([m.codes() for m in qkv]).numpy()
        p = f"model.layers.{i}.self_attn.qkv_proj"
        n, k = codes.shape
        assert np.array_equal(_nibbles(inits[f"{p}.qweight"], n, k), codes)
        assert np.array_equal(inits[f"{p}.scales"], torch.cat([m.scales for m in qkv]).float().numpy().reshape(-1))
        zeros = torch.cat([m.zeros for m in qkv]).numpy()  # one group per row here: zero in the low nibble
        assert np.array_equal(inits[f"{p}.qzeros"] & 0xF, zeros.reshape(-1))
        down = layer.mlp.down_proj
        p = f"model.layers.{i}.mlp.down_proj"
        got = _nibbles(inits[f"{p}.qweight"], down.out_features, down.in_features)
        assert np.array_equal(got, down.codes().numpy())
        z = _nibbles(inits[f"{p}.qzeros"], down.out_features, 2)  # K=64, group 32: two zeros per byte
        s = inits[f"{p}.scales"].reshape(down.out_features, 2)
        deq = (got.astype(np.float32) - np.repeat(z, 32, axis=1)) * np.repeat(s, 32, axis=1)
        assert np.array_equal(deq, down.dequantize().numpy())  # bit-exact: nothing re-quantized

    head = model.lm_head
    assert isinstance(head, WeightOnlyLinear) and head.bits == 8
    assert np.array_equal(inits["lm_head.qweight"].reshape(VOCAB, -1), head.codes().numpy())
    emb = model.model.embed_tokens
    assert isinstance(emb, WeightOnlyEmbedding)
    assert np.array_equal(inits["model.embed_tokens.qweight"], emb.codes().numpy())


def test_not_llama_is_refused(make_gpt2, tmp_path):
    with pytest.raises(sk.UnsupportedModelError, match="gpt2"):
        export_decoder(make_gpt2(), tmp_path, ExportOptions())


@pytest.mark.parametrize("bits,group,match", [(4, 24, "group_size 24"), (3, 32, "int3")])
def test_unmappable_layout_names_layer(make_llama, tmp_path, bits, group, match):
    model = make_llama()
    proj = model.model.layers[1].mlp.up_proj
    model.model.layers[1].mlp.up_proj = WeightOnlyLinear.from_weight(proj.weight.detach(), None, bits, group, False)
    with pytest.raises(sk.UnsupportedModelError, match=rf"model\.layers\.1\.mlp\.up_proj.*{match}"):
        export_decoder(model, tmp_path, ExportOptions())


def test_bad_accuracy_level_is_config_error(make_llama, tmp_path):
    with pytest.raises(sk.ConfigError, match="accuracy_level 7"):
        export_decoder(make_llama(), tmp_path, ExportOptions(accuracy_level=7))


# --------------------------------------------------------------------------- dynamic int8
def _dynamic_int8(model: torch.nn.Module, **cfg) -> torch.nn.Module:
    recipe = {"steps": [{"quantize": {"method": "dynamic_int8", "per_channel": True, **cfg}}]}
    return sk.compress(model, recipe, progress=False).model


@SATURATING_ORT
@pytest.mark.parametrize("cfg", [{}, {"quantize_tied": True}, {"activations": "per_tensor", "per_channel": False}])
def test_dynamic_int8_logits_and_greedy_tokens_match_torch(make_llama, tmp_path, cfg):
    """Int8DynamicLinear -> MatMulIntegerToFloat with slimkit's own int8 weights and activation
    quantization in the graph: the integer products are slimkit's, so logits agree to float rounding
    (stated tolerance 1e-5, measured ~1e-7) and greedy decoding through the KV cache gives torch's tokens."""
    from slimkit.export.ort_model import OrtModel
    from slimkit.measure.decode import greedy_decode
    from slimkit.quantize.dynamic_int8.core import Int8DynamicLinear

    model = _dynamic_int8(make_llama(seed=2), **cfg)
    assert isinstance(model.model.layers[0].mlp.up_proj, Int8DynamicLinear)
    export_decoder(model, tmp_path, ExportOptions())
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(6))
    ort_model = OrtModel(tmp_path / "model.onnx", threads=1)
    logits = ort_model(ids).logits.numpy()
    ref = _torch_logits(model, ids)
    assert np.abs(logits - ref).max() < 1e-5
    prompt = ids[:1, :5]
    got, _ = greedy_decode(ort_model, prompt, 8)
    want, _ = greedy_decode(model, prompt, 8)
    assert got == want and len(got) == 8


def test_dynamic_int8_graph_uses_integer_gemms(make_llama, tmp_path):
    """Every projection is an integer GEMM on slimkit's int8 weights; gate/up share one activation quantization."""
    from onnx import numpy_helper

    model = _dynamic_int8(make_llama(), quantize_tied=True)
    export_decoder(model, tmp_path, ExportOptions())
    proto = onnx.load(str(tmp_path / "model.onnx"))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("MatMulIntegerToFloat") == LAYERS * 5 + 1  # qkv, o, gate, up, down + lm_head
    assert "MatMul" not in ops and "MatMulNBits" not in ops
    assert ops.count("Round") == LAYERS * 4 + 1  # qkv, o, gate+up (shared), down + lm_head inputs
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    down = model.model.layers[1].mlp.down_proj
    assert np.array_equal(inits["model.layers.1.mlp.down_proj.weight_int8_t"], down.weight_int8.numpy().T)
    assert np.array_equal(inits["model.layers.1.mlp.down_proj.weight_scale"], down.weight_scale.numpy())


def test_gptq_group64_exports_and_decodes(tmp_path):
    """The demo's {gptq, bits 4, group_size 64} recipe maps to MatMulNBits block 64 (and the int8
    embedding to GatherBlockQuantized block 64) and decodes as torch does."""
    import transformers

    from slimkit.export.ort_model import OrtModel
    from slimkit.measure.decode import greedy_decode

    torch.manual_seed(2)  # width 64: the fixture's 32-wide embedding has no whole group of 64
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=1, vocab_size=VOCAB, max_position_embeddings=64,
                                   tie_word_embeddings=True)
    calib = [torch.randint(0, VOCAB, (1, 16)) for _ in range(4)]
    recipe = {"steps": [{"quantize": {"method": "gptq", "bits": 4, "group_size": 64}}]}
    model = sk.compress(transformers.LlamaForCausalLM(cfg).eval(), recipe, calib=calib, progress=False).model
    export_decoder(model, tmp_path, ExportOptions(accuracy_level=0))
    proto = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False)
    blocks = {a.i for n in proto.graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "block_size"}
    assert blocks == {64}
    ort_model = OrtModel(tmp_path / "model.onnx", threads=1)
    prompt = torch.randint(0, VOCAB, (1, 6), generator=torch.Generator().manual_seed(7))
    got, seconds = greedy_decode(ort_model, prompt, 8)
    assert got == greedy_decode(model, prompt, 8)[0] and seconds > 0


# --------------------------------------------------------------------------- greedy_decode helper
def test_greedy_decode_same_tokens_torch_ort_and_generate(make_llama, tmp_path):
    """greedy_decode gives HF generate(do_sample=False)'s tokens for the torch model and its ORT export."""
    from slimkit.export.ort_model import OrtModel
    from slimkit.measure.decode import greedy_decode

    model = make_llama(seed=3)
    export_decoder(model, tmp_path, ExportOptions(accuracy_level=0))
    ort_model = OrtModel(tmp_path / "model.onnx", threads=1, allow_spinning=False)
    prompt = torch.randint(0, VOCAB, (1, 7), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        gen = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=10,
                             min_new_tokens=10, pad_token_id=0)[0, 7:].tolist()
    torch_ids, torch_s = greedy_decode(model, prompt, 10)
    ort_ids, ort_s = greedy_decode(ort_model, prompt[0].tolist(), 10)
    assert torch_ids == gen and ort_ids == gen
    assert torch_s > 0 and ort_s > 0
    assert greedy_decode(ort_model, prompt[:, :1], 3)[0] == greedy_decode(model, prompt[:, :1], 3)[0]


def test_greedy_decode_refuses_bad_inputs(make_llama, make_bert, tmp_path):
    from slimkit.export.ort_model import OrtModel
    from slimkit.measure.decode import greedy_decode

    model = make_llama()
    with pytest.raises(sk.DataError, match="one non-empty sequence"):
        greedy_decode(model, torch.zeros(2, 4, dtype=torch.int64), 4)
    with pytest.raises(sk.DataError, match="new_tokens 0"):
        greedy_decode(model, [1, 2], 0)
    path = sk.export(make_bert(), tmp_path / "bert", format="onnx")
    onnx_file = path if path.suffix == ".onnx" else path / "model.onnx"
    with pytest.raises(sk.DataError, match="past_key_values"):
        greedy_decode(OrtModel(onnx_file, threads=1), [1, 2], 2)


@pytest.mark.parametrize("method", ["fp32", "gptq"])
def test_onnxruntime_genai_generator_runs_the_export(make_llama, tmp_path, method):
    """The decoder export carries a genai_config.json: onnxruntime-genai's own Generator (in-place KV
    buffer, C++ loop) runs it and greedy-decodes the tokens HF generate gives for slimkit's model."""
    og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed (pip install .[deploy])")
    import json

    model = _compress(make_llama(seed=3), method)
    export_decoder(model, tmp_path, ExportOptions(accuracy_level=0))
    cfg = json.loads((tmp_path / "genai_config.json").read_text())
    assert cfg["model"]["decoder"]["num_hidden_layers"] == LAYERS
    assert cfg["model"]["decoder"]["num_key_value_heads"] == KV_HEADS and cfg["model"]["decoder"]["head_size"] == HEAD_DIM
    prompt = torch.randint(0, VOCAB, (1, 7), generator=torch.Generator().manual_seed(8))
    steps = 10
    with torch.no_grad():
        want = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=steps,
                              min_new_tokens=steps, pad_token_id=0)[0, 7:].tolist()
    og_model = og.Model(str(tmp_path))
    params = og.GeneratorParams(og_model)
    params.set_search_options(max_length=7 + steps, min_length=7 + steps, do_sample=False)
    gen = og.Generator(og_model, params)
    gen.append_tokens(prompt[0].numpy().astype(np.int32))
    got = []
    while not gen.is_done():
        gen.generate_next_token()
        got.append(int(gen.get_next_tokens()[0]))
    assert got == want
