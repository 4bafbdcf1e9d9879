"""Per-layer sparsity maps stream exactly like the whole-model step; ``allocation: owl`` is refused."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import slimkit as sk
from tests.stream.conftest import calib_batches
from tests.stream.test_stream_equal import stored_tensors, whole_and_streamed
from tests.stream.test_stream_faults import assert_nothing_left

#: block 0's MLP heavily pruned, attention of block 1 lightly, everything else at 0.5
MAP = {"re:model\\.layers\\.0\\.mlp\\..*": 0.8, "re:model\\.layers\\.1\\.self_attn\\..*": 0.2, "re:.*": 0.5}


def _sparsity(t: torch.Tensor) -> float:
    return float((t == 0).sum()) / t.numel()


@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "magnitude"])
def test_per_layer_map_streams_like_whole(tiny_llama_dir: Path, tmp_path: Path, method: str) -> None:
    recipe = [{"prune": {"method": method, "sparsity": MAP}}]
    whole, streamed = whole_and_streamed(tiny_llama_dir, recipe, tmp_path)
    a, b = stored_tensors(whole), stored_tensors(streamed)
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    model = sk.load(streamed)
    # the map's values reached the layers (not one number for all): exact counts per layer
    expect = {"model.layers.0.mlp.up_proj": 0.8, "model.layers.0.mlp.down_proj": 0.8,
              "model.layers.1.self_attn.q_proj": 0.2, "model.layers.1.mlp.up_proj": 0.5,
              "model.layers.2.self_attn.o_proj": 0.5}
    for name, s in expect.items():
        w = model.get_submodule(name).weight
        assert _sparsity(w) == pytest.approx(s, abs=1.0 / w.shape[1]), name


def test_map_with_unmatched_layer_refused(tiny_llama_dir: Path, tmp_path: Path) -> None:
    recipe = [{"prune": {"method": "wanda", "sparsity": {"re:.*\\.mlp\\..*": 0.5}}}]
    with pytest.raises(sk.ConfigError, match="self_attn.*matched by no rule"):
        sk.compress_stream(tiny_llama_dir, recipe, tmp_path / "out", calib=calib_batches(), progress=False)
    assert_nothing_left(tmp_path / "out")


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_owl_allocation_refused_before_work(tiny_llama_dir: Path, tmp_path: Path, method: str) -> None:
    recipe = [{"prune": {"method": method, "sparsity": 0.5, "allocation": "owl"}}]
    with pytest.raises(sk.ConfigError, match="allocation = 'owl'.*resolved_sparsity"):
        sk.compress_stream(tiny_llama_dir, recipe, tmp_path / "out", calib=calib_batches(), progress=False)
    assert_nothing_left(tmp_path / "out")
