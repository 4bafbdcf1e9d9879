"""fp16 / bf16: whole-model cast behind an fp32 interface, halved checkpoint, save → load."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit as sk


@pytest.mark.parametrize("method, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_bert_cast_keeps_fp32_interface(make_bert, token_batch, method, dtype, tmp_path) -> None:
    model = make_bert()
    res = sk.compress(model, {"steps": [{"quantize": {"method": method}}]}, progress=False, measure=False)
    assert all(p.dtype == dtype for p in res.model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # input untouched
    with torch.no_grad():
        ref = model(**token_batch).last_hidden_state
        out = res.model(**token_batch).last_hidden_state
    assert out.dtype == torch.float32
    cos = float(nn.functional.cosine_similarity(ref.flatten(), out.flatten(), dim=0))
    assert cos > (0.9999 if method == "fp16" else 0.999)
    sk.save(res.model, tmp_path / "h")
    loaded = sk.load(tmp_path / "h")
    with torch.no_grad():
        assert torch.equal(loaded(**token_batch).last_hidden_state, out)


def test_float_inputs_are_cast_and_bytes_halve(make_mlp, tmp_path) -> None:
    model = make_mlp()
    res = sk.compress(model, {"steps": [{"quantize": {"method": "bf16"}}]}, progress=False, measure=False)
    x = torch.randn(4, 32)
    with torch.no_grad():
        out = res.model(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out, model(x), atol=0.05)
    sk.save(model, tmp_path / "fp32")
    sk.save(res.model, tmp_path / "bf16")
    ratio = (tmp_path / "bf16" / "model.safetensors").stat().st_size / (tmp_path / "fp32" / "model.safetensors").stat().st_size
    assert 0.45 < ratio < 0.55


def test_outputs_fp32_false_returns_half(make_mlp) -> None:
    res = sk.compress(make_mlp(), {"steps": [{"quantize": {"method": "fp16", "outputs_fp32": False}}]},
                      progress=False, measure=False)
    with torch.no_grad():
        assert res.model(torch.randn(2, 32)).dtype == torch.float16


def test_bad_config_names_field() -> None:
    with pytest.raises(sk.ConfigError, match="outputs_fp32"):
        sk.Recipe.from_dict({"steps": [{"quantize": {"method": "bf16", "outputs_fp32": "no"}}]})
