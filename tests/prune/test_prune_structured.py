"""Structured pruning: units physically removed, dependency-aware, output shapes kept, exact replay."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.measure.macs import count_macs


class InvertedResidual(nn.Module):
    """MobileNetV2-style block: 1x1 expand, 3x3 depthwise, 1x1 project, residual add."""

    def __init__(self, c: int, expand: int = 4) -> None:
        super().__init__()
        h = c * expand
        self.expand = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.dw(self.expand(x)))


class ResidualDWNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.blocks = nn.Sequential(InvertedResidual(16), InvertedResidual(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def make_net(seed: int = 0) -> ResidualDWNet:
    torch.manual_seed(seed)
    net = ResidualDWNet()
    for m in net.modules():  # non-trivial BN statistics so that BN slicing matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def structured(model: nn.Module, example, **step) -> sk.Result:  # noqa: ANN001
    step = {"method": "structured", **step}
    return sk.compress(model, {"steps": [{"prune": step}]}, example_inputs=example, calib=[example],
                       train=step.pop("train", None), progress=False, measure=False)


def test_cnn_channels_removed_with_depthwise_bn_and_residual(tmp_path) -> None:
    x = torch.randn(2, 3, 16, 16)
    model = make_net()
    res = structured(model, x, granularity="channel", sparsity=0.5)
    net = res.model
    blk = net.blocks[0]
    # the expanded width (64) is halved; depthwise groups and BatchNorm follow
    assert blk.expand[0].out_channels == 32 and blk.dw[0].groups == 32 and blk.dw[1].num_features == 32
    assert blk.project[0].in_channels == 32
    # the residual stream (16 channels) is one group: stem, both projects and head shrink together
    assert net.stem[0].out_channels == 8 and blk.project[0].out_channels == 8 and net.head.in_features == 8
    assert net.head.out_features == 10 and net(x).shape == (2, 10)
    assert count_macs(net, x) < 0.4 * count_macs(model, x)
    sk.save(net, tmp_path / "c")
    again = sk.load(tmp_path / "c", model=make_net(1))
    with torch.no_grad():
        assert torch.equal(again(x), net(x))


def test_target_macs_is_met_and_round_to_holds() -> None:
    x = torch.randn(1, 3, 16, 16)
    model = make_net()
    res = structured(model, x, granularity="channel", target_macs=0.5, round_to=4)
    kept = count_macs(res.model, x) / count_macs(model, x)
    assert 0.3 <= kept <= 0.5, kept  # never above the target; round_to=4 on 16 channels is coarse
    assert res.report.steps[0]["notes"]["macs_kept"] == pytest.approx(kept, abs=1e-3)
    for m in res.model.modules():
        if isinstance(m, nn.Conv2d) and m.out_channels > 3:
            assert m.out_channels % 4 == 0


def test_magnitude_importance_removes_the_zeroed_channels() -> None:
    x = torch.randn(1, 3, 16, 16)
    model = make_net()
    with torch.no_grad():  # kill 32 of the 64 expanded channels of block 0 (weights and BN)
        model.blocks[0].expand[0].weight[::2] = 0
        model.blocks[0].expand[1].weight[::2] = 0
        model.blocks[0].expand[1].bias[::2] = 0
        model.blocks[0].dw[0].weight[::2] = 0
        model.blocks[0].project[0].weight[:, ::2] = 0
    res = structured(model, x, granularity="channel", sparsity=0.5, ignore=["stem"])
    with torch.no_grad():  # those channels contributed nothing: the block's output is unchanged
        ref = model.blocks[0](model.stem(x))
        out = res.model.blocks[0](res.model.stem(x))
    assert torch.allclose(ref, out, atol=1e-5)


def test_global_allocation_prunes_the_weak_layer_harder_and_meets_target(tmp_path) -> None:
    x = torch.randn(2, 3, 16, 16)
    model = make_net()
    with torch.no_grad():  # block 0's expanded channels: half of them nearly dead
        model.blocks[0].expand[0].weight[::2] *= 0.01
        model.blocks[0].dw[0].weight[::2] *= 0.01
        model.blocks[0].project[0].weight[:, ::2] *= 0.01
    res = structured(model, x, granularity="channel", target_macs=0.7, allocation="global")
    ratios = res.report.steps[0]["notes"]["group_ratios"]
    assert ratios["blocks.0.expand.0"] >= 0.45  # the dead half goes first ...
    assert ratios["blocks.0.expand.0"] > ratios["blocks.1.expand.0"] + 0.2  # ... not an equal share
    kept = count_macs(res.model, x) / count_macs(model, x)
    assert 0.6 <= kept <= 0.7, kept
    sk.save(res.model, tmp_path / "g")
    with torch.no_grad():
        assert torch.equal(sk.load(tmp_path / "g", model=make_net(1))(x), res.model(x))


def test_global_allocation_only_for_channel_and_neuron() -> None:
    with pytest.raises(sk.ConfigError, match="allocation"):
        structured(make_net(), torch.randn(1, 3, 8, 8), granularity="head", sparsity=0.5, allocation="global")


def test_bert_neurons(make_bert, token_batch, tmp_path) -> None:
    model = make_bert()
    res = structured(model, token_batch, granularity="neuron", sparsity=0.5)
    layer = res.model.encoder.layer[0]
    assert layer.intermediate.dense.out_features == 32 and layer.output.dense.in_features == 32
    assert res.model.encoder.layer[0].attention.self.query.out_features == 32  # attention untouched
    assert res.model.pooler.dense.out_features == 32  # output-feeding groups kept
    out = res.model(**token_batch).last_hidden_state
    assert out.shape == model(**token_batch).last_hidden_state.shape
    sk.save(res.model, tmp_path / "c")
    again = sk.load(tmp_path / "c")
    with torch.no_grad():
        assert torch.equal(again(**token_batch).last_hidden_state, out)


def test_llama_gqa_tied_neurons_activation_importance(make_llama, token_batch, tmp_path) -> None:
    model = make_llama()
    res = structured(model, token_batch, granularity="neuron", sparsity=0.25, importance="activation", round_to=8)
    mlp = res.model.model.layers[1].mlp
    assert mlp.gate_proj.out_features == mlp.up_proj.out_features == mlp.down_proj.in_features == 48
    assert res.model.lm_head.weight.data_ptr() == res.model.model.embed_tokens.weight.data_ptr()  # still tied
    assert res.model.model.layers[0].self_attn.k_proj.out_features == 16  # GQA projections untouched
    logits = res.model(**token_batch).logits
    assert logits.shape == (2, 12, 100)
    sk.save(res.model, tmp_path / "c")
    again = sk.load(tmp_path / "c")
    with torch.no_grad():
        assert torch.equal(again(**token_batch).logits, logits)


def test_taylor_importance_needs_train_and_runs() -> None:
    x = torch.randn(4, 3, 16, 16)
    with pytest.raises(sk.DataError, match="train"):
        structured(make_net(), x, granularity="channel", sparsity=0.25, importance="taylor")
    res = structured(make_net(), x, granularity="channel", sparsity=0.25, importance="taylor",
                     train=[(x, torch.tensor([0, 1, 2, 3]))])
    assert res.model.blocks[0].expand[0].out_channels == 48 and res.model(x).shape == (4, 10)


@pytest.mark.parametrize("step,field", [
    ({"sparsity": 1.0}, "sparsity"),
    ({"sparsity": 0.3, "target_macs": 0.5}, "target_macs"),
    ({}, "sparsity"),
    ({"target_macs": 0.0}, "target_macs"),
    ({"sparsity": 0.3, "granularity": "block"}, "granularity"),
    ({"sparsity": 0.3, "round_to": 0}, "round_to"),
    ({"sparsity": 0.3, "importance": "random"}, "importance"),
])
def test_bad_config(step, field) -> None:  # noqa: ANN001
    with pytest.raises(sk.ConfigError, match=field):
        sk.Recipe.from_dict({"steps": [{"prune": {"method": "structured", **step}}]})


def test_model_without_prunable_group_is_reported(make_mlp) -> None:
    with pytest.raises(sk.UnsupportedModelError, match="no prunable channel"):
        structured(make_mlp(), torch.randn(2, 32), granularity="channel", sparsity=0.5)
