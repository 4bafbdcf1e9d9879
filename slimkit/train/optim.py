"""Optimizers and learning-rate schedules from :class:`TrainOptions`, all from ``torch.optim``."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from slimkit.train.options import TrainOptions

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "total_steps"]


def build_optimizer(params: Iterable[nn.Parameter], opts: TrainOptions) -> torch.optim.Optimizer:
    """SGD (with ``momentum``), Adam or AdamW from torch.optim."""
    params = list(params)
    if opts.optimizer == "sgd":
        return torch.optim.SGD(params, lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay)
    if opts.optimizer == "adam":
        return torch.optim.Adam(params, lr=opts.lr, weight_decay=opts.weight_decay)
    return torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)


def lr_factor(step: int, opts: TrainOptions, total: int) -> float:
    """Multiplier of ``lr`` at optimizer step ``step`` (0-based): linear warm-up, then the schedule."""
    warm = opts.warmup_steps
    if step < warm:
        return (step + 1) / (warm + 1)
    span = max(total - warm, 1)
    t = min((step - warm) / span, 1.0)
    if opts.scheduler == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if opts.scheduler == "linear":
        return 1.0 - t
    if opts.scheduler == "step":
        size = opts.step_size or max(span // 3, 1)
        return opts.step_gamma ** ((step - warm) // size)
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, opts: TrainOptions, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``torch.optim.lr_scheduler.LambdaLR`` following :func:`lr_factor` (its state is plain data,
    so it checkpoints to JSON and resumes exactly)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, opts, total))


def total_steps(opts: TrainOptions, n_batches: int) -> int:
    """Optimizer steps of the run: ``steps``, else ``epochs`` (default 1) over ``n_batches``."""
    if opts.steps is not None:
        return opts.steps
    epochs = opts.epochs if opts.epochs is not None else 1.0
    return max(1, math.ceil(epochs * n_batches / opts.grad_accum))
