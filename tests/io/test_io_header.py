"""The safetensors reader judges a file by its header, not by the first two bytes (regression).

The first 8 bytes of a safetensors file are the header length, little-endian: a valid header of
1,408 bytes starts with ``\\x80\\x05``, which is also the pickle protocol-5 magic.
"""
from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from slimkit.core.errors import CheckpointError
from slimkit.io.checkpoint import read_tensors


def _write_safetensors(path: Path, header_len: int) -> torch.Tensor:
    data = np.arange(4, dtype=np.float32)
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    header = header + b" " * (header_len - len(header))  # safetensors allows trailing-space padding
    path.write_bytes(struct.pack("<Q", header_len) + header + data.tobytes())
    return torch.from_numpy(data)


@pytest.mark.parametrize("header_len", [0x0580, 0x0280, 0x4B50])  # b"\x80\x05", b"\x80\x02", b"PK"
def test_valid_file_whose_length_bytes_look_like_a_pickle_loads(tmp_path: Path, header_len: int) -> None:
    expected = _write_safetensors(tmp_path / "m.safetensors", header_len)
    assert (tmp_path / "m.safetensors").read_bytes()[:1] in (b"\x80", b"P")
    assert torch.equal(read_tensors(tmp_path / "m.safetensors")["w"], expected)


def test_real_pickle_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=5))
    with pytest.raises(CheckpointError, match="pickle"):
        read_tensors(path)
