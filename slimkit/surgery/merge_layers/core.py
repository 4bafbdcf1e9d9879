"""Math of layer merging: exact BN / linear folds, pair discovery, LaCo's parameter-difference merge."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.fx
from torch import nn

from slimkit.core.fxtrace import trace_graph

__all__ = ["adjacent_pairs", "fold_bn", "fold_linear", "rdsc_merge", "CONV_TYPES", "BN_TYPES", "PASSTHROUGH"]

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: modules that are the identity in eval mode and may sit between two Linear layers being fused
PASSTHROUGH = (nn.Dropout, nn.Identity)


def adjacent_pairs(model: nn.Module, first: tuple[type, ...], second: tuple[type, ...],
                   passthrough: tuple[type, ...] = (),
                   on_fallback: Callable[[str], None] | None = None) -> list[tuple[str, str]]:
    """(producer, consumer) module names where the producer's output feeds only the consumer.

    torch.fx tracing finds them anywhere in a traceable model; otherwise adjacent children of
    ``nn.Sequential`` containers are used (their order is their data flow), and
    ``on_fallback(reason)`` is told why, so the step can report it.
    """
    graph, reason = trace_graph(model)
    if graph is None:
        if on_fallback is not None:
            on_fallback(f"torch.fx cannot trace the model ({reason}); producer/consumer pairs taken from "
                        "adjacent children of nn.Sequential only")
        return _sequential_pairs(model, first, second, passthrough)
    return _fx_pairs(model, graph, first, second, passthrough)


def _fx_pairs(model: nn.Module, graph: torch.fx.Graph, first: tuple[type, ...], second: tuple[type, ...],
              passthrough: tuple[type, ...]) -> list[tuple[str, str]]:
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(model.get_submodule(node.target), second):
            continue
        prev = node.args[0] if node.args else None
        while (isinstance(prev, torch.fx.Node) and prev.op == "call_module" and len(prev.users) == 1
               and isinstance(model.get_submodule(prev.target), passthrough)):
            prev = prev.args[0]
        if not (isinstance(prev, torch.fx.Node) and prev.op == "call_module" and len(prev.users) == 1):
            continue
        if isinstance(model.get_submodule(prev.target), first) and calls[prev.target] == calls[node.target] == 1:
            pairs.append((prev.target, node.target))
    return pairs


def _sequential_pairs(model: nn.Module, first: tuple[type, ...], second: tuple[type, ...],
                      passthrough: tuple[type, ...]) -> list[tuple[str, str]]:
    pairs = []
    for name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        for i, (a_name, a) in enumerate(children):
            if not isinstance(a, first):
                continue
            j = i + 1
            while j < len(children) and isinstance(children[j][1], passthrough):
                j += 1
            if j < len(children) and isinstance(children[j][1], second):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + a_name, prefix + children[j][0]))
    return pairs


@torch.no_grad()
def fold_bn(layer: nn.Module, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(layer(x))`` as one layer, using the BN's running statistics.

    ``scale = γ / sqrt(var + eps)``; ``W' = W · scale`` per output channel;
    ``b' = (b − mean) · scale + β``.
    """
    w = layer.weight.double()
    b = layer.bias.double() if layer.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(bn.running_mean, dtype=torch.float64)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(bn.running_mean, dtype=torch.float64)
    scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
    shape = (-1,) + (1,) * (w.dim() - 1)  # broadcast over [out, in/groups, *kernel]
    w_new = w * scale.reshape(shape)
    b_new = (b - bn.running_mean.double()) * scale + beta
    return w_new.to(layer.weight.dtype), b_new.to(layer.weight.dtype)


@torch.no_grad()
def fold_linear(a: nn.Linear, b: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``b(a(x)) = x W_a^T W_b^T + (W_b b_a + b_b)``: weight ``W_b W_a`` [out, in] and bias."""
    w = b.weight.double() @ a.weight.double()
    bias = None
    if a.bias is not None or b.bias is not None:
        bias = torch.zeros(b.out_features, dtype=torch.float64)
        if a.bias is not None:
            bias += b.weight.double() @ a.bias.double()
        if b.bias is not None:
            bias += b.bias.double()
        bias = bias.to(b.weight.dtype)
    return w.to(b.weight.dtype), bias


@torch.no_grad()
def rdsc_merge(blocks: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    """LaCo's Reserving-Differences-while-Seeking-Common merge: ``θ_0 + Σ_{k≥1} (θ_k − θ_0)``.

    Returns the merged tensors of every parameter of ``blocks[0]`` (by name).
    """
    base = dict(blocks[0].named_parameters())
    merged = {n: p.detach().clone() for n, p in base.items()}
    for other in blocks[1:]:
        for n, p in other.named_parameters():
            merged[n] += p.detach() - base[n].detach()
    return merged
