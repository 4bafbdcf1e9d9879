"""Evaluators against hand-computed values."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from slimkit.core.errors import ConfigError, DataError, SlimkitError
from slimkit.measure import Accuracy, Agreement, CosineFidelity, Evaluator, Perplexity, TopKAgreement, as_evaluator

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


# --- TopKAgreement ----------------------------------------------------------------------------


class TinyCNN(nn.Module):
    """A small conv net with 10 classes: conv -> ReLU -> global average pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class PermutedLogits(nn.Module):
    """The same CNN with its logits permuted per input; the input's pixel [1, 0, 0] says how.

    0: untouched; 1: top-1 and top-2 classes swapped (the reference's class falls to rank 2:
    top-1 disagrees, top-5 agrees); 2: top-1 and the lowest class swapped (falls to rank 10:
    both disagree).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x).clone()
        order = logits.argsort(dim=-1, descending=True)
        for row, mode in enumerate(x[:, 1, 0, 0].round().long().tolist()):
            if mode:
                a, b = int(order[row, 0]), int(order[row, 1 if mode == 1 else -1])
                logits[row, [a, b]] = logits[row, [b, a]]
        return logits


def _marked_images(modes: list[int]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(len(modes), 2, 6, 6, generator=gen)
    x[:, 1, 0, 0] = torch.tensor(modes, dtype=torch.float32)
    return x


def test_topk_agreement_of_a_model_with_itself_is_one() -> None:
    net = TinyCNN()
    evaluator = TopKAgreement([_marked_images([0, 1, 2, 0]), _marked_images([2, 2, 1])])
    evaluator.prepare(net)
    assert evaluator.scores(net) == {"top1": 1.0, "top5": 1.0}
    assert evaluator(net) == 1.0 and evaluator.last_top1 == 1.0 and evaluator.last_topk == 1.0
    assert evaluator.name == "top1_agreement" and evaluator.higher_is_better


def test_topk_agreement_with_permuted_logits_known_value() -> None:
    net = TinyCNN()
    # 10 examples over 2 batches: 3 untouched, 4 with top-1/top-2 swapped, 3 with top-1/last swapped
    batches = [_marked_images([0, 1, 2, 1, 0, 2]), _marked_images([1, 2, 0, 1])]
    evaluator = TopKAgreement(batches)
    evaluator.prepare(net)
    assert evaluator.scores(PermutedLogits(net)) == {"top1": pytest.approx(3 / 10), "top5": pytest.approx(7 / 10)}
    assert evaluator(PermutedLogits(net)) == pytest.approx(0.3) and evaluator.last_topk == pytest.approx(0.7)
    top2 = TopKAgreement(batches, k=2)
    top2.prepare(net)
    assert top2.scores(PermutedLogits(net)) == {"top1": pytest.approx(0.3), "top2": pytest.approx(0.7)}


def test_topk_agreement_rank_boundary() -> None:
    """The reference's class at rank k counts for top-k, at rank k + 1 it does not."""
    ref = torch.tensor([[9.0, 8, 7, 6, 5, 4, 3]])  # reference class 0
    at_rank5 = torch.tensor([[1.0, 8, 7, 6, 5, 0, 0]])  # class 0 is 5th of 7
    at_rank6 = torch.tensor([[0.5, 8, 7, 6, 5, 4, 0]])  # class 0 is 6th of 7
    evaluator = TopKAgreement([torch.ones(1, 7)])
    evaluator.prepare(Scale(ref[0].tolist()))
    assert evaluator.scores(Scale(at_rank5[0].tolist())) == {"top1": 0.0, "top5": 1.0}
    assert evaluator.scores(Scale(at_rank6[0].tolist())) == {"top1": 0.0, "top5": 0.0}


def test_topk_agreement_errors() -> None:
    with pytest.raises(ConfigError, match="k must be"):
        TopKAgreement([torch.randn(2, 8)], k=1)
    with pytest.raises(SlimkitError, match="prepare"):
        TopKAgreement([torch.randn(2, 8)])(nn.Identity())
    evaluator = TopKAgreement([torch.randn(2, 3)])
    evaluator.prepare(nn.Identity())
    with pytest.raises(DataError, match="fewer than k=5"):
        evaluator(nn.Identity())


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
