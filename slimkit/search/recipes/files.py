"""The search output directory: ``search.journal`` (the study), ``pareto.json``, ``pareto.png``,
``candidates/<trial>/recipe.yaml`` for each front candidate, and ``best/`` (the best model, saved
with :func:`slimkit.save`).

The directory carries slimkit's marker with kind ``search``. Running a search again on it resumes
the study (that is the point of the journal); any other existing path follows slimkit's usual
rule (:func:`slimkit.io.outputs.check_replaceable`): only a directory slimkit wrote is replaced,
and only with ``overwrite=True``. ``pareto.json`` / ``pareto.png`` are replaced atomically
(written beside, then renamed), ``candidates/`` and ``best/`` are atomic slimkit directories.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from slimkit.core.errors import CheckpointError
from slimkit.io.outputs import MARKER, atomic_dir, check_replaceable, owned_entries, remove_output
from slimkit.search.recipes.result import SearchResult
from slimkit.search.recipes.storage import JOURNAL_NAME, LOCK_NAME

__all__ = ["prepare_out_dir", "write_outputs", "SEARCH_KIND", "SEARCH_FILES"]

SEARCH_KIND = "search"
SEARCH_FILES = (JOURNAL_NAME, JOURNAL_NAME + ".lock", LOCK_NAME, "pareto.json", "pareto.png", "candidates", "best")


def is_search_dir(path: Path) -> bool:
    marker = path / MARKER
    if owned_entries(path) is None or not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("kind") == SEARCH_KIND
    except (OSError, ValueError, AttributeError):
        return False


def prepare_out_dir(out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Create (or reuse, to resume) the search directory; refuse a user's directory untouched.

    ``overwrite=True`` on an existing search directory starts over (the old one is removed).
    """
    out = Path(out_dir).resolve()
    if out.exists() or out.is_symlink():
        if is_search_dir(out) and not overwrite:
            return out  # resume
        if not is_search_dir(out):
            check_replaceable(out, overwrite, "search output directory")
        remove_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    record = {"written_by": "slimkit", "kind": SEARCH_KIND, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "files": list(SEARCH_FILES)}
    (tmp / MARKER).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    try:
        os.rename(tmp, out)
    except OSError:
        (tmp / MARKER).unlink()
        tmp.rmdir()
        if not is_search_dir(out):  # another worker made it first: fine if it is a search dir
            raise CheckpointError(f"search output directory {out} appeared while starting; nothing was touched")
    return out


def write_outputs(result: SearchResult, out: Path, best_model: Any = None) -> None:
    """Write every output of ``result`` into the search directory ``out`` (see the module docstring)."""
    _atomic_file(out / "pareto.json", json.dumps(result.to_dict(), indent=1, default=str) + "\n")
    _plot(result, out / "pareto.png")
    with atomic_dir(out / "candidates", overwrite=True, kind="search-candidates") as tmp:
        for cand in result.pareto:
            folder = tmp / str(cand.number)
            folder.mkdir()
            cand.recipe.to_yaml(folder / "recipe.yaml")
            (folder / "metrics.json").write_text(json.dumps(cand.metrics, indent=1) + "\n", encoding="utf-8")
    best_dir = out / "best"
    if best_dir.exists():  # an earlier run's best model: removed only if slimkit wrote it (else refused)
        remove_output(best_dir)
    if best_model is not None:
        from slimkit.io.checkpoint import save

        save(best_model, best_dir)


def _atomic_file(path: Path, text: str) -> None:
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _plot(result: SearchResult, path: Path) -> None:
    """All complete trials in grey, the front in colour (joined), the best starred; the first two
    objectives as axes (one objective: its value per trial)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [c for c in result.trials if c.state == "COMPLETE"]
    objs = result.objectives
    fig, ax = plt.subplots(figsize=(7, 4.8))
    xy = (lambda c: (c.metrics[objs[0].key], c.metrics[objs[1].key])) if len(objs) > 1 else \
        (lambda c: (c.number, c.metrics[objs[0].key]))
    if done:
        ax.scatter(*zip(*[xy(c) for c in done]), s=18, c="0.7", label=f"trials ({len(done)})")
    if result.pareto:
        pts = sorted(xy(c) for c in result.pareto)
        ax.plot(*zip(*pts), "o-", c="tab:red", ms=6, label=f"Pareto front ({len(result.pareto)})")
    star = result.best or result.closest
    if star is not None:
        ax.scatter(*xy(star), marker="*", s=220, c="gold", edgecolors="k", zorder=5,
                   label=("best" if result.best else "closest (misses constraints)") + f": trial {star.number}")
    ax.set_xlabel(_label(objs[0]) if len(objs) > 1 else "trial")
    ax.set_ylabel(_label(objs[1] if len(objs) > 1 else objs[0]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    title = f"slimkit search ({result.strategy})"
    if result.constraints:
        title += ": " + ", ".join(map(str, result.constraints))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _label(o: Any) -> str:
    return f"{o.name} ({o.key}, {'higher' if o.maximize else 'lower'} is better)"
