"""Checkpoint / resume: a run killed mid-way (SIGKILL) resumes and ends with the uninterrupted result."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from slimkit.core.errors import CheckpointError
from slimkit.train import TrainOptions, train


SETUP = textwrap.dedent('''
    import torch, torch.nn.functional as F
    from torch import nn
    torch.set_num_threads(1)

    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3))
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(48, 8, generator=gen)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
        return model, [(x[i:i + 8], y[i:i + 8]) for i in range(0, 48, 8)]

    def loss_fn(model, batch):
        return F.cross_entropy(model(batch[0]), batch[1])
''')

STEPS, EVERY = 40, 5


def _opts(ckpt: Path | None) -> TrainOptions:
    return TrainOptions(steps=STEPS, lr=0.01, optimizer="adamw", scheduler="cosine", warmup_steps=3,
                        checkpoint_dir=str(ckpt) if ckpt else None, checkpoint_every=EVERY if ckpt else None)


def _helpers() -> dict:
    scope: dict = {}
    exec(SETUP, scope)  # noqa: S102 - the same code the killed subprocess runs
    return scope


def _saved_steps(ckpt: Path) -> list[int]:
    return sorted(int(json.loads(p.read_text())["step"]) for p in ckpt.glob("step-*/train_state.json"))


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    ckpt = tmp_path / "state"
    script = tmp_path / "run.py"
    script.write_text(SETUP + textwrap.dedent(f'''
        import time
        from slimkit.train import TrainOptions, train
        class Slow:
            def on_step_end(self, step, model, loss):
                time.sleep(0.15)
        model, data = build()
        train(model, data, loss_fn, TrainOptions(steps={STEPS}, lr=0.01, optimizer="adamw", scheduler="cosine",
              warmup_steps=3, checkpoint_dir={str(ckpt)!r}, checkpoint_every={EVERY}), callbacks=[Slow()])
    '''))
    proc = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 60
    try:
        while time.time() < deadline and not [s for s in _saved_steps(ckpt) if s >= 10]:
            assert proc.poll() is None, "the training subprocess ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = _saved_steps(ckpt)[-1]
    assert 10 <= killed_at < STEPS

    h = _helpers()
    model, data = h["build"]()
    res = train(model, data, h["loss_fn"], _opts(ckpt))
    assert res["resumed_from"] == killed_at and res["steps"] == STEPS

    ref, data = h["build"]()
    ref_res = train(ref, data, h["loss_fn"], _opts(None))
    for (k, v), w in zip(model.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(v, w), k
    assert res["final_loss"] == ref_res["final_loss"]
    assert [x["loss"] for x in res["history"]] == [x["loss"] for x in ref_res["history"]]
    assert _saved_steps(ckpt) == [STEPS]  # only the newest state is kept


def test_state_of_another_run_is_refused(tmp_path: Path) -> None:
    h = _helpers()
    model, data = h["build"]()
    train(model, data, h["loss_fn"], TrainOptions(steps=5, checkpoint_dir=str(tmp_path), checkpoint_every=5))
    model, data = h["build"]()
    with pytest.raises(CheckpointError, match="different run"):
        train(model, data, h["loss_fn"], TrainOptions(steps=7, checkpoint_dir=str(tmp_path), checkpoint_every=5))


# ----------------------------------------------------------------------------- never a user's files
def _short_run(ckpt: Path, steps: int = 10) -> dict:
    h = _helpers()
    model, data = h["build"]()
    return train(model, data, h["loss_fn"], TrainOptions(steps=steps, checkpoint_dir=str(ckpt), checkpoint_every=5))


def test_rotation_removes_only_its_own_step_folders(tmp_path: Path) -> None:
    """checkpoint_dir may be a user's directory: their files, even a folder named step-*, survive."""
    ckpt = tmp_path / "work"
    (ckpt / "step-results").mkdir(parents=True)
    (ckpt / "step-results" / "table.csv").write_text("a,b\n1,2\n")
    (ckpt / "notes.txt").write_text("mine")
    _short_run(ckpt)
    assert sorted(p.name for p in ckpt.iterdir()) == ["notes.txt", "step-00000010", "step-results"]
    assert (ckpt / "step-results" / "table.csv").read_text() == "a,b\n1,2\n"
    assert (ckpt / "notes.txt").read_text() == "mine"
    assert _saved_steps(ckpt) == [10]  # step-00000005 (slimkit's own) was rotated away


def test_a_users_folder_with_a_step_name_is_refused_untouched(tmp_path: Path) -> None:
    ckpt = tmp_path / "work"
    (ckpt / "step-00000005").mkdir(parents=True)
    (ckpt / "step-00000005" / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="step-00000005"):
        _short_run(ckpt)
    assert [p.name for p in (ckpt / "step-00000005").iterdir()] == ["keep.txt"]
    assert (ckpt / "step-00000005" / "keep.txt").read_text() == "mine"


def _corrupt_json(path: Path) -> None:
    path.write_text('{"step": 5, "fingerp')


def _drop_optimizer_key(path: Path) -> None:
    meta = json.loads(path.read_text())
    del meta["optimizer"]
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(("name", "damage", "message"), [
    ("train_state.json", _corrupt_json, "not valid JSON"),
    ("train_state.json", _drop_optimizer_key, "key 'optimizer' is missing"),
    ("train_state.json", lambda p: p.write_text("[5]"), "JSON list"),
    ("train_state.safetensors", lambda p: p.write_bytes(p.read_bytes()[:300]), "train_state.safetensors"),
    ("train_state.safetensors", lambda p: p.write_bytes(b"\x00" * 64), "train_state.safetensors"),
], ids=["json-truncated", "json-missing-key", "json-not-object", "tensors-truncated", "tensors-garbage"])
def test_corrupted_training_state_is_a_checkpoint_error_naming_the_file(tmp_path: Path, name, damage, message) -> None:
    _short_run(tmp_path, steps=5)
    path = tmp_path / "step-00000005" / name
    damage(path)
    with pytest.raises(CheckpointError, match=message) as info:
        _short_run(tmp_path, steps=5)
    assert str(path.parent) in str(info.value)


def test_training_state_missing_a_tensor_is_a_checkpoint_error(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    _short_run(tmp_path, steps=5)
    path = tmp_path / "step-00000005" / "train_state.safetensors"
    tensors = load_file(str(path))
    del tensors["rng.torch"]
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=r"step-00000005 is corrupt or incomplete \(entry 'rng.torch' is missing\)"):
        _short_run(tmp_path, steps=5)
