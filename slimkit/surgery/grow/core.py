"""Net2Net math: the widening map, widened weights of a producer/consumer pair, identity blocks."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from slimkit.core.errors import UnsupportedModelError

__all__ = ["widening_map", "widen_pair", "identity_init", "residual_zero_targets"]


def widening_map(width: int, new_width: int, generator: torch.Generator) -> torch.Tensor:
    """Net2Net's ``g``: unit ``j`` of the wide layer copies unit ``g[j]`` of the narrow one.

    The first ``width`` entries are the identity; the extra ones are drawn at random.
    """
    extra = torch.randint(0, width, (new_width - width,), generator=generator)
    return torch.cat([torch.arange(width), extra])


@torch.no_grad()
def widen_pair(producers: Sequence[nn.Linear], consumer: nn.Linear, g: torch.Tensor, noise: float,
               generator: torch.Generator) -> tuple[list[tuple[torch.Tensor, torch.Tensor | None]], torch.Tensor]:
    """Widened (weight, bias) of each producer (rows ``g``) and the consumer's weight.

    Consumer column ``j`` becomes ``W[:, g[j]] / count(g[j])``, so the sum over copies of a unit
    equals the original contribution: ``y`` is unchanged when every producer row is copied alike
    (a gated MLP copies gate and up rows with the same ``g``).
    """
    counts = torch.bincount(g, minlength=consumer.in_features).to(consumer.weight.dtype)
    wide = []
    for p in producers:
        w = p.weight[g].clone()  # [new_width, in]
        if noise > 0:
            w += noise * w.std(dim=1, keepdim=True) * torch.randn(w.shape, generator=generator, dtype=w.dtype)
        wide.append((w, p.bias[g].clone() if p.bias is not None else None))
    w_c = consumer.weight[:, g] / counts[g][None, :]  # [out, new_width]
    return wide, w_c


def residual_zero_targets(block: nn.Module) -> list[str]:
    """Block-relative names of the modules whose zeroing makes a residual block the identity."""
    names = {n for n, _ in block.named_modules()}
    if {"self_attn.o_proj", "mlp.down_proj"} <= names:  # pre-norm decoder (Llama, Mistral, Qwen ...)
        return ["self_attn.o_proj", "mlp.down_proj"]
    if getattr(block, "use_res_connect", False) and isinstance(getattr(block, "conv", None), nn.Sequential):
        return [f"conv.{len(block.conv) - 1}"]  # inverted residual: x + BN(...) with BN -> 0
    raise UnsupportedModelError(
        f"{type(block).__name__}: cannot make this block the identity automatically (post-norm blocks such as "
        "BertLayer never are); name its residual-branch output layers with the 'zero' option")


@torch.no_grad()
def identity_init(block: nn.Module, zero: Sequence[str]) -> None:
    """Zero the weights (and biases) of ``zero`` inside ``block`` so its residual branch outputs 0."""
    for name in zero:
        try:
            module = block.get_submodule(name)
        except AttributeError:
            raise UnsupportedModelError(f"zero: block {type(block).__name__} has no module {name!r}") from None
        for attr in ("weight", "bias"):
            t = getattr(module, attr, None)
            if isinstance(t, torch.Tensor):
                t.zero_()
