"""Measuring models: size, MACs, latency, and quality evaluators.

``measure(model, example_inputs)`` gives the size/compute/speed dictionary the runner records;
the evaluators (:class:`Perplexity`, :class:`Accuracy`, :class:`CosineFidelity`,
:class:`Agreement`, :class:`TopKAgreement`, or any ``model -> float`` callable via :func:`as_evaluator`) score quality.
"""
from __future__ import annotations

from slimkit.measure.api import measure
from slimkit.measure.latency import compare_latency, measure_latency
from slimkit.measure.macs import count_macs
from slimkit.measure.quality import (
    Accuracy,
    Agreement,
    CosineFidelity,
    Evaluator,
    Perplexity,
    TopKAgreement,
    as_evaluator,
)
from slimkit.measure.size import checkpoint_bytes, count_nonzero, count_params

__all__ = [
    "measure",
    "count_params",
    "count_nonzero",
    "checkpoint_bytes",
    "count_macs",
    "measure_latency",
    "compare_latency",
    "Evaluator",
    "Perplexity",
    "Accuracy",
    "CosineFidelity",
    "Agreement",
    "TopKAgreement",
    "as_evaluator",
]


class _CallableModule(__import__("types").ModuleType):
    """``slimkit.measure`` is both this package and, as ``sk.measure(model, inputs)``, a function.

    Making the module itself callable keeps ``sk.measure(...)``, ``sk.measure.Perplexity`` and
    ``import slimkit.measure.api`` all working (a plain function would shadow the subpackage).
    """

    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return measure(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
