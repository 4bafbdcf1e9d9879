"""Orchestration shared by every ``distill`` method: pick the teacher, build the student, train the
:class:`~slimkit.distill.engine.DistillObjective` with the shared loop, report."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError, DataError
from slimkit.core.inputs import move_inputs
from slimkit.distill.engine import (DistillObjective, LossSpec, attention_implementation, split_distill_batch,
                                    teacher_on)
from slimkit.distill.options import DistillOptions
from slimkit.distill.students import build_student
from slimkit.core.modelstate import eval_mode
from slimkit.parallel import dist as pdist
from slimkit.train.loop import train

__all__ = ["run_distill", "pick_teacher", "check_module_names"]


def pick_teacher(ctx: RunContext) -> nn.Module:
    """``teacher=`` when given, else the untouched input model of the run."""
    teacher = ctx.teacher if ctx.teacher is not None else ctx.original
    if teacher is None:
        raise DataError("step 'distill' needs a teacher: pass teacher=model (or run it inside sk.compress, "
                        "where the uncompressed input model is the default teacher)")
    return teacher


def check_module_names(model: nn.Module, names: list[str], side: str) -> None:
    """Raise :class:`ConfigError` naming ``layer_map`` and the first module that does not exist."""
    known = dict(model.named_modules())
    for name in names:
        if name not in known:
            close = [n for n in known if n and (n.endswith(name.split(".")[-1]))][:3]
            hint = f"; similar names: {close}" if close else ""
            raise ConfigError(f"layer_map: {side} module {name!r} does not exist in {type(model).__name__}{hint}")


class _StudentMetric:
    """The run's evaluator applied to the student inside the objective (keeps ``higher_is_better``)."""

    def __init__(self, evaluate: Callable[[nn.Module], float]) -> None:
        self.evaluate = evaluate
        self.higher_is_better = bool(getattr(evaluate, "higher_is_better", True))
        self.on_eval = getattr(evaluate, "on_eval", None)  # the training loop's validation observer, passed on

    def __call__(self, objective: nn.Module) -> float:
        return float(self.evaluate(objective.student))


def run_distill(model: nn.Module, cfg: DistillOptions, ctx: RunContext,
                make_spec: Callable[[nn.Module, nn.Module], LossSpec]) -> nn.Module:
    """Distil ``ctx``'s teacher into ``model`` (after building the student from it, if asked).

    ``make_spec(student, teacher)`` returns the method's :class:`LossSpec` (and validates maps).
    """
    data = ctx.require("train", "distill")
    teacher = pick_teacher(ctx)
    student_inputs = split_distill_batch(data[0])[0]
    n_before = sum(p.numel() for p in model.parameters())
    model = build_student(model, keep_every=cfg.keep_every, keep_layers=cfg.keep_layers, shrink=cfg.shrink_width,
                          granularity=cfg.width_granularity, example_inputs=student_inputs, ctx=ctx)
    if teacher is model:
        raise ConfigError("teacher and student are the same module object; pass a separate teacher")
    spec = make_spec(model, teacher)
    attention = [m for m in (model, teacher) if spec.attention_map]
    pdist.ensure_process_group()
    device = pdist.training_device(model)  # where the loop trains the student (this rank's GPU under nccl)
    model.to(device)
    with eval_mode(teacher), teacher_on(teacher, device), attention_implementation(attention):
        objective = DistillObjective(model, teacher, spec, move_inputs(data[0], device))
        validate = _StudentMetric(ctx.evaluate) if ctx.evaluate is not None else None
        try:
            result = train(objective, data, lambda m, b: m(b), cfg.train_options(), ctx=ctx, validate=validate)
        finally:
            objective.close()
    _notes(ctx, cfg, result, objective, n_before, model)
    labelled = split_distill_batch(data[0])[2] is not None
    ctx.note("hard_label_weight", round(1.0 - cfg.alpha, 6) if labelled else 0.0)  # 0: pure KD (no labels)
    return model


def _notes(ctx: RunContext, cfg: DistillOptions, result: dict[str, Any], objective: DistillObjective,
           n_before: int, student: nn.Module) -> None:
    ctx.note("steps", result["steps"])
    if result["history"]:
        ctx.note("first_loss", round(result["history"][0]["loss"], 5))
        ctx.note("final_loss", round(result["final_loss"], 5))
    ctx.note("teacher", "teacher=" if ctx.teacher is not None else "input model")
    ctx.note("projections", len(objective.projections))
    n_after = sum(p.numel() for p in student.parameters())
    if n_after != n_before:
        ctx.note("student_params", n_after)
        ctx.note("student_param_ratio", round(n_after / n_before, 4))
    if result["best_metric"] is not None:
        ctx.note("best_metric", result["best_metric"])
    if result["stopped_early"]:
        ctx.note("stopped_early_at", result["steps"])
