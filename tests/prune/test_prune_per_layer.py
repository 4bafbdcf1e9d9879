"""Per-layer ``sparsity: {rule: value}`` maps: resolution semantics, errors, exact per-layer counts."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.per_layer import resolve_per_layer, shadowed_rules
from slimkit.prune.wanda.core import row_counts, row_mask

NAMES = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj", "model.layers.1.self_attn.q_proj",
         "model.layers.1.mlp.up_proj", "model.layers.10.mlp.up_proj"]
MAP = {"model.layers.1": 0.2, "re:.*\\.mlp\\..*": 0.7, "re:.*": 0.5}


def tiny_llama(seed: int = 0) -> nn.Module:
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=128, tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def calib() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, 128, (2, 32), generator=gen)} for _ in range(2)]


def prune(model: nn.Module, calib=None, **step) -> sk.Result:  # noqa: ANN001
    return sk.compress(model, {"steps": [{"prune": step}]}, calib=calib, progress=False, measure=False)


# ----------------------------------------------------------------------------- resolution
def test_first_matching_rule_wins_in_mapping_order() -> None:
    got = resolve_per_layer("sparsity", MAP, NAMES)
    assert got == {"model.layers.0.self_attn.q_proj": 0.5, "model.layers.0.mlp.up_proj": 0.7,
                   "model.layers.1.self_attn.q_proj": 0.2, "model.layers.1.mlp.up_proj": 0.2,
                   "model.layers.10.mlp.up_proj": 0.7}  # "model.layers.1" is a module name, not a prefix of 10
    flipped = {"re:.*\\.mlp\\..*": 0.7, "model.layers.1": 0.2, "re:.*": 0.5}
    assert resolve_per_layer("sparsity", flipped, NAMES)["model.layers.1.mlp.up_proj"] == 0.7
    assert resolve_per_layer("sparsity", 0.3, NAMES) == dict.fromkeys(NAMES, 0.3)


def test_regex_rules_match_a_module_above_the_layer() -> None:
    got = resolve_per_layer("bits", {"re:model\\.layers\\.0": 8, "re:.*": 4}, NAMES)
    assert [got[n] for n in NAMES] == [8, 8, 4, 4, 4]


def test_unmatched_layer_and_dead_rule_are_config_errors() -> None:
    with pytest.raises(sk.ConfigError, match="'model.layers.0.self_attn.q_proj' is matched by no rule.*catch-all"):
        resolve_per_layer("sparsity", {"re:.*mlp.*": 0.5, "model.layers.1": 0.2}, NAMES)
    with pytest.raises(sk.ConfigError, match="rule 'model.layers.7' matches no selected layer"):
        resolve_per_layer("sparsity", {"model.layers.7": 0.5, "re:.*": 0.5}, NAMES)
    assert shadowed_rules({"re:.*": 0.5, "model.layers.1": 0.2}, NAMES) == ["model.layers.1"]


@pytest.mark.parametrize("value,match", [
    ({}, "at least one rule"),
    ({"re:.*": 1.0}, r"sparsity\['re:.\*'\] = 1.0 is out of range; valid range is \[0.0, 1.0\)"),
    ({"re:(": 0.5}, "invalid regular expression"),
    ({3: 0.5}, "rule 3 is not valid"),
    ({"re:.*": "half"}, "must be a number"),
])
def test_bad_maps_rejected_when_the_recipe_is_read(value, match) -> None:  # noqa: ANN001
    for method in ("magnitude", "wanda", "sparsegpt"):
        with pytest.raises(sk.ConfigError, match=match):
            sk.Recipe.from_dict({"steps": [{"prune": {"method": method, "sparsity": value}}]})


def test_map_with_pattern_or_global_scope_rejected() -> None:
    with pytest.raises(sk.ConfigError, match="cannot be combined with pattern"):
        sk.Recipe.from_dict({"steps": [{"prune": {"method": "wanda", "sparsity": {"re:.*": 0.5}, "pattern": "2:4"}}]})
    with pytest.raises(sk.ConfigError, match="needs scope = 'layer'"):
        sk.Recipe.from_dict({"steps": [{"prune": {"method": "magnitude", "sparsity": {"re:.*": 0.5},
                                                  "scope": "global"}}]})


def test_row_counts_exact_total_and_unchanged_when_whole() -> None:
    assert row_counts(7, 20, 0.3).tolist() == [6] * 7  # 0.3 * 20 is whole: the old per-row rule
    counts = row_counts(7, 20, 0.33)
    assert int(counts.sum()) == round(0.33 * 140) and int(counts.max() - counts.min()) <= 1
    keep = row_mask(torch.rand(7, 20), 0.33)
    assert int((~keep).sum()) == 46 and ((~keep).sum(1) == counts).all()


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_each_layer_pruned_to_its_own_sparsity(method: str, calib, tmp_path) -> None:  # noqa: ANN001
    model = tiny_llama()
    sparsity = {"model.layers.0.mlp.down_proj": 0.9, "model.layers.0": 0.3, "re:.*\\.mlp\\..*": 0.65, "re:.*": 0.45}
    res = prune(model, calib, method=method, sparsity=sparsity)
    pruned = {n: m for n, m in res.model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"}
    assert len(pruned) == 14
    want = resolve_per_layer("sparsity", sparsity, list(pruned))
    assert want["model.layers.0.mlp.down_proj"] == 0.9 and want["model.layers.1.mlp.up_proj"] == 0.65
    for name, layer in pruned.items():
        w = layer.weight
        assert int((w == 0).sum()) == round(want[name] * w.numel()), name
    assert torch.equal(res.model.lm_head.weight, model.lm_head.weight)  # head kept by default
    notes = res.report.steps[0]["notes"]
    assert notes["layer_sparsity"]["model.layers.*.mlp.down_proj"] == "0.65–0.9 ×2"
    # the recipe keeps the map in order, and replays through save/load
    assert list(res.recipe.to_dict()["steps"][0]["prune"]["sparsity"]) == list(sparsity)
    sk.save(res.model, tmp_path / "ck")
    again = sk.load(tmp_path / "ck")
    assert torch.equal(again.model.layers[0].mlp.down_proj.weight, res.model.model.layers[0].mlp.down_proj.weight)


def test_map_errors_name_layer_and_rule(calib) -> None:  # noqa: ANN001
    with pytest.raises(sk.ConfigError, match="prune.sparsity: rule 'lm_head' matches no selected layer"):
        prune(tiny_llama(), calib, method="wanda", sparsity={"lm_head": 0.5, "re:.*": 0.5})
    with pytest.raises(sk.ConfigError, match="selected layer 'model.layers.1.self_attn.q_proj' is matched by no rule"):
        prune(tiny_llama(), method="magnitude", sparsity={"model.layers.0": 0.5}, ignore=["lm_head"])


def test_shadowed_rule_is_reported(calib) -> None:  # noqa: ANN001
    res = prune(tiny_llama(), method="magnitude", sparsity={"re:.*": 0.5, "model.layers.1": 0.2})
    assert res.report.steps[0]["notes"]["shadowed_rules"]["rules"] == ["model.layers.1"]
    assert res.report.steps[0]["notes"]["weight_sparsity"] == 0.5
