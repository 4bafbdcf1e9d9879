"""Math of block dropping: block influence from captured block inputs/outputs, and block choice."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.core.inputs import call_model, output_tensor, run_with_hooks

__all__ = ["block_influence", "output_drift", "choose_blocks", "block_io_tensor"]


def block_io_tensor(value: Any) -> torch.Tensor:
    """The hidden-state tensor of a block's input args/kwargs or output (first tensor found)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        value = value.get("hidden_states", next(iter(value.values()), None))
        return block_io_tensor(value)
    if isinstance(value, (tuple, list)) and value:
        return block_io_tensor(value[0])
    return output_tensor(value)


def _features(t: torch.Tensor) -> torch.Tensor:
    """[..., C] tokens for transformers ([B, L, H] -> [B*L, H]); [B, C, H, W] -> [B*H*W, C] for CNNs."""
    if t.dim() == 4:
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
    return t.reshape(-1, t.shape[-1])


@torch.no_grad()
def block_influence(model: nn.Module, blocks: Sequence[nn.Module], batches: Sequence[Any]) -> list[float]:
    """ShortGPT block influence ``BI_i = 1 - mean_token cos(x_i, y_i)`` for each block.

    ``x_i`` / ``y_i`` are block ``i``'s input / output hidden states, captured with forward hooks
    during ordinary forward passes over ``batches``. A low BI means the block barely changes its
    input, so removing it costs little. A block whose output shape differs from its input's gets
    ``inf`` (it cannot be removed).
    """
    sums = [0.0] * len(blocks)
    counts = [0] * len(blocks)

    def hook(i: int):  # noqa: ANN202 - hook factory
        def fn(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            x = _features(block_io_tensor(args if args else kwargs).float())
            y = _features(block_io_tensor(output).float())
            if x.shape != y.shape:  # a shape-changing block (CNN stem/transition) cannot be dropped
                sums[i] = float("inf")
                return
            cos = F.cosine_similarity(x, y, dim=-1)  # [tokens]
            sums[i] += float((1.0 - cos).sum())
            counts[i] += cos.numel()
        return fn

    run_with_hooks(model, batches, [b.register_forward_hook(hook(i), with_kwargs=True) for i, b in enumerate(blocks)])
    return [s / max(c, 1) for s, c in zip(sums, counts)]


@torch.no_grad()
def output_drift(model: nn.Module, reference: Sequence[torch.Tensor], batches: Sequence[Any]) -> float:
    """``1 - mean cos`` between ``model``'s outputs and reference outputs (per token / example)."""
    total, count = 0.0, 0
    for ref, batch in zip(reference, batches):
        out = output_tensor(call_model(model, batch)).float()
        cos = F.cosine_similarity(out.reshape(-1, out.shape[-1]), ref.reshape(-1, ref.shape[-1]), dim=-1)
        total += float((1.0 - cos).sum())
        count += cos.numel()
    return total / max(count, 1)


def choose_blocks(scores: dict[int, float], k: int) -> list[int]:
    """The ``k`` candidate blocks with the lowest scores (ties broken by later index first)."""
    ranked = sorted(scores, key=lambda i: (scores[i], -i))
    return sorted(ranked[:k])
