"""The Optuna sampler shape shared by ``evolution`` and ``rl``: one proposal per trial, made from the
study's history just before the trial samples its knobs.

Recipe spaces are conditional (a knob exists only ``when`` another has some value), so the samplers
work knob by knob (Optuna's *independent* sampling): :meth:`ProposalSampler.before_trial` (called
by ``study.ask()``) builds a :class:`Proposal` for the trial, and each knob the trial asks for is
answered from it; a knob the proposal has no valid value for (one that only became active through a
mutation, say) is drawn by :meth:`Proposal.draw` (the strategy's own policy, uniform by default).
Proposals are seeded per trial (strategy seed, trial number), so a trial's candidate depends only on
the seed and the history it saw.
"""
from __future__ import annotations

import abc
from typing import Any

import numpy as np
from optuna.samplers import BaseSampler

from slimkit.search.recipes.strategies.history import fits, trial_rng, uniform_value

__all__ = ["Proposal", "ProposalSampler"]


class Proposal:
    """Values chosen for one trial (``values``) and its random stream; :meth:`draw` fills in the rest."""

    def __init__(self, values: dict[str, Any], rng: np.random.Generator) -> None:
        self.values, self.rng = values, rng

    def draw(self, name: str, dist: Any) -> Any:
        return uniform_value(dist, self.rng)


class ProposalSampler(BaseSampler):
    """Base of the history-driven samplers: an ``optuna.samplers.BaseSampler`` answering from proposals."""

    #: tells the random streams of different strategies apart
    salt = 0

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._proposals: dict[int, Proposal] = {}

    @abc.abstractmethod
    def propose(self, study: Any, number: int, rng: np.random.Generator) -> Proposal:
        """The proposal of trial ``number``, from the study's finished trials."""

    # -- optuna.samplers.BaseSampler
    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return {}

    def before_trial(self, study: Any, trial: Any) -> None:
        self._proposals[trial.number] = self.propose(study, trial.number, trial_rng(self.seed, trial.number, self.salt))

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        proposal = self._proposals.get(trial.number)
        if proposal is None:  # a trial this sampler did not see start (e.g. created by another process)
            proposal = self.propose(study, trial.number, trial_rng(self.seed, trial.number, self.salt))
            self._proposals[trial.number] = proposal
        value = proposal.values.get(param_name)
        if param_name in proposal.values and fits(param_distribution, value):
            return value
        return proposal.draw(param_name, param_distribution)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._proposals.pop(trial.number, None)

    def reseed_rng(self) -> None:
        """Nothing to reseed: every trial's stream is derived from (seed, trial number)."""
