"""share_weights: k-means codebook layers (bytes, SQNR, packing, fine-tunable centroids) and cross-layer ties."""
from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

import slimkit as sk
from slimkit.measure.size import checkpoint_bytes
from slimkit.share.cross_layer.core import shared_parameters
from slimkit.share.kmeans.core import ClusteredLinear, index_bits, kmeans_1d, pack_indices, unpack_indices


def _share(model, step, **kw):  # noqa: ANN001, ANN003, ANN202
    return sk.compress(model, {"steps": [{"share_weights": step}]}, progress=False, measure=False, **kw)


def _sqnr_db(ref: torch.Tensor, approx: torch.Tensor) -> float:
    ref, approx = ref.detach(), approx.detach()
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - approx).pow(2).sum()))


@pytest.mark.parametrize("bits,in_f", [(1, 13), (2, 9), (4, 7), (8, 5)])
def test_pack_roundtrip(bits: int, in_f: int) -> None:
    idx = torch.randint(0, 1 << bits, (3, in_f))
    packed = pack_indices(idx, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (3, (in_f * bits + 7) // 8)
    assert torch.equal(unpack_indices(packed, bits, in_f), idx)
    assert [index_bits(k) for k in (2, 3, 4, 5, 16, 17, 256)] == [1, 2, 2, 4, 4, 8, 8]


def test_kmeans_1d_finds_clusters() -> None:
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([-1.0, 0.0, 2.0])
    values = centers[torch.randint(0, 3, (3000,), generator=gen)] + 0.01 * torch.randn(3000, generator=gen)
    c, assign = kmeans_1d(values, 3)
    assert torch.allclose(c.float(), centers, atol=0.01)
    assert torch.equal(c[assign].float().round(), values.round())


def test_kmeans_16_clusters_bytes_and_quality(tmp_path) -> None:
    torch.manual_seed(0)

    def build() -> nn.Sequential:
        return nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 128)).eval()

    net = build()
    x = torch.randn(8, 256)
    res = _share(net, {"method": "kmeans", "clusters": 16})
    out = res.model
    assert isinstance(out[0], ClusteredLinear) and out[0].indices.dtype == torch.uint8
    assert out[0].weight.unique().numel() <= 16
    assert _sqnr_db(net[0].weight, out[0].weight) > 20.0  # uniform weights, 16 levels: ~24 dB
    assert res.report.to_dict()["steps"][0]["notes"]["index_bits"] == 4
    dense = sum(m.weight.numel() * 4 for m in net if isinstance(m, nn.Linear))
    shared = sum(m.indices.numel() + m.codebook.numel() * 4 for m in out if isinstance(m, ClusteredLinear))
    assert dense / shared >= 5.0  # target: 16-cluster sharing cuts Linear weight bytes >= 5x (it is ~8x)
    assert checkpoint_bytes(net) / checkpoint_bytes(out) > 5.0
    assert _sqnr_db(net(x), out(x)) > 15.0
    sk.save(out, tmp_path / "ck")
    assert torch.equal(sk.load(tmp_path / "ck", model=build())(x), out(x))


def test_centroids_are_fine_tunable() -> None:
    torch.manual_seed(0)
    layer = ClusteredLinear.from_linear(nn.Linear(8, 4), clusters=4)
    x, target = torch.randn(16, 8), torch.randn(16, 4)
    loss = (layer(x) - target).pow(2).mean()
    loss.backward()
    idx = layer.weight_indices()
    # the centroid gradient is the sum of its weights' gradients
    w = layer.codebook.detach()[idx].clone().requires_grad_(True)
    (torch.nn.functional.linear(x, w, layer.bias) - target).pow(2).mean().backward()
    expected = torch.zeros(4).index_add_(0, idx.reshape(-1), w.grad.reshape(-1))
    assert torch.allclose(layer.codebook.grad, expected, atol=1e-6)
    before = loss.item()
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        (layer(x) - target).pow(2).mean().backward()
        opt.step()
    assert (layer(x) - target).pow(2).mean().item() < before
    assert layer.weight.unique().numel() <= 4  # still 4 shared values


def test_tied_linear_is_reported(make_llama) -> None:
    model = make_llama()
    res = _share(model, {"method": "kmeans", "clusters": 16})
    skipped = res.report.to_dict()["steps"][0]["skipped"]
    assert [s["layer"] for s in skipped] == ["lm_head"]
    assert isinstance(res.model.model.layers[0].mlp.up_proj, ClusteredLinear)


def test_cross_layer_sharing_ties_and_replays(make_llama, token_batch, tmp_path) -> None:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=100, tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(cfg).eval()
    res = _share(model, {"method": "cross_layer", "group_size": 2, "mode": "mean"})
    out = res.model
    assert out.model.layers[1].mlp.up_proj.weight is out.model.layers[0].mlp.up_proj.weight
    assert out.model.layers[2].mlp.up_proj.weight is not out.model.layers[1].mlp.up_proj.weight
    mean = (model.model.layers[0].mlp.up_proj.weight + model.model.layers[1].mlp.up_proj.weight) / 2
    assert torch.allclose(out.model.layers[0].mlp.up_proj.weight, mean)
    per_block = sum(p.numel() for p in model.model.layers[0].parameters())
    assert sk.measure.count_params(model) - sk.measure.count_params(out) == 2 * per_block
    assert checkpoint_bytes(model) - checkpoint_bytes(out) > 2 * per_block * 4 * 0.95
    sk.save(out, tmp_path / "ck")
    loaded = sk.load(tmp_path / "ck")
    assert shared_parameters(loaded) == shared_parameters(out) > 0
    assert torch.equal(loaded(**token_batch).logits, out(**token_batch).logits)


def test_share_errors(make_bert) -> None:
    with pytest.raises(sk.ConfigError, match=r"clusters = 300 is out of range"):
        sk.Recipe.from_dict({"steps": [{"share_weights": {"method": "kmeans", "clusters": 300}}]})
    with pytest.raises(sk.ConfigError, match="init"):
        sk.Recipe.from_dict({"steps": [{"share_weights": {"method": "kmeans", "init": "random"}}]})
    with pytest.raises(sk.ConfigError, match="group_size = 5 exceeds"):
        _share(make_bert(), {"method": "cross_layer", "group_size": 5})
    with pytest.raises(sk.ConfigError, match="targets: rule 'nope'"):
        _share(make_bert(), {"method": "kmeans", "targets": ["nope"]})
