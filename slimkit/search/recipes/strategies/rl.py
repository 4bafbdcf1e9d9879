"""``strategy="rl"``: a policy-gradient controller (REINFORCE, as in AMC and ENAS) over a recipe space.

The policy is one softmax per knob over its actions (:class:`~slimkit.search.recipes.strategies.
actions.Actions`: the choices of a categorical knob, the values of a stepped range, or 16 bins of
a wide / continuous range), all logits starting at zero (uniform). The knobs are independent
given the policy (no recurrent controller: ENAS' LSTM conditions each choice on the previous
ones; with the handful of knobs of a recipe space, independent softmaxes learn fast enough).

Reward of a finished trial: minus its score (:func:`slimkit.search.recipes.strategies.history.
scores`), the augmented Chebyshev scalarization of the min-max-normalized objectives with the first
objective (the one ``SearchResult.best`` is ranked by) weighted 1 and the others 0.25 (one fixed
scalarization, as AMC's single reward: the controller converges towards one region of the front
rather than spreading over it); a trial missing a constraint gets a penalty (score 1.1 plus its
misses, below every feasible trial) and a failed one (a knob combination a step refused) a larger
penalty, so the controller learns to avoid both.

Update: before every trial the controller is rebuilt from the study by replaying REINFORCE over
its finished trials in trial-number order: ``logits[a] += lr * (r - b) / sd * (1[a] - softmax)``
for each knob the trial used, with ``b`` a moving-average baseline (``b <- decay * b + (1 - decay)
* r``) and ``sd`` the standard deviation of all rewards. For one worker this is exactly the online
update (the rewards' normalization aside, which uses the current min/max); with several workers or
a resumed study every worker rebuilds the same controller from the same trials, which makes the
strategy work across processes and restarts. Trials sampled by an older policy are replayed as if
on-policy (no importance weights), as asynchronous REINFORCE commonly does. Sampling mixes the
softmax with ``epsilon`` of uniform exploration.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from slimkit.core.errors import ConfigError
from slimkit.search.recipes.strategies.actions import Actions
from slimkit.search.recipes.strategies.base import Proposal, ProposalSampler
from slimkit.search.recipes.strategies.history import scored_trials, scores

__all__ = ["PolicyGradientSampler", "Policy", "objective_weights", "FIRST_WEIGHT_RATIO"]

#: weight of every other objective relative to the first one in the reward
FIRST_WEIGHT_RATIO = 0.25


def objective_weights(n_objectives: int) -> np.ndarray:
    """Reward weights: the first objective (the one that ranks ``SearchResult.best``) 1, the others
    ``FIRST_WEIGHT_RATIO``, normalized to sum 1."""
    w = np.full(n_objectives, FIRST_WEIGHT_RATIO)
    w[0] = 1.0
    return w / w.sum()


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def _dist_key(name: str, dist: Any) -> str:
    return f"{name}|{dist!r}"


class Policy(Proposal):
    """Softmax logits per knob (keyed by name and distribution); draws every knob from them."""

    def __init__(self, logits: dict[str, np.ndarray], epsilon: float, rng: np.random.Generator) -> None:
        super().__init__({}, rng)
        self.logits, self.epsilon = logits, epsilon

    def probabilities(self, name: str, dist: Any) -> np.ndarray:
        n = Actions(dist).n
        logits = self.logits.get(_dist_key(name, dist))
        p = _softmax(logits) if logits is not None and len(logits) == n else np.full(n, 1.0 / n)
        return (1.0 - self.epsilon) * p + self.epsilon / n

    def draw(self, name: str, dist: Any) -> Any:
        actions = Actions(dist)
        p = self.probabilities(name, dist)
        return actions.value(int(self.rng.choice(actions.n, p=p / p.sum())), self.rng)


class PolicyGradientSampler(ProposalSampler):
    """Seeded REINFORCE controller over a recipe space's knobs; see the module docstring."""

    salt = 2

    def __init__(self, seed: int, *, lr: float = 1.0, baseline_decay: float = 0.9, epsilon: float = 0.05) -> None:
        super().__init__(seed)
        for name, value, lo, hi in (("lr", lr, 0.0, 100.0), ("baseline_decay", baseline_decay, 0.0, 1.0),
                                    ("epsilon", epsilon, 0.0, 1.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value < hi or \
                    (name == "lr" and value == 0):
                raise ConfigError(f"rl {name} = {value!r} must be a number in {'(' if name == 'lr' else '['}{lo}, {hi})")
        self.lr, self.decay, self.epsilon = float(lr), float(baseline_decay), float(epsilon)

    def propose(self, study: Any, number: int, rng: np.random.Generator) -> Proposal:
        return Policy(self.learn(study), self.epsilon, rng)

    def learn(self, study: Any) -> dict[str, np.ndarray]:
        """The controller's logits after replaying REINFORCE over the study's finished trials."""
        history = scored_trials(study, include_failed=True)
        logits: dict[str, np.ndarray] = {}
        if len(history) < 2:
            return logits
        rewards = -scores(history, objective_weights(len(study.directions)))
        sd = float(rewards.std()) or 1.0
        baseline = float(rewards[0])
        known: dict[str, Actions] = {}
        for trial, reward in zip(history, rewards):
            advantage = (float(reward) - baseline) / sd
            for name, value in trial.params.items():
                dist = trial.distributions[name]
                key = _dist_key(name, dist)
                actions = known.get(key) or known.setdefault(key, Actions(dist))
                theta = logits.setdefault(key, np.zeros(actions.n))
                grad = -_softmax(theta)
                grad[actions.index(value)] += 1.0
                theta += self.lr * advantage * grad
            baseline = self.decay * baseline + (1.0 - self.decay) * float(reward)
        return logits
