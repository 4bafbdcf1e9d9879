"""Config of ``search: {method: evolution}``."""
from __future__ import annotations

import dataclasses
from typing import Any

from slimkit.core.config import StepConfig, check_choice, check_int, check_range
from slimkit.core.errors import ConfigError

__all__ = ["EvolutionSearchConfig", "SEARCHABLE_STEPS"]

#: wrapped steps the evolution search can allocate levels for
SEARCHABLE_STEPS = ("prune", "quantize", "drop_layers")


@dataclasses.dataclass
class EvolutionSearchConfig(StepConfig):
    """Per-layer levels of a wrapped step, searched by evolution under its exact global budget.

    ```yaml
    - search:
        method: evolution
        step: {prune: {method: sparsegpt, sparsity: 0.7}}
        generations: 200          # stop after this many generations ...
        budget_s: 900             # ... or after this many wall seconds, or on Ctrl-C
        offspring: 32             # candidates made by level-switch mutation each generation
        selection: [[4, 512], [1, 2048]]   # [survivors, calibration tokens] per selection stage
        levels: 4                 # sparsity: levels on each side of the target ...
        level_step: 0.05          # ... this far apart (clipped to [0, 0.95])
        fitness_holdout: 0        # calibration batches only the fitness sees (0: all shared, EvoPress)
        seed: 0
    ```
    Fitness is the KL divergence of the candidate's next-token distribution to the input model's
    on calibration tokens (``fitness: kl``; ``mse`` on plain tensor outputs; ``auto`` picks KL when
    the output has ``logits``). Stage ``k`` scores the pool on a fresh random draw of ``tokens``
    calibration tokens and keeps the best ``survivors``; the parent joins the last stage (elitism),
    whose single survivor is the next parent. The draws come from every calibration token the
    fitness has (``max_calib_tokens`` caps that pool: the input model's log-probabilities are kept
    as float16, vocabulary × 2 bytes per token). The step ends by running the wrapped step normally
    with the found per-layer map, and the result's recipe holds that step instead of this one.

    ``levels`` means, per wrapped step: prune: levels on each side of the target (int, default 4);
    quantize: the candidate bit widths (list, the level space's default when omitted); drop_layers:
    unused. ``level_storage`` keeps the level database in memory or spills it to a temporary
    directory of safetensors files (``auto``: disk above ``memory_limit_mb``).

    ``database: sequential`` (default) computes block ``k``'s levels on the inputs that blocks
    ``0..k-1`` give at their *uniform* level, as the wrapped step's own block-by-block run does, so
    the uniform assignment of the database is the wrapped step's model and the search starts from
    it; ``dense`` computes every level from the uncompressed model's inputs (EvoPress's database).
    Measured on SmolLM2 at 70 % SparseGPT: the dense database's uniform model has held-out
    perplexity 115.5 where the sequential step reaches 76.9, and an allocation found on the dense
    database (81.3 there) re-ran sequentially to 73.9 only.

    ``fitness_holdout: k`` keeps the last ``k`` calibration batches away from the level database
    (they feed the fitness only; the level database reads the others). With few
    calibration tokens a level can fit its calibration text far better than new text (GPTQ at 2
    bits on 1.5k tokens does), and a fitness on that same text then prefers it; held-out batches
    judge it as it will generalize. The final run of the found step still calibrates on every batch.
    """

    method: str = "evolution"
    step: dict[str, Any] = dataclasses.field(default_factory=dict)
    generations: int = 100
    offspring: int = 16
    selection: list[list[int]] = dataclasses.field(default_factory=lambda: [[4, 512], [1, 2048]])
    levels: Any = None
    level_step: float | None = None
    budget_s: float | None = None
    seed: int = 0
    max_calib_tokens: int | None = None
    fitness: str = "auto"
    level_storage: str = "auto"
    memory_limit_mb: int = 1024
    fitness_holdout: int = 0
    database: str = "sequential"

    def validate(self) -> None:
        self._check_step()
        check_int("generations", self.generations, 1, 10**7)
        check_int("offspring", self.offspring, 1, 4096)
        self._check_selection()
        if self.level_step is not None:
            check_range("level_step", self.level_step, 0.0, 1.0, lo_open=True, hi_open=True)
        if self.budget_s is not None:
            check_range("budget_s", self.budget_s, 0.0, None, lo_open=True)
        check_int("seed", self.seed, 0, 2**32 - 1)
        if self.max_calib_tokens is not None:
            check_int("max_calib_tokens", self.max_calib_tokens, 1, 10**9)
        check_choice("fitness", self.fitness, ["auto", "kl", "mse"])
        check_choice("level_storage", self.level_storage, ["auto", "memory", "disk"])
        check_int("memory_limit_mb", self.memory_limit_mb, 1, 10**7)
        check_int("fitness_holdout", self.fitness_holdout, 0, 10**6)
        check_choice("database", self.database, ["sequential", "dense"])

    def _check_step(self) -> None:
        if not isinstance(self.step, dict) or len(self.step) != 1:
            raise ConfigError(f"step must be a one-key mapping of the searched step, e.g. "
                              f"{{prune: {{method: wanda, sparsity: 0.5}}}}, got {self.step!r}; "
                              f"valid wrapped steps are {list(SEARCHABLE_STEPS)}")
        (name,) = self.step
        if name not in SEARCHABLE_STEPS:
            raise ConfigError(f"step = {name!r} cannot be searched; valid wrapped steps are {list(SEARCHABLE_STEPS)}")
        from slimkit.core.recipe import Recipe
        from slimkit.search.space import space_factory

        try:
            wrapped = Recipe.from_dict([self.step]).steps[0]
        except ConfigError as exc:
            raise ConfigError(f"step: {exc}") from None
        space_factory(wrapped.name, wrapped.method)

    def _check_selection(self) -> None:
        stages = self.selection
        shape_ok = isinstance(stages, (list, tuple)) and stages and all(
            isinstance(s, (list, tuple)) and len(s) == 2 for s in stages)
        if not shape_ok:
            raise ConfigError(f"selection must be a non-empty list of [survivors, tokens] pairs, got {stages!r}")
        previous = self.offspring + 1
        for i, (survivors, tokens) in enumerate(stages):
            check_int(f"selection[{i}] survivors", survivors, 1, previous)
            check_int(f"selection[{i}] tokens", tokens, 1, 10**9)
            previous = survivors
        if stages[-1][0] != 1:
            raise ConfigError(f"selection[-1] survivors = {stages[-1][0]!r}: the last stage must keep exactly 1 "
                              f"(the next parent)")

    def split_calibration(self, calib: list[Any]) -> tuple[list[Any], list[Any]]:
        """``(database batches, fitness batches)``: the last ``fitness_holdout`` batches for the
        fitness alone, or every batch for both when it is 0."""
        k = self.fitness_holdout
        if k == 0:
            return calib, calib
        if k >= len(calib):
            raise ConfigError(f"fitness_holdout = {k!r} leaves no calibration batch for the level database: the run "
                              f"has {len(calib)} calibration batches; valid range is [0, {len(calib) - 1}]")
        return calib[:-k], calib[-k:]

    def wrapped_step(self) -> Any:
        """The validated wrapped step (:class:`slimkit.core.recipe.Step`)."""
        from slimkit.core.recipe import Recipe

        return Recipe.from_dict([self.step]).steps[0]

    def pool_tokens(self) -> int | None:
        """Calibration tokens the fitness keeps reference outputs for, the pool every stage draws
        from: all of them (``None``), or the first ``max_calib_tokens``. A pool no larger than one
        stage would score every generation on the same tokens, and a long search then fits them."""
        return self.max_calib_tokens
