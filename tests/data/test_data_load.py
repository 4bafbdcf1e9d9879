"""sk.data.load: a user's text / JSON Lines / CSV / image folder, split by document."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import slimkit as sk
from slimkit.data import read_documents, split_documents


class CharTokenizer:
    """A character-level tokenizer (one id per byte): enough to check chunking exactly."""

    pad_token = "\0"

    def __call__(self, text, add_special_tokens=False, **kw):  # noqa: ANN001, ANN003, ANN204
        if isinstance(text, str):
            return {"input_ids": list(text.encode())}
        n = kw["max_length"]
        rows = [list(t.encode())[:n] + [0] * max(0, n - len(t.encode())) for t in text]
        ids = torch.tensor(rows)
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def _write_folder(tmp_path, n=10):
    folder = tmp_path / "notes"
    folder.mkdir()
    for i in range(n):
        (folder / f"doc{i:02d}.txt").write_text(f"document {i} " + "word " * 60, encoding="utf-8")
    return folder


def test_folder_split_is_by_file_deterministic_and_disjoint(tmp_path) -> None:
    folder = _write_folder(tmp_path)
    docs = read_documents(folder)
    calib, held = split_documents(docs, 0.2, "x")
    assert len(held) == 2 and len(calib) == 8
    assert not {d.key for d in calib} & {d.key for d in held}
    again = split_documents(list(reversed(read_documents(folder))), 0.2, "x")
    assert {d.key for d in again[1]} == {d.key for d in held}  # independent of order
    texts_calib, texts_held = sk.data.load(folder)  # no tokenizer: the documents' strings
    assert len(texts_calib) == 8 and len(texts_held) == 2
    assert not set(texts_calib) & set(texts_held)


def test_text_file_is_chunked_into_token_batches(tmp_path) -> None:
    path = tmp_path / "book.md"
    path.write_text("\n\n".join(f"paragraph {i}: " + "x" * 100 for i in range(20)), encoding="utf-8")
    calib, held = sk.data.load(path, tokenizer=CharTokenizer(), seq_len=32, batch_size=2)
    assert all(b["input_ids"].shape == (2, 32) for b in calib + held)
    assert len(held) >= 1 and len(calib) > len(held)
    held_text = bytes(torch.cat([b["input_ids"].flatten() for b in held]).tolist()).decode()
    calib_text = bytes(torch.cat([b["input_ids"].flatten() for b in calib]).tolist()).decode()
    held_ids = {int(s.split(":")[0]) for s in held_text.split("paragraph ")[1:] if s[:1].isdigit() and ":" in s[:4]}
    calib_ids = {int(s.split(":")[0]) for s in calib_text.split("paragraph ")[1:] if s[:1].isdigit() and ":" in s[:4]}
    assert held_ids and not held_ids & calib_ids


def test_jsonl_and_csv_with_labels(tmp_path) -> None:
    rows = [{"text": f"line {i} " * 5, "label": ["neg", "pos"][i % 2]} for i in range(10)]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    calib, held = sk.data.load(jsonl, tokenizer=CharTokenizer(), seq_len=16, batch_size=4)
    inputs, labels = calib[0]
    assert inputs["input_ids"].shape == (4, 16) and set(labels.tolist()) <= {0, 1}
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\n" + "\n".join(f"row {i},{i % 3}" for i in range(9)), encoding="utf-8")
    calib, held = sk.data.load(csv, batch_size=2)
    assert isinstance(calib[0][0][0], str) and calib[0][1].dtype == torch.long
    assert sum(len(b[1]) for b in calib + held) == 9


def test_image_folder_with_classes(tmp_path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    calib, held = sk.data.load(tmp_path / "imgs", image_size=32, batch_size=2)
    pixels, labels = calib[0]
    assert pixels.shape[1:] == (3, 32, 32) and set(labels.tolist()) <= {0, 1}
    assert sum(len(b[1]) for b in calib + held) == 6


def test_eval_path_gives_the_held_out_part(tmp_path) -> None:
    folder = _write_folder(tmp_path, 3)
    other = tmp_path / "eval.txt"
    other.write_text("held out text", encoding="utf-8")
    calib, held = sk.data.load(folder, eval_path=other)
    assert len(calib) == 3 and held == ["held out text"]


@pytest.mark.parametrize("name,content,match", [
    ("empty.txt", "   \n", "empty.txt is empty"),
    ("bad.jsonl", '{"text": "a"}\n{"text": "b"}\nnot json\n', "bad.jsonl:3: not valid JSON"),
    ("nocol.jsonl", '{"text": "a"}\n{"body": "b"}\n', "nocol.jsonl:2: no 'text' field"),
    ("nocol.csv", "body,label\nx,1\n", "nocol.csv:1: no 'text' column"),
    ("one.txt", "only one block", "1 document"),
    ("data.parquet", "x", "unsupported data file type"),
])
def test_bad_inputs_are_data_errors_naming_file_and_line(tmp_path, name, content, match) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(sk.DataError, match=match):
        sk.data.load(path)


def test_undecodable_image_names_the_file(tmp_path) -> None:
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        (tmp_path / "imgs" / f"{i}.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(sk.DataError, match=r"0\.jpg: cannot decode image"):
        sk.data.load(tmp_path / "imgs")


def test_too_little_text_for_one_batch(tmp_path) -> None:
    folder = _write_folder(tmp_path, 4)
    with pytest.raises(sk.DataError, match="fewer than one batch"):
        sk.data.load(folder, tokenizer=CharTokenizer(), seq_len=4096)
