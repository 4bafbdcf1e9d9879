"""The supervised loss: the model's own (Hugging Face ``labels``) or cross-entropy on its logits."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.core.errors import DataError
from slimkit.core.inputs import call_model, output_tensor

__all__ = ["supervised_loss", "split_labels", "cross_entropy"]


def split_labels(batch: Any) -> tuple[Any, torch.Tensor | None]:
    """``(inputs, labels)`` of a training batch: a dict with ``labels``, an ``(inputs, labels)``
    pair, or bare inputs (labels ``None``)."""
    if isinstance(batch, Mapping):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return inputs, batch.get("labels")
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[1], torch.Tensor) \
            and not batch[1].is_floating_point():
        return batch[0], batch[1]
    return batch, None


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; ``logits`` [B, C] vs [B], or [B, T, V] vs [B, T] (``-100`` ignored)."""
    if logits.dim() > 2:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    return F.cross_entropy(logits, labels)


def supervised_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """Loss of ``model`` on one labelled batch (the model's own ``.loss`` when it returns one)."""
    inputs, labels = split_labels(batch)
    if labels is None:
        raise DataError("finetune needs labelled batches: (inputs, labels) pairs or dicts with a 'labels' key")
    if isinstance(batch, Mapping):
        out = model(**batch)
        loss = getattr(out, "loss", None)
        if isinstance(loss, torch.Tensor):
            return loss
    else:
        out = call_model(model, inputs)
    return cross_entropy(output_tensor(out), labels)
