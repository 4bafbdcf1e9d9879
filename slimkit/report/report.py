"""The report of a compression run (or of several variants compared side by side).

Every row carries the measured metrics and their ratio to the baseline; a step that made the model
slower than its input (median latency beyond the tolerance) is flagged — the speed guard.
"""
from __future__ import annotations

import dataclasses
import platform
from typing import Any

import torch

__all__ = ["Report", "RATIO_KEYS", "ratios", "environment"]

#: metrics that get a ratio to the baseline
RATIO_KEYS = ("params", "nonzero_params", "bytes", "macs", "latency_ms", "tokens_per_s", "decode_tokens_per_s", "quality")


def ratios(metrics: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    """``metrics[k] / base[k]`` for every ratio key both have (and a nonzero base)."""
    out = {}
    for key in RATIO_KEYS:
        a, b = metrics.get(key), base.get(key)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
            out[key] = a / b
    return out


def environment() -> dict[str, Any]:
    """Where the numbers were measured."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }


@dataclasses.dataclass
class Report:
    """Before/after metrics and one entry per step; or, for comparisons, named variant rows."""

    name: str = "model"
    quality: dict[str, Any] | None = None
    before: dict[str, Any] = dataclasses.field(default_factory=dict)
    after: dict[str, Any] = dataclasses.field(default_factory=dict)
    steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    variants: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)

    # ------------------------------------------------------------------ building
    def add_step(self, *, name: str, method: str, config: dict[str, Any], seconds: float,
                 metrics: dict[str, Any], previous: dict[str, Any], notes: dict[str, Any],
                 skipped: list[dict[str, str]], tolerance: float) -> dict[str, Any]:
        """Record a finished step and apply the speed guard against its input ``previous``."""
        entry = {
            "name": name, "method": method, "config": config, "seconds": round(seconds, 3),
            "metrics": metrics, "ratios": ratios(metrics, self.before), "notes": notes,
            "skipped": skipped, "slower": False,
        }
        now, then = metrics.get("latency_ms"), previous.get("latency_ms")
        if isinstance(now, (int, float)) and isinstance(then, (int, float)) and now > then * (1 + tolerance):
            entry["slower"] = True
            msg = (f"speed guard: step {len(self.steps) + 1} ({name}:{method}) made the model slower: "
                   f"{now:.2f} ms vs {then:.2f} ms before it ({now / then:.2f}x)")
            self.warnings.append(msg)
            _warn(msg)
        self.steps.append(entry)
        return entry

    def add_variant(self, label: str, metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """Add a named row to a side-by-side comparison; the first variant is the baseline."""
        base = self.variants[0]["metrics"] if self.variants else metrics
        row = {"label": label, "metrics": metrics, "ratios": ratios(metrics, base), **extra}
        lat, base_lat = metrics.get("latency_ms"), base.get("latency_ms")
        row["slower"] = bool(self.variants and lat and base_lat and lat > base_lat * 1.10)
        if row["slower"]:
            msg = f"speed guard: variant {label!r} is slower than the baseline ({lat:.2f} ms vs {base_lat:.2f} ms)"
            self.warnings.append(msg)
            _warn(msg)
        self.variants.append(row)
        return row

    def finish(self) -> None:
        """Called by the runner once all steps ran."""
        self.after = dict(self.after)

    # ------------------------------------------------------------------ views
    def rows(self) -> list[dict[str, Any]]:
        """Table rows: the variants, or ``before`` then the model after each step."""
        if self.variants:
            return self.variants
        rows = [{"label": "before", "metrics": self.before, "ratios": ratios(self.before, self.before), "slower": False}]
        for i, s in enumerate(self.steps, 1):
            rows.append({"label": f"{i}. {s['name']}:{s['method']}", "metrics": s["metrics"],
                         "ratios": s["ratios"], "slower": s["slower"]})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "quality": self.quality,
            "before": self.before,
            "after": self.after,
            "ratios": ratios(self.after, self.before) if self.after else {},
            "steps": self.steps,
            "variants": self.variants,
            "warnings": self.warnings,
            "environment": environment(),
        }

    def to_markdown(self) -> str:
        from slimkit.report.markdown import render_markdown

        return render_markdown(self)

    def save(self, out_dir: str, *, overwrite: bool = False) -> dict[str, str]:
        """Write ``report.json``, ``report.md`` and ``report.png`` into ``out_dir`` (atomically).

        An existing ``out_dir`` is refused unless ``overwrite=True`` and slimkit wrote it; a
        directory holding anything else is never touched (:class:`CheckpointError` names it).
        """
        from slimkit.report.files import write_report_files

        return write_report_files(self, out_dir, overwrite=overwrite)


def _warn(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold yellow]WARNING[/bold yellow] {message}")
