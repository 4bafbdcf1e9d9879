"""Config of ``prune: {method: structured}``."""
from __future__ import annotations

import dataclasses

from slimkit.core.config import StepConfig, check_choice, check_int, check_range, check_str_list
from slimkit.core.errors import ConfigError
from slimkit.measure.latency_table import RUNTIMES as LATENCY_RUNTIMES

__all__ = ["StructuredPruneConfig", "GRANULARITIES", "IMPORTANCES", "GQA_UNITS", "ALLOCATIONS", "LATENCY_RUNTIMES"]

GRANULARITIES = ("channel", "neuron", "head", "layer_width")
ALLOCATIONS = ("uniform", "global", "latency")
IMPORTANCES = ("magnitude", "activation", "taylor")
GQA_UNITS = ("query", "group")


@dataclasses.dataclass
class StructuredPruneConfig(StepConfig):
    """Physically remove whole units, dependency-aware, so the model really gets smaller and faster.

    ```yaml
    - prune: {method: structured, granularity: channel, target_macs: 0.5, importance: magnitude, round_to: 8}
    - prune: {method: structured, granularity: neuron, sparsity: 0.3, importance: activation}
    - prune: {method: structured, granularity: channel, target_macs: 0.5, allocation: global, round_to: 8}
    - prune: {method: structured, granularity: head, sparsity: 0.5, importance: activation}
    - prune: {method: structured, granularity: head, heads: {"encoder.layer.0.attention": [0, 3]}}
    - prune: {method: structured, granularity: layer_width, target_macs: 0.8, round_to: 8}
    - prune: {method: structured, granularity: channel, allocation: latency, target_latency: 0.55, round_to: 8}
    ```
    ``granularity``: ``channel`` (conv filters; BatchNorm, depthwise/grouped convs and residual adds
    follow through Torch-Pruning's dependency graph), ``neuron`` (hidden units of transformer
    MLPs: the up/gate projections' outputs and the down projection's inputs), ``head`` (attention
    heads: a head's query/key/value rows and the output projection's input columns; grouped-query
    attention keeps every KV group the same size, see ``gqa``) or ``layer_width`` (the transformer
    hidden size: embeddings, every norm, every Linear reading or writing the residual stream, tied
    ``lm_head`` kept tied, ``config.hidden_size`` updated).

    Give exactly one of ``sparsity`` (fraction of units removed from every prunable group; heads:
    from every attention layer, at least one head always stays), ``target_macs`` (fraction of the
    step's input MACs to keep; the per-group ratio is found by bisection on measured MACs) or, for
    heads only, ``heads``: an explicit map ``{attention module path: [query head indices]}`` in the
    style of Hugging Face's ``prune_heads`` (removing every head of a layer is an error).
    ``importance``: ``magnitude`` (L2 norm of the group's weights), ``activation`` (mean |output|
    on calibration data; heads: norm of each head's context vector) or ``taylor`` (|w · ∂L/∂w| on
    training batches). ``round_to`` keeps unit counts multiples of that number (kernel-friendly
    widths; not used for heads). ``gqa``: with grouped-query attention, ``query`` removes the same
    number of query heads inside every KV group, ``group`` removes whole KV groups (a KV head with
    its query heads); multi-head attention always removes whole heads. Groups whose units feed the
    model output (classifier, pooler, lm_head) are never pruned by ``channel``/``neuron``; groups
    holding the output head or an embedding stay whole unless ``targets`` names them
    (``layer_width`` resizes them by definition: the hidden size is one group, noted in the report).
    ``allocation`` (channel / neuron): ``uniform`` removes the same fraction from every group;
    ``global`` ranks every unit of every group together by its score divided by its group's mean
    score, so each layer gets its own ratio (at most 90 % removed per group), and the global cut is
    bisected to hit ``target_macs``. ``latency`` (with ``target_latency``, the fraction of the dense
    model's latency to keep as predicted by a per-layer latency table measured on this machine, see
    :mod:`slimkit.measure.latency_table` and :mod:`slimkit.prune.structured.latency`) removes
    ``round_to`` chunks greedily where the least importance is lost per millisecond saved, at most
    75 % of any group; ``latency_runtime`` (``torch-eager``) and ``latency_threads`` (default:
    torch's thread count) say how the table is timed (cached in ``$SLIMKIT_CACHE/latency``).
    Two steps compose: ``head`` with ``target_macs: 0.8`` then ``neuron`` with ``target_macs:
    0.625`` keeps ~0.5 of the MACs (each step's target is relative to its own input).
    """

    method: str = "structured"
    granularity: str = "channel"
    sparsity: float | None = None
    target_macs: float | None = None
    heads: dict[str, list[int]] | None = None
    importance: str = "magnitude"
    round_to: int = 1
    gqa: str = "query"
    allocation: str = "uniform"
    target_latency: float | None = None
    latency_runtime: str = "torch-eager"
    latency_threads: int | None = None
    targets: list[str] | None = None
    ignore: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        check_choice("granularity", self.granularity, GRANULARITIES)
        check_choice("importance", self.importance, IMPORTANCES)
        check_choice("gqa", self.gqa, GQA_UNITS)
        check_choice("allocation", self.allocation, ALLOCATIONS)
        if self.allocation == "global" and self.granularity not in ("channel", "neuron"):
            raise ConfigError(f"allocation = 'global' works with granularity channel or neuron, not {self.granularity!r}")
        self._validate_latency()
        given = [n for n in ("sparsity", "target_macs", "heads", "target_latency") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ConfigError("give exactly one of sparsity (fraction of units removed), target_macs (fraction of MACs "
                              "kept), heads (explicit map, granularity head) or target_latency (allocation latency); "
                              f"got {given or 'none'}")
        if self.sparsity is not None:
            check_range("sparsity", self.sparsity, 0.0, 1.0, hi_open=True)
        if self.target_macs is not None:
            check_range("target_macs", self.target_macs, 0.0, 1.0, lo_open=True)
        if self.heads is not None:
            _check_heads_map(self.heads, self.granularity)
        check_int("round_to", self.round_to, 1, 4096)
        if self.targets is not None:
            check_str_list("targets", self.targets)
        check_str_list("ignore", self.ignore)


    def _validate_latency(self) -> None:
        """``allocation: latency`` and ``target_latency`` go together (channel / neuron only)."""
        check_choice("latency_runtime", self.latency_runtime, LATENCY_RUNTIMES)
        if self.latency_threads is not None:
            check_int("latency_threads", self.latency_threads, 1, 1024)
        if self.allocation == "latency":
            if self.granularity not in ("channel", "neuron"):
                raise ConfigError(f"allocation = 'latency' works with granularity channel or neuron, not {self.granularity!r}")
            if self.target_latency is None:
                raise ConfigError("allocation = 'latency' needs target_latency (fraction of the dense latency to keep, "
                                  "in (0, 1))")
            check_range("target_latency", self.target_latency, 0.0, 1.0, lo_open=True, hi_open=True)
        elif self.target_latency is not None:
            raise ConfigError(f"target_latency = {self.target_latency!r} needs allocation = 'latency', "
                              f"not {self.allocation!r}")


def _check_heads_map(heads: object, granularity: str) -> None:
    """``heads`` must map module paths to non-empty lists of distinct non-negative head indices."""
    if granularity != "head":
        raise ConfigError(f"heads is only valid with granularity 'head', not {granularity!r}")
    if not isinstance(heads, dict) or not heads:
        raise ConfigError(f"heads must be a non-empty mapping {{attention module path: [head indices]}}, got {heads!r}")
    for path, idxs in heads.items():
        if not isinstance(path, str) or not isinstance(idxs, (list, tuple)) or not idxs:
            raise ConfigError(f"heads[{path!r}] must be a non-empty list of head indices, got {idxs!r}")
        if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in idxs) or len(set(idxs)) != len(idxs):
            raise ConfigError(f"heads[{path!r}] = {list(idxs)!r}: indices must be distinct integers >= 0")
