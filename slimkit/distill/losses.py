"""Distillation losses as pure tensor functions (shape comments: B batch, T tokens, V/C classes).

* :func:`logit_kd`: Hinton KD, KL(teacher || student) on temperature-softened distributions, scaled
  by T² so gradient magnitudes do not shrink with the temperature; per position for sequence
  logits (token-level KD for causal LMs), padding masked out.
* :func:`mix_hard`: ``alpha * kd + (1 - alpha) * hard``.
* :func:`feature_mse`: MSE between a (projected) student feature and the teacher's.
* :func:`attention_kl`: KL between head-averaged attention maps (MiniLM / TinyBERT style; head
  averaging lets a student with fewer heads learn from a teacher with more).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["logit_kd", "mix_hard", "feature_mse", "attention_kl", "channels_last"]


def _rows(x: torch.Tensor) -> torch.Tensor:
    """[B, ..., V] -> [N, V] (every position is one distribution)."""
    return x.reshape(-1, x.shape[-1])


def logit_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) || softmax(student/T)), averaged over positions.

    ``student``/``teacher``: [B, V] or [B, T, V]; ``mask``: [B, T] (1 = real token) or None.
    """
    s = F.log_softmax(_rows(student).float() / temperature, dim=-1)  # [N, V]
    t = F.log_softmax(_rows(teacher).float() / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)  # [N]
    if mask is not None and student.dim() == 3:
        m = mask.reshape(-1).to(kl.dtype)
        return (kl * m).sum() / m.sum().clamp_min(1.0) * temperature**2
    return kl.mean() * temperature**2


def mix_hard(kd: torch.Tensor, hard: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """``alpha`` · KD + (1 − ``alpha``) · hard-label loss (KD alone when there are no labels)."""
    if hard is None:
        return kd
    return alpha * kd + (1.0 - alpha) * hard


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Feature maps [B, C, H, W] -> [B, H, W, C] so a Linear projection acts on channels;
    sequence features [B, T, H] and vectors [B, H] are returned as they are."""
    return x.movedim(1, -1) if x.dim() == 4 else x


def feature_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error of features [B, ..., H] (already projected to the teacher's width);
    ``mask`` [B, T] drops padded tokens of sequence features [B, T, H]."""
    diff = (student.float() - teacher.float()).pow(2).mean(-1)  # [B, ...]
    if mask is not None and diff.dim() == 2 and diff.shape == mask.shape:
        m = mask.to(diff.dtype)
        return (diff * m).sum() / m.sum().clamp_min(1.0)
    return diff.mean()


def attention_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher || student) of head-averaged attention maps [B, heads, T, T], per query row."""
    s = student.float().mean(1).clamp_min(1e-12)  # [B, T, T]
    t = teacher.float().mean(1).clamp_min(1e-12)
    kl = (t * (t.log() - s.log())).sum(-1)  # [B, T]
    if mask is not None and kl.shape == mask.shape:
        m = mask.to(kl.dtype)
        return (kl * m).sum() / m.sum().clamp_min(1.0)
    return kl.mean()
