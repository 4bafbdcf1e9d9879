"""Measuring one candidate: run its recipe with ``sk.compress`` and measure what a user would ship.

Metrics of a candidate (and of the input model, the baseline): ``params``; ``bytes`` (the saved
checkpoint, :func:`slimkit.measure.checkpoint_bytes`); ``macs`` when example inputs are given;
``latency_ms`` (median, :func:`slimkit.measure.measure_latency`) when latency is an objective or a
constraint, and ``quality`` when an evaluator is given, both in the runtime the user deploys with:
``torch`` (eager, the default) or ``onnxruntime`` (the candidate exported with
:func:`slimkit.export.export` to a temporary directory and run in an ONNX Runtime CPU session;
``onnx_bytes`` is then the exported file's size). Quality is scored on what ships because the
export can move it: MiniLM with per-token dynamic int8 keeps its worst held-out sentence at cosine
0.9904 in torch but 0.9876 in ONNX Runtime, on the other side of a ``quality >= 0.99`` goal. Steps
that score variants themselves during the recipe (``mixed``'s sensitivity, distillation rungs) still
score the torch model. The search adds ``quality_drop`` and the ``*_ratio`` entries against the
baseline, measured the same way (the input model's own export in ONNX Runtime).
"""
from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["CandidateMeter", "exported_session", "model_fingerprint", "RUNTIMES"]

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
        from slimkit.measure import checkpoint_bytes, count_macs, count_params

        metrics: dict[str, Any] = {"params": count_params(model), "bytes": checkpoint_bytes(model)}
        if self.example_inputs is not None:
            metrics["macs"] = count_macs(model, self.example_inputs)
        if self.runtime == "onnxruntime" and (self.latency or self.evaluator is not None):  # search() checked inputs
            with exported_session(model, self.example_inputs) as session:
                metrics["onnx_bytes"] = session.size_bytes()
                metrics.update(self._score(session))
        else:
            metrics.update(self._score(model))
        return metrics

    def _score(self, runnable: nn.Module) -> dict[str, Any]:
        """Latency (when wanted) and quality of a torch model or an ONNX Runtime session."""
        from slimkit.measure import measure_latency

        out: dict[str, Any] = {}
        if self.latency and self.example_inputs is not None:
            timing = measure_latency(runnable, self.example_inputs, runs=self.latency_runs)
            out.update(latency_ms=float(timing["latency_ms"]), latency_p90_ms=float(timing["latency_p90_ms"]),
                       runtime=str(timing.get("runtime", "torch")))
        if self.evaluator is not None:
            out["quality"] = float(self.evaluator(runnable))  # as sk.compress scores it, so replays agree
        return out


@contextlib.contextmanager
def exported_session(model: nn.Module, example_inputs: Any) -> Iterator[Any]:
    """``model`` exported (as ``slimkit export`` writes it) to a temporary directory and opened in an
    ONNX Runtime CPU session with torch's thread count; the files go when the block ends. A model the
    exporter cannot write raises."""
    from slimkit.export.api import export
    from slimkit.export.ort_model import OrtModel

    with tempfile.TemporaryDirectory(prefix="slimkit-ort-") as tmp:
        session = OrtModel(export(model, Path(tmp) / "candidate", format="onnx", example_inputs=example_inputs))
        try:
            yield session
        finally:
            del session  # the session holds the files open until it is released


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
