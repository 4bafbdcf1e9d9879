"""``sk.data.load``: a user's file or folder -> (calibration batches, held-out batches).

The split is made over documents (files, rows, blocks, images; see
:mod:`slimkit.data.documents`) by a hash of each document's key, so it is deterministic, stable
when documents are added, and calibration never sees a held-out document.

>>> calib, held_out = sk.data.load("notes.txt", tokenizer=tok, seq_len=256)   # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import torch

from slimkit.core.errors import ConfigError, DataError
from slimkit.data.documents import Document, read_documents

__all__ = ["load", "split_documents"]


def split_documents(docs: list[Document], eval_fraction: float, source: str) -> tuple[list[Document], list[Document]]:
    """(calibration, held-out): the ``ceil(n * eval_fraction)`` documents with the smallest key hash are held out."""
    if len(docs) < 2:
        raise DataError(f"{source}: {len(docs)} document(s); the split needs at least 2 "
                        "(or pass eval_path / --eval-data for the held-out part)")
    ranked = sorted(docs, key=lambda d: hashlib.sha1(d.key.encode()).hexdigest())
    n_eval = min(max(1, math.ceil(len(docs) * eval_fraction)), len(docs) - 1)
    held = {d.key for d in ranked[:n_eval]}
    return [d for d in docs if d.key not in held], [d for d in docs if d.key in held]


def load(
    path: str | Path,
    *,
    tokenizer: Any = None,
    seq_len: int = 256,
    batch_size: int = 1,
    eval_fraction: float = 0.2,
    eval_path: str | Path | None = None,
    max_batches: int | None = None,
    image_size: int = 224,
) -> tuple[list[Any], list[Any]]:
    """Read ``path`` and return ``(calib, held_out)`` batches, split by document.

    Text without labels: with a tokenizer, token chunks ``{"input_ids": [batch_size, seq_len]}``
    (what :class:`sk.Perplexity` and calibration take); without, the documents' strings. Text with
    a ``label`` column: ``(inputs, labels)`` batches padded to ``seq_len``. Images: normalised
    ``[batch_size, 3, image_size, image_size]`` tensors, as ``(pixels, labels)`` when class
    subfolders give labels. ``eval_path`` gives the held-out part explicitly (then all of ``path``
    is calibration).
    """
    _check(seq_len=seq_len, batch_size=batch_size, eval_fraction=eval_fraction, image_size=image_size)
    docs = read_documents(path)
    if eval_path is not None:
        calib_docs, held_docs = docs, read_documents(eval_path)
    else:
        calib_docs, held_docs = split_documents(docs, eval_fraction, str(path))
    classes = _classes(calib_docs + held_docs)
    build = lambda part, name: _batches(part, name, tokenizer, seq_len, batch_size, max_batches, image_size, classes)  # noqa: E731
    return build(calib_docs, f"{path} (calibration part)"), build(held_docs, f"{eval_path or path} (held-out part)")


def _check(**values: Any) -> None:
    for key in ("seq_len", "batch_size", "image_size"):
        if not isinstance(values[key], int) or values[key] < 1:
            raise ConfigError(f"{key} must be a positive int, got {values[key]!r}")
    if not 0 < values["eval_fraction"] < 1:
        raise ConfigError(f"eval_fraction must lie in (0, 1), got {values['eval_fraction']!r}")


def _classes(docs: list[Document]) -> dict[Any, int] | None:
    """Label -> class index (ints kept as they are; other labels in sorted order), or None."""
    labels = [d.label for d in docs]
    if all(lab is None for lab in labels):
        return None
    missing = [d.key for d in docs if d.label is None]
    if missing:
        raise DataError(f"some documents have a label and some do not (e.g. {missing[0]}); label all or none")
    if all(isinstance(lab, int) and not isinstance(lab, bool) for lab in labels):
        return {lab: lab for lab in labels}
    return {lab: i for i, lab in enumerate(sorted({str(lab) for lab in labels}))}


def _batches(docs: list[Document], source: str, tokenizer: Any, seq_len: int, batch_size: int,
             max_batches: int | None, image_size: int, classes: dict[Any, int] | None) -> list[Any]:
    if docs and docs[0].image is not None:
        from slimkit.data.images import image_batches

        out = image_batches(docs, batch_size, image_size, classes)
    elif classes is not None:
        out = _labelled_text(docs, tokenizer, seq_len, batch_size, classes)
    elif tokenizer is None:
        out = [d.text for d in docs]
    else:
        out = _token_chunks(docs, source, tokenizer, seq_len, batch_size)
    return out[:max_batches] if max_batches is not None else out


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _token_chunks(docs: list[Document], source: str, tokenizer: Any, seq_len: int, batch_size: int) -> list[Any]:
    ids = _encode(tokenizer, "\n\n".join(d.text for d in docs if d.text))
    n = len(ids) // (seq_len * batch_size)
    if n == 0:
        raise DataError(f"{source}: {len(ids)} tokens, fewer than one batch of {batch_size} x {seq_len}; "
                        "give more text or a smaller seq_len")
    chunks = torch.tensor(ids[: n * batch_size * seq_len], dtype=torch.long).view(n, batch_size, seq_len)
    return [{"input_ids": c, "attention_mask": torch.ones_like(c)} for c in chunks]


def _labelled_text(docs: list[Document], tokenizer: Any, seq_len: int, batch_size: int,
                   classes: dict[Any, int]) -> list[Any]:
    index = lambda lab: classes[lab] if lab in classes else classes[str(lab)]  # noqa: E731
    out = []
    for start in range(0, len(docs), batch_size):
        chunk = docs[start : start + batch_size]
        labels = torch.tensor([index(d.label) for d in chunk], dtype=torch.long)
        if tokenizer is None:
            out.append(([d.text for d in chunk], labels))
            continue
        if getattr(tokenizer, "pad_token", None) is None:
            raise ConfigError("the tokenizer has no pad token; set tokenizer.pad_token to batch labelled text")
        enc = tokenizer([d.text for d in chunk], padding="max_length", truncation=True, max_length=seq_len,
                        return_tensors="pt")
        out.append(({k: v.to(torch.long) for k, v in enc.items()}, labels))
    return out
