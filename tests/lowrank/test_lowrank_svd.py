"""low_rank: SVD factorization, rank by energy / budget / fixed, exact replay."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.lowrank.svd.core import LowRankLinear, choose_rank, factorize


def _lr(model, step):  # noqa: ANN001, ANN202
    return sk.compress(model, {"steps": [{"low_rank": step}]}, progress=False, measure=False)


def _low_rank_net(seed: int = 0) -> nn.Sequential:
    """Linear layers whose weights are exactly rank 8 plus small noise."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 32)).eval()
    with torch.no_grad():
        for m in (net[0], net[2]):
            out_f, in_f = m.weight.shape
            m.weight.copy_(torch.randn(out_f, 8) @ torch.randn(8, in_f) / 8 + 1e-4 * torch.randn(out_f, in_f))
    return net


def test_choose_rank() -> None:
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    assert choose_rank(s, 10, 10, energy=0.7) == 1
    assert choose_rank(s, 10, 10, energy=0.9) == 2
    assert choose_rank(s, 10, 10, energy=1.0) == 4
    assert choose_rank(s, 10, 10, rank=3, multiple=2) == 4
    assert choose_rank(torch.ones(100), 100, 60, params_ratio=0.5) == 18  # 0.5*6000/160 = 18.75


def test_factorize_is_optimal_truncation() -> None:
    w = torch.randn(20, 30)
    a, b, err = factorize(w, 5)
    s = torch.linalg.svdvals(w.double())
    assert a.shape == (5, 30) and b.shape == (20, 5)
    assert err == pytest.approx(float(s[5:].pow(2).sum().sqrt() / s.pow(2).sum().sqrt()), rel=1e-6)


def test_energy_finds_true_rank_and_replays(tmp_path) -> None:
    net = _low_rank_net()
    x = torch.randn(5, 64)
    res = _lr(net, {"method": "svd", "energy": 0.999})
    out = res.model
    assert isinstance(out[0], LowRankLinear) and out[0].rank == 8 and out[2].rank == 8
    notes = res.report.to_dict()["steps"][0]["notes"]
    assert notes["weight_params_ratio"] == pytest.approx(8 * (64 + 96 + 96 + 32) / (64 * 96 + 96 * 32), abs=1e-4)
    ref = net(x)
    assert float(torch.nn.functional.cosine_similarity(out(x).detach().flatten(), ref.detach().flatten(), dim=0)) > 0.9999
    sk.save(out, tmp_path / "ck")
    assert torch.equal(sk.load(tmp_path / "ck", model=_low_rank_net())(x), out(x))
    assert sk.measure.count_params(out) < sk.measure.count_params(net) * 0.45


def test_budget_and_skip_reporting() -> None:
    net = _low_rank_net()
    res = _lr(net, {"method": "svd", "params_ratio": 0.25})
    assert res.model[0].rank == int(0.25 * 64 * 96 / 160) and res.model[2].rank == int(0.25 * 96 * 32 / 128)
    none = _lr(net, {"method": "svd", "rank": 40, "targets": ["2"]})
    step = none.report.to_dict()["steps"][0]
    assert step["notes"]["factorized_layers"] == 0 and step["skipped"][0]["layer"] == "2"


def test_lowrank_errors() -> None:
    with pytest.raises(sk.ConfigError, match="exactly one of energy, params_ratio or rank"):
        sk.Recipe.from_dict({"steps": [{"low_rank": {"method": "svd"}}]})
    with pytest.raises(sk.ConfigError, match=r"energy = 1.5 is out of range"):
        sk.Recipe.from_dict({"steps": [{"low_rank": {"method": "svd", "energy": 1.5}}]})
    with pytest.raises(sk.ConfigError, match="params_ratio"):
        sk.Recipe.from_dict({"steps": [{"low_rank": {"method": "svd", "params_ratio": 1.0}}]})


# ----------------------------------------------------------------------------- head / tied weights
def test_llama_head_and_tied_embedding_kept_by_default(make_llama) -> None:
    model = make_llama()
    res = _lr(model, {"method": "svd", "rank": 4})
    assert isinstance(res.model.lm_head, nn.Linear) and res.model.lm_head.weight is res.model.model.embed_tokens.weight
    assert torch.equal(res.model.lm_head.weight, model.lm_head.weight)
    assert isinstance(res.model.model.layers[0].mlp.up_proj, LowRankLinear)
    step = res.report.steps[0]
    assert {"layer": "lm_head", "reason": "output head / embedding: kept by default (name it in targets to compress "
                                          "it)"} in step["skipped"]
    assert step["notes"]["factorized_layers"] == 14
    assert step["notes"]["layer_ranks"]["model.layers.*.mlp.up_proj"] == "4 ×2"


def test_low_rank_never_unties_a_tied_head(make_llama) -> None:
    with pytest.raises(sk.ConfigError, match="tied"):
        _lr(make_llama(), {"method": "svd", "rank": 4, "targets": ["lm_head"]})


def test_tied_linear_pair_is_skipped_and_reported() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    net[2].weight = net[0].weight  # cross-layer sharing (e.g. after share_weights)
    res = _lr(net, {"method": "svd", "rank": 2})
    assert res.model[0].weight is res.model[2].weight and isinstance(res.model[4], LowRankLinear)
    reasons = {s["layer"]: s["reason"] for s in res.report.steps[0]["skipped"]}
    assert set(reasons) == {"0", "2"} and all("tied" in r for r in reasons.values())


def test_untied_head_factorized_when_named(make_llama) -> None:
    model = make_llama()
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())  # untie
    res = _lr(model, {"method": "svd", "rank": 4, "targets": ["lm_head"]})
    assert isinstance(res.model.lm_head, LowRankLinear) and res.model.lm_head.rank == 4
