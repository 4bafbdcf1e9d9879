"""Layer-width pruning: shrink a transformer's hidden size (the residual stream) consistently.

Every module that reads or writes the residual stream must lose the same dimensions: the input
embeddings (word, position, token type), every LayerNorm/RMSNorm, the output side of every Linear
that writes into the stream (attention output, MLP down projection), the input side of every
Linear that reads it (query/key/value, MLP up/gate, pooler, lm_head). Torch-Pruning's dependency
graph, rooted at the input embedding, finds most of this group; measured on transformers 5.23 it
misses two kinds of member, which are added here by rule and listed in the step's notes:

* norms it does not know (``LlamaRMSNorm``: a 1-D ``weight`` of the hidden size, class name
  containing ``Norm``);
* Linears that read the stream through an indexing op (BERT's pooler reads ``hidden[:, 0]``):
  Linears outside the group whose input size is the hidden size. Only inputs are added this way,
  so a Linear wrongly taken for a stream reader would get an input narrower than its producer's
  output: the step runs the pruned model once and raises ``UnsupportedModelError`` if it fails.

A tied ``lm_head`` (``tie_word_embeddings``) shares the embedding's Parameter: it is not sliced a
second time but re-pointed at the sliced embedding, so it stays tied. ``config.hidden_size`` and
module attributes named ``hidden_size`` are updated; the edit record carries the old value so the
saved base architecture is the unpruned one and the slicing replays onto it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import UnsupportedModelError
from slimkit.core.inputs import run_with_hooks
from slimkit.io.edits import register_edit_op
from slimkit.prune.structured.core import build_graph, group_modules
from slimkit.prune.structured.heads import slice_linear

__all__ = ["WidthGroup", "find_width_group", "width_scores", "apply_width", "replay_prune_width"]


@dataclasses.dataclass
class WidthGroup:
    """The residual-stream dimension of a model: every ``(module path, side)`` carrying it."""

    hidden: int
    dims: list[tuple[str, str]]  # side: "out" (embedding dim, norm dim, Linear rows) or "in" (Linear columns)
    tied: list[tuple[str, str]]  # (Linear path, Embedding path) sharing one weight
    added: list[str]  # members found by rule, not by the dependency graph


def _is_norm(module: nn.Module, hidden: int) -> bool:
    w = getattr(module, "weight", None)
    return "norm" in type(module).__name__.lower() and isinstance(w, nn.Parameter) and w.dim() == 1 and w.numel() == hidden


def find_width_group(model: nn.Module, example: Any) -> WidthGroup:
    """Trace ``model`` and collect the residual-stream group rooted at its input embedding."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if not isinstance(emb, nn.Embedding):
        emb = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    if emb is None:
        raise UnsupportedModelError(f"{type(model).__name__}: layer_width needs an input nn.Embedding (a transformer); none found")
    names = {m: n for n, m in model.named_modules()}
    hidden = emb.embedding_dim
    DG = build_graph(model, example)
    group = DG.get_pruning_group(emb, DG.get_pruner_of_module(emb).prune_out_channels, list(range(hidden)))
    dims: dict[str, str] = {}
    for path, handler, idxs in group_modules(group, names):
        module = model.get_submodule(path)
        if sorted(idxs) != list(range(hidden)) or not isinstance(module, (nn.Linear, nn.Embedding, nn.LayerNorm)):
            raise UnsupportedModelError(f"{path} ({type(module).__name__}) is coupled to the hidden size in a way "
                                        "layer_width cannot slice (not a Linear / Embedding / LayerNorm one-to-one)")
        dims[path] = "in" if handler == "prune_in_channels" else "out"
    added = []
    for path, module in model.named_modules():
        if not path or path in dims:
            continue
        if _is_norm(module, hidden):
            dims[path] = "out"
        elif isinstance(module, nn.Linear) and module.in_features == hidden:
            dims[path] = "in"
        else:
            continue
        added.append(path)
    embeddings = {id(model.get_submodule(p).weight): p for p, s in dims.items() if isinstance(model.get_submodule(p), nn.Embedding)}
    tied = [(p, embeddings[id(model.get_submodule(p).weight)]) for p, s in dims.items()
            if isinstance(model.get_submodule(p), nn.Linear) and id(model.get_submodule(p).weight) in embeddings]
    ordered = [(p, dims[p]) for p in (n for n, _ in model.named_modules()) if p in dims]
    return WidthGroup(hidden, ordered, tied, added)


def _slices(model: nn.Module, g: WidthGroup, f: Any) -> torch.Tensor:
    """Sum over members of ``f(weight)`` reduced to one number per hidden dimension."""
    total = torch.zeros(g.hidden, dtype=torch.float64)
    tied = {p for p, _ in g.tied}
    for path, side in g.dims:
        if path in tied:
            continue
        module = model.get_submodule(path)
        w = f(module.weight)
        if isinstance(module, nn.Embedding) or (isinstance(module, nn.Linear) and side == "in"):
            total += w.double().sum(0)  # [*, hidden]
        elif w.dim() == 2:
            total += w.double().sum(1)  # Linear rows [hidden, in]
        else:
            total += w.double()  # norm [hidden]
    return total.float()


def width_scores(model: nn.Module, g: WidthGroup, importance: str, calib: list[Any] | None = None) -> torch.Tensor:
    """Importance of every hidden dimension; higher is more important.

    ``magnitude``: squared L2 norm of the dimension's weights over the whole group.
    ``activation``: mean ``|x_d|`` of the stream as read by every Linear that reads it (post-norm),
    summed over those Linears. ``taylor``: ``|w · ∂L/∂w|`` over the group (``.grad`` must be set).
    """
    if importance == "magnitude":
        return _slices(model, g, lambda w: w.detach().float().pow(2))
    if importance == "taylor":
        def taylor(w: torch.Tensor) -> torch.Tensor:
            if w.grad is None:
                raise UnsupportedModelError("layer_width taylor importance: a stream weight got no gradient")
            return (w.detach() * w.grad).abs().float()
        return _slices(model, g, taylor)
    sums = torch.zeros(g.hidden, dtype=torch.float64)
    counts = [0]
    readers = [model.get_submodule(p) for p, s in g.dims if s == "in"]

    def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach().double().reshape(-1, g.hidden)
        sums.add_(x.abs().mean(0))
        counts[0] += 1

    run_with_hooks(model, calib or [], [m.register_forward_pre_hook(hook) for m in readers])
    return (sums / max(counts[0], 1)).float()


def _slice_member(module: nn.Module, side: str, keep: torch.Tensor) -> None:
    if isinstance(module, nn.Linear):
        slice_linear(module, keep, 0 if side == "out" else 1)
    elif isinstance(module, nn.Embedding):
        module.weight = nn.Parameter(module.weight.data.index_select(1, keep).clone(), requires_grad=module.weight.requires_grad)
        module.embedding_dim = len(keep)
    else:  # LayerNorm / RMSNorm-like: 1-D weight (and bias)
        for name in ("weight", "bias"):
            p = getattr(module, name, None)
            if isinstance(p, nn.Parameter):
                setattr(module, name, nn.Parameter(p.data.index_select(0, keep).clone(), requires_grad=p.requires_grad))
        if isinstance(module, nn.LayerNorm):
            module.normalized_shape = (len(keep),)


def apply_width(model: nn.Module, dims: list[tuple[str, str]], tied: list[tuple[str, str]], removed: list[int],
                hidden: int) -> int:
    """Remove hidden dimensions ``removed`` from every member; re-tie, update sizes; returns the new width."""
    gone = set(removed)
    keep = torch.tensor([i for i in range(hidden) if i not in gone], dtype=torch.long)
    tied_linears = {p for p, _ in tied}
    for path, side in dims:
        if path not in tied_linears:
            _slice_member(model.get_submodule(path), side, keep)
    for lin_path, emb_path in tied:
        lin, emb = model.get_submodule(lin_path), model.get_submodule(emb_path)
        lin.weight = emb.weight
        lin.in_features = emb.embedding_dim
    new = len(keep)
    for module in model.modules():
        if isinstance(getattr(module, "hidden_size", None), int) and module.hidden_size == hidden:
            module.hidden_size = new
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "hidden_size", None) == hidden:
        config.hidden_size = new
    return new


@register_edit_op("prune_width")
def replay_prune_width(model: nn.Module, record: dict[str, Any]) -> None:
    """Apply ``{"dims": [[path, side]], "tied": [[linear, embedding]], "removed": [...], "hidden_size": [old, new]}``."""
    old, new = record["hidden_size"]
    got = apply_width(model, [tuple(d) for d in record["dims"]], [tuple(t) for t in record["tied"]],
                      list(record["removed"]), int(old))
    if got != new:
        raise KeyError(f"replayed hidden size {got} != recorded {new}")
