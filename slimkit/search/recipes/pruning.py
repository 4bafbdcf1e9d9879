"""Stopping weak trials early: successive halving / Hyperband through Optuna's pruners.

A candidate whose recipe trains (``distill`` or ``finetune`` with ``eval_every``) reports its
held-out quality every ``eval_every`` optimizer steps (the training loop calls the evaluator's
``on_eval(step, metric)``); Optuna's :class:`~optuna.pruners.SuccessiveHalvingPruner` or
:class:`~optuna.pruners.HyperbandPruner` compares it with the other trials at the same rung and
stops it there when it is not in the top ``1 / reduction_factor``; the trial ends ``PRUNED``.

```yaml
pruner: {name: successive_halving, reduction_factor: 3}     # or: pruner: hyperband
steps:
  - distill: {method: logit, steps: 120, eval_every: 20, keep_layers: {choice: [[0, 2], [0, 1, 2, 3]]}}
```

Optuna's pruners work on single-objective studies only (``Trial.report`` refuses a
multi-objective study), while a recipe search optimizes several objectives. So each trial of the
search has a twin in a single-objective *rung study* in the same storage (named
``<search study>-rungs``, direction of the quality), which holds the intermediate values and asks
the pruner; workers and resumed runs share it like the search study. The pruner ranks
**quality alone** at each rung: with a cost objective beside it (a Pareto search of students)
it favours the larger students, so give the cost as a constraint, or accept that the cheap end
of the front is explored less.

Rungs: ``min_resource`` (default: the space's ``eval_every``) optimizer steps, then times
``reduction_factor``; ``max_resource`` (Hyperband; default: the space's largest ``steps``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from slimkit.core.config import StepConfig, check_choice, check_int
from slimkit.core.errors import ConfigError
from slimkit.search.recipes.evaluate import CandidateMeter

__all__ = ["PRUNERS", "PrunerConfig", "parse_pruner", "rung_resources", "RungReporter", "evaluate_with_rungs",
           "TrainingMeter", "TRAINING_STEPS"]

#: the values of the ``pruner`` option
PRUNERS = ("none", "successive_halving", "hyperband")
#: steps whose training loop reports intermediate quality (``eval_every``)
TRAINING_STEPS = ("distill", "finetune")
_RUNG_SUFFIX = "-rungs"


@dataclasses.dataclass
class PrunerConfig(StepConfig):
    """``name``: ``none`` / ``successive_halving`` / ``hyperband``; ``reduction_factor`` (>= 2): a
    rung keeps the top ``1/reduction_factor``; ``min_resource`` / ``max_resource``: optimizer
    steps of the first rung / of a full trial (default from the space); ``min_early_stopping_rate``
    (successive halving: the first rung is ``min_resource * reduction_factor ** rate``);
    ``bootstrap_count``: trials that must reach a rung before anything is pruned there."""

    name: str = "none"
    reduction_factor: int = 3
    min_resource: int | None = None
    max_resource: int | None = None
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0

    def validate(self) -> None:
        check_choice("pruner", self.name, PRUNERS)
        check_int("reduction_factor", self.reduction_factor, 2)
        if self.min_resource is not None:
            check_int("min_resource", self.min_resource, 1)
        if self.max_resource is not None:
            check_int("max_resource", self.max_resource, 1)
            if self.min_resource is not None and self.max_resource < self.min_resource:
                raise ConfigError(f"max_resource = {self.max_resource!r} must be >= min_resource = "
                                  f"{self.min_resource!r}")
        check_int("min_early_stopping_rate", self.min_early_stopping_rate, 0)
        check_int("bootstrap_count", self.bootstrap_count, 0)
        if self.name != "successive_halving" and (self.min_early_stopping_rate or self.bootstrap_count):
            raise ConfigError(f"min_early_stopping_rate / bootstrap_count are successive_halving options, not "
                              f"{self.name!r} ones")

    @property
    def active(self) -> bool:
        return self.name != "none"

    def make(self, min_resource: int, max_resource: int) -> Any:
        """The Optuna pruner, with the resources the space implies filled in."""
        import optuna

        lo = self.min_resource if self.min_resource is not None else min_resource
        hi = self.max_resource if self.max_resource is not None else max_resource
        if self.name == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(
                min_resource=lo, reduction_factor=self.reduction_factor,
                min_early_stopping_rate=self.min_early_stopping_rate, bootstrap_count=self.bootstrap_count)
        if self.name == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=lo, max_resource=max(hi, lo),
                                                  reduction_factor=self.reduction_factor)
        raise ConfigError(f"pruner {self.name!r} makes no Optuna pruner")


def parse_pruner(spec: Any, where: str = "pruner") -> PrunerConfig:
    """``None`` / a name / a mapping with ``name`` -> :class:`PrunerConfig` (``none`` when absent)."""
    if spec is None:
        return PrunerConfig()
    if isinstance(spec, PrunerConfig):
        return spec
    if isinstance(spec, str):
        if spec not in PRUNERS:
            raise ConfigError(f"{where} = {spec!r} is not a pruner; valid pruners are {list(PRUNERS)}")
        return PrunerConfig(name=spec)
    if isinstance(spec, dict):
        if "name" not in spec:
            raise ConfigError(f"{where}: a mapping needs 'name' (one of {list(PRUNERS)}), got {spec!r}")
        return PrunerConfig.from_dict(dict(spec), where=where)  # type: ignore[return-value]
    raise ConfigError(f"{where} = {spec!r} must be a pruner name {list(PRUNERS)} or a mapping with 'name'")


def rung_resources(space: Any, cfg: PrunerConfig) -> tuple[int, int]:
    """``(min_resource, max_resource)`` in optimizer steps, from the space's training steps.

    A pruner needs a training step (``distill`` / ``finetune``) whose ``eval_every`` is one fixed
    number (the rung spacing) in every candidate; its ``steps`` (fixed or the largest choice) is a
    full trial.
    """
    every, longest = [], []
    for step in space.steps:
        if step.name not in TRAINING_STEPS:
            continue
        knobs = {k.name: k for k in step.knobs}
        if "eval_every" not in knobs:
            continue
        k = knobs["eval_every"]
        if k.choice is not None or k.is_range or k.when:
            raise ConfigError(f"pruner {cfg.name!r}: {step.name} eval_every must be one fixed number (the rung "
                              f"spacing), got {k.to_dict()!r}")
        every.append(int(k.value))
        if "steps" in knobs:
            longest.append(int(max(knobs["steps"].candidates())))
    if not every:
        raise ConfigError(f"pruner {cfg.name!r} needs a {' or '.join(TRAINING_STEPS)} step with eval_every in the "
                          "space (the training reports its held-out quality there); none has it")
    lo = min(every)
    hi = max(longest) if longest else lo * cfg.reduction_factor ** 2
    if cfg.min_resource is not None and cfg.min_resource < lo:
        raise ConfigError(f"min_resource = {cfg.min_resource} is below the space's eval_every = {lo}: no quality is "
                          "reported that early")
    return lo, hi


class RungReporter:
    """The search's evaluator with an ``on_eval`` observer: each validation of the training loop is
    reported to the trial's twin in the rung study, which raises ``optuna.TrialPruned`` when the
    pruner stops it. ``prepare`` is deliberately absent: the evaluator was prepared once on the
    input model by the search (``sk.compress`` would otherwise redo it for every trial)."""

    def __init__(self, evaluator: Any, twin: Any = None, pruner: str = "none", last_step: int | None = None) -> None:
        self.evaluator, self.twin, self.pruner, self.last_step = evaluator, twin, pruner, last_step
        self.higher_is_better = bool(getattr(evaluator, "higher_is_better", True))
        self.name = getattr(evaluator, "name", "quality")
        self.values: list[tuple[int, float]] = []

    def __call__(self, model: Any) -> float:
        return float(self.evaluator(model))

    def on_eval(self, step: int, metric: float) -> None:
        import optuna

        self.values.append((int(step), float(metric)))
        if self.twin is None:  # no pruner: the values are only recorded
            return
        self.twin.report(float(metric), int(step))
        if self.last_step is not None and step >= self.last_step:
            return  # the training is done: stopping it now would only throw the finished student away
        if self.twin.should_prune():
            raise optuna.TrialPruned(f"{self.pruner} stopped it at step {step}: quality {metric:.6g} is not among "
                                     "the best at that rung")


_RUNG_STUDIES: dict[tuple[int, str], Any] = {}


def _rung_study(study: Any, store: Any, cfg: PrunerConfig, resources: tuple[int, int], maximize: bool) -> Any:
    """This worker's handle on the rung study (created once, shared through the storage)."""
    import optuna

    name = study.study_name + _RUNG_SUFFIX
    key = (id(study._storage), name)
    if key not in _RUNG_STUDIES:
        with store.lock():
            _RUNG_STUDIES[key] = optuna.create_study(
                storage=study._storage, study_name=name, load_if_exists=True,
                direction="maximize" if maximize else "minimize", sampler=optuna.samplers.RandomSampler(seed=0),
                pruner=cfg.make(*resources))
    return _RUNG_STUDIES[key]


def evaluate_with_rungs(evaluate: Any, recipe: dict[str, Any], *, study: Any, store: Any, trial: Any,
                        cfg: PrunerConfig, resources: tuple[int, int], higher_is_better: bool | None) -> dict[str, Any]:
    """``evaluate(recipe, reporter=...)`` with this trial's twin in the rung study; the twin ends
    COMPLETE (with the final quality), PRUNED (``optuna.TrialPruned`` goes on to the caller) or FAIL.
    The reported ``(step, quality)`` pairs are kept on the search trial (``rungs``)."""
    import optuna
    from optuna.trial import TrialState

    if higher_is_better is None:
        raise ConfigError(f"pruner {cfg.name!r} needs eval= (it compares trials on held-out quality)")
    evaluator = getattr(evaluate, "evaluator", None)
    if evaluator is None:
        raise ConfigError(f"pruner {cfg.name!r} needs a search over a model with eval= (a CandidateMeter)")
    rungs = _rung_study(study, store, cfg, resources, bool(higher_is_better))
    twin = rungs.ask()
    twin.set_user_attr("search_trial", trial.number)
    trial.set_user_attr("rung_trial", twin.number)
    reporter = RungReporter(evaluator, twin, cfg.name, last_step=resources[1])
    try:
        metrics = dict(evaluate(recipe, reporter=reporter))
    except optuna.TrialPruned:
        trial.set_user_attr("rungs", reporter.values)
        rungs.tell(twin, state=TrialState.PRUNED)
        raise
    except BaseException:
        trial.set_user_attr("rungs", reporter.values)
        rungs.tell(twin, state=TrialState.FAIL)
        raise
    trial.set_user_attr("rungs", reporter.values)
    rungs.tell(twin, float(metrics["quality"]))
    return metrics


class TrainingMeter(CandidateMeter):
    """A :class:`CandidateMeter` for recipes that train with ``eval_every``: their training loop
    gets the search's evaluator (wrapped in a :class:`RungReporter`, which reports to the pruner
    when one is given), so they validate on the same held-out data the search scores with."""

    def build(self, recipe: dict[str, Any], reporter: RungReporter | None = None) -> Any:
        from slimkit.core.recipe import Recipe
        from slimkit.core.runner import compress

        plan = Recipe.from_dict(recipe)
        validates = any(s.name in TRAINING_STEPS and getattr(s.config, "eval_every", None) for s in plan.steps)
        if not validates or self.evaluator is None:
            return super().build(recipe)
        evaluator = reporter if reporter is not None else RungReporter(self.evaluator)
        result = compress(self.model, plan, calib=self.calib, eval=evaluator, example_inputs=self.example_inputs,
                          train=self.train, teacher=self.teacher, progress=False, measure=False, baseline={})
        return result.model

    def __call__(self, recipe: dict[str, Any], reporter: RungReporter | None = None) -> dict[str, Any]:
        self._prepare()
        return self.measure(self.build(recipe, reporter))
