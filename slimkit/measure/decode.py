"""Greedy decoding with a KV cache, timed the same way for a torch causal LM and an exported ONNX decoder.

``greedy_decode(model, prompt_ids, new_tokens)`` returns the ``new_tokens`` generated token ids and
the seconds spent generating them, so ``new_tokens / seconds`` is the decode rate in tokens/s.
Both runtimes do the same work: the prompt minus its last token is run once, untimed, to fill the
KV cache; then ``new_tokens`` timed steps each feed one token (the prompt's last token first, then
each new token) with the cache and take the argmax of its logits. The token ids are exactly what
full-prompt greedy decoding produces; the timing is decode only (no prefill in it).

* a torch model (a Hugging Face causal LM, fp32 or slimkit's compressed layers) runs its own
  forward with ``past_key_values`` / ``use_cache=True``;
* an :class:`~slimkit.export.ort_model.OrtModel` of a decoder export (``past_key_values.{i}.key`` /
  ``.value`` inputs, ``present.{i}.*`` outputs) gets each step's ``present`` fed back as ``past``.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.core.errors import DataError

__all__ = ["greedy_decode"]


def greedy_decode(model: nn.Module, prompt_ids: torch.Tensor | list[int], new_tokens: int) -> tuple[list[int], float]:
    """Greedy-generate ``new_tokens`` tokens after ``prompt_ids`` (one sequence); returns
    ``(token ids, seconds)`` where ``seconds`` covers the ``new_tokens`` one-token decode steps.

    Raises :class:`DataError` for an empty or batched prompt, ``new_tokens < 1``, or an ONNX model
    without KV-cache inputs.
    """
    ids = _prompt(prompt_ids)
    if int(new_tokens) < 1:
        raise DataError(f"new_tokens {new_tokens!r} must be >= 1")
    from slimkit.export.ort_model import OrtModel

    if isinstance(model, OrtModel):
        return _OrtLoop(model).run(ids, int(new_tokens))
    return _torch_loop(model, ids, int(new_tokens))


def _prompt(prompt_ids: torch.Tensor | list[int]) -> torch.Tensor:
    ids = torch.as_tensor(prompt_ids, dtype=torch.int64)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.dim() != 2 or ids.shape[0] != 1 or ids.shape[1] < 1:
        raise DataError(f"prompt_ids must be one non-empty sequence ([1, length] or [length]); got shape {tuple(ids.shape)}")
    return ids


@torch.inference_mode()
def _torch_loop(model: nn.Module, ids: torch.Tensor, new_tokens: int) -> tuple[list[int], float]:
    model.eval()
    past = None
    if ids.shape[1] > 1:
        past = model(ids[:, :-1], use_cache=True).past_key_values
    nxt, out = ids[:, -1:], []
    start = time.perf_counter()
    for _ in range(new_tokens):
        res = model(nxt, past_key_values=past, use_cache=True)
        past = res.past_key_values
        tok = int(res.logits[0, -1].argmax())
        out.append(tok)
        nxt = torch.tensor([[tok]])
    return out, time.perf_counter() - start


class _OrtLoop:
    """Plain ``session.run`` steps with numpy feeds; ``present`` outputs become the next ``past``."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.past = [n for n in model.inputs if n.startswith("past_key_values")]
        if not self.past or "logits" not in model.output_names:
            raise DataError(f"{model.path.name}: greedy_decode needs a decoder export with past_key_values.* "
                            f"inputs and logits; the graph takes {list(model.inputs)}")
        self.presents = [n.replace("past_key_values", "present") for n in self.past]
        missing = [n for n in self.presents if n not in model.output_names]
        if missing:
            raise DataError(f"{model.path.name}: outputs {missing} are missing (the graph returns {model.output_names})")
        self.outputs = ["logits", *self.presents]
        self.positions = "position_ids" in model.inputs

    def _step(self, ids: np.ndarray, cache: dict[str, np.ndarray], total: int) -> tuple[int, dict[str, np.ndarray]]:
        feed = {"input_ids": ids, "attention_mask": np.ones((1, total), np.int64), **cache}
        if self.positions:
            feed["position_ids"] = np.arange(total - ids.shape[1], total, dtype=np.int64)[None]
        logits, *present = self.model.session.run(self.outputs, feed)
        return int(logits[0, -1].argmax()), dict(zip(self.past, present))

    def run(self, ids: torch.Tensor, new_tokens: int) -> tuple[list[int], float]:
        prompt = ids.numpy()
        cache = {n: self.model._empty_past(self.model.inputs[n], prompt) for n in self.past}
        if prompt.shape[1] > 1:
            _, cache = self._step(prompt[:, :-1], cache, prompt.shape[1] - 1)
        nxt, total, out = prompt[:, -1:], prompt.shape[1], []
        start = time.perf_counter()
        for _ in range(new_tokens):
            tok, cache = self._step(nxt, cache, total)
            out.append(tok)
            nxt, total = np.array([[tok]], np.int64), total + 1
        return out, time.perf_counter() - start
