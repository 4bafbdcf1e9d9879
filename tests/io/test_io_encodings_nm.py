"""The ``nm`` storage encoding: exact round trip, smaller than bitmask, chosen only when it fits."""
from __future__ import annotations

import pytest
import torch

from slimkit.io.encodings import decode_tensor, encode_tensor
from slimkit.prune.pattern import nm_mask


def stored_bytes(parts: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in parts.values())


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_nm_round_trip_exact_and_small(n, m, dtype) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    w = torch.randn(48, 64).to(dtype)
    w = w * nm_mask(w.float().abs(), n, m)
    parts, record = encode_tensor("w", w)
    assert record["encoding"] == "nm" and (record["n"], record["m"]) == (n, m)
    assert torch.equal(decode_tensor("w", record, parts), w)
    values = w.numel() * n // m * w.element_size()
    assert stored_bytes(parts) <= values + w.numel() // m  # <= 8 bits of pattern id per group
    bitmask = w.numel() // 8 + values
    assert stored_bytes(parts) < bitmask


def test_groups_with_fewer_nonzeros_still_decode() -> None:
    w = torch.zeros(16, 32)
    w[:, ::4] = torch.randn(16, 8)  # 1 nonzero per group of 4
    w[3, 0] = 0  # one group with no nonzero at all
    parts, record = encode_tensor("w", w)
    assert record["encoding"] == "nm"
    assert torch.equal(decode_tensor("w", record, parts), w)


def test_unstructured_sparsity_keeps_bitmask_and_dense_stays_dense() -> None:
    torch.manual_seed(0)
    w = torch.randn(64, 64)
    w[w.abs() < 1.0] = 0  # ~68 % zeros, no N:M structure
    parts, record = encode_tensor("w", w)
    assert record["encoding"] == "bitmask"
    assert torch.equal(decode_tensor("w", record, parts), w)
    dense = torch.randn(64, 64)
    assert encode_tensor("d", dense)[1]["encoding"] == "dense"


def test_width_not_multiple_of_four_is_not_nm() -> None:
    w = torch.zeros(10, 30)
    w[:, 0] = 1.0
    assert encode_tensor("w", w)[1]["encoding"] == "bitmask"
