"""``strategy="evolution"``: an elitist evolutionary search over the knobs of a recipe space.

The same design as the per-layer allocation search (:mod:`slimkit.search.evolution.core`,
EvoPress): an elitist population, children made from one parent by a few *switches*, the number
of switches ``min`` of two uniform draws from 1..3 (one switch most likely). What differs, and why
no operator is shared as code: EvoPress' level switches move one unit up and another down with
exactly opposite costs, to keep a global budget; recipe knobs (methods, bits, group sizes,
sparsities of different steps) have no common budget, so a switch here changes *one* knob: a
categorical knob takes another choice, a range moves by a Gaussian jump (at least one grid step).
And EvoPress' ``evolve`` is a synchronous loop over a cheap fitness, while recipe candidates are
trials of a shared, resumable Optuna study, so the evolution runs as an Optuna sampler, one child
per trial:

1. the first ``n_startup`` trials are drawn uniformly (the initial population);
2. afterwards, each trial draws objective weights (uniform on the simplex), scores every complete
   trial with them (:func:`slimkit.search.recipes.strategies.history.scores`: feasible trials by
   their scalarized objectives, trials missing a constraint below all feasible ones), takes the
   ``elite`` best as the population (elitism: the best trials are never lost), picks the parent by
   a tournament of ``tournament`` elite members, and switches 1-3 of its knobs;
3. a child equal to a trial already in the study is re-drawn (up to ``_RETRIES`` times), so the
   budget is not spent on cached repeats.

Knobs that a switch makes active (a new method's options) are drawn uniformly. Random weights per
child spread the population along the whole Pareto front when there are several objectives.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.core.errors import ConfigError
from slimkit.search.recipes.strategies.actions import Actions
from slimkit.search.recipes.strategies.base import Proposal, ProposalSampler
from slimkit.search.recipes.strategies.history import params_key, random_weights, scored_trials, scores

__all__ = ["EvolutionSampler"]

_RETRIES = 30


class EvolutionSampler(ProposalSampler):
    """Seeded elitist evolution over a recipe space's knobs; see the module docstring."""

    salt = 1

    def __init__(self, seed: int, *, n_startup: int = 10, elite: int = 3, tournament: int = 3,
                 max_switches: int = 3, crossover: float = 0.0) -> None:
        super().__init__(seed)
        for name, value, low in (("n_startup", n_startup, 1), ("elite", elite, 1), ("tournament", tournament, 1),
                                 ("max_switches", max_switches, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"evolution {name} = {value!r} must be an integer >= {low}")
        if isinstance(crossover, bool) or not isinstance(crossover, (int, float)) or not 0.0 <= crossover <= 1.0:
            raise ConfigError(f"evolution crossover = {crossover!r} must be a probability in [0, 1]")
        self.n_startup, self.elite, self.tournament, self.max_switches = n_startup, elite, tournament, max_switches
        self.crossover = float(crossover)

    def propose(self, study: Any, number: int, rng: np.random.Generator) -> Proposal:
        history = scored_trials(study)
        if len(history) < self.n_startup:
            return Proposal({}, rng)
        score = scores(history, random_weights(rng, len(study.directions)))
        elite = np.argsort(score, kind="stable")[: self.elite]
        parent = self._tournament(history, score, elite, rng)
        other = self._tournament(history, score, elite, rng) if self.crossover > 0 else parent
        seen = {params_key(t.params) for t in study.get_trials(deepcopy=False) if t.params}
        child = dict(parent.params)
        for _ in range(_RETRIES):
            child = self._mutate(parent, other, rng)
            if params_key(child) not in seen:
                break
        return Proposal(child, rng)

    def _tournament(self, history: list[Any], score: np.ndarray, elite: np.ndarray, rng: np.random.Generator) -> Any:
        entrants = rng.choice(elite, size=min(self.tournament, len(elite)), replace=False)
        return history[int(min(entrants, key=lambda i: (score[i], i)))]

    def _mutate(self, parent: Any, other: Any, rng: np.random.Generator) -> dict[str, Any]:
        child = dict(parent.params)
        if rng.random() < self.crossover:  # uniform crossover: each shared knob from either parent
            for name in sorted(set(child) & set(other.params)):
                if rng.random() < 0.5 and parent.distributions[name] == other.distributions[name]:
                    child[name] = other.params[name]
        names = sorted(child)
        switches = min(int(rng.integers(1, self.max_switches + 1)), int(rng.integers(1, self.max_switches + 1)))
        for name in rng.choice(names, size=min(switches, len(names)), replace=False):
            child[str(name)] = Actions(parent.distributions[str(name)]).neighbour(child[str(name)], rng)
        return child
