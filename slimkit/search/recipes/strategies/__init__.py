"""Search strategies of ``sk.search`` beyond Optuna's own samplers (``tpe``, ``nsga2``, ``random``).

* ``evolution`` (:mod:`.evolution`): elitist evolution, one child per trial, children made by 1-3
  single-knob switches of a tournament-chosen parent;
* ``rl`` (:mod:`.rl`): a REINFORCE controller with one softmax per knob, rebuilt from the study's
  finished trials before every trial;
* ``gradient`` (:mod:`.gradient`): per-layer sparsity allocations of the space's prune step learned
  by gradient descent on the model (relaxed masks, cost penalty), discretized into per-layer
  sparsity maps that replace the prune step's ``sparsity`` knob; the space so changed is searched
  with TPE.

All of them run through the same trial loop and storage as the Optuna samplers (so ``workers``,
resume and journal / PostgreSQL storage work unchanged): ``evolution`` and ``rl`` are Optuna
samplers that read the study's history; ``gradient`` rewrites the plan's space once per study
(:func:`prepare_plan`, its maps kept in the study so every worker and every resume use the same ones).
"""
from __future__ import annotations

from typing import Any

from slimkit.core.errors import ConfigError

__all__ = ["EXTRA_STRATEGIES", "make_extra_sampler", "prepare_plan"]

EXTRA_STRATEGIES = ("evolution", "rl", "gradient")


def make_extra_sampler(strategy: str, seed: int, n_trials: int | None) -> Any:
    """The seeded Optuna sampler of one of :data:`EXTRA_STRATEGIES`."""
    startup = 10 if n_trials is None else max(4, min(10, n_trials // 5))  # as engine.make_sampler's TPE
    if strategy == "evolution":
        from slimkit.search.recipes.strategies.evolution import EvolutionSampler

        return EvolutionSampler(seed, n_startup=startup)
    if strategy == "rl":
        from slimkit.search.recipes.strategies.rl import PolicyGradientSampler

        return PolicyGradientSampler(seed)
    if strategy == "gradient":
        from slimkit.search.recipes.engine import make_sampler

        return make_sampler("tpe", seed, n_trials)
    raise ConfigError(f"unknown strategy {strategy!r}; valid strategies are {list(EXTRA_STRATEGIES)}")


def prepare_plan(plan: Any, study: Any, store: Any) -> Any:
    """The plan to run: for ``gradient``, one whose space carries the learned per-layer maps; the plan
    itself for every other strategy."""
    if plan.strategy != "gradient":
        return plan
    from slimkit.search.recipes.strategies.gradient import gradient_plan

    return gradient_plan(plan, study, store)
