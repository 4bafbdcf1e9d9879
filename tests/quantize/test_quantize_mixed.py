"""``quantize: {method: mixed}``: budgets are met, sensitive layers get more bits, save/load."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import slimkit as sk
from slimkit.core.layer_notes import layer_summary
from slimkit.measure.size import weight_tensors
from slimkit.quantize.mixed import FLOAT, layer_bytes, upgrade_path
from slimkit.quantize.weight_only import WeightOnlyLinear


def tiny_llama(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def calib() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    return [{"input_ids": torch.randint(0, 128, (2, 32), generator=g)} for _ in range(4)]


def mixed(model: nn.Module, **options) -> sk.Result:
    step = {"method": "mixed", "group_size": 32, **options}
    return sk.compress(model, {"steps": [{"quantize": step}]}, calib=calib(), progress=False, measure=False)


def tensor_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in weight_tensors(model))


def test_layer_bytes_formula_matches_layer() -> None:
    layer = WeightOnlyLinear.from_weight(torch.randn(48, 100), None, 4, 32, False)
    stored = sum(t.numel() * t.element_size() for k, t in layer.slimkit_weights().items())
    assert layer_bytes(48, 100, 4, 32, False) == stored
    assert layer_bytes(48, 100, FLOAT, 32, False) == 48 * 100 * 4


def test_upgrade_path_prefers_error_per_byte() -> None:
    costs = {"a": [10, 20], "b": [10, 20]}
    errors = {"a": [5.0, 0.0], "b": [50.0, 0.0]}
    assert upgrade_path([4, 8], costs, errors) == [("b", 1), ("a", 1)]


@pytest.mark.parametrize("ratio", [0.2, 0.26])
def test_target_ratio_is_met_and_bits_are_mixed(ratio: float) -> None:
    model = tiny_llama()
    res = mixed(model, bits_choices=[2, 4, 8], target_ratio=ratio)
    assert tensor_bytes(res.model) <= ratio * tensor_bytes(model)
    bits = {m.bits for n, m in res.model.named_modules() if isinstance(m, WeightOnlyLinear) and n != "lm_head"}
    assert len(bits) >= 2  # a real mix, not one width everywhere
    assert res.report.steps[0]["notes"]["quantized_linear_layers"] == 14


def test_head_int8_by_default_and_per_layer_bits_reported() -> None:
    res = mixed(tiny_llama(), bits_choices=[2, 4, 8], target_ratio=0.26)
    assert res.model.lm_head.bits == 8 and res.model.model.embed_tokens.bits == 8
    summary = res.report.steps[0]["notes"]["layer_precision"]
    per_layer = {n: f"int{m.bits} g32" for n, m in res.model.named_modules()
                 if isinstance(m, WeightOnlyLinear) and n != "lm_head"}
    assert len(set(per_layer.values())) >= 2  # the summary must tell layers apart
    expected = layer_summary(per_layer) | {"lm_head": "int8 g32 (output head)", "model.embed_tokens": "int8 g32 (embedding)"}
    assert summary == expected


def test_head_bits_null_is_refused_by_mixed() -> None:
    with pytest.raises(sk.ConfigError, match="head_bits"):
        sk.Recipe.from_dict({"steps": [{"quantize": {"method": "mixed", "target_ratio": 0.3, "head_bits": None}}]})


def test_impossible_budget_is_a_config_error() -> None:
    with pytest.raises(sk.ConfigError, match="target budget"):
        mixed(tiny_llama(), bits_choices=[4, 8], target_bytes=1000)


def test_max_quality_drop_is_met_on_calibration(tmp_path) -> None:
    model = tiny_llama()
    res = mixed(model, bits_choices=[2, 4], allow_float=True, max_quality_drop=0.002, eval_batches=2)
    batches = calib()[:2]
    assert sk.Perplexity(batches)(res.model) / sk.Perplexity(batches)(model) - 1 <= 0.002
    ids = {"input_ids": torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))}
    with torch.no_grad():
        out = res.model(**ids).logits
        sk.save(res.model, tmp_path / "ck")
        assert torch.equal(sk.load(tmp_path / "ck")(**ids).logits, out)


@pytest.mark.parametrize("bad,match", [({}, "exactly one budget"),
                                       ({"target_ratio": 0.3, "target_bytes": 10}, "exactly one budget"),
                                       ({"target_ratio": 1.5}, "target_ratio"),
                                       ({"target_ratio": 0.3, "bits_choices": [4, 9]}, "bits_choices"),
                                       ({"max_quality_drop": -0.1}, "max_quality_drop")])
def test_mixed_bad_configs(bad, match) -> None:
    with pytest.raises(sk.ConfigError, match=match):
        sk.Recipe.from_dict({"steps": [{"quantize": {"method": "mixed", **bad}}]})


def test_budget_counts_the_int8_head_at_its_real_bytes() -> None:
    # The plan must see the head/embeddings at head_bits: planning them as float32 left ~15 % of
    # this budget unused (bytes at 0.81 of the budget, versus >= 0.93 now).
    model = tiny_llama()
    budget = 0.26 * tensor_bytes(model)
    res = mixed(model, bits_choices=[2, 4, 8], target_ratio=0.26)
    assert 0.93 * budget <= tensor_bytes(res.model) <= budget
