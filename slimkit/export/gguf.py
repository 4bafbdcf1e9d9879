"""GGUF export for llama.cpp: Llama-family causal LMs, slimkit's int4/int8 codes repacked bit-exact.

``sk.export(model, out, format="gguf")`` writes ``out/model.gguf`` with llama.cpp's ``llama``
architecture metadata, tensor names and BPE tokenizer metadata (as llama.cpp's
``convert_hf_to_gguf.py`` writes them), so ``llama-cli`` / ``llama-cpp-python`` run it as is.

Weight encodings (no re-quantization: llama.cpp multiplies with the codes slimkit chose):

* slimkit weight-only, symmetric, 4 bits, group 32 -> ``Q4_0``. A Q4_0 block is an fp16 scale
  ``d`` and 16 bytes holding 32 unsigned 4-bit codes ``q`` (low nibbles: elements 0-15, high
  nibbles: 16-31), value ``(q - 8) * d``. Slimkit's symmetric int4 stores codes ``u`` with the
  implied zero point 8 and an fp16 scale ``s``, value ``(u - 8) * s``: so ``q = u``, ``d = s``.
* symmetric, 8 bits, group 32 -> ``Q8_0``: fp16 ``d`` + 32 int8 ``q``, value ``q * d``;
  slimkit's ``(u - 128) * s`` gives ``q = u - 128``, ``d = s``.
* float tensors (norms, float Linears, a float embedding) -> ``F32`` (as slimkit computes them).
* anything else (asymmetric, other bit widths or group sizes, per-channel int8, int8 dynamic /
  static layers, a width that is not a multiple of 32) is refused with the layer named and the
  recipe that maps; ``dequantize=True`` writes such layers as float32 instead.

Two transformations llama.cpp expects, both exact:

* q/k rows are permuted from Hugging Face's rotary layout (first half / second half of each head)
  to GGML's interleaved pairs (``LlamaModel.permute`` in ``convert_hf_to_gguf.py``). Rows are
  output channels and slimkit's groups run along input columns, so codes and scales are permuted
  row for row and the repacking stays bit-exact.
* AWQ's ``input_scale`` (x is multiplied by it before the GEMM) is folded into the RMSNorm weight
  that feeds the layer, only when every layer fed by that norm has the same scale (llama.cpp has
  no per-input scale). Otherwise the export is refused.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.core.errors import UnsupportedModelError
from slimkit.export.api import ExportOptions, register_exporter

__all__ = ["export_gguf", "rope_row_permutation", "q4_0_bytes", "q8_0_bytes", "pre_tokenizer_name",
           "GGUF_RECIPE", "GGUF_FILE"]

GGUF_FILE = "model.gguf"
#: the slimkit recipe whose layers map onto llama.cpp's block formats
GGUF_RECIPE = ("{method: gptq, bits: 4, group_size: 32, symmetric: true} (Q4_0; bits: 8 gives Q8_0; "
               "method rtn or mixed take the same fields), or export with dequantize=True for float32 weights")
_BLOCK = 32
_LLAMA_TYPES = ("llama",)

# tokenizer.ggml.pre names by the sha256 of the token ids of convert_hf_to_gguf.py's probe text
# (get_vocab_base_pre); only pre-tokenizers llama.cpp implements for Llama-architecture models.
_PROBE = ('\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) '
          '✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ '
          '------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, '
          '\'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL')
_PRE_BY_HASH = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
}


# --------------------------------------------------------------------------- block packing
def rope_row_permutation(rows: int, n_head: int) -> torch.Tensor:
    """Row order ``p`` with ``W_gguf = W_hf[p]``: each head's rows (first half, second half) become
    interleaved pairs, as ``LlamaModel.permute`` in llama.cpp's ``convert_hf_to_gguf.py`` does."""
    half = rows // n_head // 2
    return torch.arange(rows).reshape(n_head, 2, half).transpose(1, 2).reshape(-1)


def _scale_bytes(scales: torch.Tensor) -> np.ndarray:
    """fp16 scales [N, G] -> their little-endian bytes [N, G, 2]."""
    s = scales.detach().to(torch.float16).contiguous().numpy()
    return s.astype("<f2").view(np.uint8).reshape(*s.shape, 2)


def q4_0_bytes(codes: torch.Tensor, scales: torch.Tensor) -> np.ndarray:
    """Q4_0 rows [N, G*18] from unsigned 4-bit codes [N, G*32] (zero point 8) and fp16 scales [N, G]."""
    n, k = codes.shape
    q = codes.to(torch.uint8).reshape(n, k // _BLOCK, _BLOCK).numpy()
    qs = q[..., :16] | (q[..., 16:] << np.uint8(4))  # low nibble: element j, high nibble: j + 16
    return np.concatenate([_scale_bytes(scales), qs], axis=-1).reshape(n, -1)


def q8_0_bytes(codes: torch.Tensor, scales: torch.Tensor) -> np.ndarray:
    """Q8_0 rows [N, G*34] from unsigned 8-bit codes [N, G*32] (zero point 128) and fp16 scales [N, G]."""
    n, k = codes.shape
    q = (codes.to(torch.int16) - 128).to(torch.int8).reshape(n, k // _BLOCK, _BLOCK).numpy().view(np.uint8)
    return np.concatenate([_scale_bytes(scales), q], axis=-1).reshape(n, -1)


# --------------------------------------------------------------------------- tensors
@dataclass
class _Tensor:
    name: str
    data: np.ndarray
    qtype: Any  # gguf.GGMLQuantizationType


def _float(name: str, t: torch.Tensor) -> _Tensor:
    import gguf

    return _Tensor(name, t.detach().float().contiguous().numpy(), gguf.GGMLQuantizationType.F32)


def _packed(label: str, name: str, mod: nn.Module, perm: torch.Tensor | None) -> _Tensor:
    """A slimkit weight-only layer's codes and scales as Q4_0 / Q8_0 blocks (rows permuted by ``perm``)."""
    import gguf

    width = mod.cols
    if not mod.symmetric or mod.bits not in (4, 8) or mod.group_size != _BLOCK or width % _BLOCK:
        layout = (f"int{mod.bits} group_size {mod.group_size} {'symmetric' if mod.symmetric else 'asymmetric'} "
                  f"over {width} columns")
        raise UnsupportedModelError(
            f"{label}: {layout} has no llama.cpp block format (Q4_0/Q8_0 are symmetric int4/int8 in groups of 32 "
            f"along a width divisible by 32); quantize with {GGUF_RECIPE}")
    codes, scales = mod.codes(), mod.scales
    if perm is not None:
        codes, scales = codes[perm], scales[perm]
    if mod.bits == 4:
        return _Tensor(name, q4_0_bytes(codes, scales), gguf.GGMLQuantizationType.Q4_0)
    return _Tensor(name, q8_0_bytes(codes, scales), gguf.GGMLQuantizationType.Q8_0)


def _matrix(label: str, name: str, mod: nn.Module, perm: torch.Tensor | None, dequantize: bool) -> _Tensor:
    """One projection / head / embedding matrix; anything but float or slimkit weight-only is refused."""
    from slimkit.quantize.weight_only.layer import WeightOnlyEmbedding, WeightOnlyLinear

    if getattr(mod, "bias", None) is not None:
        raise UnsupportedModelError(f"{label}: has a bias; llama.cpp's llama architecture has none there")
    if isinstance(mod, (WeightOnlyLinear, WeightOnlyEmbedding)):
        if not dequantize:
            return _packed(label, name, mod, perm)
        w = mod.dequantize()
        if getattr(mod, "input_scale", None) is not None:
            w = w * mod.input_scale.float().reshape(1, -1)  # x·diag(s)·Wᵀ = x·(W·diag(s))ᵀ
    elif type(mod) in (nn.Linear, nn.Embedding):
        w = mod.weight.detach().float()
    else:
        raise UnsupportedModelError(
            f"{label}: {type(mod).__name__} has no GGUF mapping; exportable layers are float nn.Linear/nn.Embedding "
            f"and slimkit weight-only layers from {GGUF_RECIPE}")
    return _float(name, w if perm is None else w[perm])


def _input_scale(mod: nn.Module, width: int) -> torch.Tensor:
    s = getattr(mod, "input_scale", None)
    return torch.ones(width) if s is None else s.detach().float()


def _norm_weight(label: str, norm: nn.Module, consumers: dict[str, nn.Module], dequantize: bool) -> torch.Tensor:
    """The RMSNorm weight, with the consumers' common AWQ ``input_scale`` folded in (refused if they differ)."""
    if not hasattr(norm, "weight"):
        raise UnsupportedModelError(f"{label}: {type(norm).__name__} is not an RMSNorm with a weight")
    w = norm.weight.detach().float()
    if dequantize:  # input scales go into the float weights instead
        return w
    scales = {name: _input_scale(m, w.numel()) for name, m in consumers.items()}
    first = next(iter(scales.values()))
    if any(not torch.equal(first, s) for s in scales.values()):
        raise UnsupportedModelError(
            f"{', '.join(scales)}: different AWQ input scales behind the one norm {label} cannot be folded into it "
            f"(llama.cpp has no per-input scale); quantize with {GGUF_RECIPE}")
    return w * first


def _no_input_scale(label: str, mod: nn.Module, dequantize: bool) -> None:
    s = getattr(mod, "input_scale", None)
    if s is not None and not dequantize and not torch.all(s == 1):
        raise UnsupportedModelError(
            f"{label}: an AWQ input_scale on a layer fed by no norm cannot be folded exactly (llama.cpp has no "
            f"per-input scale); quantize with {GGUF_RECIPE}")


@dataclass
class _Dims:
    n_head: int
    n_kv: int
    head_dim: int
    n_ff: int


def _dims(model: nn.Module) -> _Dims:
    cfg = model.config
    n_head = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_head)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head)
    return _Dims(n_head, n_kv, head_dim, _out_features("model.layers.0.mlp.gate_proj",
                                                       model.model.layers[0].mlp.gate_proj))


def _out_features(label: str, mod: nn.Module) -> int:
    rows = getattr(mod, "out_features", None)
    if rows is None:
        raise UnsupportedModelError(f"{label}: {type(mod).__name__} is not a linear layer the GGUF export maps")
    return int(rows)


def _check_shapes(i: int, layer: nn.Module, d: _Dims) -> None:
    """GGUF's llama architecture has one head count and one FFN width for every block."""
    want = {"self_attn.q_proj": d.n_head * d.head_dim, "self_attn.k_proj": d.n_kv * d.head_dim,
            "self_attn.v_proj": d.n_kv * d.head_dim, "mlp.gate_proj": d.n_ff, "mlp.up_proj": d.n_ff}
    for path, rows in want.items():
        got = _out_features(f"model.layers.{i}.{path}", layer.get_submodule(path))
        if got != rows:
            raise UnsupportedModelError(
                f"model.layers.{i}.{path}: {got} output channels where the GGUF llama architecture needs {rows} in "
                "every block (non-uniform head or neuron pruning cannot be written to GGUF)")


def _block_tensors(i: int, layer: nn.Module, d: _Dims, dequantize: bool) -> list[_Tensor]:
    at, mlp = layer.self_attn, layer.mlp
    pre, blk = f"model.layers.{i}", f"blk.{i}"
    attn_in = {f"{pre}.self_attn.{p}": getattr(at, p) for p in ("q_proj", "k_proj", "v_proj")}
    ffn_in = {f"{pre}.mlp.{p}": getattr(mlp, p) for p in ("gate_proj", "up_proj")}
    _no_input_scale(f"{pre}.self_attn.o_proj", at.o_proj, dequantize)
    _no_input_scale(f"{pre}.mlp.down_proj", mlp.down_proj, dequantize)
    q_perm = rope_row_permutation(d.n_head * d.head_dim, d.n_head)
    k_perm = rope_row_permutation(d.n_kv * d.head_dim, d.n_kv)
    return [
        _float(f"{blk}.attn_norm.weight", _norm_weight(f"{pre}.input_layernorm", layer.input_layernorm, attn_in,
                                                       dequantize)),
        _matrix(f"{pre}.self_attn.q_proj", f"{blk}.attn_q.weight", at.q_proj, q_perm, dequantize),
        _matrix(f"{pre}.self_attn.k_proj", f"{blk}.attn_k.weight", at.k_proj, k_perm, dequantize),
        _matrix(f"{pre}.self_attn.v_proj", f"{blk}.attn_v.weight", at.v_proj, None, dequantize),
        _matrix(f"{pre}.self_attn.o_proj", f"{blk}.attn_output.weight", at.o_proj, None, dequantize),
        _float(f"{blk}.ffn_norm.weight", _norm_weight(f"{pre}.post_attention_layernorm",
                                                      layer.post_attention_layernorm, ffn_in, dequantize)),
        _matrix(f"{pre}.mlp.gate_proj", f"{blk}.ffn_gate.weight", mlp.gate_proj, None, dequantize),
        _matrix(f"{pre}.mlp.up_proj", f"{blk}.ffn_up.weight", mlp.up_proj, None, dequantize),
        _matrix(f"{pre}.mlp.down_proj", f"{blk}.ffn_down.weight", mlp.down_proj, None, dequantize),
    ]


def _is_tied(head: nn.Module, emb: nn.Module) -> bool:
    """A float head sharing the embedding's storage: llama.cpp then reuses ``token_embd`` as output."""
    return (type(head) is nn.Linear and type(emb) is nn.Embedding and head.bias is None
            and head.weight.data_ptr() == emb.weight.data_ptr())


def _model_tensors(model: nn.Module, d: _Dims, dequantize: bool) -> list[_Tensor]:
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    tensors = [_matrix("model.embed_tokens", "token_embd.weight", emb, None, dequantize)]
    for i, layer in enumerate(model.model.layers):
        _check_shapes(i, layer, d)
        tensors += _block_tensors(i, layer, d, dequantize)
    tensors.append(_float("output_norm.weight", _norm_weight("model.norm", model.model.norm, {"lm_head": head},
                                                              dequantize)))
    if not _is_tied(head, emb):
        tensors.append(_matrix("lm_head", "output.weight", head, None, dequantize))
    return tensors


# --------------------------------------------------------------------------- metadata
def _check_model(model: nn.Module) -> None:
    cfg = getattr(model, "config", None)
    kind = getattr(cfg, "model_type", type(model).__name__)
    if kind not in _LLAMA_TYPES or not hasattr(model, "lm_head"):
        raise UnsupportedModelError(
            f"GGUF export supports Llama-family causal LMs (LlamaForCausalLM, SmolLM2); got {kind!r}")
    act = getattr(cfg, "hidden_act", "silu")
    if act != "silu":
        raise UnsupportedModelError(f"model.config.hidden_act {act!r}: llama.cpp's llama architecture uses SiLU")


def _rope(cfg: Any) -> tuple[float, dict[str, Any]]:
    """(rope theta, scaling) from ``rope_parameters`` (transformers 5) or ``rope_theta``/``rope_scaling``."""
    params = dict(getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {})
    theta = float(params.get("rope_theta", getattr(cfg, "rope_theta", None) or 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ("default", "linear"):
        raise UnsupportedModelError(f"model.config rope type {kind!r}: the GGUF export maps default and linear RoPE")
    return theta, params if kind == "linear" else {}


def _file_type(tensors: list[_Tensor]) -> int:
    import gguf

    kinds = {t.qtype for t in tensors}
    if gguf.GGMLQuantizationType.Q4_0 in kinds:
        return int(gguf.LlamaFileType.MOSTLY_Q4_0)
    if gguf.GGMLQuantizationType.Q8_0 in kinds:
        return int(gguf.LlamaFileType.MOSTLY_Q8_0)
    return int(gguf.LlamaFileType.ALL_F32)


def _add_hparams(w: Any, model: nn.Module, d: _Dims, vocab: int, tensors: list[_Tensor]) -> None:
    import gguf

    cfg = model.config
    w.add_name(str(getattr(cfg, "_name_or_path", "") or "slimkit-export"))
    w.add_block_count(len(model.model.layers))
    w.add_context_length(int(cfg.max_position_embeddings))
    w.add_embedding_length(int(cfg.hidden_size))
    w.add_feed_forward_length(d.n_ff)
    w.add_head_count(d.n_head)
    w.add_head_count_kv(d.n_kv)
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    theta, scaling = _rope(cfg)
    w.add_rope_freq_base(theta)
    if scaling:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(scaling["factor"]))
    w.add_rope_dimension_count(d.head_dim)
    if d.head_dim * d.n_head != int(cfg.hidden_size):
        w.add_key_length(d.head_dim)
        w.add_value_length(d.head_dim)
    w.add_vocab_size(vocab)
    w.add_file_type(_file_type(tensors))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def pre_tokenizer_name(tokenizer: Any) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` for this tokenizer, identified as ``convert_hf_to_gguf.py`` does
    (sha256 of the ids of a probe text); an unknown pre-tokenizer is refused rather than guessed."""
    digest = hashlib.sha256(str(tokenizer.encode(_PROBE)).encode()).hexdigest()
    if digest not in _PRE_BY_HASH:
        raise UnsupportedModelError(
            f"the tokenizer's pre-tokenizer (probe hash {digest}) is not one llama.cpp's llama architecture is known "
            f"to implement ({', '.join(sorted(set(_PRE_BY_HASH.values())))})")
    return _PRE_BY_HASH[digest]


def _bpe_merges(tokenizer: Any) -> list[str]:
    """``"a b"`` merge strings; a space inside a part is written as U+0120+... as llama.cpp's gguf-py does."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = json.loads(backend.to_str())["model"] if backend is not None else {}
    if model.get("type") != "BPE":
        raise UnsupportedModelError(
            f"tokenizer {type(tokenizer).__name__}: the GGUF export writes byte-level BPE tokenizers (tokenizer.json, "
            f"model type BPE); this one is {model.get('type', 'not a fast tokenizer')!r}")
    merges = model.get("merges") or []
    if merges and not isinstance(merges[0], str):
        merges = [" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in pair)
                  for pair in merges]
    return list(merges)


def _vocab(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token strings and types for ids 0..vocab_size-1 (``get_vocab_base`` in convert_hf_to_gguf.py)."""
    import gguf

    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    if max(reverse) >= vocab_size:
        raise UnsupportedModelError(
            f"the tokenizer has token id {max(reverse)} but the model's embedding has only {vocab_size} rows")
    added, decoder = tokenizer.get_added_vocab(), tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
            continue
        kind = gguf.TokenType.NORMAL
        if token in added:
            if not decoder[i].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            looks_special = token.startswith("<|") and token.endswith("|>")
            kind = gguf.TokenType.CONTROL if decoder[i].special or looks_special else gguf.TokenType.USER_DEFINED
        tokens.append(token)
        types.append(int(kind))
    return tokens, types


def _add_tokenizer(w: Any, tokenizer: Any, vocab_size: int) -> None:
    if tokenizer is None:
        raise UnsupportedModelError(
            "GGUF export needs the model's tokenizer (llama.cpp reads the vocabulary from the file); pass "
            "tokenizer= to sk.export or export a checkpoint whose base model slimkit knows")
    tokens, types = _vocab(tokenizer, vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre_tokenizer_name(tokenizer))
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(_bpe_merges(tokenizer))
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "unk": tokenizer.unk_token_id,
           "pad": tokenizer.pad_token_id}
    for kind, tid in ids.items():
        if tid is not None:
            getattr(w, f"add_{kind}_token_id")(int(tid))
    probe = list(tokenizer("a")["input_ids"])  # what the tokenizer really adds around a text
    w.add_add_bos_token(bool(probe) and probe[0] == ids["bos"])
    w.add_add_eos_token(bool(probe) and len(probe) > 1 and probe[-1] == ids["eos"])
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str):
        w.add_chat_template(template)


# --------------------------------------------------------------------------- exporter
@register_exporter("gguf")
def export_gguf(model: nn.Module, tmp_dir: Path, options: ExportOptions) -> str:
    """Write ``tmp_dir/model.gguf`` for llama.cpp; returns its file name.

    Raises :class:`UnsupportedModelError` naming the model type, the tokenizer or the layer that
    cannot map (with the recipe that does).
    """
    import gguf

    _check_model(model)
    d = _dims(model)
    tensors = _model_tensors(model, d, options.dequantize)
    vocab = int(tensors[0].data.shape[0])
    writer = gguf.GGUFWriter(str(tmp_dir / GGUF_FILE), "llama")
    try:
        _add_hparams(writer, model, d, vocab, tensors)
        _add_tokenizer(writer, options.tokenizer, vocab)
        for t in tensors:
            writer.add_tensor(t.name, t.data, raw_dtype=t.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return GGUF_FILE
