"""``quantize: {method: gptq}``: beats RTN on reconstruction, odd group sizes, block-by-block, save/load."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import slimkit as sk
from slimkit.quantize.gptq import HessianAccumulator, gptq_quantize
from slimkit.quantize.weight_only import WeightOnlyLinear, dequantize_groups, quantize_groups, sqnr_db


def tiny_llama(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=128, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def correlated_inputs(k: int, rows: int = 2048, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) * 0.3 + torch.eye(k)
    scale = torch.exp(torch.randn(k, generator=g))  # channels of very different energy
    return (torch.randn(rows, k, generator=g) @ mix) * scale


def output_error(w: torch.Tensor, w_hat: torch.Tensor, x: torch.Tensor) -> float:
    return float((x @ (w - w_hat).t()).pow(2).mean())


@pytest.mark.parametrize("group,act_order", [(32, False), (32, True), (48, True), (None, False)])
def test_gptq_beats_rtn_on_layer_reconstruction(group, act_order: bool) -> None:
    torch.manual_seed(0)
    w, x = torch.randn(64, 96), correlated_inputs(96)
    acc = HessianAccumulator(96)
    acc.add(x)
    g_codes = gptq_quantize(w, acc.hessian(), 4, group, False, damp=0.01, act_order=act_order)
    gptq_err = output_error(w, dequantize_groups(*g_codes, group), x)
    rtn_err = output_error(w, dequantize_groups(*quantize_groups(w, 4, group, False), group), x)
    assert gptq_err < 0.75 * rtn_err
    assert g_codes[1].shape == (64, 1 if group is None else -(-96 // group))  # 96 / 48 and odd tails


@pytest.mark.parametrize("symmetric", [False, True])
def test_clip_search_never_worse_than_minmax_and_helps_heavy_tails(symmetric: bool) -> None:
    from slimkit.quantize.weight_only.core import _rounding_error, group_params

    torch.manual_seed(0)
    w = torch.distributions.StudentT(4.0).sample((256, 64))  # heavy tails: min/max wastes levels
    cw = torch.rand(64) + 0.1
    plain = _rounding_error(w, *group_params(w, 4, symmetric), 4, cw)
    searched = _rounding_error(w, *group_params(w, 4, symmetric, clip_search=10, col_weight=cw), 4, cw)
    assert bool((searched <= plain + 1e-6).all())
    assert float(searched.sum()) < 0.97 * float(plain.sum())


def test_gptq_clip_search_lowers_output_error() -> None:
    torch.manual_seed(0)
    w, x = torch.distributions.StudentT(3.0).sample((64, 128)), correlated_inputs(128)
    acc = HessianAccumulator(128)
    acc.add(x)
    errs = [output_error(w, dequantize_groups(*gptq_quantize(w, acc.hessian(), 4, 32, False, act_order=True,
                                                               clip_search=c), 32), x) for c in (0, 10)]
    assert errs[1] < errs[0]


def test_gptq_group_not_dividing_width() -> None:
    w, x = torch.randn(32, 100), correlated_inputs(100)
    acc = HessianAccumulator(100)
    acc.add(x)
    codes, scale, zero = gptq_quantize(w, acc.hessian(), 4, 64, True, act_order=True)
    assert codes.shape == (32, 100) and scale.shape == (32, 2)
    assert int(codes.max()) <= 15
    assert sqnr_db(w, dequantize_groups(codes, scale, zero, 64)) > 10.0
    rtn = dequantize_groups(*quantize_groups(w, 4, 64, True), 64)
    assert output_error(w, dequantize_groups(codes, scale, zero, 64), x) < output_error(w, rtn, x)


def test_dead_inputs_do_not_break_cholesky() -> None:
    x = correlated_inputs(64)
    x[:, 5] = 0.0
    acc = HessianAccumulator(64)
    acc.add(x)
    codes, scale, zero = gptq_quantize(torch.randn(16, 64), acc.hessian(), 4, 32, False)
    assert torch.isfinite(scale).all()


def _calib(n: int = 4) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    return [{"input_ids": torch.randint(0, 128, (2, 32), generator=g)} for _ in range(n)]


def test_gptq_on_tiny_llama_sqnr_and_save_load(tmp_path) -> None:
    model = tiny_llama()
    res = sk.compress(model, {"steps": [{"quantize": {"method": "gptq", "bits": 4, "group_size": 32}}]},
                      calib=_calib(), progress=False, measure=False)
    notes = res.report.steps[0]["notes"]
    assert notes["quantized_linear_layers"] == 14 and notes["peak_rss_mb"] > 0
    bits = {n: m.bits for n, m in res.model.named_modules() if isinstance(m, WeightOnlyLinear)}
    assert len(bits) == 15 and bits.pop("lm_head") == 8 and set(bits.values()) == {4}  # head: int8 by default
    assert notes["layer_precision"]["lm_head"] == "int8 g32 (output head)"
    ids = {"input_ids": torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))}
    with torch.no_grad():
        out = res.model(**ids).logits
        assert sqnr_db(model(**ids).logits, out) > 18.0
        sk.save(res.model, tmp_path / "ck")
        assert torch.equal(sk.load(tmp_path / "ck")(**ids).logits, out)


def test_gptq_needs_calibration() -> None:
    with pytest.raises(sk.DataError, match="calib"):
        sk.compress(tiny_llama(), {"steps": [{"quantize": {"method": "gptq"}}]}, progress=False, measure=False)


@pytest.mark.parametrize("bad,field", [({"damp": 0.0}, "damp"), ({"damp": 2.0}, "damp"), ({"bits": 9}, "bits"),
                                       ({"group_size": 0}, "group_size"), ({"act_order": "yes"}, "act_order")])
def test_gptq_bad_configs(bad, field) -> None:
    with pytest.raises(sk.ConfigError, match=field):
        sk.Recipe.from_dict({"steps": [{"quantize": {"method": "gptq", **bad}}]})


def test_gptq_plain_mlp_single_block() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16)).eval()
    calib = [torch.randn(64, 32) for _ in range(4)]
    res = sk.compress(model, {"steps": [{"quantize": {"method": "gptq", "bits": 4, "group_size": 16}}]},
                      calib=calib, progress=False, measure=False)
    x = torch.randn(32, 32)
    with torch.no_grad():
        assert sqnr_db(model(x), res.model(x)) > 18.0


def test_head_method_gptq_calibrates_the_head(make_llama) -> None:
    """head_method: gptq fits the (tied) 4-bit head to its inputs: its output error on calibration
    data is below round-to-nearest's, the float table is untouched and the embedding keeps its own
    round-to-nearest copy."""
    from slimkit.quantize.weight_only.layer import WeightOnlyEmbedding, WeightOnlyLinear

    torch.manual_seed(0)
    calib = [torch.randint(0, 100, (2, 16)) for _ in range(4)]
    base = make_llama()
    table = base.lm_head.weight.detach().clone()
    out = {}
    for method in ("rtn", "gptq"):
        steps = [{"quantize": {"method": "gptq", "bits": 4, "group_size": 32, "head_bits": 4, "head_method": method}}]
        out[method] = sk.compress(base, steps, calib=calib, progress=False, measure=False).model
    torch.testing.assert_close(base.lm_head.weight, table, rtol=0, atol=0)  # the input model is not touched
    g, r = out["gptq"], out["rtn"]
    assert isinstance(g.lm_head, WeightOnlyLinear) and g.lm_head.bits == 4
    assert isinstance(g.model.embed_tokens, WeightOnlyEmbedding)
    assert g.model.embed_tokens.qweight is not g.lm_head.qweight  # GPTQ codes are the head's alone
    assert r.model.embed_tokens.qweight is r.lm_head.qweight
    # the embedding is the round-to-nearest table in both
    torch.testing.assert_close(g.model.embed_tokens.dequantize(), r.lm_head.dequantize(), rtol=0, atol=0)
    # the head's output error on the calibration inputs is lower with GPTQ
    feats = []
    hook = base.lm_head.register_forward_hook(lambda _m, a, _o: feats.append(a[0].reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        for b in calib:
            base(b)
    hook.remove()
    x = torch.cat(feats)
    err = {k: ((x @ (m.lm_head.dequantize() - table).T) ** 2).mean().item() for k, m in out.items()}
    assert err["gptq"] < 0.8 * err["rtn"]


def test_head_method_is_validated() -> None:
    with pytest.raises(sk.ConfigError, match="head_method"):
        sk.compress(torch.nn.Linear(4, 4), [{"quantize": {"method": "gptq", "head_method": "awq"}}], calib=[torch.zeros(1, 4)])
