"""Weight-only quantized layers: packed int2/3/4 or int8 codes + float16 group scales.

``WeightOnlyLinear`` (kind ``weight_only_linear``) and ``WeightOnlyEmbedding`` (kind
``weight_only_embedding``) hold their compressed tensors as buffers, so the checkpoint stores the
packed bytes (two int4 codes per byte) and ``sk.load`` refills them after replaying the edit.

Execution (``runtime``), measured on this project's 2-core AVX-512 CPU with torch 2.13 (see
``docs/benchmarks/quantize_llm.md``):

* ``kernel``: torch's integer weight-only kernels, ``aten._weight_int4pack_mm_for_cpu`` (4 bits,
  group 32/64/128/256; K is zero-padded to a multiple of the group, so 576 with group 128 works)
  and ``aten._weight_int8pack_mm`` (8 bits, symmetric, one scale per output channel). These are
  real int4/int8 kernels but on this CPU they are slower than fp32 GEMM (about 20x for one token,
  about 85x for 256 tokens), so they are not the default for long inputs.
* ``dequant``: unpack + dequantize the weight to float32 and run the float GEMM (reported as such).
* ``auto`` (default): the kernel for inputs of at most ``KERNEL_MAX_TOKENS`` rows (decoding, where
  the kernel beats dequantize-then-GEMM), the dequantize path otherwise and for shapes the kernels
  do not take (2/3/5/6/7 bits, other group sizes).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.io.edits import register_module_kind
from slimkit.quantize.weight_only.core import (
    dequantize_groups, n_groups, pack_codes, quantize_groups, unpack_codes, codes_per_byte,
)

__all__ = ["WeightOnlyLinear", "WeightOnlyEmbedding", "KERNEL_MAX_TOKENS", "INT4_KERNEL_GROUPS"]

#: inputs with at most this many rows use the integer kernel under ``runtime: auto``
KERNEL_MAX_TOKENS = 4
#: group sizes ``_weight_int4pack_mm_for_cpu`` accepts
INT4_KERNEL_GROUPS = (32, 64, 128, 256)


class _PackedWeights(nn.Module):
    """Shared storage of packed codes [N, ceil(K/per_byte)], fp16 scales [N, G], uint8 zeros [N, G]."""

    def __init__(self, rows: int, cols: int, bits: int, group_size: int | None, symmetric: bool) -> None:
        super().__init__()
        self.rows, self.cols, self.bits, self.group_size, self.symmetric = rows, cols, bits, group_size, symmetric
        per = codes_per_byte(bits)
        g = n_groups(cols, group_size)
        self.register_buffer("qweight", torch.zeros(rows, -(-cols // per), dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(rows, g, dtype=torch.float16))
        if not symmetric:  # symmetric zero point is 2**(bits-1), implied
            self.register_buffer("zeros", torch.zeros(rows, g, dtype=torch.uint8))

    def set_codes(self, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> None:
        """Store codes uint8 [N, K] and per-group scale/zero [N, G] (scale already fp16-exact)."""
        self.qweight.copy_(pack_codes(codes, self.bits))
        self.scales.copy_(scale.to(torch.float16))
        if not self.symmetric:
            self.zeros.copy_(zero.to(torch.uint8))

    def codes(self) -> torch.Tensor:
        return unpack_codes(self.qweight, self.bits, self.cols)

    def zero_points(self) -> torch.Tensor:
        if self.symmetric:
            return torch.full(self.scales.shape, float(2 ** (self.bits - 1)))
        return self.zeros.float()

    def dequantize(self) -> torch.Tensor:
        """Float32 weight [N, K]."""
        return dequantize_groups(self.codes(), self.scales.float(), self.zero_points(), self.group_size)


@register_module_kind("weight_only_linear")
class WeightOnlyLinear(_PackedWeights):
    """``y = x · (diag(input_scale) ·) dequant(W)^T + b`` with W stored as packed low-bit codes.

    ``input_scale`` [K] (optional) is AWQ's per-input-channel factor: the stored weight is
    ``W · diag(s)`` and the input is multiplied by ``1 / s`` (kept as ``input_scale``).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 4,
                 group_size: int | None = 128, symmetric: bool = False, input_scale: bool = False,
                 runtime: str = "auto") -> None:
        super().__init__(out_features, in_features, bits, group_size, symmetric)
        self.in_features, self.out_features = in_features, out_features
        self.runtime = runtime
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        if input_scale:
            self.register_buffer("input_scale", torch.ones(in_features))
        else:
            self.input_scale = None
        self._kernel: Any = None
        self.slimkit_runtime = self._runtime_name()

    # -- construction
    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None, bits: int, group_size: int | None,
                    symmetric: bool, runtime: str = "auto", input_scale: torch.Tensor | None = None,
                    codes: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> "WeightOnlyLinear":
        """Quantize ``weight`` [N, K] by round-to-nearest, or store given ``codes`` (codes, scale, zero)."""
        n, k = weight.shape
        layer = cls(k, n, bias is not None, bits, group_size, symmetric, input_scale is not None, runtime)
        layer.set_codes(*(codes if codes is not None else quantize_groups(weight, bits, group_size, symmetric)))
        if bias is not None:
            layer.bias.data.copy_(bias.detach().float())
        if input_scale is not None:
            layer.input_scale.copy_(input_scale)
        return layer

    def spec(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None,
                "bits": self.bits, "group_size": self.group_size, "symmetric": self.symmetric,
                "input_scale": self.input_scale is not None, "runtime": self.runtime}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "WeightOnlyLinear":
        gs = spec["group_size"]
        return cls(int(spec["in_features"]), int(spec["out_features"]), bool(spec["bias"]), int(spec["bits"]),
                   None if gs is None else int(gs), bool(spec["symmetric"]), bool(spec["input_scale"]),
                   str(spec.get("runtime", "auto")))

    def slimkit_weights(self) -> dict[str, torch.Tensor]:
        out = {"weight": self.qweight, "scales": self.scales}
        if not self.symmetric:
            out["zeros"] = self.zeros
        if self.bias is not None:
            out["bias"] = self.bias
        return out

    def slimkit_logical_weights(self) -> dict[str, torch.Tensor]:
        """The weight as [out, in] values (for parameter counts; packing is a storage matter)."""
        return {"weight": self.dequantize(), **({"bias": self.bias} if self.bias is not None else {})}

    # -- kernels
    def kernel_name(self) -> str | None:
        """Which integer kernel can run this layer, or None."""
        if self.bits == 4 and self.group_size in INT4_KERNEL_GROUPS:
            return "aten._weight_int4pack_mm_for_cpu"
        if self.bits == 8 and self.group_size is None and self.symmetric:
            return "aten._weight_int8pack_mm"
        return None

    def _runtime_name(self) -> str:
        kernel = self.kernel_name()
        if self.runtime == "dequant" or kernel is None:
            return f"dequantize int{self.bits} -> fp32 GEMM"
        if self.runtime == "kernel":
            return f"torch {kernel}"
        return f"torch {kernel} (<= {KERNEL_MAX_TOKENS} tokens), dequantize -> fp32 GEMM otherwise"

    def _build_kernel(self) -> Any:
        codes = self.codes()
        if self.bits == 8:
            return (codes.to(torch.int16) - 128).to(torch.int8).contiguous(), self.scales.float().reshape(-1)
        g = self.group_size
        pad = (-self.in_features) % g
        u = nn.functional.pad(codes.to(torch.int32), (0, pad), value=8)  # [N, Kp]
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(u, 1)
        s = self.scales.float()
        zf = (8.0 - self.zero_points()) * s  # kernel computes (u - 8) * s + zf
        sz = torch.stack([s.t(), zf.t()], dim=-1).contiguous()  # [G, N, 2]
        return packed, sz, pad

    def _kernel_forward(self, x2: torch.Tensor) -> torch.Tensor:
        if self._kernel is None:
            self._kernel = self._build_kernel()
        if self.bits == 8:
            w8, s = self._kernel
            return torch.ops.aten._weight_int8pack_mm(x2, w8, s)
        packed, sz, pad = self._kernel
        xp = nn.functional.pad(x2, (0, pad)) if pad else x2
        return torch.ops.aten._weight_int4pack_mm_for_cpu(xp.contiguous(), packed, self.group_size, sz)

    def _use_kernel(self, x2: torch.Tensor) -> bool:
        if self.kernel_name() is None or x2.device.type != "cpu" or self.runtime == "dequant":
            return False
        return self.runtime == "kernel" or x2.shape[0] <= KERNEL_MAX_TOKENS

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._kernel = None  # new tensors: repack at next call
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_kernel"] = None
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float()  # [tokens, in]
        if self.input_scale is not None:
            x2 = x2 * self.input_scale
        if self._use_kernel(x2):
            out = self._kernel_forward(x2)
            if self.bias is not None:
                out = out + self.bias
        else:
            out = nn.functional.linear(x2, self.dequantize().to(x2), None if self.bias is None else self.bias.to(x2))
        return out.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, symmetric={self.symmetric}, runtime={self.runtime}")


@register_module_kind("weight_only_embedding")
class WeightOnlyEmbedding(_PackedWeights):
    """Embedding table stored as packed low-bit codes; only the looked-up rows are dequantized."""

    slimkit_runtime = "gather packed rows -> dequantize"

    def __init__(self, num_embeddings: int, embedding_dim: int, bits: int = 8, group_size: int | None = None,
                 symmetric: bool = False) -> None:
        super().__init__(num_embeddings, embedding_dim, bits, group_size, symmetric)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, bits: int, group_size: int | None, symmetric: bool) -> "WeightOnlyEmbedding":
        layer = cls(emb.num_embeddings, emb.embedding_dim, bits, group_size, symmetric)
        layer.set_codes(*quantize_groups(emb.weight.detach(), bits, group_size, symmetric))
        return layer

    @classmethod
    def sharing(cls, head: "WeightOnlyLinear") -> "WeightOnlyEmbedding":
        """The input-embedding view of a quantized output head it was tied to: the same packed
        codes, scales and zero points (one copy in memory and in the checkpoint), as the float
        model shared one table. The head's rows are the vocabulary, its groups run along the model
        width, which is the embedding's layout."""
        if head.input_scale is not None:
            raise ValueError("a head quantized with an input scale (AWQ) holds W * s, not the embedding table")
        layer = cls(head.out_features, head.in_features, head.bits, head.group_size, head.symmetric)
        for name in ("qweight", "scales", "zeros"):
            if getattr(head, name, None) is not None:
                layer.register_buffer(name, getattr(head, name))
        return layer

    def spec(self) -> dict[str, Any]:
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim, "bits": self.bits,
                "group_size": self.group_size, "symmetric": self.symmetric}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "WeightOnlyEmbedding":
        gs = spec["group_size"]
        return cls(int(spec["num_embeddings"]), int(spec["embedding_dim"]), int(spec["bits"]),
                   None if gs is None else int(gs), bool(spec["symmetric"]))

    def slimkit_weights(self) -> dict[str, torch.Tensor]:
        out = {"weight": self.qweight, "scales": self.scales}
        if not self.symmetric:
            out["zeros"] = self.zeros
        return out

    def slimkit_logical_weights(self) -> dict[str, torch.Tensor]:
        """The table as [rows, dim] values (for parameter counts)."""
        return {"weight": self.dequantize()}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        codes = unpack_codes(self.qweight[flat], self.bits, self.cols)  # [T, D]
        zeros = self.zeros[flat].float() if not self.symmetric else torch.full(
            (flat.numel(), self.scales.shape[1]), float(2 ** (self.bits - 1)))
        rows = dequantize_groups(codes, self.scales[flat].float(), zeros, self.group_size)
        return rows.reshape(*ids.shape, self.embedding_dim)
