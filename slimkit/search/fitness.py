"""Fitness of a candidate model: how far its outputs are from the input model's on calibration data.

For language models (outputs with ``logits``) the fitness is EvoPress's: the KL divergence
``KL(p_input || p_candidate)`` of the next-token distributions, averaged over calibration tokens
(positions masked out by ``attention_mask`` are not counted). The same KL over the last dimension
serves any model whose output carries ``logits`` (classifiers: one distribution per example).
Plain tensor outputs get the mean squared error to the input model's output (``fitness: mse``).

The input model's outputs are computed once: log-probabilities stored as float16 (half the memory
of float32; the rounding is the same for every candidate, so their ranking is unaffected).
Calibration batches are split into single rows; a stage draws random rows (seeded) until it has
its tokens. For causal language models the last drawn row is cut to hit the token count exactly
(a causal model's first ``k`` positions do not depend on later ones, so the stored reference is
cut the same way); for other models whole rows are used and the count is rounded up.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slimkit.core.errors import ConfigError, DataError
from slimkit.core.inputs import call_model, output_tensor
from slimkit.core.sequential import no_cache

__all__ = ["OutputDivergence", "split_rows", "is_causal_lm"]


def is_causal_lm(model: nn.Module) -> bool:
    """A Hugging Face decoder-only language model (its logits at position t see only tokens <= t)."""
    name = type(model).__name__
    config = getattr(model, "config", None)
    return name.endswith(("ForCausalLM", "LMHeadModel")) and not getattr(config, "is_encoder_decoder", False)


def _rows_of(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    values = batch.values() if isinstance(batch, Mapping) else batch
    sizes = {v.shape[0] for v in values if isinstance(v, torch.Tensor) and v.dim() > 0}
    if len(sizes) != 1:
        raise DataError(f"cannot split a calibration batch into rows: its tensors have leading sizes {sorted(sizes)}")
    return sizes.pop()


def _index(batch: Any, sl: slice, dim: int = 0, length: int | None = None) -> Any:
    """``batch`` with every tensor sliced along ``dim`` (only tensors of length ``length`` there)."""
    def cut(v: Any) -> Any:
        if not isinstance(v, torch.Tensor) or v.dim() <= dim or (length is not None and v.shape[dim] != length):
            return v
        return v[sl] if dim == 0 else v[:, sl]

    if isinstance(batch, Mapping):
        return {k: cut(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(cut(v) for v in batch)
    return cut(batch)


def split_rows(batches: Sequence[Any]) -> list[Any]:
    """Every calibration batch split into single-row batches (leading dimension 1)."""
    rows = []
    for batch in batches:
        rows.extend(_index(batch, slice(i, i + 1)) for i in range(_rows_of(batch)))
    return rows


def _mask(row: Any) -> torch.Tensor | None:
    return row.get("attention_mask") if isinstance(row, Mapping) else None


class OutputDivergence:
    """The fitness of :mod:`slimkit.search.evolution.core`: ``score(assignment, sample)`` applies the
    assignment with ``apply`` and returns the mean divergence to the stored reference outputs."""

    def __init__(self, model: nn.Module, batches: Sequence[Any], max_tokens: int | None, kind: str = "auto",
                 apply: Callable[[Sequence[int]], None] | None = None) -> None:
        self.model, self.apply = model, apply
        self.causal = is_causal_lm(model)
        self.rows: list[Any] = []
        self.refs: list[torch.Tensor] = []
        self.tokens: list[int] = []
        self.kind = kind
        self._reference(split_rows(batches), max_tokens)

    @property
    def available_tokens(self) -> int:
        return sum(self.tokens)

    def reference_bytes(self) -> int:
        return sum(r.numel() * r.element_size() for r in self.refs)

    def _reference(self, rows: list[Any], max_tokens: int | None) -> None:
        """Run the input model on rows until ``max_tokens`` tokens are covered (every row when
        ``None``); store its outputs."""
        with torch.no_grad():
            for row in rows:
                if max_tokens is not None and self.available_tokens >= max_tokens:
                    break
                out = call_model(self.model, no_cache(self.model, row))
                logits = getattr(out, "logits", None)
                if logits is None and isinstance(out, Mapping):
                    logits = out.get("logits")
                if self.kind == "auto":
                    self.kind = "kl" if isinstance(logits, torch.Tensor) else "mse"
                if self.kind == "kl" and not isinstance(logits, torch.Tensor):
                    raise ConfigError("fitness = 'kl' needs model outputs with logits; this model returns "
                                      f"{type(out).__name__} (use fitness: mse)")
                ref = self._stored(logits if self.kind == "kl" else output_tensor(out))
                self.rows.append(row)
                self.refs.append(ref)
                self.tokens.append(self._count(ref, row))
        if not self.rows:
            raise DataError("search: the calibration data has no rows to compute the fitness on")

    def _stored(self, out: torch.Tensor) -> torch.Tensor:
        if self.kind == "kl":
            return F.log_softmax(out.float(), dim=-1).to(torch.float16)
        return out.detach().float().clone()

    def _count(self, ref: torch.Tensor, row: Any) -> int:
        mask = _mask(row)
        if self.kind == "kl" and mask is not None and mask.shape == ref.shape[:-1]:
            return int(mask.sum())
        return int(np.prod(ref.shape[1:-1])) if self.kind == "kl" and ref.dim() > 2 else 1

    def sample(self, rng: np.random.Generator, tokens: int) -> list[tuple[int, int | None]]:
        """Random rows (and, for causal LMs, a cut length for the last one) covering ``tokens``."""
        chosen: list[tuple[int, int | None]] = []
        have = 0
        for i in rng.permutation(len(self.rows)):
            if have >= tokens:
                break
            i = int(i)
            left = tokens - have
            if self.causal and self.kind == "kl" and self.tokens[i] > left and _mask(self.rows[i]) is None:
                chosen.append((i, left))
                have += left
            else:
                chosen.append((i, None))
                have += self.tokens[i]
        return chosen

    def score(self, assignment: Sequence[int], sample: list[tuple[int, int | None]]) -> float:
        if self.apply is not None:
            self.apply(assignment)
        return self.divergence(sample)

    @torch.no_grad()
    def divergence(self, sample: list[tuple[int, int | None]]) -> float:
        """Mean divergence of the model as it is now over the sampled rows."""
        total, count = 0.0, 0
        for i, cut in sample:
            row, ref = self.rows[i], self.refs[i]
            if cut is not None:
                length = ref.shape[1]
                row, ref = _index(row, slice(0, cut), dim=1, length=length), ref[:, :cut]
            out = call_model(self.model, no_cache(self.model, row))
            s, n = self._row_divergence(out, ref, _mask(row))
            total, count = total + s, count + n
        return total / max(count, 1)

    def _row_divergence(self, out: Any, ref: torch.Tensor, mask: torch.Tensor | None) -> tuple[float, int]:
        if self.kind == "mse":
            diff = (output_tensor(out).float() - ref).pow(2)
            return float(diff.mean()), 1
        logits = getattr(out, "logits", None)
        if logits is None:
            logits = out["logits"]
        logq = F.log_softmax(logits.float(), dim=-1)
        logp = ref.float()
        kl = (logp.exp() * (logp - logq)).sum(-1)  # one value per distribution (token)
        if mask is not None and mask.shape == kl.shape:
            return float((kl * mask).sum()), int(mask.sum())
        return float(kl.sum()), kl.numel()
