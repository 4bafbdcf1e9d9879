"""Model size: parameter counts and the bytes of a saved checkpoint.

Counting rule: every parameter tensor counts once, however many modules share it (tied
embeddings and LM heads share one storage). A compressed layer that holds its weights as
buffers (an int8 Linear keeps an int8 weight and float scales, not float parameters) declares
them with ``slimkit_weights() -> dict[str, Tensor]``; those tensors are counted in place of
the layer's own parameters and buffers, and the layer's submodules are not visited. A layer whose
stored tensors are packed (two int4 codes per byte, bit-packed cluster indices) also declares
``slimkit_logical_weights()``: the unpacked weights, one element per weight, which ``params`` and
``nonzero_params`` count, so packing shows in the checkpoint bytes and not as fewer parameters.
"""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

__all__ = ["count_params", "count_nonzero", "checkpoint_bytes", "weight_tensors"]


def weight_tensors(model: nn.Module, *, logical: bool = False) -> list[torch.Tensor]:
    """The model's weight tensors under the counting rule, each storage counted once
    (``logical``: packed layers as their unpacked weights)."""
    seen: set[object] = set()
    unique: list[torch.Tensor] = []
    for tensor in _walk(model, set(), logical):
        key = _storage_key(tensor)
        if key not in seen:
            seen.add(key)
            unique.append(tensor)
    return unique


def count_params(model: nn.Module) -> int:
    """Number of weight elements (tied weights once; ``slimkit_weights`` layers by their tensors)."""
    return sum(t.numel() for t in weight_tensors(model, logical=True))


def count_nonzero(model: nn.Module) -> int:
    """Number of non-zero weight elements, under the same rule as :func:`count_params`."""
    return sum(_nonzero(t) for t in weight_tensors(model, logical=True))


def checkpoint_bytes(model: nn.Module) -> int:
    """Bytes on disk of the model saved with :func:`slimkit.io.checkpoint.save`.

    The model is really saved (into a temporary directory that is removed afterwards), so the
    number includes the file format's headers and metadata: it is what a user would ship.
    """
    from slimkit.io.checkpoint import save  # imported late: the io package may load after this one

    with tempfile.TemporaryDirectory(prefix="slimkit-measure-") as tmp:
        out_dir = Path(tmp) / "checkpoint"
        save(model, out_dir)
        return sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())


def _walk(module: nn.Module, visited: set[int], logical: bool = False) -> Iterator[torch.Tensor]:
    """Yield the weight tensors of ``module`` and its submodules, each module visited once."""
    if id(module) in visited:
        return
    visited.add(id(module))
    declared = getattr(module, "slimkit_logical_weights", None) if logical else None
    declared = declared or getattr(module, "slimkit_weights", None)
    if callable(declared):
        yield from declared().values()
        return
    yield from module.parameters(recurse=False)
    for child in module.children():
        yield from _walk(child, visited, logical)


def _storage_key(tensor: torch.Tensor) -> object:
    """Identity of the memory a tensor covers: storage address, offset and shape.

    Tensors without real memory (meta tensors, empty storages) fall back to object identity.
    """
    if tensor.is_quantized or tensor.is_meta:
        return id(tensor)
    address = tensor.untyped_storage().data_ptr()
    if address == 0:
        return id(tensor)
    return (tensor.device, address, tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()))


def _nonzero(tensor: torch.Tensor) -> int:
    """Non-zero elements; a quantized tensor is judged by its dequantized values."""
    if tensor.is_quantized:
        tensor = tensor.dequantize()
    return int(torch.count_nonzero(tensor.detach()).item())
