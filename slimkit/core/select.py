"""Module selection grammar shared by every step.

A rule is one of:

* a module's qualified name (``"lm_head"``, ``"model.layers.0.mlp"``): that module and every
  module below it;
* ``"re:<regex>"``: modules whose qualified name fully matches the regex
  (``"re:.*\\.mlp\\..*"``), and the modules below them;
* a class name (``"Conv2d"``, ``"LlamaAttention"``): modules of that class and the modules below.

A rule that matches no module of the model raises :class:`ConfigError`, and so does a selection
that leaves no layer of the wanted types, so a typo never turns into a silent no-op.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

from slimkit.core.errors import ConfigError

__all__ = ["select_modules", "matching_names", "tied_weight_names"]


def _rule_hits(model: nn.Module, rule: str, field: str) -> set[str]:
    """Names of the modules a rule matches directly (before extending to descendants)."""
    if rule.startswith("re:"):
        try:
            pattern = re.compile(rule[3:])
        except re.error as exc:
            raise ConfigError(f"{field}: invalid regular expression {rule!r}: {exc}") from None
        return {n for n, _ in model.named_modules() if n and pattern.fullmatch(n)}
    hits = {n for n, m in model.named_modules() if n == rule or type(m).__name__ == rule}
    return hits


def matching_names(model: nn.Module, rules: Sequence[str], field: str) -> set[str]:
    """Every module name covered by ``rules`` (descendants included); raises on a dead rule."""
    covered: set[str] = set()
    all_names = [n for n, _ in model.named_modules()]
    for rule in rules:
        hits = _rule_hits(model, rule, field)
        if not hits:
            raise ConfigError(f"{field}: rule {rule!r} matches no module of this model")
        for name in all_names:
            if any(name == h or name.startswith(h + ".") for h in hits):
                covered.add(name)
    return covered


def select_modules(
    model: nn.Module,
    types: tuple[type[nn.Module], ...],
    *,
    targets: Sequence[str] | None = None,
    ignore: Sequence[str] = (),
    field: str = "",
) -> list[tuple[str, nn.Module]]:
    """Modules of ``types`` that ``targets`` cover (all, when None) minus those ``ignore`` covers.

    Returned in ``named_modules`` order. ``field`` prefixes error messages (e.g. ``"prune"``).
    A selection that selects nothing (``targets: []``, or rules that cover no module of ``types``)
    raises :class:`ConfigError`: a step that would silently do nothing is a mistake in the recipe.
    """
    wanted = matching_names(model, targets, f"{field}.targets") if targets is not None else None
    dropped = matching_names(model, ignore, f"{field}.ignore") if ignore else set()
    chosen = []
    for name, module in model.named_modules():
        if not isinstance(module, types) or name in dropped:
            continue
        if wanted is not None and name not in wanted:
            continue
        chosen.append((name, module))
    if not chosen:
        kinds = "/".join(t.__name__ for t in types)
        raise ConfigError(
            f"{field}: the selection targets={list(targets) if targets is not None else 'all'}, "
            f"ignore={list(ignore)} selects no {kinds} layer of this model; name at least one such layer")
    return chosen


def tied_weight_names(model: nn.Module) -> set[str]:
    """Names of modules whose ``weight`` parameter is shared with another module (tied lm_head).

    Steps that replace a layer by a compressed copy must treat these explicitly: replacing one
    side silently unties it (and stores the matrix twice).
    """
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if isinstance(w, nn.Parameter):
            owners.setdefault(id(w), []).append(name)
    return {n for names in owners.values() if len(names) > 1 for n in names}
