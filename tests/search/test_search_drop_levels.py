"""Block-drop level space of ``search`` over ``drop_layers``: exactly k dropped, the bypass equals
physically removed blocks, restore is exact, the found explicit step replays, and the search beats
the wrapped step's choice on a model with one fragile block."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import slimkit as sk
from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError
from slimkit.core.recipe import Recipe
from slimkit.search.drop_levels import DropLevelSpace, drop_space
from slimkit.search.space import SpaceOptions, assignment_cost
from slimkit.surgery.blocks import drop_blocks
from slimkit.surgery.drop_layers.api import score_blocks
from slimkit.surgery.blocks import find_blocks
from slimkit.surgery.drop_layers.core import choose_blocks

VOCAB = 128


def tiny_llama(seed: int = 0, layers: int = 6) -> nn.Module:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=VOCAB, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def token_batches(n: int, seed: int, rows: int = 2, length: int = 32) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, VOCAB, (rows, length), generator=g)} for _ in range(n)]


def build(model: nn.Module, drop: dict, calib=None) -> DropLevelSpace:  # noqa: ANN001
    step = Recipe.from_dict([{"drop_layers": drop}]).steps[0]
    return drop_space(model, step, RunContext(calib=calib, show_progress=False), SpaceOptions(calib=calib))


@torch.no_grad()
def logits(model: nn.Module, batch: dict) -> torch.Tensor:
    return model(**batch, use_cache=False).logits


def test_budget_is_exactly_k_and_start_is_the_wrapped_choice() -> None:
    model, calib = tiny_llama(), token_batches(2, 1)
    space = build(model, {"method": "influence", "n": 2}, calib)
    assert space.units == [str(i) for i in range(6)] and space.n_levels == [2] * 6
    assert space.budget() == 4 == assignment_cost(space, space.uniform())
    blocks = find_blocks(model)
    expected = choose_blocks(score_blocks(model, blocks, "influence", calib), 2)
    assert space.dropped(space.uniform()) == expected
    assert space.values(space.uniform()) == [0.0 if i in expected else 1.0 for i in range(6)]
    assert space.to_step(space.uniform()) == {"drop_layers": {"method": "explicit", "blocks": expected}}
    last = build(model, {"method": "last", "n": 3})
    assert last.dropped(last.uniform()) == [3, 4, 5] and last.budget() == 3


def test_bypass_equals_removed_blocks_and_restore_is_exact() -> None:
    model, batch = tiny_llama(1), token_batches(1, 2)[0]
    before = logits(model, batch)
    space = build(model, {"method": "last", "n": 2})
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    for dropped in ([4, 5], [0, 3], [1, 2]):
        assignment = [1 if i in dropped else 0 for i in range(6)]
        space.restore(model)
        physical = copy.deepcopy(model)
        drop_blocks(physical, "model.layers", dropped)
        space.apply(model, assignment)
        torch.testing.assert_close(logits(model, batch), logits(physical, batch), rtol=0, atol=1e-6)
    space.restore(model)
    assert torch.equal(logits(model, batch), before)
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert not any("forward" in vars(b) for b in model.model.layers)


def test_bad_drop_steps_are_config_errors() -> None:
    model = tiny_llama(layers=3)
    with pytest.raises(ConfigError, match="n = 3"):
        build(model, {"method": "last", "n": 3})
    with pytest.raises(ConfigError, match=r"blocks = \[0, 7\]"):
        build(model, {"method": "explicit", "blocks": [0, 7]})
    with pytest.raises(ConfigError, match="drops all 3 droppable blocks"):
        build(model, {"method": "explicit", "blocks": [0, 1, 2]})
    explicit = build(model, {"method": "explicit", "blocks": [2, 0]})
    assert explicit.dropped(explicit.uniform()) == [0, 2] and explicit.budget() == 1


def test_search_replays_and_beats_the_wrapped_choice_with_one_fragile_block() -> None:
    """``last`` drops block 5; block 5 is made crucial (its outputs x6) and block 1 nearly an identity
    (its outputs x0.02): the search must drop block 1 instead, at exactly one dropped block."""
    model, calib, held_out = tiny_llama(2), token_batches(4, 3), token_batches(2, 4)
    with torch.no_grad():
        for i, scale in ((5, 6.0), (1, 0.02)):
            layer = model.model.layers[i]
            layer.self_attn.o_proj.weight.mul_(scale)
            layer.mlp.down_proj.weight.mul_(scale)
    recipe = [{"search": {"method": "evolution", "step": {"drop_layers": {"method": "last", "n": 1}},
                          "generations": 8, "offspring": 5, "selection": [[2, 32], [1, 64]]}}]
    res = sk.compress(model, recipe, calib=calib, progress=False, measure=False)
    found = res.recipe.to_dict()["steps"][0]
    assert found["drop_layers"]["method"] == "explicit" and found["drop_layers"]["blocks"] == [1]
    assert len(res.model.model.layers) == 5
    note = res.report.to_dict()["steps"][0]["notes"]["search"]
    assert note["budget_found"] == note["budget"] == 5
    baseline = sk.compress(model, [{"drop_layers": {"method": "last", "n": 1}}], progress=False, measure=False).model
    replay = sk.compress(model, [found], progress=False, measure=False).model
    for b in held_out:
        assert torch.equal(logits(replay, b), logits(res.model, b))
    ref = [torch.log_softmax(logits(model, b), -1) for b in held_out]

    def kl(m: nn.Module) -> float:
        return sum(float((p.exp() * (p - torch.log_softmax(logits(m, b), -1))).sum(-1).mean())
                   for p, b in zip(ref, held_out))

    assert kl(res.model) < 0.2 * kl(baseline), (kl(res.model), kl(baseline))
