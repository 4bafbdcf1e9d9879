"""``slimkit demo``: SmolLM2-135M compressed several ways, measured side by side in one run.

Quality is perplexity on held-out Shakespeare plays (test split, 8 chunks × 256 tokens), size is
the bytes of the really saved checkpoint, speed is the median latency of one 128-token forward
pass (and tokens/s) on this CPU, with every variant timed round-robin in one loop. Calibration
(Wanda, GPTQ, mixed, block influence) uses 8 × 256 tokens of the train plays; healing distils from
the untouched model for 30 steps of 128 train-split tokens.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["demo", "VARIANTS"]

_DROP4 = {"drop_layers": {"method": "influence", "n": 4}}
_HEAL = {"distill": {"method": "logit", "temperature": 1.0, "steps": 30, "lr": 1e-4, "optimizer": "adamw",
                     "scheduler": "cosine", "warmup_steps": 5, "clip_norm": 1.0}}

#: (label, recipe) compared against the fp32 baseline; calibration is the Shakespeare train split,
#: training text for healing too, never the held-out test plays
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("magnitude 50%", {"steps": [{"prune": {"method": "magnitude", "sparsity": 0.5, "ignore": ["lm_head"]}}]}),
    ("wanda 2:4", {"steps": [{"prune": {"method": "wanda", "sparsity": 0.5, "pattern": "2:4", "ignore": ["lm_head"]}}]}),
    ("dynamic int8", {"steps": [{"quantize": {"method": "dynamic_int8", "per_channel": True}}]}),
    ("gptq int4 g64", {"steps": [{"quantize": {"method": "gptq", "bits": 4, "group_size": 64}}]}),
    ("mixed 3/4/8-bit, 36% bytes", {"steps": [{"quantize": {"method": "mixed", "group_size": 64,
                                                             "bits_choices": [3, 4, 8], "target_ratio": 0.36}}]}),
    ("drop 4 of 30 blocks", {"steps": [_DROP4]}),
    ("drop 4 + heal (distill 30 steps)", {"steps": [_DROP4, _HEAL]}),
    ("magnitude 50% + int8", {"steps": [
        {"prune": {"method": "magnitude", "sparsity": 0.5, "ignore": ["lm_head"]}},
        {"quantize": {"method": "dynamic_int8", "per_channel": True}},
    ]}),
]

#: healing budget: 30 steps of one 128-token training sequence each
_HEAL_SEQ = 128


def demo(out_dir: str = "slimkit-demo", *, eval_batches: int = 8, progress: bool = True,
         overwrite: bool = False) -> Any:
    """Run the demo and write ``report.{json,md,png}`` into ``out_dir``; returns the Report."""
    import slimkit as sk
    from slimkit.cli.workloads import workload_for
    from slimkit.io.outputs import check_replaceable

    # an existing out_dir is replaced only with overwrite=True and only if slimkit wrote it: checked
    # before minutes of work, not after
    check_replaceable(Path(out_dir).resolve(), overwrite, what="report directory")
    model, tok = sk.zoo.load_model("smollm2-135m")
    work = workload_for("causal-lm", tok, eval_batches=eval_batches)
    train = sk.zoo.load_data("shakespeare", "train", tokenizer=tok, seq_len=_HEAL_SEQ,
                             max_batches=_HEAL["distill"]["steps"])
    work.evaluator.prepare(model) if hasattr(work.evaluator, "prepare") else None
    report = sk.Report(name="SmolLM2-135M on held-out Shakespeare",
                       quality={"name": "perplexity", "higher_is_better": False})
    base = _metrics(model, work)
    rows: list[tuple[str, dict[str, Any], dict[str, Any], list[Any]]] = [("fp32 baseline", base, {}, [])]
    models = {"fp32 baseline": model}
    for label, recipe in VARIANTS:
        result = sk.compress(model, recipe, calib=work.calib, train=train, eval=work.evaluator,
                             example_inputs=work.example_inputs,
                             progress=progress, baseline=base, name=label, latency_runs=0)
        rows.append((label, dict(result.report.after), recipe, result.report.steps))
        models[label] = result.model
    # final latencies: all variants timed round-robin in one loop, so drift hits them alike
    timings = sk.measure.compare_latency(models, work.example_inputs, runs=15)
    for label, metrics, recipe, steps in rows:
        metrics.update(timings[label])
        _add_speed(metrics, work.tokens_per_call)
        report.add_variant(label, metrics, recipe=recipe, steps=steps)
    report.save(out_dir, overwrite=overwrite)
    return report


def _metrics(model: Any, work: Any) -> dict[str, Any]:
    import slimkit as sk

    metrics = sk.measure(model, work.example_inputs, latency=False)
    metrics["quality"] = float(work.evaluator(model))
    return metrics


def _add_speed(metrics: dict[str, Any], tokens: int | None) -> None:
    if tokens and metrics.get("latency_ms"):
        metrics["tokens_per_s"] = tokens / (metrics["latency_ms"] / 1000)
