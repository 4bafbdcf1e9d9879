"""drop_layers: block influence, quality and last criteria; replay on load; config errors."""
from __future__ import annotations

import copy

import pytest
import torch
import transformers

import slimkit as sk
from slimkit.surgery.blocks import find_blocks
from slimkit.surgery.drop_layers.core import block_influence, choose_blocks


def _llama(layers: int = 4, seed: int = 0) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                                   tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture
def calib() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, 128, (2, 16), generator=gen)} for _ in range(2)]


def _run(model, step, calib=None):  # noqa: ANN001, ANN202
    return sk.compress(model, {"steps": [{"drop_layers": step}]}, calib=calib, progress=False, measure=False)


def test_block_influence_matches_hand_computation(calib) -> None:
    model = _llama()
    bi = block_influence(model, list(model.model.layers), calib[:1])
    # hand computation for block 2: capture its input and output with one hook
    seen = {}
    h = model.model.layers[2].register_forward_hook(
        lambda m, a, k, o: seen.update(x=k["hidden_states"] if not a else a[0], y=o), with_kwargs=True)
    with torch.no_grad():
        model(**calib[0])
    h.remove()
    x, y = seen["x"].reshape(-1, 64), seen["y"].reshape(-1, 64)
    expected = float((1 - torch.nn.functional.cosine_similarity(x, y, dim=-1)).mean())
    assert bi[2] == pytest.approx(expected, rel=1e-5)
    assert choose_blocks({0: 0.3, 1: 0.1, 2: 0.2, 3: 0.05}, 2) == [1, 3]


@pytest.mark.parametrize("method", ["influence", "quality", "last"])
def test_drop_replays_on_load(method, calib, tmp_path) -> None:
    model = _llama()
    res = _run(model, {"method": method, "n": 2}, calib[:1])
    out = res.model
    notes = res.report.to_dict()["steps"][0]["notes"]
    assert len(out.model.layers) == 2 and out.config.num_hidden_layers == 2
    assert [b.self_attn.layer_idx for b in out.model.layers] == [0, 1]
    if method == "last":
        assert notes["blocks_dropped"] == [2, 3]
    else:
        scores = notes["scores"]
        kept = sorted(scores, key=lambda k: scores[k])[:2]
        assert sorted(int(k) for k in kept) == notes["blocks_dropped"]
    # the surviving blocks are the original ones, untouched
    survivors = [i for i in range(4) if i not in notes["blocks_dropped"]]
    assert torch.equal(out.model.layers[0].mlp.up_proj.weight, model.model.layers[survivors[0]].mlp.up_proj.weight)
    sk.save(out, tmp_path / "ck")
    x = calib[0]
    assert torch.equal(sk.load(tmp_path / "ck")(**x).logits, out(**x).logits)
    fresh = transformers.LlamaForCausalLM(copy.deepcopy(model.config)).eval()  # the original 4-layer config
    again = sk.load(tmp_path / "ck", model=fresh)
    assert len(again.model.layers) == 2
    assert torch.equal(again(**x).logits, out(**x).logits)
    assert len(model.model.layers) == 4  # input model untouched


def test_drop_then_drop_again_replays(calib, tmp_path) -> None:
    res = sk.compress(_llama(6), {"steps": [{"drop_layers": {"method": "last", "n": 1}},
                                            {"drop_layers": {"method": "influence", "n": 2}}]},
                      calib=calib, progress=False, measure=False)
    assert len(res.model.model.layers) == 3
    sk.save(res.model, tmp_path / "ck")
    x = calib[0]
    assert torch.equal(sk.load(tmp_path / "ck")(**x).logits, res.model(**x).logits)
    again = sk.load(tmp_path / "ck", model=_llama(6, seed=5))
    assert torch.equal(again(**x).logits, res.model(**x).logits)


def test_drop_fraction_and_generation(calib) -> None:
    out = _run(_llama(), {"method": "influence", "fraction": 0.25}, calib).model
    assert len(out.model.layers) == 3
    ids = calib[0]["input_ids"]
    gen = out.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    assert gen.shape == (2, 20)  # KV cache works with renumbered layer_idx


def test_mobilenet_only_residual_blocks_are_candidates(tmp_path) -> None:
    from slimkit.zoo.mobilenet import MobileNetV2

    torch.manual_seed(0)
    net = MobileNetV2(width_mult=0.35).eval()
    blocks = find_blocks(net)
    assert blocks.path == "features"
    assert all(net.features[i].use_res_connect for i in blocks.droppable) and len(blocks.droppable) == 10
    x = torch.randn(1, 3, 32, 32)
    res = sk.compress(net, {"steps": [{"drop_layers": {"n": 3}}]}, calib=[x], progress=False, measure=False)
    assert len(res.model.features) == len(net.features) - 3
    sk.save(res.model, tmp_path / "ck")
    assert torch.equal(sk.load(tmp_path / "ck", model=MobileNetV2(width_mult=0.35))(x), res.model(x))


def test_drop_errors(calib) -> None:
    with pytest.raises(sk.DataError, match="calib"):
        _run(_llama(), {"method": "influence", "n": 1})
    with pytest.raises(sk.ConfigError, match=r"drop_layers.n = 4 .*valid range is \[1, 3\]"):
        _run(_llama(), {"method": "last", "n": 4})
    with pytest.raises(sk.ConfigError, match="n must be an integer"):
        _run(_llama(), {"method": "last", "n": 1.5})
    with pytest.raises(sk.ConfigError, match="exactly one of n"):
        _run(_llama(), {"method": "last", "n": 1, "fraction": 0.5})
    with pytest.raises(sk.ConfigError, match="fraction"):
        _run(_llama(), {"method": "last", "fraction": 1.0})
    with pytest.raises(sk.UnsupportedModelError, match="container = 'model.nope'"):
        _run(_llama(), {"method": "last", "n": 1, "container": "model.nope"})
