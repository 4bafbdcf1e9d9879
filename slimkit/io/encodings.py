"""Per-tensor storage encodings so that bytes on disk track what compression bought.

* ``dense``: the tensor as is (int8 / packed int4 buffers of quantized layers are stored dense
  in their own dtype, so they are already small).
* ``bitmask``: a tensor (float or int8) that is mostly zeros is stored as a packed bit mask (1 bit per
  element) plus its nonzero values in order. It is chosen automatically when it saves at least
  ``MIN_SAVING`` of the dense bytes, and decodes exactly (a ``-0.0`` comes back as ``+0.0``).
"""
from __future__ import annotations

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


def encode_tensor(name: str, t: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors to write for ``name`` and the JSON record that decodes them."""
    t = t.detach().cpu().contiguous()
    if t.dtype != torch.bool and t.element_size() >= 1 and t.numel() >= 64:
        nnz = int(torch.count_nonzero(t))
        dense = t.numel() * t.element_size()
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
    except KeyError as exc:
        raise CheckpointError(f"checkpoint is missing tensor data for {name!r} ({exc})") from None
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint data for {name!r} is inconsistent: {exc}") from None
    raise CheckpointError(f"tensor {name!r} has unknown encoding {kind!r}")
