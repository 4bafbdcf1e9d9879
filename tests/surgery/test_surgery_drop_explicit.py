"""drop_layers: {method: explicit, blocks: [...]}: exactly those blocks, replay on load, errors."""
from __future__ import annotations

import pytest
import torch
import transformers

import slimkit as sk


def _llama(layers: int = 5, seed: int = 0) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                                   tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(cfg).eval()


def _run(model, step):  # noqa: ANN001, ANN202
    return sk.compress(model, {"steps": [{"drop_layers": step}]}, progress=False, measure=False)


def test_explicit_blocks_are_the_ones_removed_and_replay_on_load(tmp_path) -> None:
    model = _llama()
    res = _run(model, {"method": "explicit", "blocks": [3, 0]})
    kept = res.model.model.layers
    assert len(kept) == 3 and res.model.config.num_hidden_layers == 3
    for new_i, old_i in enumerate([1, 2, 4]):  # survivors in order, weights untouched
        assert torch.equal(kept[new_i].mlp.up_proj.weight, model.model.layers[old_i].mlp.up_proj.weight)
        assert kept[new_i].self_attn.layer_idx == new_i  # KV-cache indices renumbered
    notes = res.report.steps[0]["notes"]
    assert notes["blocks_dropped"] == [0, 3] and notes["blocks_before"] == 5 and "scores" not in notes
    ids = torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = res.model(input_ids=ids).logits
        # the same as bypassing blocks 0 and 3 by hand
        hand = _llama()
        hand.model.layers = torch.nn.ModuleList([hand.model.layers[i] for i in (1, 2, 4)])
        hand.config.num_hidden_layers = 3
        for i, layer in enumerate(hand.model.layers):
            layer.self_attn.layer_idx = i
        assert torch.allclose(hand(input_ids=ids).logits, ref, atol=1e-6)
    sk.save(res.model, tmp_path / "ck")
    again = sk.load(tmp_path / "ck")
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids).logits, ref)


@pytest.mark.parametrize("step,match", [
    ({"method": "explicit"}, "blocks must be a non-empty list"),
    ({"method": "explicit", "blocks": []}, "blocks must be a non-empty list"),
    ({"method": "explicit", "blocks": [1, 2, 1]}, r"lists block\(s\) \[1\] more than once"),
    ({"method": "explicit", "blocks": [1, -2]}, r"blocks\[\] = -2 is out of range"),
    ({"method": "explicit", "blocks": [1, "2"]}, "blocks.. must be an integer"),
    ({"method": "explicit", "blocks": [1], "n": 1}, r"\['n'\] not allowed"),
    ({"method": "influence", "blocks": [1]}, "only used with method = 'explicit'"),
])
def test_bad_block_lists_rejected_when_the_recipe_is_read(step, match) -> None:  # noqa: ANN001
    with pytest.raises(sk.ConfigError, match=match):
        sk.Recipe.from_dict({"steps": [{"drop_layers": step}]})


def test_out_of_range_and_all_blocks_rejected_at_run_time() -> None:
    with pytest.raises(sk.ConfigError, match=r"index\(es\) \[5, 9\] out of range; model.layers has 5 blocks, "
                                             r"valid indices are \[0, 4\]"):
        _run(_llama(), {"method": "explicit", "blocks": [1, 5, 9]})
    with pytest.raises(sk.ConfigError, match="would remove every block"):
        _run(_llama(), {"method": "explicit", "blocks": [0, 1, 2, 3, 4]})
