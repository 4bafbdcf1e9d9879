"""Weight-only shared pieces: bit packing, group math, the packed layers and their kernels."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from slimkit.quantize.weight_only.core import (
    dequantize_groups, n_groups, pack_codes, quantize_groups, sqnr_db, unpack_codes,
)
from slimkit.quantize.weight_only.layer import WeightOnlyEmbedding, WeightOnlyLinear


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("cols", [1, 7, 64, 99])
def test_pack_unpack_bit_exact(bits: int, cols: int) -> None:
    codes = torch.randint(0, 2 ** bits, (5, cols), generator=torch.Generator().manual_seed(bits), dtype=torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8
    per = {2: 4, 3: 2, 4: 2}.get(bits, 1)
    assert packed.shape == (5, -(-cols // per))
    assert torch.equal(unpack_codes(packed, bits, cols), codes)


def test_int4_two_codes_per_byte_low_nibble_first() -> None:
    packed = pack_codes(torch.tensor([[1, 2, 15]], dtype=torch.uint8), 4)
    assert packed.tolist() == [[0x21, 0x0F]]


def test_group_size_not_dividing_width() -> None:
    w = torch.randn(8, 576)
    codes, scale, zero = quantize_groups(w, 4, 128, symmetric=False)
    assert scale.shape == (8, 5) == zero.shape and n_groups(576, 128) == 5
    # the last (64-wide) group is fitted on its own columns: its max is reached exactly
    deq = dequantize_groups(codes, scale, zero, 128)
    tail = w[:, 512:]
    assert torch.allclose(deq[:, 512:].amax(1), tail.amax(1), atol=float(scale[:, 4].max()) / 2 + 1e-6)
    assert sqnr_db(w, deq) > 18.0


@pytest.mark.parametrize("bits,expected_db", [(8, 40.0), (4, 17.0), (3, 11.0), (2, 4.5)])
def test_rtn_sqnr_by_bits(bits: int, expected_db: float) -> None:
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
    deq = dequantize_groups(*quantize_groups(w, bits, 64, symmetric=False), 64)
    assert sqnr_db(w, deq) >= expected_db


def test_symmetric_zero_point_is_implied() -> None:
    layer = WeightOnlyLinear.from_weight(torch.randn(16, 64), None, 4, 32, symmetric=True)
    assert not hasattr(layer, "zeros") or "zeros" not in dict(layer.named_buffers())
    asym = WeightOnlyLinear.from_weight(torch.randn(16, 64), None, 4, 32, symmetric=False)
    assert asym.zeros.dtype == torch.uint8 and asym.zeros.shape == (16, 2)


@pytest.mark.parametrize("bits,group,sym", [(4, 64, False), (4, 128, True), (4, 32, False), (8, None, True)])
def test_kernel_path_matches_dequantize_path(bits: int, group, sym: bool) -> None:
    torch.manual_seed(0)
    w, b = torch.randn(48, 576), torch.randn(48)
    kernel = WeightOnlyLinear.from_weight(w, b, bits, group, sym, runtime="kernel")
    deq = WeightOnlyLinear.from_weight(w, b, bits, group, sym, runtime="dequant")
    assert kernel.kernel_name() is not None
    x = torch.randn(3, 576)
    ref = x @ deq.dequantize().t() + b
    assert torch.allclose(kernel(x), ref, atol=1e-3, rtol=1e-4)
    assert torch.allclose(deq(x), ref, atol=1e-4)


def test_auto_runtime_dispatches_by_tokens() -> None:
    layer = WeightOnlyLinear.from_weight(torch.randn(8, 64), None, 4, 64, False)
    assert layer._use_kernel(torch.randn(1, 64)) and not layer._use_kernel(torch.randn(64, 64))
    odd = WeightOnlyLinear.from_weight(torch.randn(8, 96), None, 4, 48, False)  # 48 not a kernel group
    assert odd.kernel_name() is None and "dequantize" in odd.slimkit_runtime


def test_embedding_rows_match_dequantized_table() -> None:
    emb = nn.Embedding(50, 24)
    q = WeightOnlyEmbedding.from_embedding(emb, 8, None, False)
    ids = torch.tensor([[0, 3, 49], [7, 7, 1]])
    full = q.dequantize()
    assert torch.equal(q(ids), full[ids])
    assert sqnr_db(emb.weight, full) > 40.0
