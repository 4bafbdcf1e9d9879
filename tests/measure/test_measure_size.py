"""Parameter counts, non-zero counts and checkpoint bytes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

import slimkit as sk
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


def _files_bytes(directory: Path) -> int:
    """Real on-disk bytes of every file a checkpoint directory holds."""
    return sum(os.path.getsize(p) for p in directory.rglob("*") if p.is_file())


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))


def test_measured_bytes_equal_the_saved_checkpoint_files(tmp_path: Path) -> None:
    """``sk.measure``'s bytes are the bytes of the files ``sk.save`` writes, headers and manifest included."""
    model = _mlp()
    out = sk.save(model, tmp_path / "fp32")
    on_disk = _files_bytes(Path(out))
    assert (Path(out) / "model.safetensors").is_file()
    assert sk.measure(model, latency=False)["bytes"] == on_disk == checkpoint_bytes(model)
    params = count_params(model)
    assert 4 * params < on_disk < 4 * params + 16 * 1024  # fp32 tensors plus small headers


def test_int8_checkpoint_shrinks_by_the_ratio_the_parameter_counts_give(tmp_path: Path) -> None:
    """dynamic_int8 stores each Linear weight as 1 byte per element plus one fp32 scale per output
    row, and keeps biases fp32: int8 bytes / fp32 bytes = (W + 4 (B + rows)) / (4 (W + B))."""
    model = _mlp()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    weights = sum(m.weight.numel() for m in linears)
    biases = sum(m.bias.numel() for m in linears)
    rows = sum(m.out_features for m in linears)
    expected = (weights + 4 * (biases + rows)) / (4 * (weights + biases))

    quantized = sk.compress(model, {"steps": [{"quantize": {"method": "dynamic_int8"}}]},
                            calib=[torch.randn(4, 256)], progress=False).model
    fp32_bytes = _files_bytes(Path(sk.save(model, tmp_path / "fp32")))
    int8_bytes = _files_bytes(Path(sk.save(quantized, tmp_path / "int8")))
    assert sk.measure(quantized, latency=False)["bytes"] == int8_bytes
    assert int8_bytes / fp32_bytes == pytest.approx(expected, abs=0.01)  # ~0.26, headers aside
