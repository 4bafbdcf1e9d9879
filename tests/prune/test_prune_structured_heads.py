"""Structured pruning of attention heads and of the transformer hidden size (layer_width)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.measure.macs import count_macs


def structured(model: nn.Module, example, steps: list[dict] | None = None, **step) -> sk.Result:  # noqa: ANN001
    steps = steps or [{"method": "structured", **step}]
    return sk.compress(model, {"steps": [{"prune": s} for s in steps]}, example_inputs=example, calib=[example],
                       progress=False, measure=False)


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def gqa_llama(seed: int = 0) -> nn.Module:
    """6 query heads in 2 KV groups of 3 (head_dim 8), tied embeddings: both GQA removal modes apply."""
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=6,
                                   num_key_value_heads=2, head_dim=8, vocab_size=100, max_position_embeddings=64,
                                   tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(cfg).eval()


def test_bert_heads_explicit_map_are_the_listed_ones(make_bert, token_batch, tmp_path) -> None:
    model = make_bert()  # 2 heads of 16 per layer
    res = structured(model, token_batch, granularity="head", heads={"encoder.layer.0.attention": [1]})
    att = res.model.encoder.layer[0].attention
    assert att.self.query.out_features == att.self.key.out_features == att.self.value.out_features == 16
    assert att.output.dense.in_features == 16 and att.self.num_attention_heads == 1 and att.self.all_head_size == 16
    assert res.model.encoder.layer[1].attention.self.query.out_features == 32  # not in the map: untouched
    # head 0 kept: its query rows are the original first 16 rows, its output columns the first 16
    assert torch.equal(att.self.query.weight, model.encoder.layer[0].attention.self.query.weight[:16])
    assert torch.equal(att.output.dense.weight, model.encoder.layer[0].attention.output.dense.weight[:, :16])
    out = res.model(**token_batch).last_hidden_state
    assert out.shape == (2, 12, 32)
    sk.save(res.model, tmp_path / "c")
    with torch.no_grad():
        assert torch.equal(sk.load(tmp_path / "c")(**token_batch).last_hidden_state, out)


def test_removed_head_with_zero_output_changes_nothing(make_bert, token_batch) -> None:
    model = make_bert()
    with torch.no_grad():  # head 1 of layer 1 writes nothing into the output projection
        model.encoder.layer[1].attention.output.dense.weight[:, 16:] = 0
    res = structured(model, token_batch, granularity="head", sparsity=0.5, importance="magnitude",
                     ignore=["encoder.layer.0.attention.self.query"])
    assert res.model.encoder.layer[0].attention.self.query.out_features == 32  # ignored layer kept
    assert res.report.steps[0]["notes"]["heads_kept"] == {"encoder.layer.1.attention": 1}
    with torch.no_grad():
        ref = model(**token_batch).last_hidden_state
        assert torch.allclose(res.model(**token_batch).last_hidden_state, ref, atol=1e-5)


def test_all_heads_of_a_layer_is_a_config_error(make_bert, token_batch) -> None:
    with pytest.raises(sk.ConfigError, match=r"encoder\.layer\.1\.attention"):
        structured(make_bert(), token_batch, granularity="head", heads={"encoder.layer.1.attention": [0, 1]})
    with pytest.raises(sk.ConfigError, match="not prunable attention"):
        structured(make_bert(), token_batch, granularity="head", heads={"encoder.layer.9.attention": [0]})


@pytest.mark.parametrize("gqa,q_left,kv_left", [("query", 2, 2), ("group", 3, 1)])
def test_llama_gqa_heads(gqa, q_left, kv_left, token_batch, tmp_path) -> None:  # noqa: ANN001
    model = gqa_llama()
    res = structured(model, token_batch, granularity="head", sparsity=0.5, importance="activation", gqa=gqa)
    for layer in res.model.model.layers:
        att = layer.self_attn
        assert att.q_proj.out_features == q_left * 8 and att.o_proj.in_features == q_left * 8
        assert att.k_proj.out_features == att.v_proj.out_features == kv_left * 8
        assert att.num_key_value_groups == q_left // kv_left
    assert res.model.lm_head.weight is res.model.model.embed_tokens.weight
    assert params(res.model) < params(model)
    logits = res.model(**token_batch).logits
    assert logits.shape == (2, 12, 100)
    sk.save(res.model, tmp_path / "c")
    with torch.no_grad():
        assert torch.equal(sk.load(tmp_path / "c")(**token_batch).logits, logits)


def test_gqa_map_must_keep_groups_equal(token_batch) -> None:
    with pytest.raises(sk.ConfigError, match="grouped-query"):  # 1 head from group 0, none from group 1
        structured(gqa_llama(), token_batch, granularity="head", heads={"model.layers.0.self_attn": [0]})
    res = structured(gqa_llama(), token_batch, granularity="head", heads={"model.layers.0.self_attn": [3, 4, 5]})
    att = res.model.model.layers[0].self_attn  # a whole KV group: its key/value head goes too
    assert att.q_proj.out_features == 24 and att.k_proj.out_features == 8 and att.num_key_value_groups == 3


def test_sparsity_keeps_one_head_per_layer(make_llama, token_batch) -> None:
    res = structured(make_llama(), token_batch, granularity="head", sparsity=0.99)  # 2 query heads, 1 KV head
    for layer in res.model.model.layers:
        assert layer.self_attn.q_proj.out_features == 16 and layer.self_attn.k_proj.out_features == 16


def test_layer_width_bert(make_bert, token_batch, tmp_path) -> None:
    model = make_bert()
    res = structured(model, token_batch, granularity="layer_width", sparsity=0.25, round_to=4)
    m = res.model
    assert m.config.hidden_size == 24 and m.embeddings.word_embeddings.embedding_dim == 24
    assert m.embeddings.position_embeddings.weight.shape[1] == m.embeddings.token_type_embeddings.weight.shape[1] == 24
    assert m.embeddings.LayerNorm.weight.shape == (24,) and m.encoder.layer[1].output.LayerNorm.normalized_shape == (24,)
    layer = m.encoder.layer[0]
    assert layer.attention.self.query.in_features == 24 and layer.attention.self.query.out_features == 32
    assert layer.attention.output.dense.out_features == 24 and layer.intermediate.dense.in_features == 24
    assert m.pooler.dense.in_features == 24  # found by rule (the graph misses the pooler)
    out = m(**token_batch).last_hidden_state
    assert out.shape == (2, 12, 24) and params(m) < params(model)
    sk.save(m, tmp_path / "c")
    with torch.no_grad():
        assert torch.equal(sk.load(tmp_path / "c")(**token_batch).last_hidden_state, out)


def test_layer_width_llama_stays_tied(make_llama, token_batch, tmp_path) -> None:
    model = make_llama()
    res = structured(model, token_batch, granularity="layer_width", target_macs=0.7, importance="activation")
    m = res.model
    h = m.config.hidden_size
    assert h < 32 and m.model.embed_tokens.embedding_dim == h and m.lm_head.in_features == h
    assert m.lm_head.weight is m.model.embed_tokens.weight  # still tied
    assert m.model.norm.weight.shape == (h,) and m.model.layers[1].input_layernorm.weight.shape == (h,)
    assert m.model.layers[0].mlp.down_proj.out_features == h and m.model.layers[0].self_attn.o_proj.out_features == h
    kept = count_macs(m, token_batch) / count_macs(model, token_batch)
    assert kept <= 0.7 and res.report.steps[0]["notes"]["macs_kept"] == pytest.approx(kept, abs=1e-3)
    logits = m(**token_batch).logits
    assert logits.shape == (2, 12, 100)
    sk.save(m, tmp_path / "c")
    again = sk.load(tmp_path / "c")
    assert again.config.hidden_size == h and again.lm_head.weight is again.model.embed_tokens.weight
    with torch.no_grad():
        assert torch.equal(again(**token_batch).logits, logits)


def test_heads_then_neurons_reach_a_macs_target(make_bert, token_batch, tmp_path) -> None:
    model = make_bert()
    res = structured(model, token_batch, steps=[
        {"method": "structured", "granularity": "head", "sparsity": 0.5},
        {"method": "structured", "granularity": "neuron", "target_macs": 0.7}])
    kept = count_macs(res.model, token_batch) / count_macs(model, token_batch)
    heads_only = res.report.steps[0]["notes"]["macs_kept"]
    assert heads_only < 0.9 and kept <= heads_only * 0.7 + 1e-6 and kept >= heads_only * 0.5
    assert res.model.encoder.layer[0].intermediate.dense.out_features < 64
    sk.save(res.model, tmp_path / "c")
    with torch.no_grad():
        assert torch.equal(sk.load(tmp_path / "c")(**token_batch).last_hidden_state,
                           res.model(**token_batch).last_hidden_state)


@pytest.mark.parametrize("step,field", [
    ({"granularity": "heads", "sparsity": 0.3}, "granularity"),
    ({"granularity": "head", "sparsity": -0.1}, "sparsity"),
    ({"granularity": "layer_width", "sparsity": 1.0}, "sparsity"),
    ({"granularity": "neuron", "heads": {"a": [0]}}, "heads"),
    ({"granularity": "head", "heads": {"a": []}}, "heads"),
    ({"granularity": "head", "heads": {"a": [0]}, "sparsity": 0.5}, "heads"),
    ({"granularity": "head", "sparsity": 0.5, "gqa": "kv"}, "gqa"),
])
def test_bad_head_and_width_config(step, field) -> None:  # noqa: ANN001
    with pytest.raises(sk.ConfigError, match=field):
        sk.Recipe.from_dict({"steps": [{"prune": {"method": "structured", **step}}]})


def test_head_pruning_needs_attention(make_mlp) -> None:
    with pytest.raises(sk.UnsupportedModelError, match="no prunable head"):
        structured(make_mlp(), torch.randn(2, 32), granularity="head", sparsity=0.5)


@pytest.mark.parametrize("granularity", ["head", "layer_width"])
def test_taylor_importance_for_heads_and_width(granularity, token_batch) -> None:  # noqa: ANN001
    model = gqa_llama()
    step = {"method": "structured", "granularity": granularity, "sparsity": 0.5, "importance": "taylor", "round_to": 8}
    with pytest.raises(sk.DataError, match="train"):
        structured(model, token_batch, **step)
    res = sk.compress(model, {"steps": [{"prune": step}]}, example_inputs=token_batch, train=[token_batch],
                      progress=False, measure=False)
    att = res.model.model.layers[0].self_attn
    if granularity == "head":
        assert att.q_proj.out_features == 16 and att.k_proj.out_features == 16
    else:
        assert res.model.config.hidden_size == 24 and att.q_proj.in_features == 24
    assert res.model(**token_batch).logits.shape == (2, 12, 100)
    assert all(p.grad is None for p in res.model.parameters())


def tiny_mpnet(seed: int = 0) -> nn.Module:
    """4 heads of 8 per layer; MPNet adds one relative-position bias (all heads) to every layer."""
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.MPNetConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                   vocab_size=100, max_position_embeddings=64)
    model = transformers.MPNetModel(cfg).eval()
    with torch.no_grad():  # random init leaves the bias table near zero: make each head's bias distinct
        model.encoder.relative_attention_bias.weight.normal_(0, 2.0)
    return model


def _silence(model: nn.Module, removed: dict[int, list[int]]) -> nn.Module:
    """The reference: the same model with the removed heads' output-projection columns zeroed."""
    with torch.no_grad():
        for layer, heads in removed.items():
            o = model.encoder.layer[layer].attention.attn.o.weight
            for h in heads:
                o[:, h * 8:(h + 1) * 8] = 0
    return model


def test_mpnet_heads_keep_their_own_position_bias(token_batch, tmp_path) -> None:
    import copy

    model = tiny_mpnet()
    res = structured(model, token_batch, granularity="head", heads={"encoder.layer.0.attention.attn": [0, 2]})
    # a second round on the pruned model: its head 1 is the original head 3
    res2 = structured(res.model, token_batch, granularity="head", heads={"encoder.layer.0.attention.attn": [1],
                                                                         "encoder.layer.1.attention.attn": [0, 1, 2]})
    attn0, attn1 = res2.model.encoder.layer[0].attention.attn, res2.model.encoder.layer[1].attention.attn
    assert (attn0.q.out_features, attn0.o.in_features, attn0.num_attention_heads, attn0.all_head_size) == (8, 8, 1, 8)
    assert attn0.slimkit_kept_heads.tolist() == [1] and attn1.slimkit_kept_heads.tolist() == [3]
    ref = _silence(tiny_mpnet(), {0: [0, 2, 3], 1: [0, 1, 2]})
    with torch.no_grad():
        want = ref(**token_batch).last_hidden_state
        got = res2.model(**token_batch).last_hidden_state
        # selecting the wrong heads of the bias (e.g. the first ones) changes the output by far more than this
        assert torch.allclose(got, want, atol=1e-5)
        assert torch.equal(copy.deepcopy(res2.model)(**token_batch).last_hidden_state, got)
    sk.save(res2.model, tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(sk.load(tmp_path / "m")(**token_batch).last_hidden_state, got)


def test_mpnet_heads_by_ratio(token_batch) -> None:
    res = structured(tiny_mpnet(), token_batch, granularity="head", sparsity=0.5, importance="activation")
    assert res.report.steps[0]["notes"]["heads_kept"] == {"encoder.layer.0.attention.attn": 2,
                                                          "encoder.layer.1.attention.attn": 2}
    assert res.model(**token_batch).last_hidden_state.shape == (2, 12, 32)
