"""Markdown table of a report: each metric with its ratio to the baseline."""
from __future__ import annotations

from typing import Any

__all__ = ["render_markdown", "format_row", "COLUMNS"]

#: (metric key, column title, formatter)
COLUMNS = (
    ("params", "params", lambda v: f"{v / 1e6:.2f} M"),
    ("nonzero_params", "nonzero", lambda v: f"{v / 1e6:.2f} M"),
    ("bytes", "checkpoint", lambda v: f"{v / 2**20:.1f} MiB"),
    ("macs", "MACs", lambda v: f"{v / 1e9:.3f} G"),
    ("latency_ms", "latency (median)", lambda v: f"{v:.2f} ms"),
    ("tokens_per_s", "prefill tokens/s", lambda v: f"{v:.0f}"),
    ("decode_tokens_per_s", "decode tokens/s", lambda v: f"{v:.1f}"),
    ("quality", "quality", lambda v: f"{v:.4g}"),
)


def _cell(metrics: dict[str, Any], ratios: dict[str, float], key: str, fmt: Any) -> str:
    value = metrics.get(key)
    if value is None:
        return "–"
    text = fmt(value)
    if key in ratios:
        text += f" (×{ratios[key]:.2f})"
    return text


def format_row(row: dict[str, Any]) -> list[str]:
    metrics, rats = row["metrics"], row.get("ratios", {})
    cells = [row["label"]] + [_cell(metrics, rats, k, f) for k, _, f in COLUMNS]
    if row.get("slower"):
        cells[0] += " ⚠ slower"
    return cells


def render_markdown(report: Any) -> str:
    """The report as a Markdown document: a metrics table, then per-step notes and warnings."""
    quality = report.quality or {}
    qname = quality.get("name", "quality")
    direction = "higher is better" if quality.get("higher_is_better", True) else "lower is better"
    titles = ["variant"] + [t if k != "quality" else f"{qname} ({direction})" for k, t, _ in COLUMNS]
    lines = [f"# slimkit report: {report.name}", "", "| " + " | ".join(titles) + " |",
             "|" + "---|" * len(titles)]
    lines += ["| " + " | ".join(format_row(r)) + " |" for r in report.rows()]
    lines += _runtime_lines(report.rows())
    lines += _step_lines(report.steps)
    if report.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"


def _runtime_lines(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        m = r["metrics"]
        if "latency_ms" in m:
            out.append(f"- {r['label']}: runtime {m.get('runtime', '?')}, {m.get('threads', '?')} threads, "
                       f"median {m['latency_ms']:.2f} ms, p90 {m.get('latency_p90_ms', float('nan')):.2f} ms "
                       f"over {m.get('latency_runs', '?')} runs")
    return ["", "Latency measured after warm-up with a fixed thread count on the same inputs:", ""] + out if out else []


def _step_lines(steps: list[dict[str, Any]]) -> list[str]:
    if not steps:
        return []
    out = ["", "## Steps", ""]
    for i, s in enumerate(steps, 1):
        out.append(f"{i}. `{s['name']}: {s['config']}` — {s['seconds']:.1f} s")
        for k, v in s.get("notes", {}).items():
            out.append(f"   - {k}: {v}")
        for sk in s.get("skipped", []):
            out.append(f"   - skipped `{sk['layer']}`: {sk['reason']}")
    return out
