"""The trial loop of one worker: ask Optuna for a candidate, evaluate it once, tell the result.

Several workers (processes on one machine, or machines sharing a PostgreSQL study) run this loop
on one study. Under the store's lock a worker fails trials whose process died, counts the
trials (so ``n_trials`` is the study's total, exactly, however many workers run), and claims a
candidate's recipe hash; a recipe already evaluated (or being evaluated by another worker) is not
run again: the trial waits for it and reuses its metrics (``cached``).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from slimkit.core.errors import ConfigError, SlimkitError
from slimkit.search.recipes.goals import Constraint, Objective, relative_metrics
from slimkit.search.recipes.knobs import RecipeSpace, recipe_hash
from slimkit.search.recipes.storage import Heartbeat, Store, is_stale, process_identity

__all__ = ["Plan", "run_worker", "make_sampler", "STRATEGIES", "fail_stale", "canonical_recipe"]

#: tpe / nsga2 / random: Optuna samplers; evolution / rl / gradient: slimkit.search.recipes.strategies
STRATEGIES = ("tpe", "nsga2", "random", "evolution", "rl", "gradient")
#: a worker whose strategy proposed only already-evaluated recipes this many times in a row stops:
#: on a small finite space (e.g. 20 student shapes) TPE otherwise re-proposes them until the deadline
#: (2,800 answered-from-cache trials in 12 minutes, measured), filling the journal and the report
STALE_PROPOSALS = 100
#: why a candidate whose every step is 'none' is pruned without running (it is the input model)
ALL_NONE = "every step came out 'none' (the input model itself)"
_POLL_S = 0.2
#: errors that fail one candidate (recorded on its trial) without stopping the search
_CANDIDATE_ERRORS = (SlimkitError, RuntimeError)


@dataclasses.dataclass
class Plan:
    """What every worker of one search shares."""

    space: RecipeSpace
    evaluate: Callable[[dict[str, Any]], dict[str, Any]]
    objectives: list[Objective]
    constraints: list[Constraint]
    baseline: dict[str, Any]
    higher_is_better: bool | None
    strategy: str = "tpe"
    seed: int = 0
    n_trials: int | None = None
    deadline: float | None = None  # time.time() after which no trial starts
    log: Callable[[str], None] | None = None
    #: successive halving / Hyperband (:mod:`slimkit.search.recipes.pruning`): a ``PrunerConfig``
    #: and the rung resources in optimizer steps, or ``None`` (every trial runs to the end)
    pruner: Any = None
    rung_resources: tuple[int, int] | None = None


def make_sampler(strategy: str, seed: int, n_trials: int | None) -> Any:
    """The seeded Optuna sampler of ``strategy``. TPE and NSGA-II read each trial's constraint values
    (set with ``Trial.set_constraint`` before it is told) and prefer feasible candidates."""
    import warnings

    import optuna

    if strategy == "tpe":
        startup = 10 if n_trials is None else max(4, min(10, n_trials // 5))
        with warnings.catch_warnings():  # ``group`` (conditional knobs sampled jointly) is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True)
    if strategy == "nsga2":
        population = 20 if n_trials is None else max(6, min(50, n_trials // 5))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy in STRATEGIES:
        from slimkit.search.recipes.strategies import make_extra_sampler

        return make_extra_sampler(strategy, seed, n_trials)
    raise ConfigError(f"unknown strategy {strategy!r}; valid strategies are {list(STRATEGIES)}")


def canonical_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe with every option spelled out (its hash identifies the candidate)."""
    from slimkit.core.recipe import Recipe

    return Recipe.from_dict(recipe).to_dict()


def fail_stale(study: Any) -> int:
    """Mark RUNNING trials whose process is gone as FAIL; returns how many. Call under the lock."""
    from optuna.trial import TrialState

    failed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_stale(t.user_attrs):
            study._storage.set_trial_user_attr(t._trial_id, "failed_because", "its process died")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            failed += 1
    return failed


def run_worker(plan: Plan, study: Any, store: Store) -> dict[str, int]:
    """Run trials until ``n_trials`` (study total), the deadline or Ctrl-C; returns counts of this worker.

    Ctrl-C (KeyboardInterrupt) fails the running trial and returns with ``interrupted`` = 1.
    """
    counts = {"evaluated": 0, "cached": 0, "failed": 0, "pruned": 0, "interrupted": 0, "exhausted": 0}
    in_a_row = 0  # consecutive proposals of already-evaluated recipes
    while plan.deadline is None or time.time() < plan.deadline:
        trial = _start_trial(plan, study, store)
        if trial is None:
            break
        try:
            outcome = _run_trial(plan, study, store, trial)
        except KeyboardInterrupt:
            _tell_fail(study, trial, "interrupted (Ctrl-C)")
            counts["interrupted"] = 1
            break
        counts["pruned" if outcome == "input_model" else outcome] += 1
        in_a_row = in_a_row + 1 if outcome in ("cached", "input_model") else 0  # nothing new learnt
        if in_a_row >= STALE_PROPOSALS:
            if plan.log is not None:
                plan.log(f"stopping: the last {STALE_PROPOSALS} proposals were recipes already evaluated "
                         "(the space looks exhausted for this strategy)")
            counts["exhausted"] = 1
            break
    return counts


def _start_trial(plan: Plan, study: Any, store: Store) -> Any:
    """Under the lock: fail dead trials, stop at ``n_trials`` (finished + running), else ask a new trial."""
    from optuna.trial import TrialState

    with store.lock():
        fail_stale(study)
        if plan.n_trials is not None:
            trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                TrialState.RUNNING))
            if len(trials) >= plan.n_trials:
                return None
        trial = study.ask()
        trial.set_user_attr("owner", process_identity())
        trial.set_user_attr("beat", time.time())
    return trial


def _run_trial(plan: Plan, study: Any, store: Store, trial: Any) -> str:
    """Evaluate one trial; returns its outcome: evaluated, cached, failed, pruned, or input_model (every
    step came out none: pruned without running, and nothing new for the exhaustion count)."""
    from optuna.trial import TrialState

    with Heartbeat(study._storage, trial._trial_id):
        try:
            recipe = plan.space.sample(trial)
            if not recipe["steps"]:
                trial.set_user_attr("pruned_because", ALL_NONE)
                study.tell(trial, state=TrialState.PRUNED)
                return "input_model"
            recipe = canonical_recipe(recipe)
        except ConfigError as exc:  # a combination of knob values the step refuses
            _tell_fail(study, trial, f"{type(exc).__name__}: {exc}")
            return "failed"
        key = recipe_hash(recipe)
        trial.set_user_attr("recipe", recipe)
        trial.set_user_attr("recipe_hash", key)
        metrics, cached = _claim_or_reuse(plan, study, store, trial, key)
        if metrics is None:
            import optuna

            try:
                start = time.perf_counter()
                metrics = dict(_evaluate(plan, study, store, trial, recipe))
                trial.set_user_attr("seconds", time.perf_counter() - start)
            except optuna.TrialPruned as exc:  # the pruner stopped its training at a rung
                trial.set_user_attr("seconds", time.perf_counter() - start)
                trial.set_user_attr("pruned_because", str(exc))
                study.tell(trial, state=TrialState.PRUNED)
                _log_pruned(plan, trial.number, recipe, str(exc))
                return "pruned"
            except _CANDIDATE_ERRORS as exc:
                _tell_fail(study, trial, f"{type(exc).__name__}: {exc}")
                return "failed"
            relative_metrics(metrics, plan.baseline, plan.higher_is_better)
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("cached", cached)
        for c in plan.constraints:
            trial.set_constraint(str(c), c.slack(metrics))
        study.tell(trial, [float(metrics[o.key]) for o in plan.objectives])
    _log(plan, trial.number, recipe, metrics, cached)
    return "cached" if cached else "evaluated"


def _evaluate(plan: Plan, study: Any, store: Store, trial: Any, recipe: dict[str, Any]) -> dict[str, Any]:
    """The candidate's metrics; with a pruner, its training reports each rung and may stop early."""
    if plan.pruner is None or not plan.pruner.active:
        return plan.evaluate(recipe)
    from slimkit.search.recipes.pruning import evaluate_with_rungs

    return evaluate_with_rungs(plan.evaluate, recipe, study=study, store=store, trial=trial, cfg=plan.pruner,
                               resources=plan.rung_resources or (1, 1), higher_is_better=plan.higher_is_better)


def _log_pruned(plan: Plan, number: int, recipe: dict[str, Any], why: str) -> None:
    if plan.log is not None:
        steps = " + ".join(f"{n}:{o.get('method')}" for s in recipe["steps"] for n, o in s.items())
        plan.log(f"trial {number}: {steps} -> pruned ({why})")


def _claim_or_reuse(plan: Plan, study: Any, store: Store, trial: Any, key: str) -> tuple[dict[str, Any] | None, bool]:
    """``(metrics, True)`` when the recipe was evaluated before (waiting for a worker evaluating it
    right now), else ``(None, False)`` after claiming it for this trial."""
    from optuna.trial import TrialState

    while True:
        with store.lock():
            fail_stale(study)
            done, running = None, None
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
                if t.user_attrs.get("recipe_hash") != key or t.number == trial.number:
                    continue
                if t.state == TrialState.COMPLETE and not t.user_attrs.get("cached"):
                    done = t
                elif t.state == TrialState.RUNNING and t.user_attrs.get("claim") == key:
                    running = t
            if done is not None:
                trial.set_user_attr("cached_from", done.number)
                return dict(done.user_attrs["metrics"]), True
            if running is None:
                trial.set_user_attr("claim", key)
                return None, False
        time.sleep(_POLL_S)  # another worker is evaluating this very recipe: wait for its metrics


def _tell_fail(study: Any, trial: Any, reason: str) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr("error", reason[:2000])
    study.tell(trial, state=TrialState.FAIL)


def _log(plan: Plan, number: int, recipe: dict[str, Any], metrics: dict[str, Any], cached: bool) -> None:
    if plan.log is None:
        return
    shown = ", ".join(f"{o.name}={metrics[o.key]:.4g}" for o in plan.objectives)
    steps = " + ".join(f"{n}:{o.get('method')}" for s in recipe["steps"] for n, o in s.items())
    plan.log(f"trial {number}: {steps} -> {shown}{' (cached)' if cached else ''}")
