"""``quantize: {method: rtn}``: packed storage, SQNR, head/embedding choices, save/load, bad configs."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import slimkit as sk
from slimkit.core.provenance import get_edits
from slimkit.measure.size import checkpoint_bytes
from slimkit.quantize.weight_only import WeightOnlyEmbedding, WeightOnlyLinear, sqnr_db


def tiny_llama(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def rtn(model: nn.Module, **options) -> sk.Result:
    return sk.compress(model, {"steps": [{"quantize": {"method": "rtn", **options}}]}, progress=False, measure=False)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 32)).eval()


@pytest.mark.parametrize("bits,group,min_db", [(8, None, 35.0), (4, 32, 16.0), (4, 128, 14.0), (3, 32, 10.0)])
def test_rtn_sqnr_on_mlp(bits: int, group, min_db: float) -> None:
    model = mlp()
    x = torch.randn(128, 64, generator=torch.Generator().manual_seed(1))
    out = rtn(model, bits=bits, group_size=group, symmetric=bits == 8).model
    assert sqnr_db(model(x), out(x)) >= min_db


def test_rtn_clip_search_raises_weight_sqnr() -> None:
    model = mlp()
    plain, searched = (rtn(model, bits=4, group_size=64, clip_search=c).model for c in (0, 10))
    w = model[2].weight
    assert sqnr_db(w, searched[2].dequantize()) > sqnr_db(w, plain[2].dequantize()) + 0.1  # uniform init: clipping gains little


def test_packing_does_not_change_the_parameter_count() -> None:
    from slimkit.measure.size import count_nonzero, count_params

    model = mlp()
    out = rtn(model, bits=4, group_size=64).model
    assert count_params(out) == count_params(model)  # params are logical; bytes shrink, not params
    assert count_nonzero(out) <= count_params(out)


def test_layers_packed_two_codes_per_byte() -> None:
    res = rtn(mlp(), bits=4, group_size=64)
    layer = res.model[2]
    assert isinstance(layer, WeightOnlyLinear)
    assert layer.qweight.dtype == torch.uint8 and layer.qweight.shape == (256, 128)
    assert layer.scales.dtype == torch.float16 and layer.scales.shape == (256, 4)
    assert [e["kind"] for e in get_edits(res.model)] == ["weight_only_linear"] * 3
    # bytes on disk shrink for real: int4 + fp16 scales + zeros is < 20 % of fp32 for these shapes
    assert checkpoint_bytes(res.model) < 0.2 * checkpoint_bytes(mlp())


def test_llama_head_and_embeddings_kept_by_default_and_reported() -> None:
    res = rtn(tiny_llama(), bits=4, group_size=32)
    assert isinstance(res.model.lm_head, nn.Linear) and isinstance(res.model.model.embed_tokens, nn.Embedding)
    skipped = {s["layer"] for s in res.report.steps[0]["skipped"]}
    assert skipped == {"lm_head", "model.embed_tokens"}
    assert res.report.steps[0]["notes"]["quantized_linear_layers"] == 14


def test_llama_save_load_identical_with_head_and_embeddings(tmp_path) -> None:
    model = tiny_llama()
    res = rtn(model, bits=4, group_size=32, lm_head=True, embeddings=True, head_bits=8)
    assert isinstance(res.model.lm_head, WeightOnlyLinear) and res.model.lm_head.bits == 8
    assert isinstance(res.model.model.embed_tokens, WeightOnlyEmbedding)
    ids = {"input_ids": torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))}
    with torch.no_grad():
        out = res.model(**ids).logits
        assert sqnr_db(model(**ids).logits, out) > 15.0
        sk.save(res.model, tmp_path / "ck")
        again = sk.load(tmp_path / "ck")
        assert torch.equal(again(**ids).logits, out)


def test_embeddings_with_tied_head_need_lm_head() -> None:
    with pytest.raises(sk.ConfigError, match="lm_head"):
        rtn(tiny_llama(), embeddings=True)


@pytest.mark.parametrize("bad,field", [({"bits": 0}, "bits"), ({"bits": 9}, "bits"), ({"group_size": 0}, "group_size"),
                                       ({"group_size": -64}, "group_size"), ({"runtime": "gpu"}, "runtime"),
                                       ({"head_bits": 1}, "head_bits")])
def test_bad_configs_raise_config_error(bad, field) -> None:
    with pytest.raises(sk.ConfigError, match=field):
        sk.Recipe.from_dict({"steps": [{"quantize": {"method": "rtn", **bad}}]})


def test_targeting_a_conv_layer_names_it() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    with pytest.raises(sk.UnsupportedModelError, match="'0'.*Conv2d"):
        rtn(model, targets=["0"])
    res = rtn(model, group_size=16)
    assert res.report.steps[0]["skipped"] == [{"layer": "0", "reason": "Conv2d is not handled by weight-only rtn"}]
