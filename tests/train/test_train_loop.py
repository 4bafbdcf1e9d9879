"""The shared training loop: convergence, accumulation, schedules, early stopping, bad input."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimkit.core.errors import ConfigError, DataError
from slimkit.train import TrainOptions, train
from slimkit.train.optim import lr_factor


def _data(n: int = 64, bs: int = 8, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, n, bs)]


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _ce(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_loss_drops_with_each_torch_optimizer(optimizer: str) -> None:
    model = _model()
    lr = 0.1 if optimizer == "sgd" else 0.01
    res = train(model, _data(), _ce, TrainOptions(steps=120, lr=lr, optimizer=optimizer))
    assert res["steps"] == 120 and len(res["history"]) == 120
    assert res["final_loss"] < 0.5 * res["history"][0]["loss"]
    assert not model.training


def test_grad_accum_equals_one_big_batch() -> None:
    """SGD on 2 accumulated batches of 4 == SGD on the concatenated batch of 8 (mean losses)."""
    small, big = _data(bs=4), _data(bs=8)
    a, b = _model(), _model()
    train(a, small, _ce, TrainOptions(steps=6, lr=0.1, optimizer="sgd", momentum=0.0, grad_accum=2, shuffle=False))
    train(b, big, _ce, TrainOptions(steps=6, lr=0.1, optimizer="sgd", momentum=0.0, shuffle=False))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_epochs_count_passes_over_data() -> None:
    res = train(_model(), _data(), _ce, TrainOptions(epochs=2.5, grad_accum=2, lr=1e-3))
    assert res["steps"] == math.ceil(2.5 * 8 / 2) == 10


def test_cosine_schedule_with_warmup_follows_the_formula() -> None:
    opts = TrainOptions(steps=20, lr=0.1, scheduler="cosine", warmup_steps=4)
    res = train(_model(), _data(), _ce, opts)
    lrs = [h["lr"] for h in res["history"]]
    # the lr after step s is the one the next step uses: factor(s)
    assert lrs[0] == pytest.approx(0.1 * 2 / 5)
    assert lrs[3] == pytest.approx(0.1)  # warm-up done
    assert lrs[11] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 8 / 16)))
    assert lr_factor(19, opts, 20) == pytest.approx(0.5 * (1 + math.cos(math.pi * 15 / 16)))
    step_opts = TrainOptions(steps=9, scheduler="step", step_size=3, step_gamma=0.5)
    assert [lr_factor(s, step_opts, 9) for s in (0, 3, 6)] == [1.0, 0.5, 0.25]


def _one_sgd_step_update(clip_norm: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(applied update, raw gradient) of one plain SGD step (lr 1, no momentum) on a loss whose
    gradient is huge and known in closed form: loss = 1000 * sum(W x) -> dL/dW = 1000 * sum_rows(x)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3, bias=False)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    before = model.weight.detach().clone()
    grad = 1000.0 * x.sum(0).expand(3, 4)
    train(model, [x], lambda m, b: 1000.0 * m(b).sum(),
          TrainOptions(steps=1, lr=1.0, optimizer="sgd", momentum=0.0, clip_norm=clip_norm, shuffle=False))
    return model.weight.detach() - before, grad


def test_clip_norm_scales_the_applied_gradient_to_the_cap() -> None:
    """With clip_norm=c the step applies -c * g / ||g||: its norm is c (<= c + eps); without
    clipping the same step has the raw norm ||g|| >> c. Fails if clipping is off or misapplied."""
    cap = 0.5
    clipped, grad = _one_sgd_step_update(cap)
    raw, _ = _one_sgd_step_update(None)
    assert float(grad.norm()) > 100 * cap  # the loss really has a huge gradient
    assert torch.allclose(raw, -grad, rtol=1e-5)  # unclipped: the full gradient
    assert float(clipped.norm()) <= cap + 1e-5
    assert float(clipped.norm()) == pytest.approx(cap, rel=1e-4)  # clipped to the cap, not beyond it
    assert torch.allclose(clipped, -grad * (cap / grad.norm()), rtol=1e-4, atol=1e-7)  # same direction


def test_clip_norm_leaves_small_gradients_alone() -> None:
    clipped, grad = _one_sgd_step_update(1e9)
    assert torch.allclose(clipped, -grad, rtol=1e-5)


def test_early_stopping_restores_best_weights() -> None:
    metrics = iter([1.0, 3.0, 2.0, 1.5, 9.0])  # best at the 2nd evaluation, then 2 worse ones
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    class Snap:
        def on_step_end(self, step: int, model: nn.Module, loss: float) -> None:
            snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}

    model = _model()
    res = train(model, _data(), _ce, TrainOptions(steps=100, lr=0.01, eval_every=5, patience=2),
                validate=lambda m: next(metrics), callbacks=[Snap()])
    assert res["stopped_early"] and res["steps"] == 20
    assert res["best_metric"] == 3.0 and [e["step"] for e in res["evals"]] == [5, 10, 15, 20]
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[10][k])


def test_lower_is_better_metric() -> None:
    metrics = iter([5.0, 4.0, 3.0])

    def ppl(model: nn.Module) -> float:
        return next(metrics)

    ppl.higher_is_better = False  # type: ignore[attr-defined]
    res = train(_model(), _data(), _ce, TrainOptions(steps=15, eval_every=5, patience=1), validate=ppl)
    assert res["best_metric"] == 3.0 and not res["stopped_early"]


def test_callbacks_see_every_step() -> None:
    seen: list[str] = []

    class Cb:
        def on_train_start(self, model: nn.Module) -> None:
            seen.append("start")

        def on_step_end(self, step: int, model: nn.Module, loss: float) -> None:
            assert model.training
            seen.append(str(step))

        def on_train_end(self, model: nn.Module) -> None:
            seen.append("end")

    train(_model(), _data(), _ce, TrainOptions(steps=3), callbacks=[Cb()])
    assert seen == ["start", "1", "2", "3", "end"]


def test_extra_params_are_trained() -> None:
    model = _model()
    scale = nn.Parameter(torch.ones(()))
    train(model, _data(), lambda m, b: F.cross_entropy(m(b[0]) * scale, b[1]),
          TrainOptions(steps=5, lr=0.05), params=list(model.parameters()) + [scale])
    assert float(scale.detach()) != 1.0


@pytest.mark.parametrize("kwargs, field", [
    ({"lr": 0.0}, "lr"), ({"optimizer": "lamb"}, "optimizer"), ({"grad_accum": 0}, "grad_accum"),
    ({"scheduler": "poly"}, "scheduler"), ({"steps": 0}, "steps"), ({"epochs": -1.0}, "epochs"),
    ({"patience": 2}, "patience"), ({"clip_norm": 0.0}, "clip_norm"), ({"checkpoint_every": 5}, "checkpoint_every"),
    ({"strategy": "zero3"}, "strategy"),
])
def test_bad_options_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        TrainOptions(**kwargs)


def test_bad_data_and_loss() -> None:
    with pytest.raises(DataError, match="empty"):
        train(_model(), [], _ce, TrainOptions(steps=1))
    with pytest.raises(DataError, match="scalar"):
        train(_model(), _data(), lambda m, b: F.cross_entropy(m(b[0]), b[1], reduction="none"), TrainOptions(steps=1))
    with pytest.raises(DataError, match="eval_every"):
        train(_model(), _data(), _ce, TrainOptions(steps=1, eval_every=1))
