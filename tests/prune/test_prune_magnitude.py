"""Unstructured magnitude pruning: exact sparsity per layer / overall, ignore, biases, smaller checkpoint."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.prune.magnitude.core import global_threshold, layer_mask


def prune(model: nn.Module, **options) -> sk.Result:
    return sk.compress(model, {"steps": [{"prune": {"method": "magnitude", **options}}]}, progress=False, measure=False)


def zeros(t: torch.Tensor) -> int:
    return int((t == 0).sum())


def targeted(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


# ----------------------------------------------------------------------------- math
def test_layer_mask_removes_exactly_the_smallest() -> None:
    scores = torch.tensor([[5.0, 1.0, 3.0], [0.5, 4.0, 2.0]])
    keep = layer_mask(scores, 0.5)
    assert keep.tolist() == [[True, False, True], [False, True, False]]
    assert layer_mask(scores, 0.0).all()


def test_global_threshold_is_kth_smallest() -> None:
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 0.5, 7.0, 8.0])
    assert global_threshold([a, b], 3 / 7) == 2.0
    assert global_threshold([a, b], 0.0) == float("-inf")


# ----------------------------------------------------------------------------- layer scope
@pytest.mark.parametrize("sparsity", [0.5, 0.3])
def test_layer_scope_exact_count_per_layer_mlp(make_mlp, sparsity) -> None:
    model = make_mlp()
    res = prune(model, sparsity=sparsity, scope="layer")
    layers = targeted(res.model)
    assert set(layers) == {"fc1", "fc2", "head"}
    for name, layer in layers.items():
        n = layer.weight.numel()
        assert zeros(layer.weight) == round(sparsity * n), name
        assert abs(zeros(layer.weight) / n - sparsity) <= 0.01
    assert res.report.steps[0]["notes"]["layers"] == 3


def test_layer_scope_prunes_conv_and_linear_of_a_cnn(make_cnn) -> None:
    model = make_cnn().eval()
    res = prune(model, sparsity=0.5)
    layers = targeted(res.model)
    assert set(layers) == {"conv1", "conv2", "fc"}
    for name, layer in layers.items():
        assert zeros(layer.weight) == round(0.5 * layer.weight.numel()), name
    # BatchNorm is not a targeted type: untouched
    assert torch.equal(res.model.bn1.weight, model.bn1.weight)


def test_pruning_keeps_the_largest_weights(make_mlp) -> None:
    model = make_mlp()
    res = prune(model, sparsity=0.5)
    w0, w1 = model.fc2.weight.detach(), res.model.fc2.weight.detach()
    kept, dropped = w0[w1 != 0].abs(), w0[w1 == 0].abs()
    assert kept.min() >= dropped.max()
    assert torch.equal(w1[w1 != 0], w0[w1 != 0])  # survivors are not rescaled


def test_biases_untouched(make_mlp) -> None:
    model = make_mlp()
    res = prune(model, sparsity=0.5)
    for name in ("fc1", "fc2", "head"):
        assert torch.equal(getattr(res.model, name).bias, getattr(model, name).bias)
        assert zeros(getattr(res.model, name).bias) == 0


def test_ignore_leaves_layer_untouched(make_mlp) -> None:
    model = make_mlp()
    res = prune(model, sparsity=0.5, ignore=["head"])
    assert torch.equal(res.model.head.weight, model.head.weight)
    assert zeros(res.model.fc1.weight) == round(0.5 * res.model.fc1.weight.numel())
    assert res.report.steps[0]["notes"]["layers"] == 2


def test_targets_restricts_pruning(make_mlp) -> None:
    model = make_mlp()
    res = prune(model, sparsity=0.5, targets=["fc2"])
    assert zeros(res.model.fc2.weight) == round(0.5 * res.model.fc2.weight.numel())
    assert torch.equal(res.model.fc1.weight, model.fc1.weight)
    assert torch.equal(res.model.head.weight, model.head.weight)


def test_layer_types_restricts_pruning(make_cnn) -> None:
    model = make_cnn().eval()
    res = prune(model, sparsity=0.5, layer_types=["Conv2d"])
    assert torch.equal(res.model.fc.weight, model.fc.weight)
    assert zeros(res.model.conv2.weight) == round(0.5 * res.model.conv2.weight.numel())


# ----------------------------------------------------------------------------- global scope
def test_global_scope_overall_sparsity(make_mlp) -> None:
    model = make_mlp()
    with torch.no_grad():  # give layers different scales so that global != layer-wise
        model.fc1.weight.mul_(4.0)
        model.head.weight.mul_(0.25)
    res = prune(model, sparsity=0.5, scope="global")
    layers = targeted(res.model)
    total = sum(m.weight.numel() for m in layers.values())
    pruned = sum(zeros(m.weight) for m in layers.values())
    assert abs(pruned / total - 0.5) <= 0.01
    per_layer = {n: zeros(m.weight) / m.weight.numel() for n, m in layers.items()}
    assert per_layer["fc1"] < 0.2 and per_layer["head"] > 0.8  # really global: scales decide
    assert res.report.steps[0]["notes"]["weight_sparsity"] == pytest.approx(pruned / total, abs=1e-4)


def test_global_scope_respects_ignore(make_mlp) -> None:
    model = make_mlp()
    res = prune(model, sparsity=0.5, scope="global", ignore=["fc2"])
    assert torch.equal(res.model.fc2.weight, model.fc2.weight)
    pruned = zeros(res.model.fc1.weight) + zeros(res.model.head.weight)
    total = res.model.fc1.weight.numel() + res.model.head.weight.numel()
    assert abs(pruned / total - 0.5) <= 0.01


def test_nonzero_params_in_report(make_mlp) -> None:
    model = make_mlp()
    res = sk.compress(model, {"steps": [{"prune": {"sparsity": 0.5}}]}, progress=False)
    params = sum(p.numel() for p in model.parameters())
    weights = sum(getattr(model, n).weight.numel() for n in ("fc1", "fc2", "head"))
    d = res.report.to_dict()
    assert d["before"]["params"] == params
    assert d["before"]["nonzero_params"] == params
    assert d["after"]["nonzero_params"] == params - round(0.5 * 32 * 64) - round(0.5 * 64 * 64) - round(0.5 * 64 * 8)
    assert d["ratios"]["nonzero_params"] == pytest.approx(d["after"]["nonzero_params"] / params)
    assert weights == 32 * 64 + 64 * 64 + 64 * 8


# ----------------------------------------------------------------------------- storage
def test_pruned_checkpoint_is_smaller(make_mlp, tmp_path) -> None:
    model = make_mlp(hidden=256)
    res = prune(model, sparsity=0.5)
    sk.save(model, tmp_path / "dense")
    sk.save(res.model, tmp_path / "sparse")
    dense = (tmp_path / "dense" / "model.safetensors").stat().st_size
    sparse = (tmp_path / "sparse" / "model.safetensors").stat().st_size
    assert sparse / dense < 0.70
    # and it decodes to exactly the pruned weights
    back = sk.load(tmp_path / "sparse", model=type(model)(hidden=256))
    for k, v in res.model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
