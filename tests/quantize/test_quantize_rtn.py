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


BODY = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
        "mlp.up_proj", "mlp.down_proj"]


def test_llama_head_and_embeddings_int8_by_default_and_reported() -> None:
    res = rtn(tiny_llama(), bits=4, group_size=32)
    head, emb = res.model.lm_head, res.model.model.embed_tokens
    assert isinstance(head, WeightOnlyLinear) and head.bits == 8 and head.group_size == 32
    assert isinstance(emb, WeightOnlyEmbedding) and emb.bits == 8
    assert res.model.model.layers[1].mlp.up_proj.bits == 4
    step = res.report.steps[0]
    assert step["skipped"] == [] and step["notes"]["quantized_linear_layers"] == 14
    expected = {f"model.layers.*.{n}": "int4 g32 ×2" for n in BODY}
    expected |= {"lm_head": "int8 g32 (output head)", "model.embed_tokens": "int8 g32 (embedding)"}
    assert step["notes"]["layer_precision"] == expected
    markdown = res.report.to_markdown()
    assert "- layer_precision: {" in markdown and "'lm_head': 'int8 g32 (output head)'" in markdown


def test_int8_head_default_makes_the_checkpoint_smaller() -> None:
    model = tiny_llama()
    default = checkpoint_bytes(rtn(model, bits=4, group_size=32).model)
    float_head = checkpoint_bytes(rtn(model, bits=4, group_size=32, lm_head=False, embeddings=False).model)
    # the tied fp32 128x64 table becomes one int8 table (codes + fp16 scale + uint8 zero per group of
    # 32) that the head and the embedding share
    saving = 4 * 128 * 64 - (128 * 64 + 128 * 2 * 3)
    assert abs((float_head - default) - saving) < 2048  # up to safetensors header / slimkit.json entries


def test_tied_head_and_embedding_share_one_quantized_table(tmp_path) -> None:
    model = tiny_llama()
    q = rtn(model, bits=4, group_size=32).model
    head, emb = q.lm_head, q.model.embed_tokens
    for name in ("qweight", "scales", "zeros"):
        assert getattr(emb, name) is getattr(head, name)
    # the embedding looks up exactly the head's dequantized rows
    ids = torch.tensor([[0, 5, 127, 64]])
    torch.testing.assert_close(emb(ids)[0], head.dequantize()[ids[0]], rtol=0, atol=0)
    sk.save(q, tmp_path / "a")
    back = sk.load(tmp_path / "a")
    assert back.model.embed_tokens.qweight is back.lm_head.qweight  # still one table after loading
    sk.save(back, tmp_path / "b")
    size = {d: sum(f.stat().st_size for f in (tmp_path / d).rglob("*.safetensors")) for d in ("a", "b")}
    assert size["a"] == size["b"]
    x = torch.randint(0, 128, (2, 8))
    torch.testing.assert_close(back(x).logits, q(x).logits, rtol=0, atol=0)


def test_llama_head_and_embeddings_kept_float_when_asked() -> None:
    res = rtn(tiny_llama(), bits=4, group_size=32, lm_head=False, embeddings=False)
    assert isinstance(res.model.lm_head, nn.Linear) and isinstance(res.model.model.embed_tokens, nn.Embedding)
    assert res.model.lm_head.weight is res.model.model.embed_tokens.weight  # still tied
    step = res.report.steps[0]
    assert {s["layer"] for s in step["skipped"]} == {"lm_head", "model.embed_tokens"}
    assert step["notes"]["layer_precision"]["lm_head"] == "fp32"
    assert step["notes"]["layer_precision"]["model.embed_tokens"] == "fp32"


def test_head_bits_null_follows_bits() -> None:
    res = rtn(tiny_llama(), bits=4, group_size=32, head_bits=None)
    assert res.model.lm_head.bits == 4 and res.model.model.embed_tokens.bits == 4


@pytest.mark.parametrize("options", [{"targets": ["re:.*mlp.*"]}, {"ignore": ["lm_head", "model.embed_tokens"]}])
def test_head_follows_the_selection(options) -> None:
    res = rtn(tiny_llama(), bits=4, group_size=32, **options)
    assert isinstance(res.model.lm_head, nn.Linear) and isinstance(res.model.model.embed_tokens, nn.Embedding)
    assert {s["layer"] for s in res.report.steps[0]["skipped"]} == {"lm_head", "model.embed_tokens"}


def test_tied_embedding_stays_float_with_its_float_head() -> None:
    res = rtn(tiny_llama(), bits=4, group_size=32, ignore=["lm_head"])
    assert isinstance(res.model.lm_head, nn.Linear) and isinstance(res.model.model.embed_tokens, nn.Embedding)
    reasons = {s["layer"]: s["reason"] for s in res.report.steps[0]["skipped"]}
    assert "tied to the output head" in reasons["model.embed_tokens"]


def test_head_named_in_targets_is_quantized_at_head_bits() -> None:
    res = rtn(tiny_llama(), bits=4, group_size=32, targets=["re:.*mlp.*", "lm_head", "model.embed_tokens"])
    assert res.model.lm_head.bits == 8 and res.model.model.embed_tokens.bits == 8
    assert isinstance(res.model.model.layers[0].self_attn.q_proj, nn.Linear)


def test_plain_model_last_linear_is_body() -> None:
    res = rtn(mlp(), bits=4, group_size=32)
    assert res.model[4].bits == 4  # no HF head: the last Linear is quantized like the others
    assert res.report.steps[0]["notes"]["layer_precision"] == {"0": "int4 g32", "2": "int4 g32", "4": "int4 g32"}


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
        rtn(tiny_llama(), embeddings=True, lm_head=False)


@pytest.mark.parametrize("bad,field", [({"bits": 0}, "bits"), ({"bits": 9}, "bits"), ({"group_size": 0}, "group_size"),
                                       ({"group_size": -64}, "group_size"), ({"runtime": "gpu"}, "runtime"),
                                       ({"head_bits": 1}, "head_bits"), ({"lm_head": "yes"}, "lm_head")])
def test_bad_configs_raise_config_error(bad, field) -> None:
    with pytest.raises(sk.ConfigError, match=field):
        sk.Recipe.from_dict({"steps": [{"quantize": {"method": "rtn", **bad}}]})


def test_targeting_a_conv_layer_names_it() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    with pytest.raises(sk.UnsupportedModelError, match="'0'.*Conv2d"):
        rtn(model, targets=["0"])
    res = rtn(model, group_size=16)
    assert res.report.steps[0]["skipped"] == [{"layer": "0", "reason": "Conv2d is not handled by weight-only rtn"}]


@pytest.mark.real
def test_smollm2_rtn_int4_default_checkpoint_is_at_most_a_quarter_of_fp32(tmp_path) -> None:
    """The plain recipe ``{method: rtn, bits: 4, group_size: 64}`` on SmolLM2-135M: int4 body, int8
    tied head / embedding by default; model.safetensors at most 25 % of the fp32 save (31.9 % when
    the tied table stayed fp32)."""
    model, _ = sk.zoo.load_model("smollm2-135m")
    sk.save(model, tmp_path / "fp32")
    res = rtn(model, bits=4, group_size=64)
    sk.save(res.model, tmp_path / "int4")
    ratio = (tmp_path / "int4" / "model.safetensors").stat().st_size / (tmp_path / "fp32" / "model.safetensors").stat().st_size
    print(f"\nsmollm2-135m rtn int4 g64 (int8 head/embedding): {ratio:.4f} of fp32 model.safetensors bytes")
    assert ratio <= 0.25
    precision = res.report.steps[0]["notes"]["layer_precision"]
    assert precision["lm_head"] == "int8 g64 (output head)" and precision["model.embed_tokens"] == "int8 g64 (embedding)"
    assert precision["model.layers.*.mlp.up_proj"] == "int4 g64 ×30"
