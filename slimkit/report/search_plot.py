"""PNG plot of a ``search: {method: evolution}`` step: the per-layer allocation it found (against
the uniform one) and the best fitness per generation."""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["render_search_plot", "search_plot_names"]


def search_plot_names(report: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(file name, search note)`` for every step of ``report`` that ran an evolutionary search."""
    return [(f"search_{i}.png", s["notes"]["search"]) for i, s in enumerate(report.steps, 1)
            if isinstance(s.get("notes", {}).get("search"), dict) and "generations" in s["notes"]["search"]]


def render_search_plot(note: dict[str, Any], path: str | Path) -> None:
    """Left: each unit's level value (found bars, uniform line); right: fitness per generation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = list(note["allocation"])
    found = [note["allocation"][u] for u in units]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    left.bar(range(len(units)), found, color="tab:blue", label="searched")
    left.step(range(len(units)), note["uniform"], where="mid", color="tab:red", label="uniform")
    left.set_xlabel(f"unit ({len(units)} searched)")
    left.set_ylabel(note.get("value_name", "level"))
    if len(units) <= 40:
        left.set_xticks(range(len(units)), [u.split(".", 2)[-1] if len(u) > 18 else u for u in units],
                        rotation=90, fontsize=6)
    left.legend(fontsize=8)
    gens = note["generations"]
    right.plot([g["generation"] for g in gens], [g["best_fitness"] for g in gens], marker=".")
    right.axhline(note["uniform_fitness"], color="tab:red", linestyle="--", label="uniform")
    right.set_xlabel("generation")
    right.set_ylabel(f"fitness ({note.get('fitness', '')}, lower is better)")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.suptitle(f"evolutionary search: {note['trials']} trials, {note['search_seconds']:.0f} s, "
                 f"stopped by {note['stopped_by']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
