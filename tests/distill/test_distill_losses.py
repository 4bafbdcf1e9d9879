"""The distillation loss functions against their definitions."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slimkit.distill.losses import attention_kl, channels_last, feature_mse, logit_kd, mix_hard


def test_logit_kd_matches_torch_kl_div_times_t_squared() -> None:
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 10, generator=gen), torch.randn(6, 10, generator=gen)
    ref = F.kl_div(F.log_softmax(s / 3, -1), F.log_softmax(t / 3, -1), log_target=True, reduction="batchmean") * 9
    assert float(logit_kd(s, t, 3.0)) == pytest.approx(float(ref), rel=1e-5)
    assert float(logit_kd(t, t, 3.0)) == pytest.approx(0.0, abs=1e-6)


def test_token_level_kd_ignores_padding() -> None:
    gen = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 5, 7, generator=gen), torch.randn(2, 5, 7, generator=gen)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    s_pad = s.clone()
    s_pad[0, 3:] += 100.0  # garbage at padded positions must not matter
    assert float(logit_kd(s_pad, t, 1.0, mask)) == pytest.approx(float(logit_kd(s, t, 1.0, mask)), rel=1e-6)
    rows = torch.cat([s[0, :3], s[1]]), torch.cat([t[0, :3], t[1]])
    assert float(logit_kd(s, t, 1.0, mask)) == pytest.approx(float(logit_kd(*rows, 1.0)), rel=1e-5)


def test_mix_feature_attention() -> None:
    assert float(mix_hard(torch.tensor(2.0), torch.tensor(4.0), 0.25)) == pytest.approx(3.5)
    assert float(mix_hard(torch.tensor(2.0), None, 0.25)) == 2.0
    x = torch.zeros(2, 3, 4)
    assert float(feature_mse(x + 2, x)) == 4.0
    assert channels_last(torch.zeros(2, 8, 5, 5)).shape == (2, 5, 5, 8)
    att = torch.softmax(torch.randn(2, 4, 6, 6), -1)
    assert float(attention_kl(att, att)) == pytest.approx(0.0, abs=1e-6)
    uniform = torch.full((2, 2, 6, 6), 1 / 6)
    assert float(attention_kl(uniform, att)) > 0.01
