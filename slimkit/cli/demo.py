"""``slimkit demo``: SmolLM2-135M compressed several ways, measured side by side in one run.

Quality is perplexity on held-out Shakespeare plays (test split, 8 chunks × 256 tokens), size is
the bytes of the really saved checkpoint, speed is the median latency of one 128-token forward
pass (and tokens/s) on this CPU, with every variant timed round-robin in one loop. Later issues append their steps to :data:`VARIANTS`.
"""
from __future__ import annotations

from typing import Any

__all__ = ["demo", "VARIANTS"]

#: (label, recipe) compared against the fp32 baseline
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("magnitude 50%", {"steps": [{"prune": {"method": "magnitude", "sparsity": 0.5, "ignore": ["lm_head"]}}]}),
    ("dynamic int8", {"steps": [{"quantize": {"method": "dynamic_int8", "per_channel": True}}]}),
    ("magnitude 50% + int8", {"steps": [
        {"prune": {"method": "magnitude", "sparsity": 0.5, "ignore": ["lm_head"]}},
        {"quantize": {"method": "dynamic_int8", "per_channel": True}},
    ]}),
]


def demo(out_dir: str = "slimkit-demo", *, eval_batches: int = 8, progress: bool = True) -> Any:
    """Run the demo and write ``report.{json,md,png}`` into ``out_dir``; returns the Report."""
    import slimkit as sk
    from slimkit.cli.workloads import workload_for

    model, tok = sk.zoo.load_model("smollm2-135m")
    work = workload_for("causal-lm", tok, eval_batches=eval_batches)
    work.evaluator.prepare(model) if hasattr(work.evaluator, "prepare") else None
    report = sk.Report(name="SmolLM2-135M on held-out Shakespeare",
                       quality={"name": "perplexity", "higher_is_better": False})
    base = _metrics(model, work)
    rows: list[tuple[str, dict[str, Any], dict[str, Any], list[Any]]] = [("fp32 baseline", base, {}, [])]
    models = {"fp32 baseline": model}
    for label, recipe in VARIANTS:
        result = sk.compress(model, recipe, eval=work.evaluator, example_inputs=work.example_inputs,
                             progress=progress, baseline=base, name=label, latency_runs=0)
        rows.append((label, dict(result.report.after), recipe, result.report.steps))
        models[label] = result.model
    # final latencies: all variants timed round-robin in one loop, so drift hits them alike
    timings = sk.measure.compare_latency(models, work.example_inputs, runs=15)
    for label, metrics, recipe, steps in rows:
        metrics.update(timings[label])
        _add_speed(metrics, work.tokens_per_call)
        report.add_variant(label, metrics, recipe=recipe, steps=steps)
    report.save(out_dir)
    return report


def _metrics(model: Any, work: Any) -> dict[str, Any]:
    import slimkit as sk

    metrics = sk.measure(model, work.example_inputs, latency=False)
    metrics["quality"] = float(work.evaluator(model))
    return metrics


def _add_speed(metrics: dict[str, Any], tokens: int | None) -> None:
    if tokens and metrics.get("latency_ms"):
        metrics["tokens_per_s"] = tokens / (metrics["latency_ms"] / 1000)
