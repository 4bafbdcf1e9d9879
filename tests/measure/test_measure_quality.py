"""Evaluators against hand-computed values."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from slimkit.core.errors import ConfigError, DataError, SlimkitError
from slimkit.measure import Accuracy, Agreement, CosineFidelity, Evaluator, Perplexity, as_evaluator

# Next-token distribution used by FixedDistributionLM: p(0)=1/2, p(1)=1/4, p(2)=p(3)=1/8.
PROBS = torch.tensor([0.5, 0.25, 0.125, 0.125])


class FixedDistributionLM(nn.Module):
    """Causal LM whose next-token logits are the same at every position: log(probs)."""

    def __init__(self, probs: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(probs.log())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict:
        batch, length = input_ids.shape
        return {"logits": self.logits.expand(batch, length, -1)}


class Scale(nn.Module):
    """Output = input * weight (element-wise); makes outputs easy to compute by hand."""

    def __init__(self, weight: list[float]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class Encoder(nn.Module):
    """Returns last_hidden_state = embedding(ids); HF-style attribute output."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 6)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> object:
        return type("Out", (), {"last_hidden_state": self.embed(input_ids)})()


# --- Perplexity -------------------------------------------------------------------------------


def test_uniform_logits_give_vocab_size() -> None:
    model = FixedDistributionLM(torch.full((7,), 1 / 7))
    batches = [{"input_ids": torch.randint(0, 7, (2, 9))}, {"input_ids": torch.randint(0, 7, (3, 4))}]
    assert Perplexity(batches)(model) == pytest.approx(7.0, rel=1e-6)


def test_perplexity_hand_computed() -> None:
    # targets 0, 1, 2 -> NLL = log 2 + log 4 + log 8 = 6 log 2 over 3 tokens -> ppl = 2**2 = 4
    batches = [{"input_ids": torch.tensor([[3, 0, 1, 2]])}]
    assert Perplexity(batches)(FixedDistributionLM(PROBS)) == pytest.approx(4.0, rel=1e-6)


def test_perplexity_is_token_weighted_across_batches() -> None:
    # batch 1: one target (0) -> log 2; batch 2: three targets (3) -> 9 log 2.
    # token-weighted: 10 log 2 / 4 tokens -> 2**2.5; a mean of batch means would give 2**2 = 4.
    batches = [torch.tensor([[1, 0]]), {"input_ids": torch.tensor([[0, 3, 3, 3]])}]
    assert Perplexity(batches)(FixedDistributionLM(PROBS)) == pytest.approx(2**2.5, rel=1e-6)


def test_perplexity_skips_masked_targets() -> None:
    # row 0 targets 1, 2, 3 -> 2+3+3 = 8 log 2; row 1 only target 3 (rest padded) -> 3 log 2.
    batch = {
        "input_ids": torch.tensor([[0, 1, 2, 3], [0, 3, 3, 3]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
        "labels": torch.tensor([[0, 1, 2, 3], [0, 3, -100, -100]]),  # dropped, not passed to the model
    }
    assert Perplexity([batch])(FixedDistributionLM(PROBS)) == pytest.approx(2 ** (11 / 4), rel=1e-6)


def test_max_batches_keeps_the_first_batches() -> None:
    batches = [torch.tensor([[3, 0, 1, 2]]), torch.tensor([[0, 3, 3, 3]])]
    evaluator = Perplexity(batches, max_batches=1)
    assert len(evaluator.batches) == 1
    assert evaluator(FixedDistributionLM(PROBS)) == pytest.approx(4.0, rel=1e-6)


def test_perplexity_matches_hf_loss_on_tiny_gpt2() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()  # the evaluator runs without dropout
    ids = torch.randint(0, 50, (2, 12))
    with torch.no_grad():
        hf_loss = model(input_ids=ids, labels=ids).loss.item()
    assert Perplexity([{"input_ids": ids}])(model) == pytest.approx(math.exp(hf_loss), rel=1e-5)


def test_perplexity_bad_arguments() -> None:
    with pytest.raises(DataError):
        Perplexity([])
    with pytest.raises(ConfigError, match="max_batches.*0"):
        Perplexity([torch.tensor([[1, 2]])], max_batches=0)
    with pytest.raises(DataError, match="input_ids"):
        Perplexity([{"ids": torch.tensor([[1, 2]])}])
    with pytest.raises(DataError, match="L >= 2"):
        Perplexity([torch.tensor([[1]])])
    with pytest.raises(DataError, match="integer"):
        Perplexity([torch.tensor([[1.0, 2.0]])])
    with pytest.raises(ConfigError, match="batches"):
        Perplexity(torch.tensor([[1, 2]]))


def test_perplexity_rejects_non_lm_output() -> None:
    class Classifier(nn.Module):
        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return torch.zeros(input_ids.shape[0], 3)

    model = Classifier()
    with pytest.raises(DataError, match="logits"):
        Perplexity([torch.tensor([[1, 0]])])(model)


# --- Accuracy ---------------------------------------------------------------------------------


def test_accuracy_known_case() -> None:
    identity = nn.Identity()
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0], [1.0, 0.0]])  # argmax 0, 1, 0, 0
    batches = [(logits[:2], torch.tensor([0, 1])), {"input": logits[2:], "labels": torch.tensor([1, 0])}]
    evaluator = Accuracy(batches)
    assert evaluator.name == "accuracy" and evaluator.higher_is_better
    assert evaluator(identity) == pytest.approx(0.75)


def test_accuracy_skips_ignored_labels() -> None:
    logits = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])  # [1, 3, 2] -> argmax 0, 1, 0
    labels = torch.tensor([[0, 0, -100]])
    assert Accuracy([(logits, labels)])(nn.Identity()) == pytest.approx(0.5)


def test_accuracy_bad_data() -> None:
    with pytest.raises(DataError):
        Accuracy([])
    with pytest.raises(DataError, match="labels"):
        Accuracy([torch.randn(2, 3)])
    with pytest.raises(DataError, match="shapes differ"):
        Accuracy([(torch.randn(2, 3), torch.tensor([0, 1, 2]))])(nn.Identity())


# --- CosineFidelity ---------------------------------------------------------------------------


def test_cosine_of_model_with_itself_is_one() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    evaluator = CosineFidelity([torch.randn(4, 5), torch.randn(2, 5)])
    evaluator.prepare(model)
    assert evaluator(model) == pytest.approx(1.0, abs=1e-9)
    assert evaluator.last_min == pytest.approx(1.0, abs=1e-9)

    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        for p in perturbed.parameters():
            p.add_(0.3 * torch.randn_like(p))
    score = evaluator(perturbed)
    assert score < 0.999
    assert evaluator.last_min <= evaluator.last_mean == score


def test_cosine_hand_computed() -> None:
    # reference outputs = x; model zeroes the 2nd coordinate: rows [1,0] -> cos 1, [1,1] -> cos 1/sqrt(2)
    evaluator = CosineFidelity([torch.tensor([[1.0, 0.0], [1.0, 1.0]])])
    evaluator.prepare(Scale([1.0, 1.0]))
    assert evaluator(Scale([1.0, 0.0])) == pytest.approx((1 + 2**-0.5) / 2)
    assert evaluator.last_min == pytest.approx(2**-0.5)


def test_cosine_mean_pools_over_the_attention_mask() -> None:
    torch.manual_seed(0)
    reference = Encoder()
    changed = copy.deepcopy(reference)
    with torch.no_grad():
        changed.embed.weight[9] += 5.0  # token 9 only appears at masked (padding) positions
    batch = {"input_ids": torch.tensor([[1, 2, 9], [3, 9, 9]]), "attention_mask": torch.tensor([[1, 1, 0], [1, 0, 0]])}
    evaluator = CosineFidelity([batch])
    evaluator.prepare(reference)
    assert evaluator(changed) == pytest.approx(1.0, abs=1e-9)

    unmasked = CosineFidelity([torch.tensor([[1, 2, 9], [3, 9, 9]])])
    unmasked.prepare(nn.Sequential(reference.embed))
    assert unmasked(nn.Sequential(changed.embed)) < 0.99  # flattening sees the changed rows


def test_cosine_needs_prepare() -> None:
    with pytest.raises(SlimkitError, match="prepare"):
        CosineFidelity([torch.randn(2, 2)])(nn.Identity())


# --- Agreement --------------------------------------------------------------------------------


def test_agreement_known_case() -> None:
    x = torch.tensor([[2.0, 1.0], [1.0, 2.0], [3.0, 0.0], [0.0, 3.0]])
    evaluator = Agreement([x[:2], x[2:]])
    evaluator.prepare(Scale([1.0, 1.0]))  # argmax 0, 1, 0, 1
    assert evaluator(Scale([1.0, 1.0])) == 1.0
    assert evaluator(Scale([1.0, -1.0])) == pytest.approx(0.5)  # argmax 0, 0, 0, 0


def test_agreement_needs_prepare() -> None:
    with pytest.raises(SlimkitError, match="prepare"):
        Agreement([torch.randn(2, 2)])(nn.Identity())


# --- as_evaluator -----------------------------------------------------------------------------


def test_as_evaluator_wraps_functions() -> None:
    def my_score(model: nn.Module) -> float:
        return 2

    evaluator = as_evaluator(my_score)
    assert evaluator.name == "my_score"
    assert evaluator.higher_is_better is True
    result = evaluator(nn.Identity())
    assert result == 2.0 and isinstance(result, float)
    assert as_evaluator(lambda model: 0.5).name == "quality"
    assert isinstance(evaluator, Evaluator)


def test_as_evaluator_passes_evaluators_through() -> None:
    perplexity = Perplexity([torch.tensor([[1, 2]])])
    assert as_evaluator(perplexity) is perplexity


def test_as_evaluator_rejects_non_callables() -> None:
    with pytest.raises(ConfigError):
        as_evaluator(3.0)


def test_as_evaluator_rejects_non_numbers() -> None:
    with pytest.raises(DataError, match="not a number"):
        as_evaluator(lambda model: "good")(nn.Identity())


def test_evaluators_restore_training_mode() -> None:
    model = nn.Sequential(nn.Dropout(0.5), nn.Linear(3, 3))
    model.train()
    evaluator = CosineFidelity([torch.randn(4, 3)])
    evaluator.prepare(model)
    assert evaluator(model) == pytest.approx(1.0, abs=1e-9)  # dropout off while evaluating
    assert model.training and model[0].training
