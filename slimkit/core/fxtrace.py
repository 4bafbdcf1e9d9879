"""torch.fx tracing that says why it failed, so a step falling back to a simpler rule can report it.

Graph-based rules (Conv→BatchNorm pairs, Linear→Linear chains, FX graph-mode int8) need a traced
graph. A model with data-dependent control flow (``if x.sum() > 0``) does not trace; the steps then
fall back to a structural rule (adjacent children of ``nn.Sequential``, per-layer int8), and that
fallback must appear in the step's report with the reason (``ctx.note("fallback", ...)``).
"""
from __future__ import annotations

import torch
import torch.fx
from torch import nn

__all__ = ["trace_graph"]


def trace_graph(module: nn.Module) -> tuple[torch.fx.Graph | None, str]:
    """``(graph, "")`` when torch.fx traces ``module``, else ``(None, reason)``.

    Any exception counts as "not traceable" (torch.fx raises TraceError, TypeError, NotImplementedError,
    ... depending on the construct); the reason is its type and first message line.
    """
    try:
        return torch.fx.symbolic_trace(module).graph, ""
    except Exception as exc:  # noqa: BLE001 - every tracing failure is reported by the caller
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__
