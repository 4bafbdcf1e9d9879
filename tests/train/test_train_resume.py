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
