"""Hugging Face Conv1D (GPT-2) is handled by every step that handles Linear.

Before this mechanism, dynamic_int8 quantized 0 layers of GPT-2 and magnitude pruning pruned only
its tied lm_head: every test below fails on that code.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.conv1d import conv1d_as_linear, is_conv1d

PROJECTIONS = [f"transformer.h.{i}.{p}" for i in range(2)
               for p in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]


def _logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def _calib(n: int = 4) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, 100, (2, 16), generator=gen)} for _ in range(n)]


def test_tiny_gpt2_really_uses_conv1d(make_gpt2) -> None:
    model = make_gpt2()
    assert all(is_conv1d(model.get_submodule(p)) for p in PROJECTIONS)


def test_conversion_is_exact_and_recorded(make_gpt2, token_batch) -> None:
    model = make_gpt2()
    before = _logits(model, token_batch)
    converted, tied = conv1d_as_linear(model)
    assert converted == PROJECTIONS and tied == []
    assert all(type(model.get_submodule(p)) is nn.Linear for p in PROJECTIONS)
    assert model.get_submodule("transformer.h.0.mlp.c_fc").weight.shape == (64, 32)  # [out, in]
    torch.testing.assert_close(_logits(model, token_batch), before, rtol=1e-5, atol=1e-5)
    assert sk.core.provenance.get_edits(model)[-1] == {"op": "conv1d_as_linear", "paths": PROJECTIONS}
    assert conv1d_as_linear(model) == ([], [])  # idempotent


PRUNE_STEPS = [
    {"method": "magnitude", "sparsity": 0.5},
    {"method": "magnitude", "sparsity": 0.5, "scope": "global"},
    {"method": "wanda", "sparsity": 0.5},
    {"method": "wanda", "sparsity": 0.5, "pattern": "2:4"},
    {"method": "sparsegpt", "sparsity": 0.5},
    {"method": "activation", "sparsity": 0.5},
]


@pytest.mark.parametrize("spec", PRUNE_STEPS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_every_pruner_prunes_every_conv1d_projection(make_gpt2, spec) -> None:
    res = sk.compress(make_gpt2(), {"steps": [{"prune": spec}]}, calib=_calib(), progress=False, measure=False)
    low, high = (0.1, 0.9) if spec.get("scope") == "global" else (0.3, 0.7)  # global: per-layer varies
    for path in PROJECTIONS:
        w = res.model.get_submodule(path).weight
        sparsity = float((w == 0).float().mean())
        assert low < sparsity < high, (path, sparsity)
    assert res.report.to_dict()["steps"][0]["notes"]["conv1d_as_linear"] == 8


def test_gradual_pruning_prunes_conv1d(make_gpt2) -> None:
    train = [{**b, "labels": b["input_ids"]} for b in _calib(6)]
    recipe = {"steps": [{"prune": {"method": "gradual", "sparsity": 0.5, "prune_every": 2, "prune_end": 4}},
                        ]}
    res = sk.compress(make_gpt2(), recipe, train=train, progress=False, measure=False)
    w = res.model.get_submodule("transformer.h.1.mlp.c_fc").weight
    assert float((w == 0).float().mean()) > 0.3


QUANT_STEPS = [
    {"method": "dynamic_int8"},
    {"method": "static_int8"},
    {"method": "smoothquant"},
    {"method": "rtn", "bits": 4, "group_size": 16},
    {"method": "gptq", "bits": 4, "group_size": 16},
    {"method": "awq", "bits": 4, "group_size": 16},
    {"method": "binary"},
    {"method": "ternary"},
]


@pytest.mark.parametrize("spec", QUANT_STEPS, ids=lambda s: s["method"])
def test_every_quantizer_swaps_every_conv1d_projection(make_gpt2, token_batch, spec) -> None:
    model = make_gpt2()
    res = sk.compress(model, {"steps": [{"quantize": spec}]}, calib=_calib(), progress=False, measure=False)
    kinds = {type(res.model.get_submodule(p)) for p in PROJECTIONS}
    assert not kinds & {nn.Linear}, kinds  # every projection became a quantized layer
    assert not any(is_conv1d(res.model.get_submodule(p)) for p in PROJECTIONS)
    assert torch.isfinite(_logits(res.model, token_batch)).all()


def test_low_rank_and_kmeans_handle_conv1d(make_gpt2, token_batch) -> None:
    for step in ({"low_rank": {"rank": 4}}, {"share_weights": {"method": "kmeans", "clusters": 4}}):
        res = sk.compress(make_gpt2(), {"steps": [step]}, progress=False, measure=False)
        kinds = {type(res.model.get_submodule(p)) for p in PROJECTIONS}
        assert nn.Linear not in kinds, (step, kinds)


def test_structured_pruning_shrinks_gpt2_mlp(make_gpt2, token_batch) -> None:
    recipe = {"steps": [{"prune": {"method": "structured", "granularity": "neuron", "sparsity": 0.5, "targets": ["re:.*\\.mlp"]}}]}
    res = sk.compress(make_gpt2(), recipe, example_inputs=token_batch, progress=False, measure=False)
    fc = res.model.get_submodule("transformer.h.0.mlp.c_fc")
    assert fc.out_features == 32 and res.model.get_submodule("transformer.h.0.mlp.c_proj").in_features == 32
    assert _logits(res.model, token_batch).shape == (2, 12, 100)


def test_quantized_gpt2_round_trips_through_save_and_load(make_gpt2, token_batch, tmp_path) -> None:
    res = sk.compress(make_gpt2(), {"steps": [{"quantize": {"method": "dynamic_int8"}}]},
                      progress=False, measure=False)
    sk.save(res.model, tmp_path / "gpt2-int8")
    again = sk.load(tmp_path / "gpt2-int8")
    torch.testing.assert_close(_logits(again, token_batch), _logits(res.model, token_batch))


def test_pruned_gpt2_round_trips(make_gpt2, token_batch, tmp_path) -> None:
    res = sk.compress(make_gpt2(), {"steps": [{"prune": {"method": "magnitude", "sparsity": 0.5}}]},
                      progress=False, measure=False)
    sk.save(res.model, tmp_path / "gpt2-sparse")
    again = sk.load(tmp_path / "gpt2-sparse")
    assert type(again.get_submodule("transformer.h.0.attn.c_attn")) is nn.Linear
    torch.testing.assert_close(_logits(again, token_batch), _logits(res.model, token_batch))


@pytest.mark.parametrize("selection", [{"targets": []}, {"targets": ["re:transformer\\.wpe"]},
                                       {"targets": ["transformer.h.0.mlp"], "ignore": ["re:.*c_(fc|proj)"]}])
def test_a_selection_that_selects_nothing_is_a_config_error(make_gpt2, selection) -> None:
    recipe = {"steps": [{"quantize": {"method": "dynamic_int8", **selection}}]}
    with pytest.raises(sk.ConfigError, match="selects no"):
        sk.compress(make_gpt2(), recipe, progress=False, measure=False)


def test_qat_and_mixed_handle_conv1d(make_gpt2, token_batch) -> None:
    train = [{**b, "labels": b["input_ids"]} for b in _calib(4)]
    steps = ({"quantize": {"method": "qat", "bits": 8}},
             {"quantize": {"method": "mixed", "bits_choices": [4, 8], "target_ratio": 0.5}})
    for step in steps:
        res = sk.compress(make_gpt2(), {"steps": [step]}, calib=_calib(), train=train, progress=False,
                          measure=False)
        kinds = {type(res.model.get_submodule(p)) for p in PROJECTIONS}
        assert nn.Linear not in kinds and not any(is_conv1d(res.model.get_submodule(p)) for p in PROJECTIONS), \
            (step, kinds)
        assert torch.isfinite(_logits(res.model, token_batch)).all()
