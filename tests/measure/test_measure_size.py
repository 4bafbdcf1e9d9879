"""Parameter counts, non-zero counts and checkpoint bytes."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from slimkit.measure import checkpoint_bytes, count_nonzero, count_params
from slimkit.measure.size import weight_tensors


class TiedLM(nn.Module):
    """Embedding 10x4 (40) tied to the head, LayerNorm (8), Linear 4->4 with bias (20): 68."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.mix = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(self.norm(self.embed(ids))))


class Int8Linear(nn.Module):
    """A stand-in compressed layer: int8 weight and float scale buffers, declared via slimkit_weights."""

    def __init__(self, out_features: int, in_features: int) -> None:
        super().__init__()
        weight = torch.arange(out_features * in_features, dtype=torch.int8).reshape(out_features, in_features)
        self.register_buffer("qweight", weight)  # exactly one zero (the first element)
        self.register_buffer("scale", torch.ones(out_features))
        self.register_buffer("workspace", torch.ones(100))  # not a weight: must not be counted
        self.leftover = nn.Linear(50, 50)  # a submodule that must not be visited

    def slimkit_weights(self) -> dict[str, torch.Tensor]:
        return {"weight": self.qweight, "scale": self.scale}


def test_tied_weights_count_once() -> None:
    model = TiedLM()
    assert count_params(model) == 40 + 8 + 20
    assert count_nonzero(model) == 68 - 4  # LayerNorm's bias starts at zero
    assert len(weight_tensors(model)) == 5


def test_plain_model_matches_torch_parameter_count() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 2))
    assert count_params(model) == sum(p.numel() for p in model.parameters()) == 224 + 16 + 18


def test_zeroed_weights_are_not_nonzero() -> None:
    model = TiedLM()
    with torch.no_grad():
        model.embed.weight[:3] = 0.0  # 12 zeros, shared with the head: counted once
        model.mix.bias.zero_()  # 4 zeros
    assert count_params(model) == 68
    assert count_nonzero(model) == 68 - 4 - 12 - 4  # LayerNorm bias, embedding rows, mix bias


def test_slimkit_weights_replace_the_layer_parameters() -> None:
    model = nn.Sequential(nn.Linear(3, 4), Int8Linear(2, 4))
    assert count_params(model) == (12 + 4) + (8 + 2)
    assert count_nonzero(model) == (12 + 4) + (7 + 2)


def test_shared_module_counts_once() -> None:
    layer = nn.Linear(4, 4)
    model = nn.Sequential(layer, nn.ReLU(), layer)
    assert count_params(model) == 20


def test_checkpoint_bytes_sums_every_written_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_save(model: nn.Module, out_dir: Path, *, overwrite: bool = False, report: object = None) -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True)
        (out_dir / "model.safetensors").write_bytes(b"x" * 1000)
        (out_dir / "slimkit.json").write_bytes(b"{}")
        return out_dir

    fake_module = types.ModuleType("slimkit.io.checkpoint")
    fake_module.save = fake_save  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "slimkit.io.checkpoint", fake_module)
    assert checkpoint_bytes(nn.Linear(2, 2)) == 1002


def test_checkpoint_bytes_with_real_save() -> None:
    """Needs slimkit.io.checkpoint.save; the fp32 weights alone are 4 bytes per parameter."""
    model = nn.Linear(64, 32)
    n_bytes = checkpoint_bytes(model)
    assert 4 * count_params(model) < n_bytes < 4 * count_params(model) + 64 * 1024
