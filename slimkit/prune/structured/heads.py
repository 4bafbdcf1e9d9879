"""Attention-head pruning: find attention layers, score heads, slice them out, replay the slicing.

A head is ``head_dim`` consecutive rows of the query (and, for multi-head attention, key and
value) projection and the same columns of the output projection. Grouped-query attention (GQA,
e.g. Llama with ``num_key_value_heads < num_attention_heads``) shares one key/value head among a
group of ``num_key_value_groups`` consecutive query heads (Hugging Face's ``repeat_kv`` layout), so
a pruned layer must keep every group the same size: either the same number of query heads leaves
every group (``gqa: query``) or whole groups leave with their key/value head (``gqa: group``).

Three attention layouts are known (anything else named ``*Attention`` is reported as skipped):

* ``qkvo``: one module with ``q_proj``/``k_proj``/``v_proj``/``o_proj`` and ``head_dim`` (Llama,
  Mistral, Qwen2, SmolLM2). Its forward reshapes with ``-1`` heads and reads
  ``num_key_value_groups`` (for ``repeat_kv``); that attribute is updated.
* ``bert``: ``BertAttention``-like: ``self.query/key/value`` with ``attention_head_size`` and
  ``output.dense``. ``num_attention_heads`` and ``all_head_size`` of ``self`` are updated.
* ``mpnet``: ``MPNetSelfAttention``-like: ``q``/``k``/``v``/``o`` with ``attention_head_size``.
  MPNet's encoder computes one relative-position bias ``[batch, heads, q, k]`` for every layer with
  the base model's head count, so a pruned layer carries the indices of the heads it kept (buffer
  ``slimkit_kept_heads``, not saved: the replayed edit rebuilds it) and a forward pre-hook selects
  those heads of the bias before the layer adds it to its scores.

Per-layer head counts can differ after pruning, so the HF config's head counts (one number for
every layer) are left as the base architecture's; the modules carry the truth and the replayed
``prune_heads`` edit rebuilds it on load.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import ConfigError, UnsupportedModelError
from slimkit.core.inputs import run_with_hooks
from slimkit.io.edits import register_edit_op

__all__ = ["Attention", "find_attentions", "unsupported_attentions", "head_scores", "heads_for_ratio",
           "heads_from_map", "remove_heads", "replay_prune_heads", "slice_linear"]


@dataclasses.dataclass
class Attention:
    """One attention layer: where its projections live and its current head layout."""

    path: str  # the key of ``heads`` maps and of edit records
    kind: str  # "qkvo", "bert" or "mpnet"
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    owner: nn.Module  # the module whose attributes the forward reads
    head_dim: int

    @property
    def n_q(self) -> int:
        return self.q.out_features // self.head_dim

    @property
    def n_kv(self) -> int:
        return self.k.out_features // self.head_dim

    @property
    def group(self) -> int:
        """Query heads per key/value head (1 for multi-head attention)."""
        return self.n_q // self.n_kv


def _describe(path: str, module: nn.Module) -> Attention | None:
    if all(isinstance(getattr(module, a, None), nn.Linear) for a in ("q_proj", "k_proj", "v_proj", "o_proj")) \
            and isinstance(getattr(module, "head_dim", None), int):
        return Attention(path, "qkvo", module.q_proj, module.k_proj, module.v_proj, module.o_proj, module,
                         module.head_dim)
    inner, out = getattr(module, "self", None), getattr(module, "output", None)
    if inner is not None and out is not None and isinstance(getattr(out, "dense", None), nn.Linear) \
            and all(isinstance(getattr(inner, a, None), nn.Linear) for a in ("query", "key", "value")) \
            and isinstance(getattr(inner, "attention_head_size", None), int):
        return Attention(path, "bert", inner.query, inner.key, inner.value, out.dense, inner,
                         inner.attention_head_size)
    if all(isinstance(getattr(module, a, None), nn.Linear) for a in ("q", "k", "v", "o")) \
            and isinstance(getattr(module, "attention_head_size", None), int):
        return Attention(path, "mpnet", module.q, module.k, module.v, module.o, module, module.attention_head_size)
    return None


def find_attentions(model: nn.Module) -> dict[str, Attention]:
    """Every attention layer of a known layout, keyed by module path (model order)."""
    return {name: att for name, module in model.named_modules() if (att := _describe(name, module)) is not None}


def unsupported_attentions(model: nn.Module, found: dict[str, Attention]) -> list[str]:
    """Modules whose class name says attention but which are neither a known layout nor inside one."""
    out = []
    for name, module in model.named_modules():
        if "attention" not in type(module).__name__.lower() or name in found:
            continue
        if any(name.startswith(p + ".") or p.startswith(name + ".") for p in found):
            continue  # a part of a known layer (BertSelfAttention) or a wrapper around one
        out.append(f"{name} ({type(module).__name__})")
    return out


# ----------------------------------------------------------------------------- scores
def _rows(w: torch.Tensor, hd: int) -> torch.Tensor:
    """``[out, in]`` weight → per-head sums over ``[heads, hd, in]``."""
    return w.reshape(-1, hd, w.shape[1]).sum((1, 2))


def head_scores(model: nn.Module, atts: dict[str, Attention], importance: str,
                calib: list[Any] | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``path → (query-head scores [n_q], kv-group scores [n_kv])``; higher is more important.

    ``magnitude``: squared L2 norm of the head's query rows and output-projection columns (plus the
    key/value rows for a group). ``activation``: mean L2 norm of each head's context vector (the
    output projection's input) over calibration tokens. ``taylor``: ``|w · ∂L/∂w|`` summed over the
    same weights (gradients must already sit in ``.grad``).
    """
    if importance == "activation":
        return _activation_scores(model, atts, calib or [])
    out = {}
    for path, a in atts.items():
        def f(lin: nn.Linear) -> torch.Tensor:
            w = lin.weight.detach().float()
            if importance == "taylor":
                if lin.weight.grad is None:
                    raise UnsupportedModelError(f"{path}: no gradient reached {type(lin).__name__}; taylor importance needs it")
                return (w * lin.weight.grad.float()).abs()
            return w.pow(2)
        hd = a.head_dim
        q = _rows(f(a.q), hd) + _rows(f(a.o).t().contiguous(), hd)
        kv = q.reshape(a.n_kv, a.group).sum(1) + _rows(f(a.k), hd) + _rows(f(a.v), hd)
        out[path] = (q, kv)
    return out


@torch.no_grad()
def _activation_scores(model: nn.Module, atts: dict[str, Attention], calib: list[Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    sums = {p: torch.zeros(a.n_q, dtype=torch.float64) for p, a in atts.items()}
    count = {p: 0 for p in atts}

    def hook(path: str, a: Attention):  # noqa: ANN202
        def fn(_m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().double().reshape(-1, a.n_q, a.head_dim)  # [tokens, heads, hd]
            sums[path] += x.norm(dim=2).sum(0)
            count[path] += x.shape[0]
        return fn

    run_with_hooks(model, calib, [a.o.register_forward_pre_hook(hook(p, a)) for p, a in atts.items()])
    out = {}
    for p, a in atts.items():
        q = (sums[p] / max(count[p], 1)).float()
        out[p] = (q, q.reshape(a.n_kv, a.group).sum(1))
    return out


# ----------------------------------------------------------------------------- which heads
def heads_for_ratio(a: Attention, scores: tuple[torch.Tensor, torch.Tensor], ratio: float, gqa: str) -> tuple[list[int], list[int]]:
    """``(query heads, kv heads)`` to remove so ~``ratio`` of the layer's heads go; ≥ 1 head stays."""
    q_scores, kv_scores = scores
    if a.group == 1 or gqa == "group":
        r = min(int(round(a.n_kv * ratio)), a.n_kv - 1)
        kv = sorted(torch.topk(kv_scores, r, largest=False).indices.tolist()) if r else []
        return sorted(h for g in kv for h in range(g * a.group, (g + 1) * a.group)), kv
    r = min(int(round(a.group * ratio)), a.group - 1)
    if not r:
        return [], []
    per = q_scores.reshape(a.n_kv, a.group)
    q = [g * a.group + int(i) for g in range(a.n_kv) for i in torch.topk(per[g], r, largest=False).indices]
    return sorted(q), []


def heads_from_map(a: Attention, idxs: list[int]) -> tuple[list[int], list[int]]:
    """Check an explicit ``heads`` entry (query-head indices) and split it into (query, kv) removals."""
    chosen = sorted(set(int(i) for i in idxs))
    if chosen[-1] >= a.n_q:
        raise ConfigError(f"heads[{a.path!r}] = {chosen}: {a.path} has {a.n_q} heads (indices 0..{a.n_q - 1})")
    if len(chosen) >= a.n_q:
        raise ConfigError(f"heads[{a.path!r}] would remove all {a.n_q} heads of layer {a.path}; at least one must stay")
    kv = [g for g in range(a.n_kv) if all(h in chosen for h in range(g * a.group, (g + 1) * a.group))]
    partial = {g: sum(1 for h in chosen if h // a.group == g) for g in range(a.n_kv) if g not in kv}
    if len(set(partial.values())) > 1:
        raise ConfigError(
            f"heads[{a.path!r}] = {chosen}: {a.path} uses grouped-query attention ({a.n_kv} key/value heads, "
            f"{a.group} query heads each); remove whole groups or the same number of query heads from every "
            f"remaining group (got {partial} per group)")
    return chosen, kv


# ----------------------------------------------------------------------------- slicing
def slice_linear(lin: nn.Linear, keep: torch.Tensor, dim: int) -> None:
    """Keep ``keep`` rows (``dim=0``, outputs) or columns (``dim=1``, inputs) of a Linear, in place."""
    w = lin.weight.data.index_select(dim, keep).clone()
    lin.weight = nn.Parameter(w, requires_grad=lin.weight.requires_grad)
    if dim == 0:
        if lin.bias is not None:
            lin.bias = nn.Parameter(lin.bias.data.index_select(0, keep).clone(), requires_grad=lin.bias.requires_grad)
        lin.out_features = w.shape[0]
    else:
        lin.in_features = w.shape[1]


def _keep_rows(n_heads: int, removed: list[int], hd: int) -> torch.Tensor:
    gone = set(removed)
    return torch.tensor([h * hd + j for h in range(n_heads) if h not in gone for j in range(hd)], dtype=torch.long)


def remove_heads(a: Attention, q_heads: list[int], kv_heads: list[int]) -> None:
    """Slice the query heads ``q_heads`` (and key/value heads ``kv_heads``) out of one layer."""
    n_q, n_kv, g = a.n_q, a.n_kv, a.group
    gone = set(q_heads)
    per_group = {sum(1 for h in range(j * g, (j + 1) * g) if h not in gone) for j in range(n_kv) if j not in kv_heads}
    orphans = any(h // g in kv_heads for h in range(n_q) if h not in gone)
    if len(per_group) != 1 or 0 in per_group or orphans or any(not 0 <= h < n_q for h in gone):
        raise ConfigError(f"{a.path}: removing query heads {q_heads} and key/value heads {kv_heads} of "
                          f"{n_q}/{n_kv} leaves an inconsistent layout")
    if a.kind == "mpnet":
        _select_position_bias(a.owner, [h for h in range(n_q) if h not in gone])
    keep_q = _keep_rows(n_q, q_heads, a.head_dim)
    slice_linear(a.q, keep_q, 0)
    slice_linear(a.o, keep_q, 1)
    if kv_heads:
        keep_kv = _keep_rows(n_kv, kv_heads, a.head_dim)
        slice_linear(a.k, keep_kv, 0)
        slice_linear(a.v, keep_kv, 0)
    _sync(a)


_KEPT = "slimkit_kept_heads"


def _select_position_bias(owner: nn.Module, kept: list[int]) -> None:
    """Make ``owner`` read only the ``kept`` heads (of its current ones) of the shared position bias."""
    previous = getattr(owner, _KEPT, None)
    base = previous.tolist() if previous is not None else list(range(owner.num_attention_heads))
    owner.register_buffer(_KEPT, torch.tensor([base[h] for h in kept], dtype=torch.long,
                                              device=owner.q.weight.device), persistent=False)
    if _position_bias_hook not in owner._forward_pre_hooks.values():
        owner.register_forward_pre_hook(_position_bias_hook, with_kwargs=True)


def _position_bias_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """Select the layer's kept heads of MPNet's ``position_bias`` (third positional or keyword argument).

    A module-level function reading the module's own buffer, so ``copy.deepcopy`` of a pruned model
    keeps working (a closure would point at the original's indices).
    """
    kept = getattr(module, _KEPT)
    if "position_bias" in kwargs:
        if kwargs["position_bias"] is not None:
            kwargs = {**kwargs, "position_bias": kwargs["position_bias"].index_select(1, kept)}
    elif len(args) > 2 and args[2] is not None:
        args = (*args[:2], args[2].index_select(1, kept), *args[3:])
    return args, kwargs


def _sync(a: Attention) -> None:
    """Write the new head counts into the attributes the Hugging Face forward reads."""
    if a.kind in ("bert", "mpnet"):
        a.owner.num_attention_heads = a.n_q
        a.owner.all_head_size = a.n_q * a.head_dim
        return
    a.owner.num_key_value_groups = a.group
    for attr, value in (("num_heads", a.n_q), ("num_attention_heads", a.n_q), ("num_key_value_heads", a.n_kv)):
        if isinstance(getattr(a.owner, attr, None), int):
            setattr(a.owner, attr, value)


@register_edit_op("prune_heads")
def replay_prune_heads(model: nn.Module, record: dict[str, Any]) -> None:
    """Apply ``{"attention": path, "query_heads": [...], "kv_heads": [...]}`` to a fresh model."""
    a = _describe(record["attention"], model.get_submodule(record["attention"]))
    if a is None:
        raise KeyError(f"{record['attention']} is not an attention layer this slimkit can prune")
    remove_heads(a, list(record["query_heads"]), list(record["kv_heads"]))
