"""Faults: bad shards, a full disk, Ctrl-C, unstreamable steps: a clear error and no output left."""
from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

import slimkit as sk
from slimkit.stream import output as stream_output
from tests.stream.conftest import calib_batches

GPTQ = [{"quantize": {"method": "gptq", "bits": 4, "group_size": 32}}]


def copy_dir(src: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(src, tmp / "src"))


def assert_nothing_left(out: Path) -> None:
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")] == []


def shards(d: Path) -> list[Path]:
    return sorted(d.glob("model-*.safetensors"))


def test_missing_shard(tiny_llama_dir: Path, tmp_path: Path) -> None:
    src = copy_dir(tiny_llama_dir, tmp_path)
    gone = shards(src)[1]
    gone.unlink()
    with pytest.raises(sk.CheckpointError, match=f"missing: {gone.name}"):
        sk.compress_stream(src, GPTQ, tmp_path / "out", calib=calib_batches(), progress=False)
    assert_nothing_left(tmp_path / "out")


def test_index_names_missing_file(tiny_llama_dir: Path, tmp_path: Path) -> None:
    src = copy_dir(tiny_llama_dir, tmp_path)
    index = src / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    key = next(iter(data["weight_map"]))
    data["weight_map"][key] = "model-99999-of-99999.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(sk.CheckpointError, match="model-99999-of-99999"):
        sk.compress_stream(src, GPTQ, tmp_path / "out", calib=calib_batches(), progress=False)
    assert_nothing_left(tmp_path / "out")


def test_truncated_shard(tiny_llama_dir: Path, tmp_path: Path) -> None:
    src = copy_dir(tiny_llama_dir, tmp_path)
    last = shards(src)[-1]
    data = last.read_bytes()
    last.write_bytes(data[: len(data) - 100])
    with pytest.raises(sk.CheckpointError, match="truncated"):
        sk.compress_stream(src, GPTQ, tmp_path / "out", calib=calib_batches(), progress=False)
    assert_nothing_left(tmp_path / "out")


def test_full_disk_leaves_no_output(tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = stream_output.write_tensors, []

    def fill_up(tensors, path):  # the second shard finds the disk full
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, path)

    monkeypatch.setattr(stream_output, "write_tensors", fill_up)
    with pytest.raises(sk.CheckpointError, match="disk is full"):
        sk.compress_stream(tiny_llama_dir, GPTQ, tmp_path / "out", calib=calib_batches(), progress=False)
    assert len(calls) == 2
    assert_nothing_left(tmp_path / "out")


def test_ctrl_c_leaves_no_output(tiny_llama_dir: Path, tmp_path: Path) -> None:
    seen = []

    def interrupt(i: int, _stats: dict) -> None:
        seen.append(i)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sk.compress_stream(tiny_llama_dir, GPTQ, tmp_path / "out", calib=calib_batches(), progress=False,
                           on_block=interrupt)
    assert seen == [0]
    assert_nothing_left(tmp_path / "out")


@pytest.mark.parametrize("step, match", [
    ({"quantize": {"method": "static_int8"}}, "quantize:static_int8 cannot be streamed"),
    ({"drop_layers": {"n": 1}}, "drop_layers:.* cannot be streamed"),
    ({"prune": {"method": "magnitude", "scope": "global"}}, "scope = 'global'"),
])
def test_unstreamable_steps_refused_before_work(tiny_llama_dir: Path, tmp_path: Path, step: dict, match: str) -> None:
    with pytest.raises(sk.ConfigError, match=match):
        sk.compress_stream(tiny_llama_dir, [step], tmp_path / "out", calib=calib_batches(), progress=False)
    assert_nothing_left(tmp_path / "out")


def test_quantize_then_prune_refused(tiny_llama_dir: Path, tmp_path: Path) -> None:
    recipe = GPTQ + [{"prune": {"method": "wanda", "sparsity": 0.5}}]
    with pytest.raises(sk.ConfigError, match="comes after steps\\[0\\] quantize:gptq"):
        sk.compress_stream(tiny_llama_dir, recipe, tmp_path / "out", calib=calib_batches(), progress=False)


def test_calib_required_and_user_dir_refused(tiny_llama_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(sk.DataError, match="needs calibration data"):
        sk.compress_stream(tiny_llama_dir, GPTQ, tmp_path / "out", progress=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(sk.CheckpointError, match="slimkit did not write it"):
        sk.compress_stream(tiny_llama_dir, GPTQ, mine, calib=calib_batches(), progress=False, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"
