"""Built-in spaces for the goal mode (``slimkit search --goal ... --minimize bytes|latency``), per task,
so a user needs no YAML. Each is an ordinary space (see :mod:`slimkit.search.recipes.knobs`).

* causal LM: Wanda / SparseGPT at 20-60 % sparsity (or none), then RTN / GPTQ at 4 or 8 bits with
  groups of 32 / 64 / 128, or ``mixed`` 4/8-bit RTN (the most sensitive layers at 8 bits) at 18-24 %
  of the float32 bytes (or none);
* encoder (embedding models): structured neuron / head pruning (or none), then dynamic int8 (or none);
* vision: structured channel pruning to 50-90 % of the MACs (or none), then static or dynamic int8 (or none).
"""
from __future__ import annotations

from typing import Any

from slimkit.core.errors import ConfigError
from slimkit.search.recipes.knobs import RecipeSpace

__all__ = ["builtin_space", "BUILTIN_SPACES"]

BUILTIN_SPACES: dict[str, dict[str, Any]] = {
    "causal-lm": {"steps": [
        {"prune": {"method": {"choice": ["wanda", "sparsegpt", "none"]},
                   "sparsity": {"choice": [0.2, 0.3, 0.4, 0.5, 0.6]}}},
        {"quantize": {"method": {"choice": ["rtn", "gptq", "mixed", "none"]},
                      "bits": {"choice": [4, 8], "when": {"method": ["rtn", "gptq"]}},
                      "target_ratio": {"choice": [0.18, 0.2, 0.22, 0.24], "when": {"method": "mixed"}},
                      "group_size": {"choice": [32, 64, 128]}}},
    ]},
    "embedding": {"steps": [
        {"prune": {"method": {"choice": ["structured", "none"]}, "granularity": {"choice": ["neuron", "head"]},
                   "sparsity": {"choice": [0.1, 0.2, 0.3, 0.4, 0.5]}}},
        {"quantize": {"method": {"choice": ["dynamic_int8", "none"]}}},
    ]},
    "image-classification": {"steps": [
        {"prune": {"method": {"choice": ["structured", "none"]}, "granularity": "channel",
                   "target_macs": {"choice": [0.5, 0.6, 0.7, 0.8, 0.9]}, "round_to": 8}},
        {"quantize": {"method": {"choice": ["static_int8", "dynamic_int8", "none"]}}},
    ]},
}


def builtin_space(task: str) -> RecipeSpace:
    """The goal mode's space for ``task`` (``causal-lm``, ``embedding``, ``image-classification``)."""
    if task not in BUILTIN_SPACES:
        raise ConfigError(f"no built-in search space for task {task!r}; built-in spaces exist for "
                          f"{sorted(BUILTIN_SPACES)} (give --space for others)")
    return RecipeSpace.from_dict(BUILTIN_SPACES[task])
