"""Reading a user's data into documents: text files, JSON Lines, CSV, or a folder of images.

A *document* is the unit the calibration / held-out split is made over, so that no document is
seen on both sides: a file of a folder, a blank-line-separated block of a single text file, a row
of a .jsonl / .csv file, or an image file. Every problem is a :class:`DataError` that names the
file (and the line, for .jsonl / .csv).
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

from slimkit.core.errors import DataError

__all__ = ["Document", "read_documents", "TEXT_SUFFIXES", "IMAGE_SUFFIXES"]

TEXT_SUFFIXES = (".txt", ".md")
TABLE_SUFFIXES = (".jsonl", ".csv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class Document:
    """One unit of the split: ``key`` identifies it stably (file path, ``file:line``)."""

    key: str
    text: str | None = None
    image: Path | None = None
    label: Any = None


def read_documents(path: str | Path) -> list[Document]:
    """Every document under ``path`` (a file or a folder), in a deterministic order."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data path {p} does not exist")
    if p.is_dir():
        return _read_folder(p)
    suffix = p.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return _text_blocks(p)
    if suffix == ".jsonl":
        return _jsonl(p)
    if suffix == ".csv":
        return _csv(p)
    raise DataError(f"{p}: unsupported data file type {suffix!r}; use one of "
                    f"{list(TEXT_SUFFIXES + TABLE_SUFFIXES)} or a folder of text files or images")


def _read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise DataError(f"{path} is empty")
    return text


def _text_blocks(path: Path) -> list[Document]:
    """A single text file: its blank-line-separated blocks are the documents."""
    blocks = [b.strip() for b in _read_text(path).replace("\r\n", "\n").split("\n\n")]
    return [Document(key=f"{path.name}:{i}", text=b) for i, b in enumerate(blocks) if b]


def _label(row: dict[str, Any]) -> Any:
    return row.get("label")


def _jsonl(path: Path) -> list[Document]:
    docs = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        docs.append(_row_document(path, number, row))
    return docs


def _csv(path: Path) -> list[Document]:
    reader = csv.DictReader(_read_text(path).splitlines())
    if reader.fieldnames is None or "text" not in reader.fieldnames:
        raise DataError(f"{path}:1: no 'text' column (columns: {reader.fieldnames})")
    return [_row_document(path, number, row) for number, row in enumerate(reader, start=2)]


def _row_document(path: Path, number: int, row: Any) -> Document:
    if not isinstance(row, dict) or "text" not in row:
        raise DataError(f"{path}:{number}: no 'text' field")
    text = row["text"]
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{path}:{number}: 'text' is empty or not a string")
    label = _label(row)
    return Document(key=f"{path.name}:{number}", text=text, label=None if label in (None, "") else label)


def _read_folder(folder: Path) -> list[Document]:
    files = sorted(f for f in folder.rglob("*") if f.is_file() and not f.name.startswith("."))
    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    texts = [f for f in files if f.suffix.lower() in TEXT_SUFFIXES]
    if images and texts:
        raise DataError(f"{folder} mixes images and text files; give one kind of data")
    if images:
        return [Document(key=str(f.relative_to(folder)), image=f, label=_class_of(folder, f)) for f in images]
    if texts:
        return [Document(key=str(f.relative_to(folder)), text=_read_text(f)) for f in texts]
    raise DataError(f"{folder} holds no {list(TEXT_SUFFIXES)} text files and no images")


def _class_of(root: Path, image: Path) -> str | None:
    """An image's class subfolder (``root/cat/1.jpg`` -> ``cat``); None for images at the top level."""
    parts = image.relative_to(root).parts
    return parts[0] if len(parts) > 1 else None
