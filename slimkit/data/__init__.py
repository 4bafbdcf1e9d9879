"""slimkit.data: a user's own data (text, JSON Lines, CSV, image folders), split by document.

>>> calib, held_out = sk.data.load("notes.txt", tokenizer=tok, seq_len=256)   # doctest: +SKIP
"""
from __future__ import annotations

from slimkit.data.api import load, split_documents
from slimkit.data.documents import Document, read_documents

__all__ = ["load", "split_documents", "read_documents", "Document"]
