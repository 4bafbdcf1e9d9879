"""Per-tensor storage encodings so that bytes on disk track what compression bought.

* ``dense``: the tensor as is (int8 / packed int4 buffers of quantized layers are stored dense
  in their own dtype, so they are already small).
* ``bitmask``: a tensor (float or int8) that is mostly zeros is stored as a packed bit mask (1 bit per
  element) plus its nonzero values in order. It is chosen automatically when it saves at least
  ``MIN_SAVING`` of the dense bytes, and decodes exactly (a ``-0.0`` comes back as ``+0.0``).
* ``nm``: a tensor whose rows hold at most N nonzeros in every group of M consecutive entries of the
  last dim (N:M semi-structured sparsity, e.g. 2:4) is stored as exactly N values per group plus the
  group's pattern id (which N of the M positions, ``ceil(log2(C(M, N)))`` bits per group). It is
  chosen over ``bitmask`` when it is smaller (2:4 fp32: 2.09 vs 2.13 bytes per weight).
"""
from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from slimkit.core.errors import CheckpointError

__all__ = ["encode_tensor", "decode_tensor", "MIN_SAVING"]

#: fraction of the dense bytes a sparse encoding must save to be used
MIN_SAVING = 0.10

_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float16, torch.bfloat16, torch.float64,
    torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool,
)}


def _bitmask_bytes(t: torch.Tensor, nnz: int) -> int:
    return (t.numel() + 7) // 8 + nnz * t.element_size()


#: group sizes M tried by the ``nm`` encoding
NM_GROUPS = (4, 8)


@lru_cache(maxsize=None)
def _nm_table(n: int, m: int) -> torch.Tensor:
    """``[C(m, n), m]`` bool: row ``k`` is the k-th choice of ``n`` kept positions out of ``m``."""
    combos = list(itertools.combinations(range(m), n))
    table = torch.zeros(len(combos), m, dtype=torch.bool)
    for k, c in enumerate(combos):
        table[k, list(c)] = True
    return table


def _nm_bits(n: int, m: int) -> int:
    return max(1, math.ceil(math.log2(math.comb(m, n))))


def _nm_fit(t: torch.Tensor) -> tuple[int, int] | None:
    """The cheapest ``(n, m)`` with n/m <= 1/2 such that every group of m holds <= n nonzeros."""
    if t.dim() == 0 or t.shape[-1] % 4:
        return None
    best = None
    for m in NM_GROUPS:
        if t.shape[-1] % m:
            continue
        n = int((t.reshape(-1, m) != 0).sum(-1).max())
        if 0 < n <= m // 2:
            size = t.numel() // m * (n * t.element_size() * 8 + _nm_bits(n, m))
            if best is None or size < best[0]:
                best = (size, n, m)
    return None if best is None else (best[1], best[2])


def _encode_nm(name: str, t: torch.Tensor, n: int, m: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    groups = t.reshape(-1, m)  # [G, m]
    nz = groups != 0
    # fill each group up to exactly n chosen positions: nonzeros first, then the earliest zeros
    rank = nz.float() * 2 - torch.arange(m).float() / m  # higher = chosen first
    chosen = torch.zeros_like(nz).scatter_(1, torch.topk(rank, n, dim=1).indices, True)
    table = _nm_table(n, m)  # [K, m]
    codes = 1 << torch.arange(m)
    ids = _ids_from_keys((chosen.long() * codes).sum(1), table, codes)  # [G]
    bits = _nm_bits(n, m)
    id_bits = ((ids[:, None] >> torch.arange(bits - 1, -1, -1)) & 1).to(torch.uint8).reshape(-1)
    values = groups[chosen].clone()  # row-major: n values per group, in position order
    record = {"encoding": "nm", "n": n, "m": m, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
    return {f"{name}.__nm_ids": torch.from_numpy(np.packbits(id_bits.numpy())), f"{name}.__values": values}, record


def _ids_from_keys(keys: torch.Tensor, table: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Pattern id of each group from its bit key (vectorised lookup in a dense key -> id array)."""
    inverse = torch.full((1 << table.shape[1],), -1, dtype=torch.int64)
    inverse[(table.long() * codes).sum(1)] = torch.arange(table.shape[0])
    return inverse[keys]


def _decode_nm(name: str, record: dict[str, Any], tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    n, m = int(record["n"]), int(record["m"])
    shape = [int(s) for s in record["shape"]]
    n_groups = int(np.prod(shape)) // m
    bits = _nm_bits(n, m)
    raw = np.unpackbits(tensors[f"{name}.__nm_ids"].numpy(), count=n_groups * bits)
    ids = (torch.from_numpy(raw.astype(np.int64)).reshape(n_groups, bits) << torch.arange(bits - 1, -1, -1)).sum(1)
    chosen = _nm_table(n, m)[ids]  # [G, m]
    out = torch.zeros(n_groups, m, dtype=_DTYPES[record["dtype"]])
    out[chosen] = tensors[f"{name}.__values"]
    return out.reshape(shape)


def encode_tensor(name: str, t: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors to write for ``name`` and the JSON record that decodes them."""
    t = t.detach().cpu().contiguous()
    if t.dtype != torch.bool and t.element_size() >= 1 and t.numel() >= 64:
        nnz = int(torch.count_nonzero(t))
        dense = t.numel() * t.element_size()
        fit = _nm_fit(t) if t.is_floating_point() or t.dtype == torch.int8 else None
        if fit is not None:
            n, m = fit
            nm_bytes = t.numel() // m * n * t.element_size() + (t.numel() // m * _nm_bits(n, m) + 7) // 8
            if nm_bytes < _bitmask_bytes(t, nnz) and nm_bytes <= (1 - MIN_SAVING) * dense:
                return _encode_nm(name, t, n, m)
        if _bitmask_bytes(t, nnz) <= (1 - MIN_SAVING) * dense:
            mask = (t != 0).reshape(-1)
            bits = torch.from_numpy(np.packbits(mask.numpy()))
            record = {"encoding": "bitmask", "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
            return {f"{name}.__mask": bits, f"{name}.__values": t.reshape(-1)[mask].clone()}, record
    return {name: t}, {"encoding": "dense"}


def decode_tensor(name: str, record: dict[str, Any], tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rebuild the tensor ``name`` from what :func:`encode_tensor` wrote."""
    kind = record.get("encoding", "dense")
    try:
        if kind == "dense":
            return tensors[name]
        if kind == "bitmask":
            shape = [int(s) for s in record["shape"]]
            numel = int(np.prod(shape)) if shape else 1
            bits = tensors[f"{name}.__mask"].numpy()
            mask = torch.from_numpy(np.unpackbits(bits, count=numel).astype(bool))
            out = torch.zeros(numel, dtype=_DTYPES[record["dtype"]])
            out[mask] = tensors[f"{name}.__values"]
            return out.reshape(shape)
        if kind == "nm":
            return _decode_nm(name, record, tensors)
    except KeyError as exc:
        raise CheckpointError(f"checkpoint is missing tensor data for {name!r} ({exc})") from None
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint data for {name!r} is inconsistent: {exc}") from None
    raise CheckpointError(f"tensor {name!r} has unknown encoding {kind!r}")
