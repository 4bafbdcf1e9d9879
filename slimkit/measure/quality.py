"""Quality evaluators: one number that says how good a (compressed) model still is.

An evaluator has a ``name``, says whether ``higher_is_better``, and is called with a model to
return a float. Evaluators that compare against the uncompressed model (:class:`CosineFidelity`,
:class:`Agreement`, :class:`TopKAgreement`) also have ``prepare(reference_model)``, which the runner calls once with the
model before compression. Every evaluator runs the model in eval mode under ``torch.no_grad()``
with each batch moved to the model's device, and leaves the model's training flags as it found
them. Batches are materialised into a list once, so every model sees the same data in the same
order.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.core.errors import ConfigError, DataError, SlimkitError
from slimkit.core.inputs import ModelInputs, call_model, move_inputs, output_tensor
from slimkit.core.modelstate import eval_mode, model_device

__all__ = [
    "Evaluator",
    "Perplexity",
    "Accuracy",
    "CosineFidelity",
    "Agreement",
    "TopKAgreement",
    "as_evaluator",
    "IGNORE_INDEX",
]

IGNORE_INDEX = -100
"""Label value that :class:`Accuracy` skips (the PyTorch / Hugging Face convention)."""

_T = TypeVar("_T")


@runtime_checkable
class Evaluator(Protocol):
    """What the runner needs from an evaluator; ``prepare(reference_model)`` is optional."""

    name: str
    higher_is_better: bool

    def __call__(self, model: nn.Module) -> float: ...


class Perplexity:
    """Token-weighted perplexity of a causal language model (lower is better).

    ``batches`` are dicts with ``input_ids`` (LongTensor [B, L], L >= 2) and optionally
    ``attention_mask`` (or bare ``input_ids`` tensors). Every row is an independent,
    fixed-length context: the context length is the chunk length, with no striding or overlap
    between chunks, so early tokens of a chunk are predicted from little context and the value
    depends on how the text was chunked. The result is
    ``exp(sum of next-token NLL / number of predicted tokens)`` over all batches, computed from
    the logits (not from the model's own ``labels`` loss, which is a per-batch mean). A token is
    predicted when its own attention-mask entry is 1. ``max_batches`` keeps only the first batches.
    """

    name = "perplexity"
    higher_is_better = False

    def __init__(self, batches: Iterable[Any], *, max_batches: int | None = None) -> None:
        if max_batches is not None and (not _is_int(max_batches) or max_batches < 1):
            raise ConfigError(f"Perplexity: max_batches must be None or an integer >= 1, got {max_batches!r}")
        items = _batch_list(batches, "Perplexity")[:max_batches]
        self.max_batches = max_batches
        self.batches: list[dict[str, torch.Tensor]] = [_lm_batch(b, i) for i, b in enumerate(items)]

    def __call__(self, model: nn.Module) -> float:
        """Perplexity of ``model`` over all batches."""
        per_batch = _run_batches(model, self.batches, _nll_and_count)
        tokens = sum(count for _, count in per_batch)
        if tokens == 0:
            raise DataError("Perplexity: no token to predict (every attention mask leaves fewer than 2 tokens)")
        return math.exp(sum(nll for nll, _ in per_batch) / tokens)


class Accuracy:
    """Top-1 accuracy: fraction of labels equal to the argmax of the model's output tensor.

    ``batches`` are ``(inputs, labels)`` pairs or dicts of model inputs with a ``labels`` key.
    ``labels`` must have the shape of the output without its last dimension ([B] for
    classification, [B, L] for token classification); entries equal to -100 are skipped.
    """

    name = "accuracy"
    higher_is_better = True

    def __init__(self, batches: Iterable[Any]) -> None:
        pairs = [_split_labels(b, i) for i, b in enumerate(_batch_list(batches, "Accuracy"))]
        self.inputs: list[ModelInputs] = [inputs for inputs, _ in pairs]
        self.labels: list[torch.Tensor] = [labels for _, labels in pairs]

    def __call__(self, model: nn.Module) -> float:
        """Accuracy of ``model`` over all labelled positions."""
        predictions = _run_batches(model, self.inputs, _top1)
        correct = total = 0
        for index, (pred, labels) in enumerate(zip(predictions, self.labels)):
            _check_same_shape(pred, labels, f"Accuracy: batch {index}: predictions vs labels")
            valid = labels != IGNORE_INDEX
            correct += int((pred[valid] == labels[valid]).sum())
            total += int(valid.sum())
        if total == 0:
            raise DataError("Accuracy: every label is -100 (ignored); nothing to score")
        return correct / total


class CosineFidelity:
    """Mean per-example cosine similarity between the model's embeddings and the reference's.

    ``batches`` are model inputs. Call ``prepare(reference_model)`` first: it stores the
    reference embeddings. An embedding is the ``attention_mask``-weighted mean of
    ``last_hidden_state`` when the output has one and the inputs have a mask (the
    sentence-transformers pooling); otherwise the flattened output tensor of each example.
    After a call, ``last_mean`` and ``last_min`` hold the mean and the worst example's cosine.
    """

    name = "cosine"
    higher_is_better = True

    def __init__(self, batches: Iterable[Any]) -> None:
        self.batches: list[ModelInputs] = _batch_list(batches, "CosineFidelity")
        self._reference: list[torch.Tensor] | None = None
        self.last_mean: float | None = None
        self.last_min: float | None = None

    def prepare(self, reference_model: nn.Module) -> None:
        """Compute and keep (on CPU) the reference model's embeddings of every batch."""
        self._reference = _run_batches(reference_model, self.batches, _embedding)

    def __call__(self, model: nn.Module) -> float:
        """Mean cosine similarity to the reference over all examples (also sets ``last_*``)."""
        reference = _require_reference(self._reference, "CosineFidelity")
        embeddings = _run_batches(model, self.batches, _embedding)
        cosines = []
        for index, (emb, ref) in enumerate(zip(embeddings, reference)):
            _check_same_shape(emb, ref, f"CosineFidelity: batch {index}: embeddings vs reference")
            cosines.append(F.cosine_similarity(emb.double(), ref.double(), dim=1))
        all_cosines = torch.cat(cosines)
        self.last_mean = float(all_cosines.mean())
        self.last_min = float(all_cosines.min())
        return self.last_mean


class Agreement:
    """Fraction of positions where the model's top-1 prediction equals the reference model's.

    ``batches`` are model inputs. Call ``prepare(reference_model)`` first. For per-token
    outputs ([B, L, C]) with an ``attention_mask`` of shape [B, L], masked positions are skipped.
    """

    name = "agreement"
    higher_is_better = True

    def __init__(self, batches: Iterable[Any]) -> None:
        self.batches: list[ModelInputs] = _batch_list(batches, "Agreement")
        self._reference: list[torch.Tensor] | None = None

    def prepare(self, reference_model: nn.Module) -> None:
        """Compute and keep (on CPU) the reference model's top-1 predictions."""
        self._reference = _run_batches(reference_model, self.batches, _top1)

    def __call__(self, model: nn.Module) -> float:
        """Top-1 agreement of ``model`` with the reference over all (unmasked) positions."""
        reference = _require_reference(self._reference, "Agreement")
        predictions = _run_batches(model, self.batches, _top1)
        agree = total = 0
        for index, (pred, ref) in enumerate(zip(predictions, reference)):
            _check_same_shape(pred, ref, f"Agreement: batch {index}: predictions vs reference")
            keep = _position_mask(self.batches[index], pred.shape)
            agree += int((pred[keep] == ref[keep]).sum())
            total += int(keep.sum())
        if total == 0:
            raise DataError("Agreement: every position is masked out; nothing to compare")
        return agree / total


class TopKAgreement:
    """Top-1 and top-k agreement with the reference (fp32) model's predictions (higher is better).

    There are no ground-truth labels for held-out natural photos, so the reference model's own
    top-1 class stands in for the label, as in ImageNet accuracy but measured against the
    uncompressed model: **top-1 agreement** is the fraction of examples whose argmax equals the
    reference's argmax; **top-k agreement** the fraction whose top ``k`` classes contain the
    reference's argmax. ``batches`` are model inputs whose output is logits [B, C] (or [B, L, C]
    with an ``attention_mask`` [B, L], masked positions skipped). Call ``prepare(reference_model)``
    first. A call returns the top-1 agreement and sets ``last_top1`` and ``last_topk``;
    :meth:`scores` returns both as ``{"top1": ..., "top{k}": ...}``.
    """

    name = "top1_agreement"
    higher_is_better = True

    def __init__(self, batches: Iterable[Any], *, k: int = 5) -> None:
        if not _is_int(k) or k < 2:
            raise ConfigError(f"TopKAgreement: k must be an integer >= 2, got {k!r}")
        self.k = k
        self.batches: list[ModelInputs] = _batch_list(batches, "TopKAgreement")
        self._reference: list[torch.Tensor] | None = None
        self.last_top1: float | None = None
        self.last_topk: float | None = None

    def prepare(self, reference_model: nn.Module) -> None:
        """Compute and keep (on CPU) the reference model's top-1 class of every example."""
        self._reference = _run_batches(reference_model, self.batches, _top1)

    def __call__(self, model: nn.Module) -> float:
        """Top-1 agreement of ``model`` with the reference (also sets ``last_top1``/``last_topk``)."""
        return self.scores(model)["top1"]

    def scores(self, model: nn.Module) -> dict[str, float]:
        """``{"top1": agreement, "top{k}": agreement}`` of ``model`` with the reference."""
        reference = _require_reference(self._reference, "TopKAgreement")
        k = self.k
        predictions = _run_batches(model, self.batches, lambda inputs, output: _top1_and_topk(output, k))
        hits1 = hitsk = total = 0
        for index, ((top1, topk), ref) in enumerate(zip(predictions, reference)):
            _check_same_shape(top1, ref, f"TopKAgreement: batch {index}: predictions vs reference")
            keep = _position_mask(self.batches[index], ref.shape)
            hits1 += int((top1 == ref)[keep].sum())
            hitsk += int((topk == ref.unsqueeze(-1)).any(dim=-1)[keep].sum())
            total += int(keep.sum())
        if total == 0:
            raise DataError("TopKAgreement: every position is masked out; nothing to compare")
        self.last_top1, self.last_topk = hits1 / total, hitsk / total
        return {"top1": self.last_top1, f"top{k}": self.last_topk}


class _FunctionEvaluator:
    """A plain ``model -> float`` function seen as an evaluator (higher is better)."""

    higher_is_better = True

    def __init__(self, function: Callable[[nn.Module], float], name: str) -> None:
        self.function = function
        self.name = name

    def __call__(self, model: nn.Module) -> float:
        """The function's value for ``model``, as a float."""
        value = self.function(model)
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise DataError(f"evaluator {self.name!r} returned {value!r}, which is not a number") from exc

    def __repr__(self) -> str:
        return f"as_evaluator({self.name})"


def as_evaluator(obj: Any) -> Evaluator:
    """An evaluator from ``obj``: evaluator instances pass through, plain callables are wrapped.

    A wrapped callable is named after its ``__name__`` ("quality" for lambdas and nameless
    callables) and is assumed higher-is-better.
    """
    if _looks_like_evaluator(obj):
        return obj
    if callable(obj):
        name = getattr(obj, "__name__", None)
        if not isinstance(name, str) or not name or name == "<lambda>":
            name = "quality"
        return _FunctionEvaluator(obj, name)
    raise ConfigError(
        f"evaluator must be an evaluator (name, higher_is_better, __call__) or a callable "
        f"model -> float, got {type(obj).__name__}"
    )


def _looks_like_evaluator(obj: Any) -> bool:
    """True for objects with the evaluator interface (a str name and a bool higher_is_better)."""
    return (
        callable(obj)
        and isinstance(getattr(obj, "name", None), str)
        and isinstance(getattr(obj, "higher_is_better", None), bool)
    )


def _run_batches(
    model: nn.Module, batches: list[ModelInputs], per_batch: Callable[[ModelInputs, Any], _T]
) -> list[_T]:
    """``per_batch(inputs, output)`` for each batch, run in eval mode without gradients."""
    device = model_device(model)
    results: list[_T] = []
    with eval_mode(model), torch.no_grad():
        for inputs in batches:
            moved = move_inputs(inputs, device)
            results.append(per_batch(moved, call_model(model, moved)))
    return results


def _nll_and_count(inputs: Mapping[str, torch.Tensor], output: Any) -> tuple[float, int]:
    """Summed next-token NLL and number of predicted tokens of one causal-LM batch."""
    input_ids = inputs["input_ids"]
    logits = output_tensor(output)
    if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(input_ids.shape):
        raise DataError(
            f"Perplexity: expected logits of shape [B, L, vocab] matching input_ids "
            f"{tuple(input_ids.shape)}, got {tuple(logits.shape)}"
        )
    mask = inputs.get("attention_mask")
    keep = torch.ones_like(input_ids[:, 1:], dtype=torch.bool) if mask is None else mask[:, 1:].bool()
    targets = input_ids[:, 1:].masked_fill(~keep, 0)
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")
    return float(nll[keep].double().sum()), int(keep.sum())


def _top1(inputs: ModelInputs, output: Any) -> torch.Tensor:
    """Argmax over the last dimension of the output tensor, on CPU."""
    return output_tensor(output).argmax(dim=-1).cpu()


def _top1_and_topk(output: Any, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax and the indices of the ``k`` largest logits over the last dimension, on CPU.

    The argmax is taken as in :func:`_top1` (not as ``topk``'s first index) so that ties break
    the same way as for the reference, and a model always agrees with itself.
    """
    logits = output_tensor(output)
    if logits.dim() == 0 or logits.shape[-1] < k:
        raise DataError(f"TopKAgreement: the output has shape {tuple(logits.shape)}, fewer than k={k} classes")
    return logits.argmax(dim=-1).cpu(), logits.topk(k, dim=-1).indices.cpu()


def _embedding(inputs: ModelInputs, output: Any) -> torch.Tensor:
    """One embedding row per example, on CPU in float32 (see :class:`CosineFidelity`)."""
    hidden = _output_field(output, "last_hidden_state")
    mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
    if hidden is not None and mask is not None:
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return pooled.float().cpu()
    tensor = output_tensor(output)
    if tensor.dim() == 0:
        raise DataError("CosineFidelity: the model output is a scalar; need one row per example")
    return tensor.reshape(tensor.shape[0], -1).float().cpu()


def _output_field(output: Any, key: str) -> torch.Tensor | None:
    """``output.key`` or ``output[key]`` if it is a tensor, else None."""
    value = getattr(output, key, None)
    if value is None and isinstance(output, Mapping):
        value = output.get(key)
    return value if isinstance(value, torch.Tensor) else None


def _position_mask(inputs: ModelInputs, shape: torch.Size) -> torch.Tensor:
    """Boolean mask of positions to compare: the attention mask if it fits ``shape``, else all."""
    mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
    if isinstance(mask, torch.Tensor) and tuple(mask.shape) == tuple(shape):
        return mask.bool().cpu()
    return torch.ones(shape, dtype=torch.bool)


def _batch_list(batches: Iterable[Any], owner: str) -> list[Any]:
    """The batches as a list (so each model sees the same data); empty is a DataError."""
    if isinstance(batches, (torch.Tensor, Mapping, str)) or not isinstance(batches, Iterable):
        raise ConfigError(
            f"{owner}: batches must be an iterable of batches (a list or a DataLoader), "
            f"got {type(batches).__name__}"
        )
    items = list(batches)
    if not items:
        raise DataError(f"{owner}: batches is empty; give at least one batch")
    return items


def _lm_batch(batch: Any, index: int) -> dict[str, torch.Tensor]:
    """A validated causal-LM batch: 2-D integer ``input_ids`` with L >= 2, matching mask, no labels."""
    if isinstance(batch, torch.Tensor):
        batch = {"input_ids": batch}
    if not isinstance(batch, Mapping) or not isinstance(batch.get("input_ids"), torch.Tensor):
        raise DataError(f"Perplexity: batch {index} must be a dict with an input_ids tensor, got {type(batch).__name__}")
    ids = batch["input_ids"]
    if ids.dim() != 2 or ids.shape[1] < 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise DataError(
            f"Perplexity: batch {index}: input_ids must be an integer tensor [B, L] with L >= 2, "
            f"got {ids.dtype} of shape {tuple(ids.shape)}"
        )
    mask = batch.get("attention_mask")
    if mask is not None and (not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(ids.shape)):
        raise DataError(f"Perplexity: batch {index}: attention_mask must have the shape of input_ids {tuple(ids.shape)}")
    return {key: value for key, value in batch.items() if key != "labels"}


def _split_labels(batch: Any, index: int) -> tuple[ModelInputs, torch.Tensor]:
    """``(inputs, labels)`` from a pair or from a dict with a ``labels`` key; labels on CPU."""
    if isinstance(batch, Mapping) and "labels" in batch:
        inputs: ModelInputs = {key: value for key, value in batch.items() if key != "labels"}
        labels = batch["labels"]
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        inputs, labels = batch
    else:
        raise DataError(f"Accuracy: batch {index} must be an (inputs, labels) pair or a dict with 'labels'")
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point:
        raise DataError(f"Accuracy: batch {index}: labels must be an integer tensor, got {labels!r:.60}")
    return inputs, labels.cpu()


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    """Raise :class:`DataError` if two tensors that are compared element-wise differ in shape."""
    if tuple(a.shape) != tuple(b.shape):
        raise DataError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")


def _require_reference(reference: list[torch.Tensor] | None, owner: str) -> list[torch.Tensor]:
    """The stored reference outputs, or an error saying prepare() was not called."""
    if reference is None:
        raise SlimkitError(
            f"{owner} compares against the uncompressed model: call prepare(reference_model) "
            f"with the model before compression before scoring a model"
        )
    return reference


def _is_int(value: object) -> bool:
    """True for ints, False for bools."""
    return isinstance(value, int) and not isinstance(value, bool)
