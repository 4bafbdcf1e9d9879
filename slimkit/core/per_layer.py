"""Per-layer values in a step: one number for every layer, or a mapping ``{rule: number}``.

Steps with a per-layer knob (``prune``'s ``sparsity``, weight-only ``quantize``'s ``bits``) accept
either one value for every selected layer or a mapping from rules to values:

```yaml
- prune: {method: wanda, sparsity: {"re:.*\\.mlp\\..*": 0.6, "model.layers.0": 0.3, "re:.*": 0.5}}
- quantize: {method: gptq, bits: {"re:.*\\.down_proj": 8, "re:.*": 3}, group_size: 64}
```

A rule is written in the selection grammar of ``targets`` (:mod:`slimkit.core.select`), limited to
what a layer's *name* decides:

* a module name (``"model.layers.3"``, ``"model.layers.3.mlp.up_proj"``): that module and every
  layer below it;
* ``"re:<regex>"``: layers whose qualified name, or the name of a module above them, fully
  matches the regex.

For each selected layer the **first** rule in mapping order that covers it gives its value (so a
catch-all ``"re:.*"`` goes last). A selected layer that no rule covers, and a rule that covers no
selected layer, raise :class:`ConfigError` naming it: a typo never turns into a silent default.
The step's own selection (``targets`` / ``ignore``, the output head kept by default) decides which
layers exist; the map only assigns values to them.

Search results are written as such maps (one exact layer or block name per rule), so a found
allocation is an ordinary step that replays without searching.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from slimkit.core.errors import ConfigError

__all__ = ["PerLayer", "is_per_layer", "check_per_layer", "resolve_per_layer", "resolve_and_note",
           "shadowed_rules", "rule_covers"]

V = TypeVar("V", int, float)

#: a step field that is one value for every layer, or ``{rule: value}`` (first match wins)
PerLayer = float | int | dict[str, float | int]


def is_per_layer(value: Any) -> bool:
    """Whether ``value`` is a per-layer mapping (as opposed to one value for every layer)."""
    return isinstance(value, Mapping)


def check_per_layer(field: str, value: Any, check_one: Callable[[str, Any], Any]) -> None:
    """Validate a scalar or a ``{rule: value}`` mapping; ``check_one(name, v)`` checks one value
    (e.g. ``lambda n, v: check_range(n, v, 0.0, 1.0, hi_open=True)``) and raises ConfigError.

    A mapping must be non-empty, its keys non-empty strings (``re:`` rules must compile), and
    every value must pass ``check_one``; errors name ``field[rule]``.
    """
    if not is_per_layer(value):
        check_one(field, value)
        return
    if not value:
        raise ConfigError(f"{field} = {{}}: a per-layer mapping needs at least one rule (e.g. {{'re:.*': ...}})")
    for rule, v in value.items():
        if not isinstance(rule, str) or not rule or rule == "re:":
            raise ConfigError(f"{field}: rule {rule!r} is not valid; a rule is a module name or 're:<regex>'")
        if rule.startswith("re:"):
            _compile(field, rule)
        check_one(f"{field}[{rule!r}]", v)


def _compile(field: str, rule: str) -> re.Pattern[str]:
    try:
        return re.compile(rule[3:])
    except re.error as exc:
        raise ConfigError(f"{field}: invalid regular expression {rule!r}: {exc}") from None


def _ancestors(name: str) -> list[str]:
    """``"a.b.c"`` -> ``["a", "a.b", "a.b.c"]``: the layer and every module above it."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def rule_covers(rule: str, name: str, field: str = "rule") -> bool:
    """Whether ``rule`` covers the layer ``name`` (the layer itself or a module above it matches)."""
    if rule.startswith("re:"):
        pattern = _compile(field, rule)
        return any(pattern.fullmatch(a) for a in _ancestors(name))
    return name == rule or name.startswith(rule + ".")


def _first_rule(rules: Sequence[str], name: str, field: str) -> str | None:
    return next((r for r in rules if rule_covers(r, name, field)), None)


def _names_hint(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:6])
    return shown + (f", ... ({len(names)} layers)" if len(names) > 6 else "")


def resolve_per_layer(field: str, value: V | Mapping[str, V], names: Sequence[str]) -> dict[str, V]:
    """The value of every layer in ``names``: ``value`` itself for a scalar; for a mapping, the value
    of the first rule (in mapping order) covering the layer.

    Raises :class:`ConfigError` for a selected layer no rule covers (add a rule or a catch-all
    ``re:.*``) and for a rule that covers no selected layer. Values are not re-validated here
    (the step config did that with :func:`check_per_layer`).
    """
    if not is_per_layer(value):
        return {n: value for n in names}
    rules = list(value)
    out: dict[str, V] = {}
    for name in names:
        rule = _first_rule(rules, name, field)
        if rule is None:
            raise ConfigError(f"{field}: selected layer {name!r} is matched by no rule of {rules}; "
                              f"add a rule for it or a catch-all 're:.*' at the end")
        out[name] = value[rule]
    for rule in rules:
        if not any(rule_covers(rule, n, field) for n in names):
            raise ConfigError(f"{field}: rule {rule!r} matches no selected layer "
                              f"(selected: {_names_hint(list(names))}); "
                              "rules are module names or 're:' regexes over the layers the step selects")
    return out


def shadowed_rules(value: Any, names: Sequence[str], field: str = "rule") -> list[str]:
    """Rules of a mapping that cover selected layers but give none its value, because an earlier
    rule covers all of them (legal, reported by the steps so that an ordering mistake is visible)."""
    if not is_per_layer(value):
        return []
    rules = list(value)
    used = {_first_rule(rules, n, field) for n in names}
    return [r for r in rules if r not in used and any(rule_covers(r, n, field) for n in names)]


def resolve_and_note(field: str, value: Any, names: Sequence[str], ctx: Any) -> dict[str, Any]:
    """:func:`resolve_per_layer`, plus a ``shadowed_rules`` note on ``ctx`` (a
    :class:`slimkit.core.context.RunContext`) for rules an earlier rule fully hides."""
    out = resolve_per_layer(field, value, names)
    hidden = shadowed_rules(value, names, field)
    if hidden:
        ctx.note("shadowed_rules", {"field": field, "rules": hidden,
                                    "why": "every layer these rules match takes its value from an earlier rule"})
    return out
