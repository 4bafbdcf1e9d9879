"""A stream killed outright (SIGKILL after a block) resumes from its last finished block."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import slimkit as sk
from slimkit.io.checkpoint import read_manifest
from slimkit.stream.output import partial_dir
from tests.stream.conftest import calib_batches
from tests.stream.test_stream_equal import stored_tensors

ROOT = Path(__file__).resolve().parents[2]
RECIPE = [{"prune": {"method": "wanda", "sparsity": 0.5}}, {"quantize": {"method": "gptq", "bits": 4, "group_size": 32}}]

KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    import slimkit as sk
    from tests.stream.conftest import calib_batches

    def kill(i, stats):
        if i == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    sk.compress_stream({src!r}, {recipe!r}, {out!r}, calib=calib_batches(), progress=False, on_block=kill,
                       max_activation_bytes=0)
""")


def test_resume_after_kill(tiny_llama_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = KILLER.format(root=str(ROOT), src=str(tiny_llama_dir), recipe=RECIPE, out=str(out))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not out.exists()
    assert (partial_dir(out) / ".stream" / "progress.json").is_file()
    with pytest.raises(sk.CheckpointError, match="cannot be resumed"):  # another recipe is refused
        sk.compress_stream(tiny_llama_dir, RECIPE[1:], out, calib=calib_batches(), progress=False, resume=True)
    assert partial_dir(out).is_dir()  # a refused resume leaves the partial run as it was
    resumed = sk.compress_stream(tiny_llama_dir, RECIPE, out, calib=calib_batches(), progress=False, resume=True)
    assert resumed.report["stream"]["resumed_at_block"] == 2
    assert [b["block"] for b in resumed.report["stream"]["blocks"]] == [0, 1, 2]
    assert not partial_dir(out).exists()
    fresh = sk.compress_stream(tiny_llama_dir, RECIPE, tmp_path / "fresh", calib=calib_batches(), progress=False)
    a, b = stored_tensors(fresh.path), stored_tensors(out)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert read_manifest(out)["edits"] == read_manifest(fresh.path)["edits"]


def test_a_run_killed_before_its_first_block_is_recognised(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """The progress record exists from the start: a kill during calibration (before any block
    finished) leaves a partial directory that a fresh run replaces and a resume continues from 0."""
    out = tmp_path / "out"
    script = KILLER.format(root=str(ROOT), src=str(tiny_llama_dir), recipe=RECIPE, out=str(out)).replace(
        "if i == 1:", "if i == 0:")
    proc = subprocess.run([sys.executable, "-c", script.replace("on_block=kill", "on_block=None").replace(
        "sk.compress_stream(", "import slimkit.stream.api as api\n"
        "api._block = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\nsk.compress_stream(")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not list(partial_dir(out).glob("model-*.safetensors"))  # killed before writing any block
    assert (partial_dir(out) / ".stream" / "progress.json").is_file()
    resumed = sk.compress_stream(tiny_llama_dir, RECIPE, out, calib=calib_batches(), progress=False, resume=True)
    assert resumed.report["stream"]["resumed_at_block"] is None and len(resumed.report["stream"]["blocks"]) == 3
    partial_dir(tmp_path / "again").mkdir()
    (partial_dir(tmp_path / "again") / "mine.txt").write_text("a user's file")  # not slimkit's: refused, kept
    with pytest.raises(sk.CheckpointError, match="not a partial stream"):
        sk.compress_stream(tiny_llama_dir, RECIPE, tmp_path / "again", calib=calib_batches(), progress=False)
    assert (partial_dir(tmp_path / "again") / "mine.txt").read_text() == "a user's file"
