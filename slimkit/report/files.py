"""Writing ``report.json``, ``report.md`` and ``report.png`` into a directory, atomically."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slimkit.io.outputs import atomic_dir, check_replaceable
from slimkit.report.plot import render_plot
from slimkit.report.search_plot import render_search_plot, search_plot_names

__all__ = ["write_report_files", "write_report_into"]


def write_report_files(report: Any, out_dir: str | Path, *, overwrite: bool = False) -> dict[str, str]:
    """Write the three files; the directory appears complete or not at all.

    An existing ``out_dir`` is replaced only with ``overwrite=True`` and only if slimkit wrote it
    (:func:`slimkit.io.outputs.check_replaceable`); a user's directory is refused, untouched.
    """
    out = Path(out_dir).resolve()
    check_replaceable(out, overwrite, what="report directory")
    with atomic_dir(out, overwrite=overwrite, kind="report") as tmp:
        write_report_into(report, tmp)
    return {k: str(out / f"report.{k}") for k in ("json", "md", "png")}


def write_report_into(report: Any, directory: Path) -> None:
    """Write the three report files into an existing (usually temporary) directory, plus
    ``search_<step>.png`` for each evolutionary search step."""
    (directory / "report.json").write_text(json.dumps(report.to_dict(), indent=1, default=str), encoding="utf-8")
    (directory / "report.md").write_text(report.to_markdown(), encoding="utf-8")
    render_plot(report, directory / "report.png")
    for name, note in search_plot_names(report):  # a search step: its allocation and fitness curve
        render_search_plot(note, directory / name)
