"""``quantize: {method: awq}``: scale search helps on outlier channels, tiny Llama, save/load."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import slimkit as sk
from slimkit.quantize.awq import awq_search
from slimkit.quantize.weight_only import WeightOnlyLinear, dequantize_groups, quantize_groups, sqnr_db


def tiny_llama(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def test_awq_beats_rtn_with_activation_outliers() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 128, generator=g)
    x = torch.randn(1024, 128, generator=g)
    x[:, :4] *= 30.0  # a few salient input channels, as in LLM activations
    inv, codes, alpha = awq_search(w, x, x.abs().mean(0), 4, 64, False, grid=20)
    w_awq = dequantize_groups(*codes, 64) * inv  # effective weight: W·diag(s) quantized, times 1/s
    w_rtn = dequantize_groups(*quantize_groups(w, 4, 64, False), 64)
    err = lambda wh: float((x @ (w - wh).t()).pow(2).mean())  # noqa: E731
    assert alpha > 0.0
    assert err(w_awq) < 0.8 * err(w_rtn)


def test_awq_alpha_zero_is_rtn() -> None:
    g = torch.Generator().manual_seed(1)
    w, x = torch.randn(8, 64, generator=g), torch.randn(256, 64, generator=g)
    inv, codes, alpha = awq_search(w, x, torch.ones(64), 4, 32, False, grid=4)
    assert torch.allclose(inv, torch.ones(64))  # flat activations: every alpha gives s = 1
    assert torch.equal(codes[0], quantize_groups(w, 4, 32, False)[0])


def test_awq_tiny_llama_sqnr_and_save_load(tmp_path) -> None:
    model = tiny_llama()
    g = torch.Generator().manual_seed(7)
    calib = [{"input_ids": torch.randint(0, 128, (2, 32), generator=g)} for _ in range(4)]
    res = sk.compress(model, {"steps": [{"quantize": {"method": "awq", "bits": 4, "group_size": 32, "grid": 10}}]},
                      calib=calib, progress=False, measure=False)
    layers = [m for n, m in res.model.named_modules() if isinstance(m, WeightOnlyLinear) and n != "lm_head"]
    assert len(layers) == 14 and all(m.input_scale is not None and m.bits == 4 for m in layers)
    assert res.model.lm_head.bits == 8 and res.model.lm_head.input_scale is None  # head: plain int8 by default
    ids = {"input_ids": torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))}
    with torch.no_grad():
        out = res.model(**ids).logits
        assert sqnr_db(model(**ids).logits, out) > 18.0
        sk.save(res.model, tmp_path / "ck")
        assert torch.equal(sk.load(tmp_path / "ck")(**ids).logits, out)


@pytest.mark.parametrize("bad,field", [({"grid": 0}, "grid"), ({"n_tokens": 1}, "n_tokens"), ({"bits": 0}, "bits"),
                                       ({"group_size": -1}, "group_size")])
def test_awq_bad_configs(bad, field) -> None:
    with pytest.raises(sk.ConfigError, match=field):
        sk.Recipe.from_dict({"steps": [{"quantize": {"method": "awq", **bad}}]})
