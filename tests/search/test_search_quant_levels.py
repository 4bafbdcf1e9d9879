"""Bit-width level space of ``search`` over ``quantize: {gptq | rtn}``: exact stored-byte costs,
exact budget after search, apply/restore, replay of the found step, target average bits, disk
spill, and a search that beats uniform bits on a model with one fragile layer."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import slimkit as sk
from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError
from slimkit.core.recipe import Recipe
from slimkit.quantize.weight_only import WeightOnlyLinear
from slimkit.search.evolution.core import CostTable, evolve
from slimkit.search.fitness import OutputDivergence
from slimkit.search.quant_levels import QuantLevelSpace, layer_cost, quant_space
from slimkit.search.space import SpaceOptions, assignment_cost

VOCAB = 128


def tiny_llama(seed: int = 0, layers: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=VOCAB, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def token_batches(n: int, seed: int, rows: int = 2, length: int = 32) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, VOCAB, (rows, length), generator=g)} for _ in range(n)]


def build(model: nn.Module, quantize: dict, calib=None, **kw) -> QuantLevelSpace:  # noqa: ANN001
    step = Recipe.from_dict([{"quantize": quantize}]).steps[0]
    ctx = RunContext(calib=calib, show_progress=False)
    return quant_space(model, step, ctx, SpaceOptions(levels=kw.pop("levels", None), calib=calib,
                                                      storage=kw.pop("storage", "auto")), **kw)


def stored_bytes(model: nn.Module) -> int:
    """Bytes of every non-head WeightOnlyLinear's stored tensors (what the checkpoint writes)."""
    return sum(t.numel() * t.element_size() for n, m in model.named_modules()
               if isinstance(m, WeightOnlyLinear) and n != "lm_head" for t in m.slimkit_weights().values())


@torch.no_grad()
def kl_to(reference: nn.Module, model: nn.Module, batches) -> float:  # noqa: ANN001
    total = 0.0
    for b in batches:
        logp = F.log_softmax(reference(**b).logits.float(), -1)
        logq = F.log_softmax(model(**b).logits.float(), -1)
        total += float((logp.exp() * (logp - logq)).sum(-1).mean())
    return total / len(batches)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size,symmetric,bias", [(128, False, False), (48, True, True), (None, False, True)])
def test_cost_is_the_stored_bytes(bits: int, group_size, symmetric: bool, bias: bool) -> None:  # noqa: ANN001
    torch.manual_seed(bits)
    lin = nn.Linear(200, 24, bias=bias)
    layer = WeightOnlyLinear.from_weight(lin.weight, lin.bias, bits, group_size, symmetric)
    real = sum(t.numel() * t.element_size() for t in layer.slimkit_weights().values())
    assert layer_cost(24, 200, bits, group_size, symmetric, bias) == real
    codes = layer.qweight.numel()  # uint8 packed codes: the rest is scales / zeros / bias
    assert layer_cost(24, 200, bits, group_size, symmetric, bias, "nominal") == 24 * 200 * bits + 8 * (real - codes)


def test_apply_restore_and_rtn_replay_are_exact() -> None:
    model = tiny_llama()
    dense = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    space = build(model, {"method": "rtn", "bits": 3, "group_size": 32})
    assert space.units == [n for n in dense if n != "lm_head"] and space.n_levels == [4] * 14
    assert space.values(space.uniform()) == [3.0] * 14
    rng = np.random.default_rng(0)
    assignment = [int(v) for v in rng.integers(0, 4, len(space.units))]
    space.apply(model, assignment)
    applied = {n: model.get_submodule(n).weight.detach().clone() for n in space.units}
    assert all(not torch.equal(applied[n], dense[n]) for n in space.units)
    space.apply(model, space.uniform())  # switch back and forth: only changed units are rewritten
    space.apply(model, assignment)
    assert all(torch.equal(model.get_submodule(n).weight, applied[n]) for n in space.units)
    space.restore(model)
    assert all(torch.equal(model.get_submodule(n).weight, dense[n]) for n in space.units)
    found = space.to_step(assignment)
    assert found["quantize"]["bits"] == {n: int(b) for n, b in zip(space.units, space.values(assignment))}
    out = sk.compress(model, {"steps": [found]}, progress=False, measure=False).model
    for n in space.units:
        layer = out.get_submodule(n)
        assert layer.bits == space.bits[assignment[space.units.index(n)]]
        assert torch.equal(layer.dequantize(), applied[n]), n
    assert stored_bytes(out) == assignment_cost(space, assignment)
    space.close()


def test_gptq_levels_replay_exactly_in_the_first_block_only() -> None:
    """The database is layer-wise on dense inputs; the replayed GPTQ step is sequential (block 1 sees
    the quantized block 0), so block 0 replays bit-exactly and block 1 differs by about one rounding error."""
    model, calib = tiny_llama(1), token_batches(2, 5)
    dense = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    space = build(model, {"method": "gptq", "bits": 4, "group_size": 32}, calib)
    assignment = [i % 4 for i in range(len(space.units))]
    out = sk.compress(model, {"steps": [space.to_step(assignment)]}, calib=calib, progress=False, measure=False).model
    for u, name in enumerate(space.units):
        level = space.level_weight(u, assignment[u])
        replayed = out.get_submodule(name).dequantize()
        if name.startswith("model.layers.0."):
            assert torch.equal(replayed, level), name
        else:
            assert not torch.equal(replayed, level), name
            # the two differ by a re-rounding: about the size of the level's own quantization error
            ratio = float((replayed - level).norm() / (level - dense[name]).norm())
            assert ratio < 1.5, (name, ratio)
    space.close()


def test_search_keeps_the_stored_bytes_exact_and_replays() -> None:
    model, calib = tiny_llama(2), token_batches(2, 7)
    step = {"quantize": {"method": "gptq", "bits": 3, "group_size": 32}}
    recipe = [{"search": {"method": "evolution", "step": step, "generations": 6, "offspring": 6,
                          "selection": [[2, 32], [1, 64]], "seed": 3}}]
    res = sk.compress(model, recipe, calib=calib, progress=False, measure=False)
    note = res.report.to_dict()["steps"][0]["notes"]["search"]
    uniform = sk.compress(model, [step], calib=calib, progress=False, measure=False).model
    assert note["budget_found"] == note["budget"] == stored_bytes(uniform)
    assert stored_bytes(res.model) == note["budget"]
    found = res.recipe.to_dict()["steps"][0]
    assert set(found["quantize"]["bits"].values()) != {3}  # the search moved bits
    again = sk.compress(model, [found], calib=calib, progress=False, measure=False).model
    ids = calib[0]["input_ids"]
    assert torch.equal(again(input_ids=ids).logits, res.model(input_ids=ids).logits)


def test_target_avg_bits_and_disk_spill() -> None:
    model = tiny_llama(3)
    mem = build(model, {"method": "rtn", "bits": 4, "group_size": 32}, target_avg_bits=5.0, storage="memory")
    disk = build(model, {"method": "rtn", "bits": 4, "group_size": 32}, target_avg_bits=5.0, storage="disk")
    assert not mem.store.on_disk and disk.store.on_disk
    start = mem.uniform()
    assert mem.avg_bits(start) <= 5.0 and mem.budget() == assignment_cost(mem, start)
    # maximal: widening any unit one more level would exceed the target
    assert all(lvl == 0 or mem.avg_bits([lv - (u == i) for u, lv in enumerate(start)]) > 5.0
               for i, lvl in enumerate(start))
    assert {mem.bits[lvl] for lvl in start} == {8, 4}  # 4-bit layers with some widened to 8
    mem.apply(model, start)
    w_mem = {n: model.get_submodule(n).weight.detach().clone() for n in mem.units}
    mem.restore(model)
    disk.apply(model, start)
    assert all(torch.equal(model.get_submodule(n).weight, w_mem[n]) for n in mem.units)
    d = disk.store.dir.name
    disk.close()
    disk.close()
    assert not os.path.exists(d)
    with pytest.raises(ConfigError, match="target_avg_bits = 1.5"):
        build(model, {"method": "rtn", "bits": 4, "group_size": 32}, target_avg_bits=1.5)
    with pytest.raises(ConfigError, match="target_avg_bits = 2.1 is below the narrowest level"):
        build(model, {"method": "rtn", "bits": 4, "group_size": 32}, target_avg_bits=2.1)


def test_bad_levels_are_config_errors() -> None:
    model = tiny_llama()
    with pytest.raises(ConfigError, match=r"levels = \[4, 9\]"):
        build(model, {"method": "rtn", "bits": 4}, levels=[4, 9])
    with pytest.raises(ConfigError, match="must include the wrapped step's bits = 3"):
        build(model, {"method": "rtn", "bits": 3}, levels=[2, 4, 8])
    with pytest.raises(ConfigError, match="cost = 'bytes'"):
        build(model, {"method": "rtn", "bits": 3}, cost="bytes")


def test_search_beats_uniform_bits_with_one_fragile_layer() -> None:
    """Block 0's down_proj writes 8x larger values into the residual stream, so its rounding error
    dominates; at the same nominal bits the search gives it more bits than the other down_proj."""
    model, calib, held_out = tiny_llama(4), token_batches(4, 11), token_batches(2, 12)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(8.0)
    space = build(model, {"method": "rtn", "bits": 3, "group_size": 32}, cost="nominal")
    fitness = OutputDivergence(model, calib, 256, apply=lambda a: space.apply(model, a))
    costs = CostTable([[space.cost(u, lvl) for lvl in range(n)] for u, n in enumerate(space.n_levels)])
    out = evolve(space.uniform(), costs, fitness, generations=25, offspring=8, selection=[[3, 64], [1, 256]],
                 rng=np.random.default_rng(0))
    space.restore(model)
    assert costs.total(out.best) == space.budget()
    bits = dict(zip(space.units, space.values(out.best)))
    assert bits["model.layers.0.mlp.down_proj"] > 3 > bits["model.layers.1.mlp.down_proj"]
    uniform = sk.compress(model, [space.to_step(space.uniform())], progress=False, measure=False).model
    searched = sk.compress(model, [space.to_step(out.best)], progress=False, measure=False).model
    kl_uniform, kl_searched = kl_to(model, uniform, held_out), kl_to(model, searched, held_out)
    assert kl_searched < 0.7 * kl_uniform, (kl_searched, kl_uniform)
    space.close()


def test_sequential_gptq_database_sees_quantized_earlier_blocks() -> None:
    model, calib = tiny_llama(), token_batches(2, seed=1)
    before = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    quantize = {"method": "gptq", "bits": 3, "group_size": 32}
    seq = build(model, quantize, calib, levels=[2, 3, 4])
    assert all(torch.equal(w, model.get_submodule(n).weight) for n, w in before.items())  # left as it was
    step = Recipe.from_dict([{"quantize": quantize}]).steps[0]
    dense = quant_space(model, step, RunContext(calib=calib, show_progress=False),
                        SpaceOptions(levels=[2, 3, 4], calib=calib, database="dense"))
    first = [u for u, n in enumerate(seq.units) if ".layers.0." in n]
    last = [u for u, n in enumerate(seq.units) if ".layers.1." in n]
    level = seq.bits.index(3)
    # block 0 sees the calibration inputs either way; block 1 sees block 0 at 3 bits only when sequential
    assert all(torch.equal(seq.level_weight(u, level), dense.level_weight(u, level)) for u in first)
    assert any(not torch.equal(seq.level_weight(u, level), dense.level_weight(u, level)) for u in last)
    seq.close()
    dense.close()
