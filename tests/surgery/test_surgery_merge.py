"""merge_layers: bn_fold and linear_fold exactness, LaCo similar merge, replay on load."""
from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

import slimkit as sk
from slimkit.surgery.merge_layers.core import adjacent_pairs, fold_linear, rdsc_merge
from slimkit.zoo.mobilenet import MobileNetV2


def _merge(model, step, calib=None):  # noqa: ANN001, ANN202
    return sk.compress(model, {"steps": [{"merge_layers": step}]}, calib=calib, progress=False, measure=False)


def _randomize_bn(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.3, 2.0)
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)


def test_bn_fold_traced_model_exact(make_cnn, tmp_path) -> None:
    net = make_cnn().eval()
    _randomize_bn(net)
    x = torch.randn(2, 3, 16, 16)
    res = _merge(net, {"method": "bn_fold"})
    out = res.model
    assert isinstance(out.bn1, nn.Identity) and out.conv1.bias is not None
    assert res.report.to_dict()["steps"][0]["notes"]["folded_batchnorms"] == 1
    assert (out(x) - net(x)).abs().max() < 1e-5
    sk.save(out, tmp_path / "ck")
    assert torch.equal(sk.load(tmp_path / "ck", model=type(net)())(x), out(x))


def test_bn_fold_mobilenet_exact(tmp_path) -> None:
    torch.manual_seed(0)
    net = MobileNetV2(width_mult=0.35).eval()
    _randomize_bn(net)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    x = torch.randn(2, 3, 64, 64)
    res = _merge(net, {"method": "bn_fold"})
    out = res.model
    assert res.report.to_dict()["steps"][0]["notes"]["folded_batchnorms"] == n_bn == 52
    assert not any(isinstance(m, nn.BatchNorm2d) for m in out.modules())
    ref = net(x)
    assert (out(x) - ref).abs().max() / ref.abs().max() < 1e-5
    sk.save(out, tmp_path / "ck")
    assert torch.equal(sk.load(tmp_path / "ck", model=MobileNetV2(width_mult=0.35))(x), out(x))


def test_bn_not_fed_by_conv_is_reported() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    res = _merge(net, {"method": "bn_fold"})
    step = res.report.to_dict()["steps"][0]
    assert step["notes"]["folded_batchnorms"] == 0
    assert step["skipped"][0]["layer"] == "2"


def test_linear_fold_exact_and_growth_guard(tmp_path) -> None:
    torch.manual_seed(0)

    def build() -> nn.Sequential:
        return nn.Sequential(nn.Linear(16, 4), nn.Dropout(0.1), nn.Linear(4, 16), nn.ReLU(),
                             nn.Linear(16, 16), nn.Linear(16, 3)).eval()

    net = build()
    x = torch.randn(5, 16)
    res = _merge(net, {"method": "linear_fold"})
    step = res.report.to_dict()["steps"][0]
    assert step["notes"]["fused_linear_pairs"] == 1  # 16->4->16 would grow 128 -> 256 weights
    assert step["skipped"][0]["layer"] == "0"
    assert isinstance(res.model[5], nn.Identity) and res.model[4].weight.shape == (3, 16)
    assert (res.model(x) - net(x)).abs().max() < 1e-5
    grown = _merge(net, {"method": "linear_fold", "allow_growth": True}).model
    assert grown[0].weight.shape == (16, 16) and (grown(x) - net(x)).abs().max() < 1e-5
    sk.save(grown, tmp_path / "ck")
    assert torch.equal(sk.load(tmp_path / "ck", model=build())(x), grown(x))
    a, b = nn.Linear(3, 5), nn.Linear(5, 2)
    w, bias = fold_linear(a, b)
    assert torch.allclose(x[:, :3] @ w.T + bias, b(a(x[:, :3])), atol=1e-6)


def test_pairs_need_single_consumer() -> None:
    class Fork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            return self.b(h) + h  # a feeds b and the residual: not foldable

    assert adjacent_pairs(Fork(), (nn.Linear,), (nn.Linear,)) == []


def test_rdsc_merge_formula() -> None:
    blocks = [nn.Linear(2, 2) for _ in range(3)]
    merged = rdsc_merge(blocks)
    w = [b.weight.detach() for b in blocks]
    assert torch.allclose(merged["weight"], w[0] + (w[1] - w[0]) + (w[2] - w[0]))


def test_similar_merges_and_replays(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=128, tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(cfg).eval()
    calib = [{"input_ids": torch.randint(0, 128, (2, 16))}]
    res = _merge(model, {"method": "similar", "n": 2, "threshold": 0.5}, calib)
    notes = res.report.to_dict()["steps"][0]["notes"]
    assert notes["blocks_removed"] == 2 and len(res.model.model.layers) == 4
    assert all(m["similarity"] >= 0.5 for m in notes["merges"])
    one = _merge(model, {"method": "similar", "n": 1, "threshold": 0.5}, calib)
    first = one.report.to_dict()["steps"][0]["notes"]["merges"][0]["into"]
    # a merged pair is θ_l + (θ_{l+1} − θ_l) = θ_{l+1}
    assert torch.allclose(one.model.model.layers[first].mlp.up_proj.weight, model.model.layers[first + 1].mlp.up_proj.weight)
    sk.save(res.model, tmp_path / "ck")
    assert torch.equal(sk.load(tmp_path / "ck")(**calib[0]).logits, res.model(**calib[0]).logits)
    strict = _merge(model, {"method": "similar", "n": 2, "threshold": 1.0}, calib)
    assert strict.report.to_dict()["steps"][0]["skipped"][0]["layer"] == "model.layers"


def test_merge_config_errors() -> None:
    with pytest.raises(sk.ConfigError, match="threshold"):
        sk.Recipe.from_dict({"steps": [{"merge_layers": {"method": "similar", "threshold": 2}}]})
    with pytest.raises(sk.ConfigError, match="merge_size"):
        sk.Recipe.from_dict({"steps": [{"merge_layers": {"method": "similar", "merge_size": 1}}]})
    with pytest.raises(sk.ConfigError, match="'fold'"):
        sk.Recipe.from_dict({"steps": [{"merge_layers": {"method": "fold"}}]})


class _Untraceable(nn.Module):
    """Conv + BN in a Sequential, but the forward branches on the data: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x) if x.sum() > -1e9 else x


def test_bn_fold_untraceable_model_reports_fallback() -> None:
    torch.manual_seed(0)
    net = _Untraceable().eval()
    _randomize_bn(net)
    x = torch.randn(2, 3, 8, 8)
    res = _merge(net, {"method": "bn_fold"})
    notes = res.report.to_dict()["steps"][0]["notes"]
    assert notes["folded_batchnorms"] == 1  # found through the nn.Sequential rule
    assert "TraceError" in notes["fallback"] and "nn.Sequential" in notes["fallback"]
    assert (res.model(x) - net(x)).abs().max() < 1e-5


def test_linear_fold_traced_model_has_no_fallback_note() -> None:
    net = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 2)).eval()
    notes = _merge(net, {"method": "linear_fold"}).report.to_dict()["steps"][0]["notes"]
    assert notes["fused_linear_pairs"] == 1 and "fallback" not in notes
