"""QAT: straight-through fake quantization trained with the shared loop, then stored integers.

The headline check: on an MLP trained on sklearn digits, 4-bit QAT beats 4-bit post-training
rounding (the same quantizer, no training) on held-out cross-entropy and accuracy.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import slimkit as sk
from slimkit.quantize.dynamic_int8 import Int8DynamicLinear
from slimkit.quantize.qat import FakeQuantLayer, IntWeightLayer, fake_quant_ste, pack_nibbles, unpack_nibbles
from slimkit.train.finetune.core import supervised_loss
from slimkit.train.loop import train
from slimkit.train.options import TrainOptions


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, list, list]:
    """(an MLP trained on the digits train split, train batches, held-out test batches)."""
    tr = sk.zoo.load_data("digits", "train", batch_size=64)
    te = sk.zoo.load_data("digits", "test", batch_size=512)
    model = net()
    train(model, tr, supervised_loss, TrainOptions(epochs=20, lr=3e-3))
    return model.eval(), tr, te


def held_out(model: nn.Module, batches: list) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on held-out batches."""
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    return float(F.cross_entropy(logits, labels)), float((logits.argmax(1) == labels).float().mean())


def ptq(model: nn.Module, bits: int, per_channel: bool) -> nn.Module:
    """Round-to-nearest on the same grid QAT trains for, without training."""
    out = net()
    out.load_state_dict(model.state_dict())
    for i in (1, 3):
        out[i] = IntWeightLayer.from_module(out[i], bits, per_channel)
    return out.eval()


def qat(model: nn.Module, train_batches: list, **options) -> sk.Result:
    step = {"method": "qat", "epochs": 3, "lr": 1e-3, **options}
    return sk.compress(model, {"steps": [{"quantize": step}]}, train=train_batches, progress=False, measure=False)


def test_ste_forward_on_grid_backward_identity() -> None:
    w = torch.tensor([[0.9, -0.31, 0.05], [2.0, 1.2, -0.4]], requires_grad=True)
    out = fake_quant_ste(w, bits=4, per_channel=True)  # scales 0.9/7, 2/7
    assert torch.allclose(out[0] / (0.9 / 7), torch.round(out[0] / (0.9 / 7)), atol=1e-5)
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_nibble_pack_round_trip() -> None:
    q = torch.randint(-7, 8, (3, 11), generator=torch.Generator().manual_seed(0)).to(torch.int8)
    packed = pack_nibbles(q)
    assert packed.shape == (3, 6) and packed.dtype == torch.uint8
    assert torch.equal(unpack_nibbles(packed, 11), q)


@pytest.mark.parametrize("per_channel", [True, False])
def test_qat_beats_ptq_at_4_bits(digits, per_channel) -> None:
    model, tr, te = digits
    fp_loss, fp_acc = held_out(model, te)
    ptq_loss, ptq_acc = held_out(ptq(model, 4, per_channel), te)
    res = qat(model, tr, bits=4, per_channel=per_channel)
    qat_loss, qat_acc = held_out(res.model, te)
    assert isinstance(res.model[1], IntWeightLayer) and res.model[1].bits == 4
    # measured (held-out CE): per-channel 0.078 vs 0.084 PTQ; per-tensor 0.082 vs 0.089
    assert qat_loss < ptq_loss - 0.003
    assert qat_acc >= ptq_acc - 0.01  # per-channel 4-bit PTQ is already near fp32 here: a tie within 3 of 270
    assert qat_acc >= fp_acc - 0.02


def test_qat_at_2_bits_recovers_accuracy(digits) -> None:
    model, tr, te = digits
    _, ptq_acc = held_out(ptq(model, 2, True), te)
    _, qat_acc = held_out(qat(model, tr, bits=2).model, te)
    assert qat_acc > ptq_acc + 0.1  # measured ~0.96 vs ~0.67


def test_qat_distill_from_original_needs_no_labels(digits) -> None:
    model, tr, te = digits
    unlabeled = [x for x, _ in tr]
    res = qat(model, unlabeled, bits=3, distill=True)
    assert held_out(res.model, te)[1] > 0.9
    assert res.report.steps[0]["notes"]["train_steps"] == 3 * len(tr)


def test_8_bit_linear_converts_to_int8_kernel_and_reloads(digits, tmp_path) -> None:
    model, tr, te = digits
    res = qat(model, tr[:4], bits=8, epochs=1)
    assert isinstance(res.model[1], Int8DynamicLinear)
    assert not any(isinstance(m, FakeQuantLayer) for m in res.model.modules())
    sk.save(res.model, tmp_path / "q8")
    x = te[0][0]
    with torch.no_grad():
        assert torch.equal(sk.load(tmp_path / "q8", model=net())(x), res.model(x))


def test_4_bit_save_load_identical_and_small(digits, tmp_path) -> None:
    model, tr, te = digits
    res = qat(model, tr[:4], bits=4, epochs=1)
    sk.save(res.model, tmp_path / "q4")
    sk.save(model, tmp_path / "fp32")
    loaded = sk.load(tmp_path / "q4", model=net())
    x = te[0][0]
    with torch.no_grad():
        assert torch.equal(loaded(x), res.model(x))
    ratio = (tmp_path / "q4" / "model.safetensors").stat().st_size / (tmp_path / "fp32" / "model.safetensors").stat().st_size
    assert ratio < 0.2  # 4 of 32 bits, plus scales and biases


def test_conv_qat() -> None:
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    data = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))) for _ in range(2)]
    res = qat(cnn, data, bits=4, layer_types=["Conv2d", "Linear"], epochs=1)
    assert isinstance(res.model[0], IntWeightLayer) and res.model[0].op == "conv2d"
    assert len(torch.unique(res.model[0].integers())) <= 15


def test_needs_train_data_and_validates() -> None:
    with pytest.raises(sk.DataError, match="train"):
        sk.compress(net(), {"steps": [{"quantize": {"method": "qat"}}]}, progress=False, measure=False)
    for bad, field in (({"bits": 1}, "bits"), ({"lr": -1.0}, "lr"), ({"layer_types": ["GRU"]}, "layer_types")):
        with pytest.raises(sk.ConfigError, match=field):
            sk.Recipe.from_dict({"steps": [{"quantize": {"method": "qat", **bad}}]})
