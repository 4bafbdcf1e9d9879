"""``sk.search``: a multi-objective search over whole recipes, on an Optuna study that survives a kill.

```python
import slimkit as sk
space = {"steps": [
    {"prune": {"method": {"choice": ["wanda", "sparsegpt", "none"]}, "sparsity": {"choice": [0.3, 0.5, 0.7]}}},
    {"quantize": {"method": {"choice": ["rtn", "gptq"]}, "bits": {"choice": [4, 8]},
                  "group_size": {"choice": [32, 64, 128]}}},
]}
sr = sk.search(model, space, calib=calib, eval=sk.Perplexity(held_out), objectives=("quality", "bytes"),
               constraints=["quality_drop <= 0.02"], n_trials=40, out_dir="search-out")
sr.best.recipe if sr.best else sr.reason
```

Each trial samples a recipe from the space (:mod:`slimkit.search.recipes.knobs`), runs it with
``sk.compress`` on the input model and measures it (:mod:`slimkit.search.recipes.evaluate`); the
study keeps every trial, so a re-run with the same ``out_dir`` resumes it (trials of a killed
process are failed and redone, finished ones reused), and ``workers=N`` processes or several
machines (``storage="postgresql://..."``) share it. ``budget_s`` and Ctrl-C stop the search with
the front found so far; the outputs are written in every case (:mod:`slimkit.search.recipes.files`).
"""
from __future__ import annotations

import multiprocessing
import queue as queue_module
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from slimkit.core.errors import ConfigError
from slimkit.search.recipes.engine import STRATEGIES, Plan, make_sampler, run_worker
from slimkit.search.recipes.evaluate import RUNTIMES, model_fingerprint
from slimkit.search.recipes.goals import Constraint, Objective, parse_constraints, parse_objectives
from slimkit.search.recipes.knobs import RecipeSpace
from slimkit.search.recipes.pruning import TrainingMeter, parse_pruner, rung_resources
from slimkit.search.recipes.result import SearchResult, candidates_from_trials, choose_best, pareto_front
from slimkit.search.recipes.storage import Store, open_store
from slimkit.search.recipes.strategies import prepare_plan

__all__ = ["search", "run_study", "STUDY_NAME"]

STUDY_NAME = "slimkit-search"
_SETTINGS_ATTR = "slimkit_settings"
_BASELINE_ATTR = "slimkit_baseline"


def search(
    model: nn.Module,
    space: RecipeSpace | dict[str, Any] | list[Any] | str | Path,
    *,
    calib: Iterable[Any] | None = None,
    eval: Any = None,  # noqa: A002 - contract name
    objectives: Sequence[str] | str = ("quality", "bytes"),
    constraints: Sequence[str] | dict[str, float] | str | None = None,
    strategy: str = "tpe",
    budget_s: float | None = None,
    n_trials: int | None = None,
    storage: str | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    example_inputs: Any = None,
    workers: int = 1,
    train: Iterable[Any] | None = None,
    teacher: nn.Module | None = None,
    overwrite: bool = False,
    latency_runs: int = 20,
    save_best: bool = True,
    progress: bool = False,
    pruner: Any = None,
    runtime: str = "torch",
) -> SearchResult:
    """Search ``space`` for recipes trading quality against bytes / latency / MACs; see the module docstring.

    ``objectives``: names from :data:`slimkit.search.recipes.goals.OBJECTIVES` (the first ranks
    ``best``); ``constraints``: e.g. ``["quality_drop <= 0.02", "bytes <= 0.25"]``; ``strategy``:
    ``tpe`` / ``nsga2`` / ``random`` (Optuna's samplers), ``evolution`` (elitist, single-knob
    switches), ``rl`` (REINFORCE controller, one softmax per knob) or ``gradient`` (per-layer
    sparsity maps of the space's prune step learned by gradient descent on the model with ``calib``,
    then TPE over them); see :mod:`slimkit.search.recipes.strategies`; ``n_trials`` is the study's total (a resumed study continues up
    to it); ``budget_s`` the wall time of this call (no trial starts after it). ``overwrite=True``
    starts ``out_dir`` over instead of resuming it. ``pruner``: ``none`` / ``successive_halving`` /
    ``hyperband`` or a mapping (:mod:`slimkit.search.recipes.pruning`), like the space YAML's
    ``pruner:`` key (giving both with different values is an error): trials whose training reports
    a weak held-out quality at a rung stop there and end PRUNED. ``runtime``: where latency and
    quality are measured, ``torch`` (eager) or ``onnxruntime`` (each candidate and the input model
    exported to ONNX, timed and scored in ONNX Runtime's CPU session; see
    :mod:`slimkit.search.recipes.evaluate`).
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_stops(n_trials, budget_s, workers, strategy)
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime = {runtime!r} is not a runtime latency can be measured in; valid runtimes are "
                          f"{list(RUNTIMES)}")
    if runtime == "onnxruntime" and example_inputs is None:  # else quality would quietly stay torch's
        raise ConfigError("runtime = 'onnxruntime' exports every candidate to ONNX to time and score it, which needs "
                          "example_inputs=... (a batch the model takes)")
    recipe_space = _with_pruner(RecipeSpace.coerce(space), pruner)
    from slimkit.measure.quality import as_evaluator

    evaluator = as_evaluator(eval) if eval is not None else None
    hib = bool(evaluator.higher_is_better) if evaluator is not None else None
    objs = parse_objectives(objectives, higher_is_better=hib, has_inputs=example_inputs is not None)
    cons = parse_constraints(constraints, higher_is_better=hib, has_inputs=example_inputs is not None)
    _check_needs(recipe_space, calib=calib, train=train, example_inputs=example_inputs)
    latency = any(o.name == "latency" for o in objs) or any(c.metric == "latency" for c in cons)
    meter = TrainingMeter(model, calib=list(calib) if calib is not None else None, evaluator=evaluator,
                           example_inputs=example_inputs, latency=latency, latency_runs=latency_runs,
                           train=list(train) if train is not None else None, teacher=teacher, runtime=runtime)
    out = None
    if out_dir is not None:
        from slimkit.search.recipes.files import prepare_out_dir

        out = prepare_out_dir(out_dir, overwrite=overwrite)
    store = open_store(storage, out)
    if workers > 1 and store.kind == "memory":
        raise ConfigError("workers > 1 need a shared storage: give out_dir= (a journal file) or a storage URL")
    settings = {"space": recipe_space.signature(), "objectives": [o.name for o in objs],
                "directions": [o.direction for o in objs], "latency": latency, "runtime": runtime,
                "quality": evaluator is not None, "model": model_fingerprint(model)}
    log = _logger(progress)
    result = run_study(recipe_space, meter, objs, cons, store=store, settings=settings, higher_is_better=hib,
                       strategy=strategy, seed=seed, n_trials=n_trials, budget_s=budget_s, workers=workers, log=log)
    if out is not None:
        from slimkit.search.recipes.files import write_outputs

        best_model = meter.build(result.best.recipe.to_dict()) if result.best is not None and save_best else None
        write_outputs(result, out, best_model)
        result.out_dir = str(out)
    store.close()
    return result


def run_study(space: RecipeSpace, evaluate: Callable[[dict[str, Any]], dict[str, Any]], objectives: list[Objective],
              constraints: list[Constraint], *, store: Store, settings: dict[str, Any],
              higher_is_better: bool | None, strategy: str = "tpe", seed: int = 0, n_trials: int | None = None,
              budget_s: float | None = None, workers: int = 1,
              log: Callable[[str], None] | None = None) -> SearchResult:
    """The study part of :func:`search`, for any ``evaluate(recipe dict) -> metrics`` (a model's
    :class:`CandidateMeter`, or an analytic stand-in when comparing strategies)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=store.storage, study_name=STUDY_NAME, load_if_exists=True,
                                directions=[o.direction for o in objectives])
    baseline = _settle(study, store, settings, evaluate)
    deadline = time.time() + budget_s if budget_s is not None else None
    plan = Plan(space=space, evaluate=evaluate, objectives=objectives, constraints=constraints, baseline=baseline,
                higher_is_better=higher_is_better, strategy=strategy, seed=seed, n_trials=n_trials,
                deadline=deadline, log=log, pruner=space.pruner,
                rung_resources=rung_resources(space, space.pruner) if space.pruner is not None else None)
    plan = prepare_plan(plan, study, store)  # gradient: the space with learned per-layer sparsity maps
    first_seed = seed + 7919 * len(study.get_trials(deepcopy=False))  # a resumed study samples anew
    if workers == 1:
        counts = _run_here(plan, store, first_seed)
    else:
        counts = _run_forked(plan, store, first_seed, workers)
    trials = optuna.load_study(study_name=STUDY_NAME, storage=store.storage).get_trials(deepcopy=False)
    cands = candidates_from_trials(trials, constraints)
    best, closest, reason = choose_best(cands, objectives, constraints)
    return SearchResult(pareto=pareto_front(cands, objectives), best=best, closest=closest, reason=reason,
                        trials=cands, objectives=objectives, constraints=constraints, baseline=baseline,
                        strategy=strategy, storage=store.describe(), interrupted=bool(counts.get("interrupted")),
                        counts=counts)


def _with_pruner(space: RecipeSpace, pruner: Any) -> RecipeSpace:
    """The space with the ``pruner=`` argument applied (it must agree with the space's own ``pruner:``)."""
    if pruner is None:
        return space
    given = parse_pruner(pruner, "pruner")
    if space.pruner is not None and given.to_dict() != space.pruner.to_dict():
        raise ConfigError(f"pruner = {pruner!r} differs from the space's pruner {space.pruner.to_dict()!r}; give one")
    return space.with_pruner(given, "pruner")


def _check_stops(n_trials: Any, budget_s: Any, workers: Any, strategy: str) -> None:
    if n_trials is None and budget_s is None:
        raise ConfigError("give n_trials= or budget_s= (or both): a search needs a point to stop")
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1):
        raise ConfigError(f"n_trials = {n_trials!r} must be an integer >= 1")
    if budget_s is not None and (isinstance(budget_s, bool) or not isinstance(budget_s, (int, float))
                                 or budget_s <= 0):
        raise ConfigError(f"budget_s = {budget_s!r} must be a number of seconds > 0")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers = {workers!r} must be an integer >= 1")
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; valid strategies are {list(STRATEGIES)}")


def _check_needs(space: RecipeSpace, *, calib: Any, train: Any, example_inputs: Any) -> None:
    """Every method the space may pick gets what it needs, checked before the first trial."""
    from slimkit.core.registry import lookup

    given = {"calib": calib is not None, "train": train is not None, "example_inputs": example_inputs is not None}
    for step, method in space.methods():
        for need in sorted(lookup(step, method).needs & given.keys()):
            if not given[need]:
                raise ConfigError(f"space: {step} method {method!r} needs {need}=; pass it to sk.search or remove "
                                  f"{method!r} from the space")


def _settle(study: Any, store: Store, settings: dict[str, Any], evaluate: Callable[..., Any]) -> dict[str, Any]:
    """Record (new study) or check (resumed study) the settings; the input model's metrics measured once."""
    with store.lock():
        stored = study.user_attrs.get(_SETTINGS_ATTR)
        if stored is None:
            study.set_user_attr(_SETTINGS_ATTR, settings)
        elif stored != settings:
            diff = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
            raise ConfigError(f"the study in {store.describe()} was started with different settings ({', '.join(diff)} "
                              "differ); resume it with the same model, space and objectives, or use a new "
                              "out_dir / overwrite=True")
        baseline = study.user_attrs.get(_BASELINE_ATTR)
        if baseline is None:
            measure = getattr(evaluate, "baseline", None)
            baseline = measure() if callable(measure) else {}
            study.set_user_attr(_BASELINE_ATTR, baseline)
    return dict(baseline)


def _run_here(plan: Plan, store: Store, seed: int) -> dict[str, int]:
    import optuna

    sampler = make_sampler(plan.strategy, seed, plan.n_trials)
    study = optuna.load_study(study_name=STUDY_NAME, storage=store.storage, sampler=sampler)
    try:
        return run_worker(plan, study, store)
    except KeyboardInterrupt:  # between trials: nothing running to fail
        return {"interrupted": 1}


def _run_forked(plan: Plan, store: Store, seed: int, workers: int) -> dict[str, int]:
    """``workers`` processes (forked, so the model and evaluator need no pickling) share the study."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(plan, store, seed + 104729 * rank, queue), daemon=False)
             for rank in range(workers)]
    for p in procs:
        p.start()
    interrupted = False
    while True:
        try:
            for p in procs:
                p.join()
            break
        except KeyboardInterrupt:  # the workers got Ctrl-C too: wait for them to fail their running trial
            interrupted = True
    totals: dict[str, int] = {"interrupted": int(interrupted)}
    errors = []
    for _ in range(workers):  # a worker killed with SIGKILL reports nothing
        try:
            kind, payload = queue.get(timeout=2.0)
        except queue_module.Empty:
            break
        if kind == "error":
            errors.append(payload)
        else:
            for k, v in payload.items():
                totals[k] = totals.get(k, 0) + v
    if errors:
        raise RuntimeError(f"{len(errors)} of {workers} search workers failed; first: {errors[0]}")
    return totals


def _worker_main(plan: Plan, store: Store, seed: int, queue: Any) -> None:
    import optuna

    inherited = getattr(store.storage, "engine", None)
    if inherited is not None:
        inherited.dispose(close=False)  # the parent's pooled connections stay the parent's (SQLAlchemy + fork)
    mine = Store(store.spec, store.kind, store.lock_path)  # its own connections
    try:
        sampler = make_sampler(plan.strategy, seed, plan.n_trials)
        study = optuna.load_study(study_name=STUDY_NAME, storage=mine.storage, sampler=sampler)
        queue.put(("ok", run_worker(plan, study, mine)))
    except KeyboardInterrupt:
        queue.put(("ok", {"interrupted": 1}))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        queue.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        mine.close()


def _logger(progress: bool) -> Callable[[str], None] | None:
    if not progress:
        return None
    return lambda text: print(text, file=sys.stderr, flush=True)
