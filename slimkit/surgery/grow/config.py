"""Config of ``grow``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_choice, check_int, check_range, check_str_list
from slimkit.core.errors import ConfigError

__all__ = ["GrowConfig"]


@dataclasses.dataclass
class GrowConfig(StepConfig):
    """Grow a model without changing its function (Net2Net), before training or distillation.

    ```yaml
    - grow: {method: wider, factor: 1.5}                    # every hidden width x1.5
    - grow: {method: wider, factor: 2.0, pairs: [[fc1, fc2]]}
    - grow: {method: deeper, n: 2}                          # 2 identity blocks, spread over the stack
    - grow: {method: deeper, after: [3, 7]}                 # an identity copy after blocks 3 and 7
    ```
    ``wider`` duplicates randomly chosen hidden units of a producer Linear (rows of its weight)
    and divides the consumer's matching input columns by each unit's copy count, so the output is
    unchanged. Pairs are found automatically in gated MLPs (``gate_proj``/``up_proj`` →
    ``down_proj``), BERT layers (``intermediate.dense`` → ``output.dense``) and
    Linear → elementwise activation → Linear chains (torch.fx or ``nn.Sequential``), or named
    with ``pairs`` (you assert that only an elementwise function sits between). ``targets`` /
    ``ignore`` filter by producer name. ``noise`` (std relative to each weight row) breaks the
    symmetry of copies at the price of exactness.

    ``deeper`` inserts copies of existing blocks whose residual branch is zeroed (Llama-style
    ``o_proj`` / ``down_proj``; an inverted residual's last BatchNorm), so each new block is the
    identity. ``zero`` names the block-relative modules to zero for other residual blocks.
    """

    method: str = "wider"
    factor: float = 2.0
    pairs: list[list[str]] | None = None
    noise: float = 0.0
    seed: int = 0
    n: int | None = None
    after: list[int] | None = None
    zero: list[str] | None = None
    container: str | None = None
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        check_choice("method", self.method, ["wider", "deeper"])
        check_range("factor", self.factor, 1.0, 16.0, lo_open=True)
        check_range("noise", self.noise, 0.0, 1.0)
        check_int("seed", self.seed)
        if self.pairs is not None:
            if not isinstance(self.pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in self.pairs):
                raise ConfigError(f"pairs must be a list of [producer, consumer] name pairs, got {self.pairs!r}")
            for p in self.pairs:
                check_str_list("pairs[]", p)
        if self.method == "deeper" and (self.n is None) == (self.after is None):
            raise ConfigError("grow: deeper needs exactly one of n (how many blocks) or after (block indices)")
        if self.n is not None:
            check_int("n", self.n, 1, 1000)
        if self.after is not None:
            if not isinstance(self.after, list) or not self.after:
                raise ConfigError(f"after must be a non-empty list of block indices, got {self.after!r}")
            for a in self.after:
                check_int("after[]", a, 0)
        if self.zero is not None:
            check_str_list("zero", self.zero)
        if self.container is not None and not isinstance(self.container, str):
            raise ConfigError(f"container must be a module path string, got {self.container!r}")
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)
