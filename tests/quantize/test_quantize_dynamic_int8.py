"""Dynamic int8: layers swapped, int8 storage, SQNR, per-channel vs per-tensor, tied heads, MiniLM."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors import safe_open
from torch import nn

import slimkit as sk
from slimkit.core.provenance import get_edits
from slimkit.quantize.dynamic_int8 import Int8DynamicLinear, quantize_per_channel

INT8 = {"steps": [{"quantize": {"method": "dynamic_int8"}}]}


def quantize(model: nn.Module, **options) -> sk.Result:
    return sk.compress(model, {"steps": [{"quantize": {"method": "dynamic_int8", **options}}]},
                       progress=False, measure=False)


def sqnr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - out).pow(2).sum()))


def random_mlp(seed: int, row_scales: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 32))
    if row_scales:  # output channels of very different magnitude, as in trained networks
        with torch.no_grad():
            for layer in model:
                if isinstance(layer, nn.Linear):
                    layer.weight.mul_(torch.exp(torch.randn(layer.out_features, 1)))
    return model.eval()


# ----------------------------------------------------------------------------- math
def test_quantize_per_channel_math() -> None:
    w = torch.tensor([[1.0, -0.6, 0.3], [10.0, 4.0, -10.0]])
    q, scale = quantize_per_channel(w, per_channel=True)
    assert q.dtype == torch.int8
    assert torch.allclose(scale, torch.tensor([1 / 127, 10 / 127]))
    assert q.tolist() == [[127, -76, 38], [127, 51, -127]]
    q1, s1 = quantize_per_channel(w, per_channel=False)
    assert s1.shape == (1,) and float(s1) == pytest.approx(10 / 127)
    assert q1[0].tolist() == [13, -8, 4]


# ----------------------------------------------------------------------------- the step
def test_linear_layers_replaced_with_int8(make_mlp) -> None:
    model = make_mlp()
    res = quantize(model)
    for name in ("fc1", "fc2", "head"):
        layer = getattr(res.model, name)
        assert isinstance(layer, Int8DynamicLinear), name
        assert layer.weight_int8.dtype == torch.int8
        assert layer.weight_int8.shape == getattr(model, name).weight.shape
        assert layer.weight_scale.shape == (layer.out_features,)
        assert torch.equal(layer.bias, getattr(model, name).bias)
    assert not any(isinstance(m, nn.Linear) for m in res.model.modules())
    assert res.report.steps[0]["notes"]["quantized_linear_layers"] == 3
    assert res.report.steps[0]["skipped"] == []
    edits = get_edits(res.model)
    assert [(e["op"], e["path"], e["kind"]) for e in edits] == [
        ("replace_module", n, "int8_dynamic_linear") for n in ("fc1", "fc2", "head")]


def test_ignore_keeps_fp32_layer(make_mlp) -> None:
    res = quantize(make_mlp(), ignore=["head"])
    assert isinstance(res.model.head, nn.Linear)
    assert isinstance(res.model.fc1, Int8DynamicLinear)
    assert res.report.steps[0]["notes"]["quantized_linear_layers"] == 2


@pytest.mark.parametrize("activations", ["per_token", "per_tensor"])
def test_sqnr_at_least_30db_on_random_mlp(activations) -> None:
    model = random_mlp(0)
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
        res = quantize(model, activations=activations)
        out = res.model(x)
    assert res.model[0].activations == activations
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert sqnr_db(ref, out) >= 30.0  # measured ~38 dB both ways


def test_default_activations_are_per_token(make_mlp) -> None:
    res = quantize(make_mlp())
    assert res.model.fc1.activations == "per_token"
    assert res.report.steps[0]["config"]["activations"] == "per_token"


def test_bad_activations_value_is_a_config_error() -> None:
    with pytest.raises(sk.ConfigError, match="activations"):
        sk.Recipe.from_dict({"steps": [{"quantize": {"method": "dynamic_int8", "activations": "per_row"}}]})


def test_per_token_matches_an_exact_integer_reference() -> None:
    """y = (round(x/s_x) @ q_w^T) * s_x * s_w + b, with int32 accumulation, per token and channel."""
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    layer = Int8DynamicLinear.from_linear(linear, per_channel=True, activations="per_token")
    x = torch.randn(3, 5, 16)
    x2 = x.reshape(-1, 16)
    s_x = (x2.abs().amax(dim=1, keepdim=True) / 127).clamp_min(1e-12)
    xq = torch.round(x2 / s_x).clamp(-127, 127).to(torch.int64)
    acc = xq @ layer.weight_int8.to(torch.int64).t()
    expected = (acc.double() * s_x.double() * layer.weight_scale.double() + linear.bias.double()).reshape(3, 5, 8)
    with torch.no_grad():
        out = layer(x)
    assert out.shape == (3, 5, 8)
    assert torch.allclose(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_per_token_beats_per_tensor_with_an_outlier_token() -> None:
    """One token with huge activations must not ruin the resolution of every other token."""
    model = random_mlp(0)
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    x[0] *= 100.0
    with torch.no_grad():
        ref = model(x)[1:]
        per_token = sqnr_db(ref, quantize(model, activations="per_token").model(x)[1:])
        per_tensor = sqnr_db(ref, quantize(model, activations="per_tensor").model(x)[1:])
    assert per_token >= 30.0
    assert per_token > per_tensor + 10.0


def test_per_channel_beats_per_tensor() -> None:
    model = random_mlp(0, row_scales=True)
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
        per_channel = sqnr_db(ref, quantize(model, per_channel=True).model(x))
        per_tensor = sqnr_db(ref, quantize(model, per_channel=False).model(x))
    assert per_channel > per_tensor + 3.0  # measured ~33 dB vs ~27 dB
    assert per_channel >= 30.0


def test_per_tensor_layer_has_one_scale() -> None:
    res = quantize(random_mlp(0), per_channel=False)
    assert res.model[0].weight_scale.shape == (1,)
    assert res.model[0].per_channel is False


def test_tied_lm_head_is_reported_as_skipped(make_llama, token_batch) -> None:
    model = make_llama()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    res = quantize(model)
    step = res.report.to_dict()["steps"][0]
    skipped = {s["layer"]: s["reason"] for s in step["skipped"]}
    assert list(skipped) == ["lm_head"]
    assert "tied" in skipped["lm_head"]
    assert isinstance(res.model.lm_head, nn.Linear)
    assert res.model.lm_head.weight is res.model.model.embed_tokens.weight  # still tied
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert step["notes"]["quantized_linear_layers"] == n_linear - 1
    assert isinstance(res.model.model.layers[0].self_attn.q_proj, Int8DynamicLinear)
    with torch.no_grad():
        ref = model(**token_batch).logits
        out = res.model(**token_batch).logits
    assert out.shape == ref.shape
    assert "skipped `lm_head`" in res.report.to_markdown()


def test_quantize_tied_true_unties_and_quantizes(make_llama) -> None:
    res = quantize(make_llama(), quantize_tied=True)
    assert isinstance(res.model.lm_head, Int8DynamicLinear)
    assert res.report.steps[0]["skipped"] == []


# ----------------------------------------------------------------------------- storage
def _header(path) -> dict:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n))


def test_checkpoint_stores_int8_and_is_small(tmp_path) -> None:
    model = random_mlp(0)
    res = quantize(model)
    sk.save(model, tmp_path / "fp32")
    sk.save(res.model, tmp_path / "int8")
    path = tmp_path / "int8" / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        for i in (0, 2, 4):
            assert f.get_slice(f"{i}.weight_int8").get_dtype() == "I8"
            assert f.get_tensor(f"{i}.weight_int8").dtype == torch.int8
        assert not any(k.endswith(".weight") for k in keys)  # no fp32 copy of the weights
    assert _header(path)["0.weight_int8"]["dtype"] == "I8"
    fp32 = sum(p.stat().st_size for p in (tmp_path / "fp32").iterdir())
    int8 = sum(p.stat().st_size for p in (tmp_path / "int8").iterdir())
    assert int8 < 0.35 * fp32
    tensor_ratio = path.stat().st_size / (tmp_path / "fp32" / "model.safetensors").stat().st_size
    assert tensor_ratio < 0.30


@pytest.mark.parametrize("activations", ["per_token", "per_tensor"])
def test_int8_layers_count_the_same_macs(make_mlp, activations) -> None:
    """An int8 Linear does the same multiply-accumulates as the float one it replaces."""
    model = make_mlp()
    x = torch.randn(4, 32)
    expected = 4 * (32 * 64 + 64 * 64 + 64 * 8)
    assert sk.measure(model, x, latency=False)["macs"] == expected
    int8 = quantize(model, activations=activations).model
    assert sk.measure(int8, x, latency=False)["macs"] == expected


def test_measured_bytes_shrink_in_report() -> None:
    model = random_mlp(0)
    res = sk.compress(model, INT8, progress=False)
    d = res.report.to_dict()
    assert d["ratios"]["bytes"] < 0.35
    assert d["after"]["params"] == d["before"]["params"]  # int8 changes bytes, not counts


# ----------------------------------------------------------------------------- real model
@pytest.mark.parametrize("activations", ["per_token", "per_tensor"])
def test_int8_checkpoint_round_trip_keeps_activation_mode(make_mlp, tmp_path, activations) -> None:
    res = quantize(make_mlp(), activations=activations)
    sk.save(res.model, tmp_path / "q")
    loaded = sk.load(tmp_path / "q", model=make_mlp(seed=3))
    assert loaded.fc2.activations == activations
    x = torch.randn(6, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), res.model(x))


@pytest.mark.real
def test_minilm_int8_cosine_fidelity(minilm) -> None:
    model, tok = minilm
    batches = sk.zoo.load_data("shakespeare-lines", "test", tokenizer=tok, batch_size=16, seq_len=64, max_batches=1)
    assert len(batches) == 1 and batches[0]["input_ids"].shape == (16, 64)
    fidelity = sk.CosineFidelity(batches)
    res = sk.compress(model, INT8, eval=fidelity, progress=False, measure=False)
    quantized = [n for n, m in res.model.named_modules() if isinstance(m, Int8DynamicLinear)]
    assert len(quantized) == 6 * 6 + 1  # q, k, v, attn-out, intermediate, output per layer + pooler
    after = res.report.to_dict()["after"]["quality"]
    assert after >= 0.99
    assert after < 1.0  # it really quantized
    assert res.report.to_dict()["before"]["quality"] == pytest.approx(1.0, abs=1e-6)
    # independent check of the same number: mean-pooled embeddings, cosine per sentence
    batch = batches[0]
    with torch.no_grad():
        mask = batch["attention_mask"].unsqueeze(-1).float()
        ref = (model(**batch).last_hidden_state * mask).sum(1) / mask.sum(1)
        out = (res.model(**batch).last_hidden_state * mask).sum(1) / mask.sum(1)
    cos = torch.nn.functional.cosine_similarity(ref.double(), out.double(), dim=1)
    assert float(cos.mean()) == pytest.approx(after, abs=1e-6)
