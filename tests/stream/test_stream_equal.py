"""Streamed block by block == loaded whole, tensor for tensor."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import slimkit as sk
from slimkit.io.checkpoint import read_manifest
from tests.stream.conftest import calib_batches

RECIPES = {
    "rtn": [{"quantize": {"method": "rtn", "bits": 4, "group_size": 32}}],
    "gptq": [{"quantize": {"method": "gptq", "bits": 4, "group_size": 32}}],
    "awq": [{"quantize": {"method": "awq", "bits": 4, "group_size": 32}}],
    "wanda": [{"prune": {"method": "wanda", "sparsity": 0.5}}],
    "sparsegpt": [{"prune": {"method": "sparsegpt", "pattern": "2:4"}}],
    "magnitude": [{"prune": {"method": "magnitude", "sparsity": 0.6}}],
    "dynamic_int8": [{"quantize": {"method": "dynamic_int8"}}],
    "wanda+gptq": [{"prune": {"method": "wanda", "pattern": "2:4"}},
                   {"quantize": {"method": "gptq", "bits": 4, "group_size": 32}}],
}


def stored_tensors(d: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def whole_and_streamed(src: Path, recipe: list, tmp: Path, **kw) -> tuple[Path, Path]:
    model, _ = sk.zoo.load_model(str(src))
    res = sk.compress(model, {"steps": recipe}, calib=calib_batches(), progress=False, measure=False)
    whole = sk.save(res.model, tmp / "whole")
    streamed = sk.compress_stream(src, {"steps": recipe}, tmp / "streamed", calib=calib_batches(), progress=False,
                                  **kw).path
    return whole, streamed


@pytest.mark.parametrize("name", list(RECIPES))
def test_streamed_equals_whole_model(tiny_llama_dir: Path, tmp_path: Path, name: str) -> None:
    whole, streamed = whole_and_streamed(tiny_llama_dir, RECIPES[name], tmp_path)
    a, b = stored_tensors(whole), stored_tensors(streamed)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    ma, mb = read_manifest(whole), read_manifest(streamed)
    assert ma["encodings"] == mb["encodings"] and ma["aliases"] == mb["aliases"]
    assert sorted(ma["edits"], key=str) == sorted(mb["edits"], key=str)
    assert ma["base"]["hf_class"] == mb["base"]["hf_class"]
    ids = calib_batches(1, seed=5)[0]["input_ids"]
    with torch.no_grad():
        ref = sk.load(whole)(input_ids=ids).logits
        for lazy in (False, True):
            assert torch.equal(sk.load(streamed, lazy=lazy)(input_ids=ids).logits, ref)


def test_untied_head_and_spilled_activations(untied_llama_dir: Path, tmp_path: Path) -> None:
    """An untied head is its own int8 tensor; activations spilled to disk change nothing."""
    recipe = RECIPES["gptq"]
    whole, streamed = whole_and_streamed(untied_llama_dir, recipe, tmp_path, max_activation_bytes=0)
    a, b = stored_tensors(whole), stored_tensors(streamed)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    report = read_manifest(streamed)["report"]["stream"]
    assert report["activations_spilled"] is True
    assert any(k.startswith("lm_head.") for k in b)
    assert len(report["blocks"]) == 2 and all(blk["peak_rss_mb"] > 0 for blk in report["blocks"])
    assert report["gb_per_min"] > 0
