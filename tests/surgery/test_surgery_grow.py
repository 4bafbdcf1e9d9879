"""grow: Net2Net wider / deeper are function-preserving to 1e-5 and replay on load."""
from __future__ import annotations

import copy

import pytest
import torch
import transformers
from torch import nn

import slimkit as sk
from slimkit.surgery.grow.core import widening_map


def _grow(model, step):  # noqa: ANN001, ANN202
    return sk.compress(model, {"steps": [{"grow": step}]}, progress=False, measure=False)


def _llama(layers: int = 2) -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=128, tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(cfg).eval()


def test_widening_map() -> None:
    g = widening_map(4, 7, torch.Generator().manual_seed(0))
    assert g[:4].tolist() == [0, 1, 2, 3] and len(g) == 7 and int(g.max()) < 4


def test_wider_mlp_exact(make_mlp, tmp_path) -> None:
    net = make_mlp()
    x = torch.randn(6, 32)
    res = _grow(net, {"method": "wider", "factor": 1.5})
    out = res.model
    assert out.fc1.out_features == 96 and out.fc2.in_features == 96 and out.head.in_features == 96
    assert (out(x) - net(x)).abs().max() < 1e-5
    sk.save(out, tmp_path / "ck")
    assert torch.equal(sk.load(tmp_path / "ck", model=type(net)())(x), out(x))


def test_wider_explicit_pairs_and_noise(make_mlp) -> None:
    net = make_mlp()
    x = torch.randn(6, 32)
    out = _grow(net, {"method": "wider", "factor": 2.0, "pairs": [["fc1", "fc2"]]}).model
    assert out.fc1.out_features == 128 and out.fc2.out_features == 64
    assert (out(x) - net(x)).abs().max() < 1e-5
    noisy = _grow(net, {"method": "wider", "factor": 2.0, "pairs": [["fc1", "fc2"]], "noise": 0.1}).model
    assert (noisy(x) - net(x)).abs().max() > 1e-4  # noise breaks exactness (by design)


def test_wider_llama_gated_mlp_exact(tmp_path) -> None:
    model = _llama()
    ids = {"input_ids": torch.randint(0, 128, (2, 12))}
    out = _grow(model, {"method": "wider", "factor": 1.5}).model
    assert out.model.layers[0].mlp.down_proj.in_features == 192
    assert (out(**ids).logits - model(**ids).logits).abs().max() < 1e-5
    sk.save(out, tmp_path / "ck")
    assert torch.equal(sk.load(tmp_path / "ck")(**ids).logits, out(**ids).logits)


def test_wider_bert_exact(make_bert) -> None:
    model = make_bert()
    ids = {"input_ids": torch.randint(0, 100, (2, 12))}
    out = _grow(model, {"method": "wider", "factor": 2.0}).model
    assert out.encoder.layer[1].output.dense.in_features == 128
    assert (out(**ids).last_hidden_state - model(**ids).last_hidden_state).abs().max() < 1e-5


def test_deeper_llama_identity_and_replay(tmp_path) -> None:
    model = _llama(3)
    ids = {"input_ids": torch.randint(0, 128, (2, 12))}
    res = _grow(model, {"method": "deeper", "after": [0, 2]})
    out = res.model
    assert len(out.model.layers) == 5 and out.config.num_hidden_layers == 5
    assert [b.self_attn.layer_idx for b in out.model.layers] == list(range(5))
    assert res.report.to_dict()["steps"][0]["notes"]["inserted_at"] == [1, 4]
    assert (out(**ids).logits - model(**ids).logits).abs().max() < 1e-5
    assert float(out.model.layers[1].mlp.down_proj.weight.detach().abs().sum()) == 0.0
    sk.save(out, tmp_path / "ck")
    assert torch.equal(sk.load(tmp_path / "ck")(**ids).logits, out(**ids).logits)
    fresh = transformers.LlamaForCausalLM(copy.deepcopy(model.config)).eval()
    assert torch.equal(sk.load(tmp_path / "ck", model=fresh)(**ids).logits, out(**ids).logits)


def test_deeper_mobilenet_identity() -> None:
    from slimkit.zoo.mobilenet import MobileNetV2

    torch.manual_seed(0)
    net = MobileNetV2(width_mult=0.35).eval()
    x = torch.randn(1, 3, 64, 64)
    out = _grow(net, {"method": "deeper", "n": 2}).model
    assert len(out.features) == len(net.features) + 2
    assert (out(x) - net(x)).abs().max() < 1e-5


def test_grow_errors(make_bert) -> None:
    with pytest.raises(sk.UnsupportedModelError, match="BertLayer"):
        _grow(make_bert(), {"method": "deeper", "n": 1})
    with pytest.raises(sk.ConfigError, match=r"grow.after = \[7\]"):
        _grow(_llama(), {"method": "deeper", "after": [7]})
    with pytest.raises(sk.ConfigError, match="factor"):
        sk.Recipe.from_dict({"steps": [{"grow": {"method": "wider", "factor": 1.0}}]})
    with pytest.raises(sk.ConfigError, match="exactly one of n"):
        sk.Recipe.from_dict({"steps": [{"grow": {"method": "deeper"}}]})
    with pytest.raises(sk.UnsupportedModelError, match="no Linear"):
        _grow(nn.Sequential(nn.Conv2d(1, 2, 3)), {"method": "wider"})
