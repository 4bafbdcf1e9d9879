"""Reading a Hugging Face directory's safetensors one tensor at a time, checked before any work.

:class:`ShardReader` maps every tensor name to the shard file holding it (``model.safetensors``
or the shards named by ``model.safetensors.index.json``), and checks every shard's header against
its size on disk up front, so a missing file, an index naming a file that is not there, or a
truncated shard is a :class:`CheckpointError` before a single block is compressed. Tensors are
then read with ``safetensors.safe_open`` only when their block is processed.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from slimkit.core.errors import CheckpointError

__all__ = ["ShardReader", "INDEX_FILE", "SINGLE_FILE"]

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


class ShardReader:
    """Tensor name -> shard file of a Hugging Face directory, every shard checked when built."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.files = self._shard_files()
        self.where: dict[str, Path] = {}
        self.nbytes = 0
        for path in self.files:
            for name, size in _check_shard(path).items():
                self.where[name] = path
                self.nbytes += size
        self._open: dict[Path, object] = {}

    def _shard_files(self) -> list[Path]:
        index = self.directory / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                names = sorted(set(weight_map.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise CheckpointError(f"{index} is not a readable safetensors index: {exc}") from None
            missing = [n for n in names if not (self.directory / n).is_file()]
            if missing:
                raise CheckpointError(f"{index} names shard(s) that are missing: {', '.join(missing)}")
            return [self.directory / n for n in names]
        single = self.directory / SINGLE_FILE
        if single.is_file():
            return [single]
        raise CheckpointError(f"{self.directory} has neither {SINGLE_FILE} nor {INDEX_FILE}")

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor ``name`` read from its shard (a fresh CPU tensor)."""
        path = self.where.get(name)
        if path is None:
            raise CheckpointError(f"{self.directory}: no shard holds tensor {name!r}")
        try:
            if path not in self._open:
                self._open[path] = safe_open(str(path), framework="pt")
            return self._open[path].get_tensor(name)  # type: ignore[attr-defined]
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: cannot read tensor {name!r}: {exc}") from None

    def close(self) -> None:
        """Drop the open shard handles (their memory maps)."""
        self._open.clear()


def _check_shard(path: Path) -> dict[str, int]:
    """``{tensor: bytes}`` of a safetensors shard whose header and data fit its size on disk."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is truncated ({size} bytes)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            raise CheckpointError(f"{path} is truncated: header of {header_len} bytes, file of {size} bytes")
        try:
            header = json.loads(fh.read(header_len))
        except ValueError as exc:
            raise CheckpointError(f"{path} is not a safetensors file (bad header: {exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file (header is not an object)")
    sizes, end = {}, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: header entry {name!r} has no data_offsets") from None
        sizes[name] = stop - start
        end = max(end, stop)
    if 8 + header_len + end > size:
        raise CheckpointError(f"{path} is truncated: its header needs {8 + header_len + end} bytes, "
                              f"the file has {size}")
    return sizes
