"""Per-layer ``bits: {rule: int}`` for rtn / gptq / awq: exact widths, report, save/load round trip."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import slimkit as sk
from slimkit.quantize.weight_only import WeightOnlyLinear

BITS = {"model.layers.0.mlp.down_proj": 8, "re:.*\\.self_attn\\..*": 3, "model.layers.1": 2, "re:.*": 4}


def tiny_llama(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def calib() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(3)
    return [{"input_ids": torch.randint(0, 128, (2, 16), generator=gen)} for _ in range(2)]


def quantize(model: nn.Module, calib, **step) -> sk.Result:  # noqa: ANN001
    return sk.compress(model, {"steps": [{"quantize": step}]}, calib=calib, progress=False, measure=False)


def expected_bits(name: str) -> int:
    """BITS resolved by hand: first rule in order that covers the layer."""
    if name == "model.layers.0.mlp.down_proj":
        return 8
    if ".self_attn." in name:
        return 3
    if name.startswith("model.layers.1."):
        return 2
    return 4


@pytest.mark.parametrize("method", ["rtn", "gptq", "awq"])
def test_each_layer_gets_its_rule_bits(method: str, calib) -> None:  # noqa: ANN001
    extra = {"grid": 4, "n_tokens": 32} if method == "awq" else {}
    res = quantize(tiny_llama(), calib, method=method, bits=BITS, group_size=32, **extra)
    got = {n: m.bits for n, m in res.model.named_modules() if isinstance(m, WeightOnlyLinear)}
    assert len(got) == 15  # 14 block Linears + the (head_bits) output head
    for name, bits in got.items():
        assert bits == (8 if name == "lm_head" else expected_bits(name)), name
    precision = res.report.steps[0]["notes"]["layer_precision"]
    assert precision["model.layers.*.mlp.down_proj"] == "int8 g32: 0; int2 g32: 1"
    assert precision["model.layers.*.self_attn.q_proj"] == "int3 g32 ×2"
    assert precision["model.layers.*.mlp.up_proj"] == "int4 g32: 0; int2 g32: 1"


def test_mixed_bits_round_trip_through_save_and_load(calib, tmp_path) -> None:  # noqa: ANN001
    res = quantize(tiny_llama(), calib, method="gptq", bits=BITS, group_size=32)
    sk.save(res.model, tmp_path / "ck")
    again = sk.load(tmp_path / "ck")
    before = {n: m for n, m in res.model.named_modules() if isinstance(m, WeightOnlyLinear)}
    after = {n: m for n, m in again.named_modules() if isinstance(m, WeightOnlyLinear)}
    assert before.keys() == after.keys()
    for name, layer in before.items():
        assert after[name].bits == layer.bits, name
        for key, tensor in layer.slimkit_weights().items():
            assert torch.equal(after[name].slimkit_weights()[key], tensor), (name, key)
    ids = calib[0]["input_ids"]
    assert torch.equal(again(input_ids=ids).logits, res.model(input_ids=ids).logits)
    # 2-bit codes really take fewer bytes than 4-bit ones of the same shape
    two, four = before["model.layers.1.mlp.up_proj"], before["model.layers.0.mlp.up_proj"]
    assert two.qweight.numel() * 2 == four.qweight.numel()


def test_per_layer_bits_lower_error_where_more_bits(calib) -> None:  # noqa: ANN001
    """8 bits on a layer beats 2 bits on the same layer: the width is really applied."""
    model = tiny_llama()
    hi = quantize(model, calib, method="rtn", bits={"model.layers.0.mlp.up_proj": 8, "re:.*": 4}, group_size=32)
    lo = quantize(model, calib, method="rtn", bits={"model.layers.0.mlp.up_proj": 2, "re:.*": 4}, group_size=32)
    w = model.model.layers[0].mlp.up_proj.weight.detach()
    err = {k: float((r.model.model.layers[0].mlp.up_proj.dequantize() - w).pow(2).mean()) for k, r in
           (("hi", hi), ("lo", lo))}
    assert err["hi"] < err["lo"] / 100, err


def test_bits_map_errors(calib) -> None:  # noqa: ANN001
    with pytest.raises(sk.ConfigError, match=r"bits\['re:.\*'\] = 9 is out of range; valid range is \[2, 8\]"):
        quantize(tiny_llama(), calib, method="rtn", bits={"re:.*": 9})
    with pytest.raises(sk.ConfigError, match="layer .model.layers.1.mlp.gate_proj. is matched by no rule.*catch-all"):
        quantize(tiny_llama(), calib, method="rtn", bits={"model.layers.0": 4, "re:.*attn.*": 3})
    with pytest.raises(sk.ConfigError, match="rule 'lm_head' matches no selected layer"):
        quantize(tiny_llama(), calib, method="rtn", bits={"lm_head": 4, "re:.*": 4})
    with pytest.raises(sk.ConfigError, match="head_bits = null"):
        quantize(tiny_llama(), calib, method="rtn", bits={"re:.*": 4}, head_bits=None)
