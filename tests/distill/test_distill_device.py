"""The distillation teacher runs where the student trains: :func:`teacher_on` moves it to the
training device for the run and puts the caller's own tensors back afterwards."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import slimkit as sk
from slimkit.distill.engine import teacher_on
from slimkit.parallel import training_device


def _teacher() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).eval()


def _devices(model: nn.Module) -> set[str]:
    return {t.device.type for t in [*model.parameters(), *model.buffers()]}


def test_teacher_on_moves_every_tensor_and_restores_the_originals() -> None:
    teacher = _teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ptrs = [p.data_ptr() for p in teacher.parameters()]
    with teacher_on(teacher, torch.device("meta")) as moved:  # a device other than the CPU it lives on
        assert moved is teacher
        assert _devices(teacher) == {"meta"}  # parameters and BatchNorm buffers alike
    assert _devices(teacher) == {"cpu"}
    assert [p.data_ptr() for p in teacher.parameters()] == ptrs  # the caller's own storage, not a copy home
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_teacher_on_its_own_device_is_left_alone() -> None:
    teacher = _teacher()
    ptrs = [t.data_ptr() for t in [*teacher.parameters(), *teacher.buffers()]]
    with teacher_on(teacher, "cpu"):
        assert [t.data_ptr() for t in [*teacher.parameters(), *teacher.buffers()]] == ptrs


def test_training_device_is_the_students_device_in_one_process() -> None:
    assert training_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert training_device(nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert training_device(nn.ReLU()) == torch.device("cpu")  # no parameters: the CPU


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: a CPU teacher and a GPU student")
def test_cpu_teacher_distils_into_a_gpu_student() -> None:
    teacher = _teacher()  # stays on the CPU, as a user would pass it
    torch.manual_seed(3)
    student = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).cuda()
    data = [(x.cuda(), y.cuda()) for x, y in _data()]
    recipe = {"steps": [{"distill": {"method": "logit", "steps": 20, "lr": 1e-2, "alpha": 1.0}}]}
    res = sk.compress(student, recipe, train=data, teacher=teacher, measure=False, progress=False)
    assert _devices(teacher) == {"cpu"}  # moved for the run, back afterwards
    x = data[0][0]
    with torch.no_grad():
        gap_before = F.mse_loss(student(x), teacher.cuda()(x)).item()
        gap_after = F.mse_loss(res.model(x), teacher(x)).item()
    assert gap_after < gap_before
