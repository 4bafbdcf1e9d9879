"""Where a model lives and how to run it for measurement without changing it.

Shared by the runner, distillation and the latency, MAC and quality measurements: each needs the
model's device (to move inputs there) and eval mode (dropout off) without leaving the caller's
model altered.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["model_device", "eval_mode"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter, else first buffer, else CPU."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode and restore each one's training flag on exit.

    Measuring must not switch a model that is being trained into eval mode behind the
    caller's back, so the flags are restored module by module.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training
