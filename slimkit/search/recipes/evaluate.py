"""Measuring one candidate: run its recipe with ``sk.compress`` and measure what a user would ship.

Metrics of a candidate (and of the input model, the baseline): ``params``; ``bytes`` (the saved
checkpoint, :func:`slimkit.measure.checkpoint_bytes`); ``macs`` when example inputs are given;
``latency_ms`` (median, :func:`slimkit.measure.measure_latency`) when latency is an objective or a
constraint, in the runtime the user deploys with: ``torch`` (eager, the default) or ``onnxruntime``
(the candidate exported with :func:`slimkit.export.export` to a temporary directory and timed in an
ONNX Runtime CPU session; ``onnx_bytes`` is then the exported file's size); ``quality`` when an
evaluator is given (always on the torch model, which is what the recipe replays). The search adds
``quality_drop`` and the ``*_ratio`` entries against the baseline, measured the same way.
"""
from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["CandidateMeter", "model_fingerprint", "onnxruntime_latency", "RUNTIMES"]

#: where candidate latency can be measured
RUNTIMES = ("torch", "onnxruntime")


class CandidateMeter:
    """Callable ``recipe dict -> metrics``; also measures the input model (:meth:`baseline`)."""

    def __init__(self, model: nn.Module, *, calib: Iterable[Any] | None, evaluator: Any, example_inputs: Any,
                 latency: bool, latency_runs: int = 20, train: Any = None, teacher: nn.Module | None = None,
                 runtime: str = "torch") -> None:
        self.model, self.calib, self.evaluator, self.runtime = model, calib, evaluator, runtime
        self.example_inputs, self.latency, self.latency_runs = example_inputs, latency, latency_runs
        self.train, self.teacher = train, teacher
        self._prepared = False

    def _prepare(self) -> None:
        if not self._prepared and self.evaluator is not None and hasattr(self.evaluator, "prepare"):
            self.evaluator.prepare(self.model)  # reference outputs of the input model (fidelity evaluators)
        self._prepared = True

    def baseline(self) -> dict[str, Any]:
        self._prepare()
        return self.measure(self.model)

    def build(self, recipe: dict[str, Any]) -> nn.Module:
        """The candidate's model (``sk.compress`` of the input model with ``recipe``)."""
        from slimkit.core.recipe import Recipe
        from slimkit.core.runner import compress

        plan = Recipe.from_dict(recipe)
        evaluator = self.evaluator if "eval" in plan.needs() else None  # steps that score variants themselves
        result = compress(self.model, plan, calib=self.calib, eval=evaluator, example_inputs=self.example_inputs,
                          train=self.train, teacher=self.teacher, progress=False, measure=False)
        return result.model

    def __call__(self, recipe: dict[str, Any]) -> dict[str, Any]:
        self._prepare()
        return self.measure(self.build(recipe))

    def measure(self, model: nn.Module) -> dict[str, Any]:
        from slimkit.measure import checkpoint_bytes, count_macs, count_params, measure_latency

        metrics: dict[str, Any] = {"params": count_params(model), "bytes": checkpoint_bytes(model)}
        if self.example_inputs is not None:
            metrics["macs"] = count_macs(model, self.example_inputs)
            if self.latency:
                timer = onnxruntime_latency if self.runtime == "onnxruntime" else measure_latency
                timing = timer(model, self.example_inputs, runs=self.latency_runs)
                if "onnx_bytes" in timing:
                    metrics["onnx_bytes"] = int(timing["onnx_bytes"])
                metrics["latency_ms"] = float(timing["latency_ms"])
                metrics["latency_p90_ms"] = float(timing["latency_p90_ms"])
                metrics["runtime"] = str(timing.get("runtime", "torch"))
        if self.evaluator is not None:
            metrics["quality"] = float(self.evaluator(model))  # as sk.compress scores it, so replays agree
        return metrics


def onnxruntime_latency(model: nn.Module, example_inputs: Any, *, runs: int = 20) -> dict[str, Any]:
    """Latency of ``model`` in ONNX Runtime: exported (as ``slimkit export`` writes it) to a temporary
    directory, opened in a CPU session with torch's thread count, timed with the same protocol as
    torch eager. Adds ``onnx_bytes`` (the exported files). A model the exporter cannot write raises."""
    from slimkit.export.api import export
    from slimkit.export.ort_model import OrtModel
    from slimkit.measure import measure_latency

    with tempfile.TemporaryDirectory(prefix="slimkit-latency-") as tmp:
        path = export(model, Path(tmp) / "candidate", format="onnx", example_inputs=example_inputs)
        session = OrtModel(path)
        timing = measure_latency(session, example_inputs, runs=runs)
        timing["onnx_bytes"] = session.size_bytes()
        del session  # the session holds the files open until it is released
    return timing


def model_fingerprint(model: nn.Module) -> str:
    """A hash of the input model's tensors, so a resumed study refuses a different model."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        t = tensor.detach().cpu()
        t = (t.int_repr() if t.is_quantized else t).contiguous()
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]
