"""``sk.compress``: validate, copy the model, run each recipe step, measure before/after/each step."""
from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core import provenance
from slimkit.core.context import RunContext
from slimkit.core.conv1d import conv1d_as_linear
from slimkit.core.errors import ConfigError, DataError
from slimkit.core.inputs import as_batches, check_inputs
from slimkit.core.recipe import Recipe
from slimkit.core.modelstate import eval_mode

__all__ = ["compress", "Result", "SPEED_GUARD_TOLERANCE"]

#: a step whose median latency exceeds its input's by more than this fraction is flagged slower
SPEED_GUARD_TOLERANCE = 0.10


@dataclasses.dataclass
class Result:
    """What :func:`compress` returns: the new model, the report and the recipe that was run."""

    model: nn.Module
    report: Any  # slimkit.report.Report
    recipe: Recipe

    def save(self, out_dir: str | Path, *, overwrite: bool = False) -> Path:
        """Save the compressed model, its report inside ``slimkit.json`` and ``report.{json,md,png}``,
        all in one atomic directory."""
        from slimkit.io.checkpoint import save
        from slimkit.report.files import write_report_into

        return save(self.model, out_dir, overwrite=overwrite, report=self.report.to_dict(),
                    extra=lambda tmp: write_report_into(self.report, tmp))


def compress(
    model: nn.Module,
    recipe: Recipe | dict[str, Any] | list[Any] | str | Path,
    *,
    calib: Iterable[Any] | None = None,
    eval: Callable[[nn.Module], float] | Any = None,  # noqa: A002 - contract name
    example_inputs: Any = None,
    teacher: nn.Module | None = None,
    train: Iterable[Any] | None = None,
    progress: bool = True,
    measure: bool = True,
    latency_runs: int = 20,
    name: str = "model",
    baseline: dict[str, Any] | None = None,
) -> Result:
    """Run ``recipe`` on a copy of ``model`` and measure what each step bought.

    The input model is never modified. Everything a step needs (``calib``, ``train``, ``teacher``,
    ``example_inputs``) is checked before any step runs. ``eval`` is a callable ``model -> float``
    or a slimkit evaluator (``sk.Perplexity`` ...); ``measure=False`` skips size/latency.
    ``baseline`` reuses metrics already measured on the input model (comparisons of variants);
    ``latency_runs=0`` skips per-step latency (and so the per-step speed guard), for callers that
    time all variants round-robin themselves, as ``slimkit demo`` does.
    A step that calls ``ctx.replace_step(step)`` (the ``search`` step) is recorded in
    ``Result.recipe`` (and the saved recipe) as that ordinary step; the input recipe is not changed.
    """
    from slimkit.measure.quality import as_evaluator
    from slimkit.report import Report

    plan = Recipe.coerce(recipe)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    ctx = _context(model, calib, train, teacher, example_inputs, progress)
    _check_needs(plan, ctx)
    evaluator = as_evaluator(eval) if eval is not None else None
    if evaluator is not None and hasattr(evaluator, "prepare"):
        evaluator.prepare(model)
    ctx.evaluate = evaluator
    report = Report(name=name, quality=_quality_meta(evaluator))
    probe = _Probe(ctx, evaluator, measure, latency_runs)
    report.before = dict(baseline) if baseline is not None else probe(model)
    work = copy.deepcopy(model).eval()
    ran, replaced = list(plan.steps), False
    for index, step in enumerate(plan.steps):
        work = _run_step(work, step, index, len(plan.steps), ctx, probe, report)
        if ctx.replacement is not None:  # a search step: the result's recipe holds the step it found
            ran[index], replaced = Recipe.from_dict([ctx.replacement]).steps[0], True
    if replaced:
        plan = dataclasses.replace(plan, steps=ran)
    provenance.set_recipe(work, plan.to_dict())
    report.after = report.steps[-1]["metrics"] if report.steps else dict(report.before)
    report.finish()
    return Result(model=work, report=report, recipe=plan)


def _context(model: nn.Module, calib: Any, train: Any, teacher: Any, example_inputs: Any, progress: bool) -> RunContext:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return RunContext(
        calib=as_batches(calib, "calib") if calib is not None else None,
        train=as_batches(train, "train") if train is not None else None,
        teacher=teacher,
        original=model,
        example_inputs=example_inputs,
        device=device,
        show_progress=progress,
    )


def _check_needs(plan: Recipe, ctx: RunContext) -> None:
    if ctx.example_inputs is not None:
        with eval_mode(ctx.original):  # a train-mode BatchNorm would update the user's statistics
            check_inputs(ctx.original, ctx.example_inputs)
    for i, step in enumerate(plan.steps):
        for need in sorted(step.spec.needs - {"teacher", "eval"}):
            ctx.require(need, f"steps[{i}].{step.name}:{step.method}")
    if ctx.calib is not None and not ctx.calib:
        raise DataError("calib is empty")


def _quality_meta(evaluator: Any) -> dict[str, Any] | None:
    if evaluator is None:
        return None
    return {"name": getattr(evaluator, "name", "quality"), "higher_is_better": bool(getattr(evaluator, "higher_is_better", True))}


class _Probe:
    """Measures a model: size/MACs/latency (when asked and inputs exist) and quality (when eval given)."""

    def __init__(self, ctx: RunContext, evaluator: Any, measure: bool, runs: int) -> None:
        self.ctx, self.evaluator, self.measure, self.runs = ctx, evaluator, measure, runs

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        from slimkit.measure.api import measure as measure_model

        metrics: dict[str, Any] = {}
        if self.measure:
            # runs == 0: sizes and MACs only (the caller times variants itself, side by side)
            metrics.update(measure_model(model, self.ctx.example_inputs, latency=self.runs > 0,
                                         runs=max(self.runs, 1)))
        if self.evaluator is not None:
            metrics["quality"] = float(self.evaluator(model))
            # second numbers some evaluators keep: the worst example's cosine, top-k agreement
            for extra, key in (("last_min", "quality_min"), ("last_topk", "quality_topk")):
                if getattr(self.evaluator, extra, None) is not None:
                    metrics[key] = float(getattr(self.evaluator, extra))
        return metrics


def _run_step(work: nn.Module, step: Any, index: int, total: int, ctx: RunContext, probe: _Probe, report: Any) -> nn.Module:
    label = f"{step.name}:{step.method}"
    if ctx.show_progress:
        from rich.console import Console

        Console(stderr=True).print(f"[bold]step {index + 1}/{total}[/bold] {label}")
    ctx.begin_step()
    start = time.perf_counter()
    _linearize_conv1d(work, ctx)
    out = step.spec.handler(work, step.config, ctx)
    work = (out if out is not None else work).eval()
    seconds = time.perf_counter() - start
    previous = report.steps[-1]["metrics"] if report.steps else report.before
    metrics = probe(work)
    report.add_step(name=step.name, method=step.method, config=step.config.to_dict(), seconds=seconds,
                    metrics=metrics, previous=previous, notes=dict(ctx.notes), skipped=list(ctx.skipped),
                    tolerance=SPEED_GUARD_TOLERANCE)
    return work


def _linearize_conv1d(work: nn.Module, ctx: RunContext) -> None:
    """Hugging Face Conv1D layers become equivalent nn.Linear ones, so every Linear-handling step
    handles GPT-2-style models (see :mod:`slimkit.core.conv1d`); the swap is noted on the step."""
    converted, tied = conv1d_as_linear(work)
    if converted:
        ctx.note("conv1d_as_linear", len(converted))
    for name in tied:
        ctx.skip(name, "Conv1D with a shared weight: left as Conv1D (swapping it would untie the weight)")
