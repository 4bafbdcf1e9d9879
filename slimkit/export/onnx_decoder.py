"""ONNX export of Llama-family causal LMs with a KV cache, for token-by-token decoding in ONNX Runtime.

The graph is built by hand with ``onnx.helper`` from the model's own tensors, with the operators
ONNX Runtime's CPU EP runs fastest for decoders (the same ones onnxruntime-genai's model builder
emits): ``Gather`` / ``com.microsoft::GatherBlockQuantized`` for the embedding,
``SimplifiedLayerNormalization`` / ``com.microsoft::SkipSimplifiedLayerNormalization`` for RMSNorm
and the residual adds, ``com.microsoft::GroupQueryAttention`` with rotary embedding inside
(cos/sin caches taken from the model's own rotary module, so rope scaling is whatever the model
computes), a SiLU MLP, and for every projection either a float ``MatMul`` (fp32 layers),
``com.microsoft::MatMulNBits`` holding slimkit's own codes, fp16-exact scales and zero points
(weight-only int4/int8 layers: nothing is re-quantized; int4 codes are slimkit's packed bytes), or
for slimkit's dynamic int8 layers (``Int8DynamicLinear``) its int8 weights in
``com.microsoft::MatMulIntegerToFloat``: ``per_token`` activations are quantized in the graph
exactly as slimkit does (``s = max|x_row| / 127``, ``round(x * (1/s))``), shifted by 128 into uint8
with zero point 128 (ORT's fast uint8 x int8 kernel; the integer products are unchanged), the weight
scale applied in the GEMM's epilogue and the row scale after it; ``per_tensor`` activations use
``DynamicQuantizeLinear`` (one uint8 range per call, as fbgemm). Projections reading the same input
(gate/up) share one activation quantization.

Names follow DESIGN.md / Optimum / onnxruntime-genai: inputs ``input_ids`` [batch, seq],
``attention_mask`` [batch, past + seq] and ``past_key_values.{i}.key`` / ``.value``
[batch, kv_heads, past, head_dim] (past may be 0); outputs ``logits`` [batch, seq, vocab] and
``present.{i}.key`` / ``.value`` [batch, kv_heads, past + seq, head_dim]. Positions come from the
attention mask inside GroupQueryAttention (``seqlens_k = sum(mask) - 1``), so padding must be on
the right of each row, as GroupQueryAttention requires.

``MatMulNBits``' ``accuracy_level`` (``ExportOptions.accuracy_level``, default 4 as the peer uses)
lets ORT quantize activations to int8 inside the kernel: fastest, logits within ~1e-2 of slimkit's
model; level 0 computes in fp32 from the same dequantized weights (logits within ~1e-4).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.core.errors import ConfigError, UnsupportedModelError
from slimkit.export.api import ExportOptions

__all__ = ["export_decoder", "is_llama_family", "matmul_nbits_arrays", "MATMUL_NBITS_BITS", "genai_config",
           "GENAI_CONFIG"]

#: weight widths MatMulNBits runs on ORT's CPU EP
MATMUL_NBITS_BITS = (4, 8)
_MS = "com.microsoft"
_EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's limit is 2 GiB: larger models keep tensors beside the graph
_LLAMA_TYPES = ("llama",)


def is_llama_family(model: nn.Module) -> bool:
    """True for a Hugging Face Llama-architecture causal LM (``LlamaForCausalLM``, SmolLM2, ...)."""
    cfg = getattr(model, "config", None)
    return getattr(cfg, "model_type", None) in _LLAMA_TYPES and hasattr(model, "lm_head")


# --------------------------------------------------------------------------- graph builder
class _Graph:
    """Nodes, initializers and value infos of the graph being built, with unique names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.n = 0
        self.consts: set[str] = set()
        self.row_quant: dict[str, tuple[str, str]] = {}  # input -> (uint8 codes, row scale)

    def init(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, name: str, array: np.ndarray) -> str:
        """A small shared constant, stored once however often it is used."""
        if name not in self.consts:
            self.consts.add(name)
            self.init(name, array)
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, name: str | None = None,
           domain: str = "", outputs: list[str] | None = None, **attrs: Any) -> list[str]:
        from onnx import helper

        self.n += 1
        base = name or f"/{op_type}_{self.n}"
        outs = outputs or [f"{base}/output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=base, domain=domain, **attrs))
        return outs

    def one(self, op_type: str, inputs: list[str], **kw: Any) -> str:
        return self.op(op_type, inputs, **kw)[0]


# --------------------------------------------------------------------------- projections
@dataclass
class _Linear:
    """One projection as the exporter sees it: float weight, or slimkit's codes and group scales."""

    name: str
    in_features: int
    out_features: int
    bias: np.ndarray | None
    weight: np.ndarray | None = None          # float32 [N, K] (float layers)
    codes: torch.Tensor | None = None         # uint8 [N, K] (weight-only layers)
    scales: torch.Tensor | None = None        # fp16 [N, G]
    zeros: torch.Tensor | None = None         # uint8 [N, G], None for symmetric
    bits: int = 0
    block: int = 0
    input_scale: np.ndarray | None = None     # AWQ per-input factor [K]
    int8: np.ndarray | None = None            # int8 [N, K] (dynamic int8 layers)
    w_scale: np.ndarray | None = None         # float32 [N] weight scales (dynamic int8 layers)
    activations: str = ""                     # "per_token" / "per_tensor" (dynamic int8 layers)

    @property
    def quantized(self) -> bool:
        return self.codes is not None

    @property
    def kind(self) -> str:
        """``float``, ``nbits`` (weight-only codes) or ``int8`` (dynamic int8 weights)."""
        return "nbits" if self.codes is not None else "int8" if self.int8 is not None else "float"


def _block_size(name: str, group_size: int | None, in_features: int) -> int:
    """MatMulNBits block for slimkit's group size: the same power of two >= 16 (per-channel: one block)."""
    block = 1 << max(4, math.ceil(math.log2(in_features))) if group_size is None else group_size
    if block < 16 or block & (block - 1):
        raise UnsupportedModelError(
            f"{name}: weight-only group_size {group_size} cannot map to MatMulNBits (block sizes are powers "
            f"of two >= 16); re-quantize with group_size 32, 64 or 128 to export it")
    return block


def _read_linear(name: str, mod: nn.Module) -> _Linear:
    """A projection's tensors; weight-only layers keep their codes, anything else is refused by name."""
    from slimkit.quantize.dynamic_int8.core import Int8DynamicLinear
    from slimkit.quantize.weight_only.layer import WeightOnlyLinear

    bias = None if getattr(mod, "bias", None) is None else mod.bias.detach().float().numpy()
    if type(mod) is nn.Linear:
        return _Linear(name, mod.in_features, mod.out_features, bias, weight=mod.weight.detach().float().numpy())
    if isinstance(mod, Int8DynamicLinear):
        scale = mod.weight_scale.detach().float().reshape(-1).numpy()
        return _Linear(name, mod.in_features, mod.out_features, bias, int8=mod.weight_int8.detach().numpy(),
                       w_scale=np.broadcast_to(scale, (mod.out_features,)).astype(np.float32),
                       activations=mod.activations)
    if isinstance(mod, WeightOnlyLinear):
        if mod.bits not in MATMUL_NBITS_BITS:
            raise UnsupportedModelError(
                f"{name}: int{mod.bits} weights cannot map to MatMulNBits (bits {MATMUL_NBITS_BITS}); "
                "re-quantize with bits 4 or 8 to export it")
        iscale = None if mod.input_scale is None else mod.input_scale.detach().float().numpy()
        return _Linear(name, mod.in_features, mod.out_features, bias, codes=mod.codes(), scales=mod.scales,
                       zeros=None if mod.symmetric else mod.zeros, bits=mod.bits,
                       block=_block_size(name, mod.group_size, mod.in_features), input_scale=iscale)
    raise UnsupportedModelError(
        f"{name}: {type(mod).__name__} has no ONNX decoder mapping; exportable projections are float nn.Linear "
        "slimkit weight-only int4/int8 layers (quantize method rtn/gptq/awq) and dynamic int8 layers")


def matmul_nbits_arrays(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                        bits: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """MatMulNBits' ``B`` uint8 [N, blocks, block*bits/8], ``scales`` float32 [N*blocks] and packed
    ``zero_points`` uint8 (None when symmetric: MatMulNBits' default zero 2**(bits-1) is slimkit's)
    from slimkit's codes uint8 [N, K], fp16 scales [N, G] and zeros [N, G].

    Codes are laid out exactly as slimkit packs them (two int4 codes per byte, low nibble = even
    column); a partial last group becomes a padded last block, as MatMulNBits reads it.
    """
    n, k = codes.shape
    blocks = -(-k // block)
    pad_value = 2 ** (bits - 1)  # padded columns meet no input column: their value never matters
    padded = nn.functional.pad(codes.to(torch.uint8), (0, blocks * block - k), value=pad_value)
    b = _pack(padded, bits).reshape(n, blocks, block * bits // 8)
    s = scales.float().reshape(n, blocks).numpy().reshape(-1)
    if scales.shape[1] != blocks:
        raise UnsupportedModelError(f"scales have {scales.shape[1]} groups where MatMulNBits needs {blocks}")
    z = None
    if zeros is not None:
        zz = zeros.to(torch.uint8).reshape(n, blocks)
        if bits == 4:
            zz = nn.functional.pad(zz, (0, blocks % 2), value=pad_value)
        z = _pack(zz, bits).reshape(-1).numpy()
    return b.numpy(), s.astype(np.float32), z


def _pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes [N, C] -> bytes: int8 as is, int4 two per byte (low nibble = even column)."""
    if bits == 8:
        return codes.contiguous()
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()


def _concat_linears(name: str, parts: list[_Linear]) -> _Linear | None:
    """Q/K/V as one projection (rows stacked) when their layouts agree exactly, else None."""
    first = parts[0]
    same = all(p.kind == first.kind and p.in_features == first.in_features for p in parts)
    if first.kind == "int8":
        same = same and all(p.activations == first.activations for p in parts)
    if first.quantized:
        same = same and all(p.bits == first.bits and p.block == first.block and (p.zeros is None) == (first.zeros is None)
                            and _same(p.input_scale, first.input_scale) for p in parts)
    if not same:
        return None
    biases = [p.bias if p.bias is not None else np.zeros(p.out_features, np.float32) for p in parts]
    bias = None if all(p.bias is None for p in parts) else np.concatenate(biases)
    out = sum(p.out_features for p in parts)
    if first.kind == "float":
        return _Linear(name, first.in_features, out, bias, weight=np.concatenate([p.weight for p in parts]))
    if first.kind == "int8":  # per-row weight scales: stacking rows keeps every product exact
        return _Linear(name, first.in_features, out, bias, int8=np.concatenate([p.int8 for p in parts]),
                       w_scale=np.concatenate([p.w_scale for p in parts]), activations=first.activations)
    return _Linear(name, first.in_features, out, bias, codes=torch.cat([p.codes for p in parts]),
                   scales=torch.cat([p.scales for p in parts]),
                   zeros=None if first.zeros is None else torch.cat([p.zeros for p in parts]),
                   bits=first.bits, block=first.block, input_scale=first.input_scale)


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


def _quantize_rows(g: _Graph, x: str) -> tuple[str, str]:
    """slimkit's per-token int8 activations in ONNX ops, once per input tensor: uint8 codes
    ``round(x * (1/s)) + 128`` and the row scale ``s = max(max|x_row| / 127, 1e-12)`` [..., 1]."""
    cached = g.row_quant.get(x)
    if cached is not None:
        return cached
    p = f"{x}/rowquant"
    amax = g.one("ReduceMax", [g.one("Abs", [x], name=f"{p}/Abs"), g.const("axes_last", np.array([-1], np.int64))],
                 keepdims=1, name=f"{p}/ReduceMax")
    s = g.one("Max", [g.one("Div", [amax, g.const("f127", np.array(127.0, np.float32))], name=f"{p}/Div"),
                      g.const("f_eps", np.array(1e-12, np.float32))], name=f"{p}/Scale")
    codes = g.one("Round", [g.one("Mul", [x, g.one("Reciprocal", [s], name=f"{p}/Reciprocal")], name=f"{p}/Mul")],
                  name=f"{p}/Round")
    shifted = g.one("Add", [codes, g.const("f128", np.array(128.0, np.float32))], name=f"{p}/Shift")
    g.row_quant[x] = (g.one("Cast", [shifted], to=2, name=f"{p}/Cast"), s)  # 2: uint8
    return g.row_quant[x]


def _emit_int8(g: _Graph, lin: _Linear, x: str, prefix: str) -> str:
    """Dynamic int8 projection: integer GEMM (uint8 activations x slimkit's int8 weights) to float."""
    w = g.init(f"{lin.name}.weight_int8_t", np.ascontiguousarray(lin.int8.T))
    ws = g.init(f"{lin.name}.weight_scale", lin.w_scale)
    if lin.activations == "per_token":
        xq, s = _quantize_rows(g, x)
        y = g.one("MatMulIntegerToFloat", [xq, w, g.const("f_one", np.array(1.0, np.float32)), ws,
                                           g.const("u8_128", np.array(128, np.uint8))],
                  name=f"{prefix}/MatMulIntegerToFloat", domain=_MS)
        return g.one("Mul", [y, s], name=f"{prefix}/RowScale")
    if lin.activations == "per_tensor":
        xq, s, z = g.op("DynamicQuantizeLinear", [x], n_out=3, name=f"{prefix}/DynamicQuantizeLinear")
        return g.one("MatMulIntegerToFloat", [xq, w, s, ws, z], name=f"{prefix}/MatMulIntegerToFloat", domain=_MS)
    raise UnsupportedModelError(f"{lin.name}: dynamic int8 activations {lin.activations!r} have no ONNX mapping")


def _emit_linear(g: _Graph, lin: _Linear, x: str, accuracy_level: int) -> str:
    """``x @ W^T + b`` as MatMul (float), MatMulNBits (slimkit's codes) or MatMulIntegerToFloat
    (dynamic int8); AWQ input scale as a Mul."""
    prefix = "/" + lin.name.replace(".", "/")
    if lin.input_scale is not None:
        x = g.one("Mul", [x, g.init(f"{lin.name}.input_scale", lin.input_scale)], name=f"{prefix}/InputScale")
    if lin.kind == "int8":
        y = _emit_int8(g, lin, x, prefix)
    elif not lin.quantized:
        w = g.init(f"{lin.name}.weight_t", lin.weight.T.astype(np.float32))
        y = g.one("MatMul", [x, w], name=f"{prefix}/MatMul")
    else:
        b, s, z = matmul_nbits_arrays(lin.codes, lin.scales, lin.zeros, lin.bits, lin.block)
        inputs = [x, g.init(f"{lin.name}.qweight", b), g.init(f"{lin.name}.scales", s)]
        if z is not None:
            inputs.append(g.init(f"{lin.name}.qzeros", z))
        y = g.one("MatMulNBits", inputs, name=f"{prefix}/MatMulNBits", domain=_MS, K=lin.in_features,
                  N=lin.out_features, bits=lin.bits, block_size=lin.block, accuracy_level=accuracy_level)
    if lin.bias is not None:
        y = g.one("Add", [y, g.init(f"{lin.name}.bias", lin.bias.astype(np.float32))], name=f"{prefix}/Bias")
    return y


# --------------------------------------------------------------------------- model pieces
def _check_model(model: nn.Module) -> None:
    if not is_llama_family(model):
        kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise UnsupportedModelError(
            f"ONNX decoder export supports Llama-family causal LMs (LlamaForCausalLM, SmolLM2); got {kind!r}. "
            "GPT-2 style decoders are not mapped yet")
    cfg = model.config
    act = getattr(cfg, "hidden_act", "silu")
    if act != "silu":
        raise UnsupportedModelError(f"model.config.hidden_act {act!r}: the decoder export maps the SiLU MLP only")


def _embedding(g: _Graph, model: nn.Module, ids: str) -> tuple[str, nn.Module]:
    """Token embedding lookup: Gather of the float table or GatherBlockQuantized of slimkit's codes."""
    from slimkit.quantize.weight_only.layer import WeightOnlyEmbedding

    emb = model.get_input_embeddings()
    if type(emb) is nn.Embedding:
        table = g.init("model.embed_tokens.weight", emb.weight.detach().float().numpy())
        return g.one("Gather", [table, ids], name="/model/embed_tokens/Gather"), emb
    if isinstance(emb, WeightOnlyEmbedding):
        name = "model.embed_tokens"
        block = _block_size(name, emb.group_size, emb.embedding_dim)
        if emb.bits not in MATMUL_NBITS_BITS or emb.embedding_dim % block:
            raise UnsupportedModelError(
                f"{name}: int{emb.bits} group {emb.group_size} over width {emb.embedding_dim} cannot map to "
                "GatherBlockQuantized (bits 4/8, group dividing the width)")
        codes = emb.codes()
        data = _pack(codes, emb.bits).numpy()
        inputs = [g.init(f"{name}.qweight", data), ids,
                  g.init(f"{name}.scales", emb.scales.float().numpy())]
        if not emb.symmetric:
            zz = emb.zeros.to(torch.uint8)
            if emb.bits == 4 and zz.shape[1] % 2:  # two int4 zeros per byte: pad an odd row
                zz = nn.functional.pad(zz, (0, 1), value=8)
            inputs.append(g.init(f"{name}.qzeros", _pack(zz, emb.bits).numpy()))
        out = g.one("GatherBlockQuantized", inputs, name="/model/embed_tokens/GatherBlockQuantized", domain=_MS,
                    bits=emb.bits, block_size=block, gather_axis=0, quantize_axis=1)
        return out, emb
    raise UnsupportedModelError(
        f"model.embed_tokens: {type(emb).__name__} has no ONNX mapping (nn.Embedding or slimkit WeightOnlyEmbedding)")


def _lm_head(g: _Graph, model: nn.Module, x: str, emb: nn.Module, accuracy_level: int) -> str:
    """Logits; a float head tied to a float embedding reuses the embedding table (transposed once by ORT)."""
    head = model.get_output_embeddings()
    tied = type(head) is nn.Linear and type(emb) is nn.Embedding and head.weight is emb.weight
    if tied and head.bias is None:
        wt = g.one("Transpose", ["model.embed_tokens.weight"], name="/lm_head/TiedTranspose", perm=[1, 0])
        return g.one("MatMul", [x, wt], name="/lm_head/MatMul", outputs=["logits"])
    y = _emit_linear(g, _read_linear("lm_head", head), x, accuracy_level)
    return g.one("Identity", [y], name="/lm_head/Output", outputs=["logits"])


def _rms_weight(g: _Graph, name: str, norm: nn.Module) -> tuple[str, float]:
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    if eps is None or not hasattr(norm, "weight"):
        raise UnsupportedModelError(f"{name}: {type(norm).__name__} is not an RMSNorm the export maps")
    return g.init(f"{name}.weight", norm.weight.detach().float().numpy()), float(eps)


def _rotary_caches(g: _Graph, model: nn.Module, head_dim: int) -> tuple[str, str]:
    """cos/sin [max_positions, head_dim/2] evaluated by the model's own rotary module (rope scaling included)."""
    n = int(model.config.max_position_embeddings)
    rot = model.model.rotary_emb
    pos = torch.arange(n).unsqueeze(0)
    with torch.no_grad():
        cos, sin = rot(torch.zeros(1, 1, head_dim), pos)
    half = head_dim // 2
    return (g.init("cos_cache", cos[0, :, :half].float().numpy()),
            g.init("sin_cache", sin[0, :, :half].float().numpy()))


def _layer(g: _Graph, i: int, layer: nn.Module, x: str, ctx: dict[str, Any]) -> str:
    """One decoder block's attention (GQA with past/present) and MLP; returns the MLP output before the residual."""
    attn, mlp, hd, acc = layer.self_attn, layer.mlp, ctx["head_dim"], ctx["accuracy_level"]
    p = f"model.layers.{i}"
    q, k, v = (_read_linear(f"{p}.self_attn.{n}_proj", getattr(attn, f"{n}_proj")) for n in "qkv")
    heads, kv_heads = q.out_features // hd, k.out_features // hd
    packed = _concat_linears(f"{p}.self_attn.qkv_proj", [q, k, v])
    if packed is not None:
        qkv = [_emit_linear(g, packed, x, acc), "", ""]
    else:
        qkv = [_emit_linear(g, lin, x, acc) for lin in (q, k, v)]
    ctx["kv_heads"].append(kv_heads)
    out, _, _ = g.op(
        "GroupQueryAttention",
        [*qkv, f"past_key_values.{i}.key", f"past_key_values.{i}.value", ctx["seqlens_k"], ctx["total_len"],
         ctx["cos"], ctx["sin"]],
        name=f"/model/layers.{i}/attn/GroupQueryAttention", domain=_MS,
        outputs=[f"/model/layers.{i}/attn/output", f"present.{i}.key", f"present.{i}.value"],
        num_heads=heads, kv_num_heads=kv_heads, do_rotary=1, rotary_interleaved=0, scale=float(hd ** -0.5))
    attn_out = _emit_linear(g, _read_linear(f"{p}.self_attn.o_proj", attn.o_proj), out, acc)
    w, eps = _rms_weight(g, f"{p}.post_attention_layernorm", layer.post_attention_layernorm)
    normed, _, _, ctx["residual"] = g.op("SkipSimplifiedLayerNormalization", [attn_out, ctx["residual"], w], n_out=4,
                                         name=f"/model/layers.{i}/post_attention_layernorm", domain=_MS, epsilon=eps)
    gate = _emit_linear(g, _read_linear(f"{p}.mlp.gate_proj", mlp.gate_proj), normed, acc)
    up = _emit_linear(g, _read_linear(f"{p}.mlp.up_proj", mlp.up_proj), normed, acc)
    act = g.one("Mul", [gate, g.one("Sigmoid", [gate])], name=f"/model/layers.{i}/mlp/SiLU")
    return _emit_linear(g, _read_linear(f"{p}.mlp.down_proj", mlp.down_proj), g.one("Mul", [act, up]), acc)


def _mask_lengths(g: _Graph) -> tuple[str, str]:
    """GroupQueryAttention's ``seqlens_k`` (sum(mask) - 1, int32 [batch]) and total length (int32 scalar)."""
    one = g.init("const_int64_1", np.array([1], np.int64))
    total = g.one("ReduceSum", ["attention_mask", one], keepdims=0, name="/model/mask/ReduceSum")
    seqlens = g.one("Cast", [g.one("Sub", [total, g.init("const_int64_1s", np.array(1, np.int64))])], to=6,
                    name="/model/mask/seqlens_k")
    width = g.one("Gather", [g.one("Shape", ["attention_mask"]), g.init("const_int64_idx1", np.array(1, np.int64))],
                  axis=0, name="/model/mask/total_len_i64")
    return seqlens, g.one("Cast", [width], to=6, name="/model/mask/total_len")


def _build(model: nn.Module, accuracy_level: int) -> tuple[_Graph, list[int], int, int]:
    cfg = model.config
    hd = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    g = _Graph()
    seqlens, total = _mask_lengths(g)
    cos, sin = _rotary_caches(g, model, hd)
    h, emb = _embedding(g, model, "input_ids")
    ctx: dict[str, Any] = {"head_dim": hd, "accuracy_level": accuracy_level, "seqlens_k": seqlens,
                           "total_len": total, "cos": cos, "sin": sin, "kv_heads": [], "residual": h}
    layers = list(model.model.layers)
    w, eps = _rms_weight(g, "model.layers.0.input_layernorm", layers[0].input_layernorm)
    x = g.one("SimplifiedLayerNormalization", [h, w], axis=-1, epsilon=eps, stash_type=1,
              name="/model/layers.0/input_layernorm")
    for i, layer in enumerate(layers):
        mlp_out = _layer(g, i, layer, x, ctx)
        nxt = layers[i + 1].input_layernorm if i + 1 < len(layers) else model.model.norm
        name = f"model.layers.{i + 1}.input_layernorm" if i + 1 < len(layers) else "model.norm"
        w, eps = _rms_weight(g, name, nxt)
        x, _, _, ctx["residual"] = g.op("SkipSimplifiedLayerNormalization", [mlp_out, ctx["residual"], w], n_out=4,
                                        name=f"/{name.replace('.', '/')}", domain=_MS, epsilon=eps)
    _lm_head(g, model, x, emb, accuracy_level)
    vocab = model.get_output_embeddings().out_features
    return g, ctx["kv_heads"], hd, vocab


def _model_proto(g: _Graph, kv_heads: list[int], hd: int, vocab: int, opset: int) -> Any:
    from onnx import TensorProto, helper

    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [helper.make_tensor_value_info("input_ids", i64, ["batch_size", "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", i64, ["batch_size", "total_sequence_length"])]
    outputs = [helper.make_tensor_value_info("logits", f, ["batch_size", "sequence_length", vocab])]
    for i, kvh in enumerate(kv_heads):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", f,
                                                        ["batch_size", kvh, "past_sequence_length", hd]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", f,
                                                         ["batch_size", kvh, "total_sequence_length", hd]))
    graph = helper.make_graph(g.nodes, "slimkit_decoder", inputs, outputs, initializer=g.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(_MS, 1)],
                             producer_name="slimkit")


def export_decoder(model: nn.Module, tmp_dir: Path, options: ExportOptions) -> str:
    """Write ``tmp_dir/model.onnx``: the Llama-family causal LM ``model`` with KV-cache inputs/outputs,
    weight-only layers as MatMulNBits from slimkit's codes; returns ``"model.onnx"``.

    Raises :class:`UnsupportedModelError` naming the model type or the layer that cannot map.
    """
    import onnx

    _check_model(model)
    accuracy_level = options.accuracy_level
    if accuracy_level not in (0, 1, 2, 3, 4):  # validated here: ExportOptions is a plain dataclass
        raise ConfigError(f"accuracy_level {accuracy_level!r} is not a MatMulNBits accuracy level; valid: 0-4")
    opset = options.opset
    with torch.no_grad():
        g, kv_heads, hd, vocab = _build(model, accuracy_level)
    proto = _model_proto(g, kv_heads, hd, vocab, opset)
    path = Path(tmp_dir) / "model.onnx"
    big = sum(t.ByteSize() for t in proto.graph.initializer) > _EXTERNAL_DATA_BYTES
    onnx.save_model(proto, str(path), save_as_external_data=big, all_tensors_to_one_file=True,
                    location="model.onnx.data")
    if options.tokenizer is not None and hasattr(options.tokenizer, "save_pretrained"):
        options.tokenizer.save_pretrained(str(tmp_dir))  # the runtime side needs it to encode prompts
    if all(k == getattr(model.config, "num_key_value_heads", None) for k in kv_heads):
        # onnxruntime-genai sizes one KV buffer shape for every layer from the config: a decoder whose
        # heads were pruned (per layer) runs in ORT through OrtDecoder only, without this file
        (Path(tmp_dir) / GENAI_CONFIG).write_text(json.dumps(genai_config(model, kv_heads, hd, vocab), indent=1) + "\n")
    return "model.onnx"


#: onnxruntime-genai reads the decoder's shapes, I/O names and generation defaults from this file
GENAI_CONFIG = "genai_config.json"


def genai_config(model: nn.Module, kv_heads: list[int], head_dim: int, vocab: int) -> dict[str, Any]:
    """The ``genai_config.json`` that lets onnxruntime-genai's ``og.Model`` / ``og.Generator`` run the
    exported decoder (its in-place KV buffer and C++ loop are faster than a Python loop over
    ``session.run``): the graph already uses the names and operators its model builder emits.

    Greedy search by default (``do_sample: false``); the token ids come from the model's config.
    """
    cfg = model.config
    gen = getattr(model, "generation_config", None)

    def token(name: str) -> Any:
        value = getattr(gen, name, None) if gen is not None else None
        return value if value is not None else getattr(cfg, name, None)

    eos = token("eos_token_id")
    pad = token("pad_token_id")
    context = int(getattr(cfg, "max_position_embeddings", 2048))
    return {
        "model": {
            "type": "llama", "vocab_size": vocab, "context_length": context,
            "bos_token_id": token("bos_token_id"), "eos_token_id": eos,
            "pad_token_id": pad if pad is not None else (eos[0] if isinstance(eos, list) else eos),
            "decoder": {
                "filename": "model.onnx", "session_options": {"log_id": "slimkit", "provider_options": []},
                "head_size": head_dim, "hidden_size": int(cfg.hidden_size),
                "num_attention_heads": int(cfg.num_attention_heads), "num_hidden_layers": len(kv_heads),
                "num_key_value_heads": max(kv_heads),
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {"do_sample": False, "num_beams": 1, "num_return_sequences": 1, "max_length": context,
                   "min_length": 0, "past_present_share_buffer": True, "temperature": 1.0, "top_k": 1, "top_p": 1.0,
                   "repetition_penalty": 1.0, "length_penalty": 1.0, "early_stopping": True,
                   "no_repeat_ngram_size": 0, "diversity_penalty": 0.0},
    }
