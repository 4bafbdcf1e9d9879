"""Every pruning method leaves the output head and the embeddings alone unless ``targets`` names them.

The tiny Llama ties ``lm_head`` to ``model.embed_tokens``: pruning the head would also prune the
embedding table. A plain model's last Linear (TinyMLP's ``head``) is not an output head in this
sense and is pruned as before.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.core.heads import PROTECTED_REASON, names_explicitly, output_head_names, protected_names

BODY = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
        "mlp.up_proj", "mlp.down_proj"]


def batches(n: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(5)
    return [{"input_ids": torch.randint(0, 100, (2, 16), generator=g)} for _ in range(n)]


def prune(model: nn.Module, method: str, **options) -> sk.Result:
    step = {"method": method, "sparsity": 0.5, **options}
    if method == "gradual":
        step |= {"steps": 4, "lr": 1e-4, "prune_every": 1}
    return sk.compress(model, {"steps": [{"prune": step}]}, calib=batches(), train=batches(), progress=False,
                       measure=False)


def zeros(t: torch.Tensor) -> int:
    return int((t == 0).sum())


METHODS = ["magnitude", "gradual", "activation", "wanda", "sparsegpt"]


# ----------------------------------------------------------------------------- detection
def test_heads_found_on_tied_llama_but_not_on_a_plain_mlp(make_llama, make_mlp) -> None:
    assert output_head_names(make_llama()) == {"lm_head"}
    assert protected_names(make_llama()) == {"lm_head", "model.embed_tokens"}
    assert output_head_names(make_mlp()) == set() and protected_names(make_mlp()) == set()


def test_a_linear_tied_to_an_embedding_is_a_head_whatever_its_name() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = nn.Embedding(50, 8)
            self.body = nn.Linear(8, 8)
            self.out = nn.Linear(8, 50, bias=False)
            self.out.weight = self.wte.weight

    assert output_head_names(Tied()) == {"out"}


@pytest.mark.parametrize("targets,named", [(["lm_head"], True), (["re:.*head"], True), (["Linear"], False),
                                           (["re:model\\..*"], False), (None, False)])
def test_names_explicitly(targets, named) -> None:
    assert names_explicitly(targets, "lm_head") is named


# ----------------------------------------------------------------------------- unstructured methods
@pytest.mark.parametrize("method", METHODS)
def test_head_and_tied_embedding_untouched_by_default(make_llama, method) -> None:
    model = make_llama()
    res = prune(model, method)
    assert torch.equal(res.model.model.embed_tokens.weight, model.model.embed_tokens.weight) or method == "gradual"
    assert zeros(res.model.lm_head.weight) == 0 and zeros(res.model.model.embed_tokens.weight) == 0
    step = res.report.steps[0]
    assert {"layer": "lm_head", "reason": PROTECTED_REASON} in step["skipped"]
    assert zeros(res.model.model.layers[0].mlp.up_proj.weight) > 0  # the body is pruned
    assert step["notes"]["layers"] == 14


@pytest.mark.parametrize("method", METHODS)
def test_head_pruned_when_targets_names_it(make_llama, method) -> None:
    res = prune(make_llama(), method, targets=["lm_head", "re:.*mlp\\..*"])
    head = res.model.lm_head.weight
    assert zeros(head) > 0.2 * head.numel()  # really pruned (activation: whole rows)
    assert res.model.model.embed_tokens.weight is head  # tying kept
    assert all(s["layer"] != "lm_head" for s in res.report.steps[0]["skipped"])
    assert zeros(res.model.model.layers[0].self_attn.q_proj.weight) == 0  # outside targets


def test_per_layer_sparsity_in_the_notes_and_the_report(make_llama) -> None:
    res = prune(make_llama(), "magnitude")
    notes = res.report.steps[0]["notes"]
    assert notes["layer_sparsity"] == {f"model.layers.*.{n}": "0.5 ×2" for n in BODY}
    assert notes["weight_sparsity"] == 0.5
    markdown = res.report.to_markdown()
    assert "layer_sparsity: {'model.layers.*.self_attn.q_proj': '0.5 ×2'" in markdown
    assert f"skipped `lm_head`: {PROTECTED_REASON}" in markdown


def test_global_scope_reports_each_layer_range(make_mlp) -> None:
    model = make_mlp()
    with torch.no_grad():
        model.fc1.weight.mul_(4.0)
    res = sk.compress(model, {"steps": [{"prune": {"sparsity": 0.5, "scope": "global"}}]}, progress=False, measure=False)
    per_layer = res.report.steps[0]["notes"]["layer_sparsity"]
    for name in ("fc1", "fc2", "head"):
        w = getattr(res.model, name).weight
        assert per_layer[name] == f"{round(zeros(w) / w.numel(), 4):g}"


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_plain_model_head_still_pruned(make_mlp, method) -> None:
    model = make_mlp()
    calib = [torch.randn(8, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    res = sk.compress(model, {"steps": [{"prune": {"method": method, "sparsity": 0.5}}]}, calib=calib,
                      progress=False, measure=False)
    assert zeros(res.model.head.weight) == res.model.head.weight.numel() // 2
    assert res.report.steps[0]["skipped"] == [] and res.report.steps[0]["notes"]["layers"] == 3


def test_selection_of_only_the_head_by_class_is_refused(make_llama) -> None:
    with pytest.raises(sk.ConfigError, match="kept by default"):  # "Linear" covers lm_head without naming it
        prune(make_llama(), "magnitude", targets=["Linear"], ignore=["model"])


# ----------------------------------------------------------------------------- structured
def test_structured_neuron_keeps_head_and_reports(make_llama) -> None:
    model = make_llama()
    ids = batches(1)[0]
    res = sk.compress(model, {"steps": [{"prune": {"method": "structured", "granularity": "neuron", "sparsity": 0.25}}]},
                      calib=batches(), example_inputs=ids, progress=False, measure=False)
    assert res.model.model.layers[0].mlp.up_proj.out_features == 48
    assert torch.equal(res.model.lm_head.weight, model.lm_head.weight)
    assert res.report.steps[0]["notes"]["head_embeddings_kept"] == ["lm_head", "model.embed_tokens"]


def test_structured_layer_width_says_it_resizes_the_head(make_llama) -> None:
    ids = batches(1)[0]
    res = sk.compress(make_llama(), {"steps": [{"prune": {"method": "structured", "granularity": "layer_width",
                                                          "sparsity": 0.25}}]},
                      example_inputs=ids, progress=False, measure=False)
    assert res.model.lm_head.in_features == 24
    assert res.report.steps[0]["notes"]["head_embeddings_resized"] == ["lm_head", "model.embed_tokens"]
