"""The output head and the embeddings: which modules they are, and whether a recipe names them.

The field's convention (Wanda, SparseGPT, llm-compressor, NNCF) treats the output head and the
embeddings apart from the body of a model: pruning and low-rank steps leave them alone unless the
user names them, and int4 weight-only quantization stores them at int8. This module finds them:

* the output head: ``get_output_embeddings()`` of a Hugging Face model, any module named
  ``lm_head``, and any Linear whose weight is the weight of an ``nn.Embedding`` (a tied head);
* the embeddings: every ``nn.Embedding``.

A plain user model (no ``get_output_embeddings``, no tying, no ``lm_head``) has no protected
module, so its last Linear (``head``, ``classifier``) is compressed like any other layer.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError

__all__ = ["output_head_names", "embedding_names", "protected_names", "names_explicitly",
           "drop_protected", "PROTECTED_REASON"]

#: the reason a step reports for a head / embedding layer it left alone by default
PROTECTED_REASON = "output head / embedding: kept by default (name it in targets to compress it)"


def output_head_names(model: nn.Module) -> set[str]:
    """Qualified names of the model's output head module(s); empty for a plain user model."""
    names: set[str] = set()
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for name, module in model.named_modules():
        if not name:
            continue
        if module is head or name.rsplit(".", 1)[-1] == "lm_head":
            names.add(name)
        elif not isinstance(module, nn.Embedding) and id(getattr(module, "weight", None)) in embedding_weights:
            names.add(name)  # a Linear (or HF Conv1D) sharing its weight with an embedding: a tied head
    return names


def embedding_names(model: nn.Module) -> set[str]:
    """Qualified names of every ``nn.Embedding`` of the model."""
    return {n for n, m in model.named_modules() if n and isinstance(m, nn.Embedding)}


def protected_names(model: nn.Module) -> set[str]:
    """Output head(s) and embeddings: the modules compression keeps by default."""
    return output_head_names(model) | embedding_names(model)


def names_explicitly(targets: Sequence[str] | None, name: str) -> bool:
    """Whether a ``targets`` list names module ``name`` explicitly.

    A rule names a module explicitly when it is the module's qualified name (``"lm_head"``) or a
    ``re:`` regex that fully matches that name (``"re:.*lm_head"``). A class-name rule
    (``"Linear"``) or the name of an enclosing module (``"model"``) covers the module without
    naming it, so it does not count. ``None`` (no targets) names nothing.
    """
    for rule in targets or ():
        if rule == name:
            return True
        if rule.startswith("re:"):
            try:
                if re.fullmatch(rule[3:], name):
                    return True
            except re.error:
                continue  # the selection grammar reports the bad regex with its field
    return False


def drop_protected(model: nn.Module, layers: list[tuple[str, nn.Module]], targets: Sequence[str] | None,
                   ctx: RunContext) -> list[tuple[str, nn.Module]]:
    """``layers`` minus the output head / embeddings that ``targets`` does not name; each drop reported.

    A selection left empty by this rule raises :class:`ConfigError` (the step would do nothing).
    """
    protected = protected_names(model)
    kept, dropped = [], []
    for name, module in layers:
        if name in protected and not names_explicitly(targets, name):
            ctx.skip(name, PROTECTED_REASON)
            dropped.append(name)
            continue
        kept.append((name, module))
    if layers and not kept:
        raise ConfigError(f"the selection covers only the output head / embeddings {dropped}, which are kept by "
                          f"default; name them in targets (targets: {dropped}) to compress them")
    return kept
