"""A search worker run as its own process by the storage tests (so they can SIGKILL it).

``python search_worker.py '{"out_dir": ..., "storage": ..., "n_trials": 12, "sleep": 0.3, "seed": 0}'``
searches :data:`SPACE` on the seeded tiny MLP of :func:`tiny_setup`, each evaluation slowed by
``sleep`` seconds so a test can kill it between and during trials.
"""
from __future__ import annotations

import json
import sys
import time

import torch
from torch import nn

import slimkit as sk

SPACE = {"steps": [
    {"prune": {"method": {"choice": ["magnitude", "wanda", "none"]}, "sparsity": {"low": 0.2, "high": 0.8, "step": 0.1}}},
    {"quantize": {"method": {"choice": ["rtn", "dynamic_int8", "none"]},
                  "bits": {"choice": [4, 8], "when": {"method": "rtn"}},
                  "group_size": {"choice": [16, 32], "when": {"method": "rtn"}}}},
]}


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class SlowFidelity:
    """Cosine fidelity to the input model on held-out inputs, after sleeping ``sleep`` seconds."""

    name = "cosine"
    higher_is_better = True

    def __init__(self, held: list[torch.Tensor], sleep: float) -> None:
        self.inner, self.sleep = sk.CosineFidelity(held), sleep

    def prepare(self, model: nn.Module) -> None:
        self.inner.prepare(model)

    def __call__(self, model: nn.Module) -> float:
        time.sleep(self.sleep)
        return self.inner(model)


def tiny_setup(sleep: float = 0.0) -> tuple[nn.Module, list[torch.Tensor], SlowFidelity]:
    torch.manual_seed(0)
    model = MLP().eval()
    gen = torch.Generator().manual_seed(1)
    calib = [torch.randn(16, 32, generator=gen) for _ in range(2)]
    held = [torch.randn(16, 32, generator=gen) for _ in range(2)]
    return model, calib, SlowFidelity(held, sleep)


def main(options: dict) -> None:
    torch.set_num_threads(1)
    model, calib, fidelity = tiny_setup(options.get("sleep", 0.0))
    sk.search(model, SPACE, calib=calib, eval=fidelity, objectives=("quality", "bytes"),
              constraints=["quality_drop <= 0.05"], n_trials=options["n_trials"], out_dir=options.get("out_dir"),
              storage=options.get("storage"), seed=options.get("seed", 0), workers=options.get("workers", 1),
              save_best=False)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
