"""Group-wise weight-only quantization math and bit packing (pure tensor functions).

Convention (the GPTQ one): a weight row is cut into groups of ``group_size`` consecutive input
columns (the last group may be shorter when ``group_size`` does not divide the width, e.g. 576 with
128); each group has a float scale ``s`` and an integer zero point ``z`` and its values are stored
as unsigned codes ``u = clamp(round(w / s) + z, 0, 2**bits - 1)``; ``w ~ (u - z) * s``.

* asymmetric: ``s = (max - min) / (2**bits - 1)``, ``z = round(-min / s)`` (stored per group);
* symmetric: ``s = max|w| / ((2**bits - 1) / 2)``, ``z = 2**(bits - 1)`` (implied, not stored).

Scales are rounded to float16 *before* the codes are computed, so the float16 scales stored in the
checkpoint reproduce exactly the values the codes were fitted to.
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "n_groups", "group_params", "quantize_codes", "quantize_groups", "dequantize_groups",
    "expand_groups", "pack_codes", "unpack_codes", "codes_per_byte", "sqnr_db",
]


def n_groups(in_features: int, group_size: int | None) -> int:
    """Number of column groups; ``group_size=None`` means one group per row (per output channel)."""
    return 1 if group_size is None else math.ceil(in_features / group_size)


def group_params(w: torch.Tensor, bits: int, symmetric: bool, *, clip_search: int = 0,
                 col_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of each row of ``w`` [N, cols] -> (scale [N] float32, zero [N] float32).

    ``clip_search=0``: the min/max range. ``clip_search=n``: also try the range shrunk by
    ``1 - 0.5 i / n`` (i = 1..n) and keep, per row, the one with the smallest squared rounding
    error, weighted per column by ``col_weight`` [cols] when given (GPTQ passes the Hessian
    diagonal, i.e. each input's energy). Clipping a few outliers buys finer steps for the rest.
    """
    if clip_search <= 0:
        return _minmax_params(w, bits, symmetric, 1.0)
    w = w.float()
    cw = torch.ones(w.shape[1]) if col_weight is None else col_weight.float().reshape(-1)
    best_s, best_z = _minmax_params(w, bits, symmetric, 1.0)
    best_err = _rounding_error(w, best_s, best_z, bits, cw)
    for i in range(1, clip_search + 1):
        s, z = _minmax_params(w, bits, symmetric, 1.0 - 0.5 * i / clip_search)
        err = _rounding_error(w, s, z, bits, cw)
        better = err < best_err
        best_s, best_z, best_err = (torch.where(better, s, best_s), torch.where(better, z, best_z),
                                    torch.minimum(err, best_err))
    return best_s, best_z


def _rounding_error(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int,
                    col_weight: torch.Tensor) -> torch.Tensor:
    """Per-row ``Σ_j c_j (w - q(w))_j²`` for per-row scale/zero -> [N]."""
    deq = (quantize_codes(w, scale, zero, bits).float() - zero.reshape(-1, 1)) * scale.reshape(-1, 1)
    return ((w - deq).pow(2) * col_weight.reshape(1, -1)).sum(dim=1)


def _minmax_params(w: torch.Tensor, bits: int, symmetric: bool, shrink: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale/zero from each row's min/max range multiplied by ``shrink`` (1.0: the full range)."""
    maxq = 2 ** bits - 1
    w = w.float()
    if symmetric:
        amax = w.abs().amax(dim=1) * shrink
        scale = amax / (maxq / 2)
        zero = torch.full_like(scale, float(2 ** (bits - 1)))
    else:
        lo = w.amin(dim=1).clamp(max=0.0) * shrink  # keep 0 representable
        hi = w.amax(dim=1).clamp(min=0.0) * shrink
        scale = (hi - lo) / maxq
        zero = None
    scale = scale.clamp_min(1e-8).to(torch.float16).float()  # stored as fp16: fit codes to it
    if zero is None:
        zero = torch.round(-lo / scale).clamp(0, maxq)
    return scale, zero


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes of ``w`` [N, cols] for per-row (or broadcastable) ``scale``/``zero`` -> uint8 [N, cols]."""
    maxq = 2 ** bits - 1
    s = scale.reshape(-1, 1) if scale.dim() == 1 else scale
    z = zero.reshape(-1, 1) if zero.dim() == 1 else zero
    return torch.clamp(torch.round(w.float() / s) + z, 0, maxq).to(torch.uint8)


def expand_groups(per_group: torch.Tensor, group_size: int | None, in_features: int) -> torch.Tensor:
    """[N, G] -> [N, in_features]: each group's value repeated over its columns (last group cut)."""
    if group_size is None:
        return per_group.reshape(-1, 1).expand(-1, in_features)
    return per_group.repeat_interleave(group_size, dim=1)[:, :in_features]


def quantize_groups(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool, *,
                    clip_search: int = 0,
                    col_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest group quantization of ``w`` [N, K] -> (codes uint8 [N, K], scale [N, G], zero [N, G]).

    ``clip_search`` / ``col_weight`` [K]: the per-group range search of :func:`group_params`.
    """
    n, k = w.shape
    step = k if group_size is None else group_size
    scales, zeros, codes = [], [], []
    for start in range(0, k, step):
        chunk = w[:, start:start + step]
        cw = None if col_weight is None else col_weight[start:start + step]
        s, z = group_params(chunk, bits, symmetric, clip_search=clip_search, col_weight=cw)
        codes.append(quantize_codes(chunk, s, z, bits))
        scales.append(s)
        zeros.append(z)
    return torch.cat(codes, dim=1), torch.stack(scales, dim=1), torch.stack(zeros, dim=1)


def dequantize_groups(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                      group_size: int | None) -> torch.Tensor:
    """Float32 weight [N, K] from codes [N, K] and per-group scale/zero [N, G]."""
    k = codes.shape[1]
    s = expand_groups(scale.float(), group_size, k)
    z = expand_groups(zero.float(), group_size, k)
    return (codes.float() - z) * s


def codes_per_byte(bits: int) -> int:
    """How many codes share one byte: 4 at 2 bits, 2 at 3-4 bits, 1 at 5-8 bits."""
    return 8 // bits if bits in (1, 2, 4) else (2 if bits == 3 else 1)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack uint8 codes [N, K] (each < 2**bits) into bytes [N, ceil(K / per_byte)].

    Code ``j`` of a byte sits at bit offset ``j * (8 // per_byte)`` (low bits first): two int4 codes
    per byte, low nibble = even column.
    """
    per = codes_per_byte(bits)
    if per == 1:
        return codes.to(torch.uint8).contiguous()
    width = 8 // per
    n, k = codes.shape
    pad = (-k) % per
    c = torch.nn.functional.pad(codes.to(torch.uint8), (0, pad)).reshape(n, -1, per)
    out = torch.zeros(n, c.shape[1], dtype=torch.uint8)
    for j in range(per):
        out |= c[:, :, j] << (j * width)
    return out


def unpack_codes(packed: torch.Tensor, bits: int, in_features: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes` -> uint8 codes [N, in_features]."""
    per = codes_per_byte(bits)
    if per == 1:
        return packed
    width = 8 // per
    mask = (1 << width) - 1
    parts = [(packed >> (j * width)) & mask for j in range(per)]
    return torch.stack(parts, dim=-1).reshape(packed.shape[0], -1)[:, :in_features]


def sqnr_db(ref: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: ``10 log10(|ref|^2 / |ref - approx|^2)``."""
    ref, approx = ref.detach(), approx.detach()
    noise = (ref.float() - approx.float()).pow(2).sum().clamp_min(1e-30)
    return float(10 * torch.log10(ref.float().pow(2).sum() / noise))
