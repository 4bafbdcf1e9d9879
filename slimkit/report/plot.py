"""PNG plots: quality vs checkpoint bytes and quality vs latency across the report's rows."""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["render_plot"]


def render_plot(report: Any, path: str | Path) -> None:
    """Quality vs bytes and vs latency (scatter); without a quality metric, bytes and latency bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report.rows() if r["metrics"].get("quality") is not None]
    if not rows:
        _bars(report, path, plt)
        return
    quality = report.quality or {}
    qname = quality.get("name", "quality")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, xlabel in ((axes[0], "bytes", "checkpoint MiB"), (axes[1], "latency_ms", "median latency (ms)")):
        for r in rows:
            x = r["metrics"].get(key)
            if x is None:
                continue
            x = x / 2**20 if key == "bytes" else x
            ax.scatter([x], [r["metrics"]["quality"]], s=40)
            ax.annotate(r["label"], (x, r["metrics"]["quality"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
        values = [r["metrics"]["quality"] for r in rows]
        if min(values) > 0 and max(values) / min(values) > 5:
            ax.set_yscale("log")  # e.g. perplexities from 38 to 390: keep the good variants readable
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{qname} ({'higher' if quality.get('higher_is_better', True) else 'lower'} is better)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"slimkit: {report.name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(report: Any, path: str | Path, plt: Any) -> None:
    """No quality measured: show what was measured (bytes, latency) per row, or say nothing was."""
    rows = report.rows()
    labels = [r["label"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title, scale in ((axes[0], "bytes", "checkpoint MiB", 2**20), (axes[1], "latency_ms", "median latency (ms)", 1)):
        values = [r["metrics"].get(key) for r in rows]
        if any(v is None for v in values):
            ax.text(0.5, 0.5, f"{title}: not measured", ha="center", va="center")
            ax.set_axis_off()
            continue
        ax.barh(labels, [v / scale for v in values])
        ax.set_xlabel(title)
    fig.suptitle(f"slimkit: {report.name} (no quality metric given)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
