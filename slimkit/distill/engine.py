"""The distillation objective as a module, trained by the shared loop.

:class:`DistillObjective` holds the student and the learned projections (so both are optimised,
checkpointed and synchronised by DDP together) and returns the loss from ``forward(batch)``; the
teacher is held outside the module tree (never trained, never broadcast). Batches are the usual
training batches; a dict batch may also carry ``"teacher_inputs"`` when teacher and student tokenize
differently (e.g. an MPNet teacher and a MiniLM student).
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import ConfigError
from slimkit.core.inputs import call_model, output_tensor
from slimkit.distill.losses import attention_kl, channels_last, feature_mse, logit_kd, mix_hard
from slimkit.train.finetune.core import cross_entropy, split_labels

__all__ = ["LossSpec", "DistillObjective", "split_distill_batch", "attention_implementation", "teacher_on"]


@dataclasses.dataclass
class LossSpec:
    """Which terms the objective adds and with what weights."""

    temperature: float = 2.0
    alpha: float = 0.5
    logit_weight: float = 1.0
    feature_map: dict[str, str] = dataclasses.field(default_factory=dict)  # student module -> teacher module
    feature_weight: float = 0.0
    projection: str = "auto"  # "auto": Linear only where widths differ; "always"; "none"
    attention_map: dict[int, int] = dataclasses.field(default_factory=dict)  # student layer -> teacher layer
    attention_weight: float = 0.0


def split_distill_batch(batch: Any) -> tuple[Any, Any, torch.Tensor | None]:
    """``(student_inputs, teacher_inputs, labels)`` of one batch."""
    if isinstance(batch, Mapping) and "teacher_inputs" in batch:
        rest = {k: v for k, v in batch.items() if k != "teacher_inputs"}
        inputs, labels = split_labels(rest)
        return inputs, batch["teacher_inputs"], labels
    inputs, labels = split_labels(batch)
    return inputs, inputs, labels


def _mask(inputs: Any) -> torch.Tensor | None:
    return inputs.get("attention_mask") if isinstance(inputs, Mapping) else None


class _Capture:
    """Forward hooks storing the main output tensor of named modules."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        self.out: dict[str, torch.Tensor] = {}
        self.handles = [model.get_submodule(n).register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.out[name] = output_tensor(output)
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@contextlib.contextmanager
def attention_implementation(models: list[nn.Module], name: str = "eager") -> Iterator[None]:
    """Temporarily switch HF models to an attention implementation that returns attention maps."""
    saved = []
    for m in models:
        cfg = getattr(m, "config", None)
        saved.append(getattr(cfg, "_attn_implementation", None))
        if cfg is not None and hasattr(m, "set_attn_implementation"):
            m.set_attn_implementation(name)
    try:
        yield
    finally:
        for m, old in zip(models, saved):
            if old is not None and hasattr(m, "set_attn_implementation"):
                m.set_attn_implementation(old)


@contextlib.contextmanager
def teacher_on(teacher: nn.Module, device: torch.device | str) -> Iterator[nn.Module]:
    """The teacher on the student's training ``device`` for the run, back where it was afterwards.

    The teacher is held outside the objective's module tree, so the training loop's ``.to(device)``
    never reaches it: without this a CPU teacher meets GPU batches. On exit the teacher's original
    tensors are put back (no copy home), so the caller's model (often the user's input model)
    ends exactly as it started.
    """
    device = torch.device(device)
    slots = [(m.__dict__[kind], name, t) for m in teacher.modules() for kind in ("_parameters", "_buffers")
             for name, t in m.__dict__[kind].items() if t is not None]
    if all(t.device == device for _, _, t in slots):
        yield teacher
        return
    data = [t.data for _, _, t in slots]
    teacher.to(device)
    try:
        yield teacher
    finally:
        # put back the very objects and storage the caller had (``.to`` may have swapped either)
        for (registry, name, t), d in zip(slots, data):
            registry[name] = t
            t.data = d


class DistillObjective(nn.Module):
    """``forward(batch) -> loss``: teacher (no grad) and student on the batch, weighted KD terms."""

    def __init__(self, student: nn.Module, teacher: nn.Module, spec: LossSpec, probe_batch: Any) -> None:
        super().__init__()
        self.student = student
        self.spec = spec
        object.__setattr__(self, "teacher", teacher)  # not a submodule: not trained, not in state_dict
        self.projections = nn.ModuleDict()
        self._s_cap = _Capture(student, list(spec.feature_map))
        self._t_cap = _Capture(teacher, list(spec.feature_map.values()))
        self._build(probe_batch)

    # ------------------------------------------------------------------ set-up checks
    def _build(self, batch: Any) -> None:
        """Run teacher and student once: check output shapes, size the projections."""
        with torch.no_grad():
            t_out, s_out = self._run(batch, grad=False)
        s, t = output_tensor(s_out), output_tensor(t_out)
        if self.spec.logit_weight > 0 and s.shape[-1] != t.shape[-1]:
            raise ConfigError(f"teacher and student output sizes differ (teacher {tuple(t.shape)}, student "
                              f"{tuple(s.shape)}): logit KD needs the same number of classes; set logit_weight: 0 "
                              "and distill features (method: feature) with projections instead")
        for s_name, t_name in self.spec.feature_map.items():
            self._make_projection(s_name, t_name)

    def _make_projection(self, s_name: str, t_name: str) -> None:
        s = channels_last(self._s_cap.out[s_name])
        t = channels_last(self._t_cap.out[t_name])
        if s.shape[:-1] != t.shape[:-1]:
            raise ConfigError(f"layer_map: student {s_name!r} {tuple(s.shape)} and teacher {t_name!r} "
                              f"{tuple(t.shape)} differ in more than the feature width")
        key = s_name.replace(".", "__")
        if s.shape[-1] == t.shape[-1] and self.spec.projection != "always":
            return
        if self.spec.projection == "none":
            raise ConfigError(f"layer_map: student {s_name!r} has width {s.shape[-1]} but teacher {t_name!r} has "
                              f"{t.shape[-1]}; set projection: auto to learn a linear projection")
        proj = nn.Linear(s.shape[-1], t.shape[-1])
        self.projections[key] = proj.to(s.device)

    # ------------------------------------------------------------------ the loss
    def _run(self, batch: Any, grad: bool = True) -> tuple[Any, Any]:
        s_in, t_in, labels = split_distill_batch(batch)
        attn = {"output_attentions": True} if self.spec.attention_map else {}
        with torch.no_grad():
            t_out = self._call(self.teacher, t_in, attn)
        with torch.set_grad_enabled(grad):
            s_out = self._call(self.student, s_in, attn)
        return t_out, s_out

    @staticmethod
    def _call(model: nn.Module, inputs: Any, extra: dict[str, Any]) -> Any:
        if extra and isinstance(inputs, Mapping):
            return model(**inputs, **extra)
        return call_model(model, inputs)

    def forward(self, batch: Any) -> torch.Tensor:
        s_in, _, labels = split_distill_batch(batch)
        t_out, s_out = self._run(batch)
        mask = _mask(s_in)
        loss = torch.zeros((), device=output_tensor(s_out).device)
        if self.spec.logit_weight > 0:
            s_logits, t_logits = output_tensor(s_out), output_tensor(t_out)
            kd = logit_kd(s_logits, t_logits, self.spec.temperature, mask)
            hard = self._hard(s_logits, labels) if self.spec.alpha < 1 else None
            loss = loss + self.spec.logit_weight * mix_hard(kd, hard, self.spec.alpha)
        if self.spec.feature_map and self.spec.feature_weight > 0:
            loss = loss + self.spec.feature_weight * self._features(mask)
        if self.spec.attention_map and self.spec.attention_weight > 0:
            loss = loss + self.spec.attention_weight * self._attentions(s_out, t_out, mask)
        return loss

    @staticmethod
    def _hard(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        if labels is None:
            return None
        if logits.dim() == 3 and labels.dim() == 2:  # causal LM: predict token t+1 at position t
            return cross_entropy(logits[:, :-1], labels[:, 1:])
        return cross_entropy(logits, labels)

    def _features(self, mask: torch.Tensor | None) -> torch.Tensor:
        terms = []
        for s_name, t_name in self.spec.feature_map.items():
            s = channels_last(self._s_cap.out[s_name])
            t = channels_last(self._t_cap.out[t_name])
            key = s_name.replace(".", "__")
            if key in self.projections:
                s = self.projections[key](s)
            terms.append(feature_mse(s, t, mask))
        return torch.stack(terms).mean()

    def _attentions(self, s_out: Any, t_out: Any, mask: torch.Tensor | None) -> torch.Tensor:
        s_att, t_att = getattr(s_out, "attentions", None), getattr(t_out, "attentions", None)
        if not s_att or not t_att:
            raise ConfigError("method attention needs models that return attention maps (Hugging Face "
                              "transformers called with output_attentions=True)")
        terms = [attention_kl(s_att[i], t_att[j], mask) for i, j in self.spec.attention_map.items()]
        return torch.stack(terms).mean()

    def close(self) -> None:
        """Remove the capture hooks (the student goes back to being a plain model)."""
        self._s_cap.remove()
        self._t_cap.remove()
