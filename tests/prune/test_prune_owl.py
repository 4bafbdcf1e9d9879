"""``allocation: owl`` (outlier-weighted layer-wise sparsity): math, exact budget, band, monotone
allocation, replay as a plain per-layer map, quality against uniform, config errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import slimkit as sk
from slimkit.core.per_layer import resolve_per_layer
from slimkit.prune.owl import outlier_ratio, owl_block_sparsities, owl_step

OUTLIER_BLOCK = 2


def outlier_llama(seed: int = 0) -> nn.Module:
    """A 4-block Llama whose block 2 reads large-outlier inputs (24 of 64 channels of both its RMSNorm
    gains ×8) and carries most of the signal (its output projections ×3, the other blocks' ×0.3):
    the setting OWL is built for, where the outlier-rich block is the one that must not lose weights."""
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=128, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for i, block in enumerate(model.model.layers):
            if i == OUTLIER_BLOCK:
                for norm in (block.input_layernorm, block.post_attention_layernorm):
                    norm.weight[torch.arange(24) * 2] *= 8.0
            for proj in (block.self_attn.o_proj, block.mlp.down_proj):
                proj.weight *= 3.0 if i == OUTLIER_BLOCK else 0.3
    return model


@pytest.fixture(scope="module")
def data() -> tuple[list, list]:
    gen = torch.Generator().manual_seed(1)
    calib = [{"input_ids": torch.randint(0, 128, (4, 32), generator=gen)} for _ in range(4)]
    held_out = [{"input_ids": torch.randint(0, 128, (4, 32), generator=gen)} for _ in range(4)]
    return calib, held_out


def prune(model: nn.Module, calib, **step) -> sk.Result:  # noqa: ANN001
    return sk.compress(model, {"steps": [{"prune": step}]}, calib=calib, progress=False, measure=False)


def pruned(model: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"}


def kl_to(reference: nn.Module, model: nn.Module, batches: list) -> float:
    total = 0.0
    with torch.no_grad():
        for b in batches:
            p = F.log_softmax(reference(**b).logits, -1)
            q = F.log_softmax(model(**b).logits, -1)
            total += float(F.kl_div(q, p, log_target=True, reduction="batchmean"))
    return total / len(batches)


# ----------------------------------------------------------------------------- math
def test_outlier_ratio_counts_scores_above_m_times_the_mean() -> None:
    a, b = torch.tensor([[1.0, 1.0], [1.0, 1.0]]), torch.tensor([10.0, 1.0, 1.0, 1.0])
    # mean = 17 / 8 = 2.125; M = 4 -> threshold 8.5: only the 10 is above
    assert outlier_ratio([a, b], 4.0) == pytest.approx(1 / 8)
    assert outlier_ratio([a, b], 5.0) == 0.0  # threshold 10.625


def test_band_monotone_and_weighted_mean_exact() -> None:
    gen = torch.Generator().manual_seed(0)
    ratios = torch.rand(9, generator=gen).tolist()
    sizes = [1000, 1000, 5000, 300, 1000, 7000, 1000, 20, 1000]
    s = owl_block_sparsities(ratios, sizes, 0.6, 0.08)
    weighted = sum(si * n for si, n in zip(s, sizes)) / sum(sizes)
    assert weighted == pytest.approx(0.6, abs=1e-12)
    assert max(s) - min(s) == pytest.approx(0.16, abs=1e-12)  # the band is 2λ wide
    order = sorted(range(9), key=lambda i: ratios[i])
    assert all(s[order[k]] > s[order[k + 1]] for k in range(8))  # more outliers -> less sparsity
    # linear in the ratio: equal ratio gaps give equal sparsity gaps
    lin = owl_block_sparsities([0.0, 0.1, 0.2], [1, 1, 1], 0.5, 0.1)
    assert lin == pytest.approx([0.6, 0.5, 0.4])
    assert owl_block_sparsities([0.3, 0.3], [5, 9], 0.7, 0.08) == [0.7, 0.7]


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_owl_budget_band_and_monotone(method: str, data) -> None:  # noqa: ANN001
    calib, _ = data
    model = outlier_llama()
    uniform = prune(model, calib, method=method, sparsity=0.7)
    owl = prune(model, calib, method=method, sparsity=0.7, allocation="owl")
    layers_u, layers_o = pruned(uniform.model), pruned(owl.model)
    nonzero_u = sum(int((m.weight != 0).sum()) for m in layers_u.values())
    nonzero_o = sum(int((m.weight != 0).sum()) for m in layers_o.values())
    assert abs(nonzero_o - nonzero_u) <= len(layers_o), (nonzero_o, nonzero_u)
    notes = owl.report.steps[0]["notes"]
    ratio, block_s = notes["owl_outlier_ratio"], notes["owl_block_sparsity"]
    blocks = [f"model.layers.{i}" for i in range(4)]
    assert list(ratio) == blocks and max(ratio, key=ratio.get) == f"model.layers.{OUTLIER_BLOCK}"
    by_ratio = sorted(blocks, key=ratio.get)
    assert all(block_s[a] >= block_s[b] for a, b in zip(by_ratio, by_ratio[1:]))
    assert max(block_s.values()) - min(block_s.values()) == pytest.approx(0.16, abs=2e-4)
    assert all(abs(s - 0.7) <= 0.16 for s in block_s.values())
    # each layer holds exactly its block's sparsity (the full-precision value of resolved_sparsity)
    resolved = resolve_per_layer("sparsity", notes["resolved_sparsity"], list(layers_o))
    for name, layer in layers_o.items():
        assert int((layer.weight == 0).sum()) == round(resolved[name] * layer.weight.numel()), name
    assert notes["allocation"] == "owl" and notes["weight_sparsity"] == pytest.approx(0.7, abs=1e-4)


def test_owl_step_replays_owl_exactly_as_a_plain_map(data) -> None:  # noqa: ANN001
    calib, _ = data
    model = outlier_llama()
    owl = prune(model, calib, method="wanda", sparsity=0.6, allocation="owl", owl_lambda=0.1)
    step = owl_step(model, {"prune": {"method": "wanda", "sparsity": 0.6, "owl_lambda": 0.1}}, calib)
    options = step["prune"]
    assert options["allocation"] == "uniform"
    assert options["sparsity"] == owl.report.steps[0]["notes"]["resolved_sparsity"]
    assert list(options["sparsity"]) == [f"model.layers.{i}" for i in range(4)]
    replay = sk.compress(model, sk.Recipe.from_dict({"steps": [step]}), calib=calib, progress=False, measure=False)
    for name, layer in pruned(owl.model).items():
        assert torch.equal(layer.weight, replay.model.get_submodule(name).weight), name
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, outlier_llama().model.layers[0].mlp.up_proj.weight)


def test_owl_beats_uniform_and_its_mirror_loses(data) -> None:  # noqa: ANN001
    """Same budget three ways on held-out inputs: OWL < uniform < OWL's mirror image (the outlier
    block pruned hardest), so the comparison really depends on which way the band points."""
    calib, held_out = data
    model = outlier_llama()
    uniform = prune(model, calib, method="wanda", sparsity=0.7)
    owl = prune(model, calib, method="wanda", sparsity=0.7, allocation="owl")
    resolved = owl.report.steps[0]["notes"]["resolved_sparsity"]
    mirror = prune(model, calib, method="wanda", sparsity={b: 1.4 - s for b, s in resolved.items()})
    kl = {k: kl_to(model, r.model, held_out) for k, r in (("uniform", uniform), ("owl", owl), ("mirror", mirror))}
    assert kl["owl"] < 0.9 * kl["uniform"] < 0.9 * kl["mirror"], kl


def test_owl_config_errors(data) -> None:  # noqa: ANN001
    calib, _ = data
    bad = [({"allocation": "outlier"}, "allocation = 'outlier' is not valid"),
           ({"allocation": "owl", "owl_lambda": 0.6}, r"owl_lambda = 0.6 is out of range; valid range is \[0.0, 0.5\]"),
           ({"allocation": "owl", "owl_threshold": 0}, r"owl_threshold = 0 is out of range; valid range is \(0.0, inf"),
           ({"allocation": "owl", "sparsity": {"re:.*": 0.5}}, "sparsity must be a number"),
           ({"allocation": "owl", "pattern": "2:4"}, "cannot be combined with pattern")]
    for options, match in bad:
        with pytest.raises(sk.ConfigError, match=match):
            sk.Recipe.from_dict({"steps": [{"prune": {"method": "wanda", **options}}]})
    with pytest.raises(sk.ConfigError, match="owl_lambda = 0.5 gives block sparsities .* outside"):
        prune(outlier_llama(), calib, method="sparsegpt", sparsity=0.7, allocation="owl", owl_lambda=0.5)
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with pytest.raises(sk.UnsupportedModelError, match="no repeated block stack"):
        prune(mlp, [torch.randn(4, 8)], method="wanda", sparsity=0.5, allocation="owl")
    with pytest.raises(sk.ConfigError, match="no OWL allocation"):
        owl_step(mlp, {"prune": {"method": "magnitude", "sparsity": 0.5}}, [torch.randn(4, 8)])
