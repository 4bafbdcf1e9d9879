"""Wanda, SparseGPT, activation and magnitude N:M: exact sparsity, N:M pattern, quality, errors, reload."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.io.checkpoint import read_manifest
from slimkit.prune.pattern import is_nm_sparse, nm_mask, parse_pattern
from slimkit.prune.sparsegpt.core import HessianStats, sparsegpt_prune
from slimkit.prune.wanda.core import row_mask


def tiny_llama(seed: int = 0) -> nn.Module:
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=128, tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def calib() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, 128, (2, 32), generator=gen)} for _ in range(4)]


def prune(model: nn.Module, calib=None, **step) -> sk.Result:  # noqa: ANN001
    return sk.compress(model, {"steps": [{"prune": step}]}, calib=calib, progress=False, measure=False)


def linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"}


# ----------------------------------------------------------------------------- math
def test_parse_pattern() -> None:
    assert parse_pattern("2:4") == (2, 4) and parse_pattern("4:8") == (4, 8) and parse_pattern(None) is None
    for bad in ("4:2", "2:2", "0:4", "2-4", "a:b"):
        with pytest.raises(sk.ConfigError, match="pattern"):
            parse_pattern(bad)


def test_nm_mask_keeps_largest_n_of_every_m() -> None:
    s = torch.tensor([[1.0, 4.0, 3.0, 2.0, 8.0, 5.0, 6.0, 7.0]])
    assert nm_mask(s, 2, 4).tolist() == [[False, True, True, False, True, False, False, True]]


def test_row_mask_exact_per_row() -> None:
    keep = row_mask(torch.rand(7, 20), 0.3)
    assert (keep.sum(1) == 14).all()


def test_sparsegpt_beats_magnitude_on_layer_reconstruction() -> None:
    torch.manual_seed(0)
    W = torch.randn(32, 64)
    X = torch.randn(512, 64) @ torch.randn(64, 64)  # correlated inputs, as in real layers
    stats = HessianStats(64)
    stats.add(nn.Linear(64, 32), X, torch.empty(0))
    Wp = sparsegpt_prune(W, stats.H, 0.5, blocksize=16)
    Wm = W * row_mask(W.abs(), 0.5)
    err_s = ((X @ (W - Wp).T) ** 2).sum() / (X @ W.T).pow(2).sum()
    err_m = ((X @ (W - Wm).T) ** 2).sum() / (X @ W.T).pow(2).sum()
    assert (Wp == 0).float().mean() == 0.5
    assert err_s < 0.7 * err_m, (float(err_s), float(err_m))
    Wnm = sparsegpt_prune(W, stats.H, 0.5, nm=(2, 4), blocksize=16)
    assert is_nm_sparse(Wnm, 2, 4) and (Wnm == 0).float().mean() == 0.5


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_unstructured_exact_sparsity_and_reload(method, calib, tmp_path) -> None:  # noqa: ANN001
    model = tiny_llama()
    res = prune(model, calib, method=method, sparsity=0.5, ignore=["lm_head"])
    for name, layer in linears(res.model).items():
        assert (layer.weight == 0).float().mean().item() == pytest.approx(0.5, abs=1e-6), name
    assert res.report.steps[0]["notes"]["weight_sparsity"] == 0.5
    assert torch.equal(res.model.lm_head.weight, model.lm_head.weight)
    sk.save(res.model, tmp_path / "ckpt")
    again = sk.load(tmp_path / "ckpt")
    x = calib[0]
    with torch.no_grad():
        assert torch.equal(again(**x).logits, res.model(**x).logits)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_nm_pattern_holds_and_stores_compressed(method, pattern, calib, tmp_path) -> None:  # noqa: ANN001
    n, m = parse_pattern(pattern)
    res = prune(tiny_llama(), calib, method=method, pattern=pattern, ignore=["lm_head"])
    for name, layer in linears(res.model).items():
        assert is_nm_sparse(layer.weight, n, m), name
        assert (layer.weight == 0).float().mean().item() == pytest.approx(1 - n / m), name
    sk.save(res.model, tmp_path / "ckpt")
    enc = read_manifest(tmp_path / "ckpt")["encodings"]
    assert enc["model.layers.0.mlp.down_proj.weight"]["encoding"] == "nm"
    again = sk.load(tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.equal(again(**calib[0]).logits, res.model(**calib[0]).logits)


def test_calibrated_methods_beat_magnitude_on_outputs(calib) -> None:  # noqa: ANN001
    model = tiny_llama()
    x = calib[0]
    with torch.no_grad():
        ref = model(**x).logits
    err = {}
    for method in ("magnitude", "sparsegpt"):
        out = prune(model, calib, method=method, sparsity=0.5, ignore=["lm_head"]).model
        with torch.no_grad():
            err[method] = float((out(**x).logits - ref).pow(2).mean() / ref.pow(2).mean())
    assert err["sparsegpt"] < 0.8 * err["magnitude"], err


def test_activation_prunes_whole_units(make_mlp) -> None:
    model = make_mlp()
    calib = [torch.randn(16, 32) for _ in range(3)]
    res = prune(model, calib, method="activation", sparsity=0.25, ignore=["head"])
    for name in ("fc1", "fc2"):
        w = getattr(res.model, name).weight
        dead_rows = (w == 0).all(1)
        assert int(dead_rows.sum()) == 16, name
        assert (getattr(res.model, name).bias[dead_rows] == 0).all()
    assert res.report.steps[0]["notes"]["unit_sparsity"] == 0.25


def test_activation_removes_the_weakest_unit(make_mlp) -> None:
    model = make_mlp()
    with torch.no_grad():
        model.fc1.weight[5] *= 1e-3
        model.fc1.bias[5] = 0
    res = prune(model, [torch.randn(16, 32)], method="activation", sparsity=1 / 64, targets=["fc1"])
    assert (res.model.fc1.weight[5] == 0).all() and int((res.model.fc1.weight == 0).all(1).sum()) == 1


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "activation"])
def test_calibration_methods_need_calib(method, make_mlp) -> None:  # noqa: ANN001
    with pytest.raises(sk.DataError, match="calib"):
        prune(make_mlp(), None, method=method, sparsity=0.5)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "activation"])
def test_sparsity_one_is_rejected(method) -> None:  # noqa: ANN001
    with pytest.raises(sk.ConfigError, match="sparsity"):
        prune(nn.Linear(4, 4), None, method=method, sparsity=1.0)


def test_n_greater_than_m_is_rejected() -> None:
    with pytest.raises(sk.ConfigError, match="pattern"):
        prune(nn.Linear(8, 8), None, method="wanda", pattern="4:2")


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_nm_on_width_not_multiple_of_m_names_layer(method, make_mlp) -> None:  # noqa: ANN001
    model = make_mlp(d_in=30)  # fc1 has 30 inputs: not a multiple of 4
    with pytest.raises(sk.UnsupportedModelError, match="fc1"):
        prune(model, [torch.randn(4, 30)], method=method, pattern="2:4")
