"""``slimkit demo``: SmolLM2-135M compressed several ways, measured side by side in one run.

Quality is perplexity on held-out Shakespeare plays (test split, 8 chunks × 256 tokens), size is
the bytes of the really saved checkpoint (of the ``.onnx`` for the ONNX Runtime rows), speed is the
median latency of one 128-token forward pass (prefill tokens/s) with every variant timed
round-robin in one loop, and the decode tokens/s of greedy generation of 32 tokens with a KV cache.
The dynamic int8 and GPTQ int4 variants are also exported with ``sk.export`` and run by ONNX
Runtime (integer GEMMs / MatMulNBits), where they are really faster. Calibration
(Wanda, GPTQ, mixed, block influence) uses 8 × 256 tokens of the train plays; healing distils from
the untouched model for 30 steps of 128 train-split tokens.

``slimkit demo --tiny`` runs the same variants, splits and measurements on a random 4-block Llama
over UTF-8 byte tokens of the same plays, 64-token chunks (seconds, not minutes): the end-to-end smoke test.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["demo", "variants", "VARIANTS", "DemoSetup", "TINY", "ByteTokenizer"]


def variants(n_blocks: int, drop: int, heal_steps: int) -> list[tuple[str, dict[str, Any]]]:
    """The demo's (label, recipe) pairs for a model of ``n_blocks`` decoder blocks: ``drop`` of them
    are removed by block influence, then healed by ``heal_steps`` steps of distillation."""
    drop_step = {"drop_layers": {"method": "influence", "n": drop}}
    heal = {"distill": {"method": "logit", "temperature": 1.0, "steps": heal_steps, "lr": 1e-4, "optimizer": "adamw",
                        "scheduler": "cosine", "warmup_steps": min(5, heal_steps - 1), "clip_norm": 1.0}}
    magnitude = {"prune": {"method": "magnitude", "sparsity": 0.5, "ignore": ["lm_head"]}}
    int8 = {"quantize": {"method": "dynamic_int8", "per_channel": True}}
    return [
        ("magnitude 50%", {"steps": [magnitude]}),
        ("wanda 2:4", {"steps": [{"prune": {"method": "wanda", "sparsity": 0.5, "pattern": "2:4",
                                            "ignore": ["lm_head"]}}]}),
        ("dynamic int8", {"steps": [int8]}),
        ("gptq int4 g64", {"steps": [{"quantize": {"method": "gptq", "bits": 4, "group_size": 64}}]}),
        ("mixed 3/4/8-bit, 27% bytes", {"steps": [{"quantize": {"method": "mixed", "group_size": 64,
                                                                 "bits_choices": [3, 4, 8], "target_ratio": 0.27}}]}),
        (f"drop {drop} of {n_blocks} blocks", {"steps": [drop_step]}),
        (f"drop {drop} + heal (distill {heal_steps} steps)", {"steps": [drop_step, heal]}),
        ("magnitude 50% + int8", {"steps": [magnitude, int8]}),
    ]


#: (label, recipe) compared against the fp32 baseline on SmolLM2-135M (30 blocks); calibration is
#: the Shakespeare train split, training text for healing too, never the held-out test plays
VARIANTS: list[tuple[str, dict[str, Any]]] = variants(30, 4, 30)


@dataclasses.dataclass(frozen=True)
class DemoSetup:
    """What a demo run measures: the model, the token counts of its data, and the variants."""

    name: str
    #: tokens per calibration / held-out chunk; healing sequences; tokens of the latency input
    seq_len: int
    heal_seq: int
    latency_tokens: int
    calib_batches: int
    n_blocks: int
    drop: int
    heal_steps: int
    latency_runs: int


#: SmolLM2-135M: 8 x 256 calibration tokens, 30 healing steps of 128 tokens, 128-token latency
FULL = DemoSetup("SmolLM2-135M", seq_len=256, heal_seq=128, latency_tokens=128, calib_batches=8,
                 n_blocks=30, drop=4, heal_steps=30, latency_runs=15)
#: ``--tiny``: the same pipeline on a randomly initialised 4-block Llama over byte tokens of a few
#: 64-token chunks of the same Shakespeare splits; seconds instead of minutes (a smoke run: its
#: perplexities are those of an untrained model)
TINY = DemoSetup("tiny random Llama (4 blocks)", seq_len=64, heal_seq=32, latency_tokens=32, calib_batches=2,
                 n_blocks=4, drop=2, heal_steps=4, latency_runs=3)


def demo(out_dir: str = "slimkit-demo", *, eval_batches: int = 8, progress: bool = True, tiny: bool = False,
         overwrite: bool = False) -> Any:
    """Run the demo and write ``report.{json,md,png}`` into ``out_dir``; returns the Report.

    ``tiny``: the same variants, data splits and measurements on :data:`TINY` (a random
    4-block Llama), so the whole path runs end to end in seconds.
    """
    import slimkit as sk
    from slimkit.cli.workloads import workload_for
    from slimkit.io.outputs import check_replaceable

    # an existing out_dir is replaced only with overwrite=True and only if slimkit wrote it: checked
    # before minutes of work, not after
    check_replaceable(Path(out_dir).resolve(), overwrite, what="report directory")

    setup = TINY if tiny else FULL
    model, tok = _tiny_model() if tiny else sk.zoo.load_model("smollm2-135m")
    work = workload_for("causal-lm", tok, seq_len=setup.seq_len, eval_batches=eval_batches,
                        calib_batches=setup.calib_batches, latency_tokens=setup.latency_tokens)
    train = sk.zoo.load_data("shakespeare", "train", tokenizer=tok, seq_len=setup.heal_seq,
                             max_batches=setup.heal_steps)
    work.evaluator.prepare(model) if hasattr(work.evaluator, "prepare") else None
    report = sk.Report(name=f"{setup.name} on held-out Shakespeare",
                       quality={"name": "perplexity", "higher_is_better": False})
    base = _metrics(model, work)
    rows: list[tuple[str, dict[str, Any], dict[str, Any], list[Any]]] = [("fp32 baseline", base, {}, [])]
    models = {"fp32 baseline": model}
    for label, recipe in variants(setup.n_blocks, setup.drop, setup.heal_steps):
        result = sk.compress(model, recipe, calib=work.calib, train=train, eval=work.evaluator,
                             example_inputs=work.example_inputs,
                             progress=progress, baseline=base, name=label, latency_runs=0)
        rows.append((label, dict(result.report.after), recipe, result.report.steps))
        models[label] = result.model
    with tempfile.TemporaryDirectory(prefix="slimkit-demo-onnx-") as exports:
        for label in ORT_VARIANTS:  # the same compressed models, run by ONNX Runtime
            ort_label, ort_model, metrics = _onnx_variant(label, models[label], rows, Path(exports), work)
            rows.append((ort_label, metrics, rows_recipe(rows, label), []))
            models[ort_label] = ort_model
        # final latencies: all variants timed round-robin in one loop, so drift hits them alike
        timings = sk.measure.compare_latency(models, work.example_inputs, runs=setup.latency_runs)
        prompt = work.example_inputs["input_ids"][:1, :DECODE_PROMPT]
        for label, metrics, recipe, steps in rows:
            metrics.update(timings[label])
            _add_speed(metrics, work.tokens_per_call)
            metrics["decode_tokens_per_s"] = _decode_speed(models[label], prompt)
            report.add_variant(label, metrics, recipe=recipe, steps=steps)
    report.save(out_dir, overwrite=overwrite)
    return report


#: torch variants also exported to ONNX Runtime (MatMulNBits / integer GEMMs, KV cache)
ORT_VARIANTS = ("dynamic int8", "gptq int4 g64")
#: greedy decoding after a prompt of this many held-out tokens
DECODE_PROMPT, DECODE_TOKENS = 16, 32


def rows_recipe(rows: list[tuple[str, dict[str, Any], dict[str, Any], list[Any]]], label: str) -> dict[str, Any]:
    return next(recipe for lab, _, recipe, _ in rows if lab == label)


def _onnx_variant(label: str, model: Any, rows: list[Any], exports: Path, work: Any) -> tuple[str, Any, dict[str, Any]]:
    """Export a compressed variant with ``sk.export`` and measure the .onnx like the others: bytes of
    the exported file, held-out perplexity computed from ORT's logits (latency comes later)."""
    import slimkit as sk
    from slimkit.export.ort_model import OrtModel, onnx_size_bytes

    path = sk.export(model, exports / label.replace(" ", "-"), format="onnx")
    ort_model = OrtModel(path)
    torch_metrics = next(m for lab, m, _, _ in rows if lab == label)
    metrics = {k: torch_metrics[k] for k in ("params", "nonzero_params", "macs") if k in torch_metrics}
    metrics["bytes"] = onnx_size_bytes(path)
    metrics["quality"] = float(work.evaluator(ort_model))
    return f"{label} → ONNX Runtime", ort_model, metrics


def _decode_speed(model: Any, prompt: Any) -> float:
    """Tokens/s of greedy decoding (KV cache, one token per step) after ``prompt``."""
    from slimkit.measure.decode import greedy_decode

    _, seconds = greedy_decode(model, prompt, DECODE_TOKENS)
    return DECODE_TOKENS / seconds


class ByteTokenizer:
    """UTF-8 bytes as token ids (vocabulary 256): real text for the tiny model without a
    49,152-row embedding that would dwarf its blocks (and every compression of them)."""

    def __len__(self) -> int:
        return 256

    def __call__(self, text: str, **_: Any) -> dict[str, list[int]]:
        return {"input_ids": list(text.encode("utf-8"))}


def _tiny_model() -> tuple[Any, ByteTokenizer]:
    """A seeded random 4-block Llama (hidden 64, tied head) over UTF-8 byte tokens."""
    import torch
    import transformers

    tok = ByteTokenizer()
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=TINY.n_blocks,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok),
                                   max_position_embeddings=256, tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(cfg).eval(), tok


def _metrics(model: Any, work: Any) -> dict[str, Any]:
    import slimkit as sk

    metrics = sk.measure(model, work.example_inputs, latency=False)
    metrics["quality"] = float(work.evaluator(model))
    return metrics


def _add_speed(metrics: dict[str, Any], tokens: int | None) -> None:
    if tokens and metrics.get("latency_ms"):
        metrics["tokens_per_s"] = tokens / (metrics["latency_ms"] / 1000)
