"""MiniLM-L6 embeddings: fp32 vs int8 dynamic quantization, latency and cosine, side by side.

Run: ``.venv/bin/python benchmarks/dynamic_int8.py`` → prints a Markdown table and writes
``docs/benchmarks/dynamic_int8.md``. Variants are timed interleaved (round-robin) in one process
with a fixed thread count and the same inputs, so machine noise hits them alike; ratios are to
the fp32 median of the same run.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import slimkit as sk


def variants(model):
    out = {"torch fp32": model}
    for label, opts in (("slimkit dynamic_int8 (per-token)", {"activations": "per_token"}),
                        ("slimkit dynamic_int8 (per-tensor, fbgemm)", {"activations": "per_tensor"})):
        recipe = {"steps": [{"quantize": {"method": "dynamic_int8", **opts}}]}
        out[label] = sk.compress(model, recipe, measure=False, progress=False).model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["torch.ao quantize_dynamic (peer)"] = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    return out


def interleaved_latency(models, inputs, rounds, warmup=3):
    times = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            for _ in range(warmup):
                m(**inputs)
        for _ in range(rounds):
            for k, m in models.items():
                t = time.perf_counter()
                m(**inputs)
                times[k].append((time.perf_counter() - t) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="docs/benchmarks/dynamic_int8.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = sk.zoo.load_model("minilm-l6")
    batch = sk.zoo.load_data("shakespeare-lines", "test", tokenizer=tok, batch_size=32, seq_len=128, max_batches=1)[0]
    cos = sk.CosineFidelity(sk.zoo.load_data("shakespeare-lines", "test", tokenizer=tok, batch_size=32,
                                             seq_len=128, max_batches=4))
    cos.prepare(model)
    models = variants(model)
    times = interleaved_latency(models, batch, args.rounds)
    base = statistics.median(times["torch fp32"])
    lines = [f"MiniLM-L6 (all-MiniLM-L6-v2), 32 sentences × 128 tokens, {args.threads} threads, "
             f"{args.rounds} interleaved rounds after warm-up; cosine on 128 held-out Shakespeare lines.", "",
             "| variant | median ms | p90 ms | speed-up vs fp32 | mean cosine | min cosine | checkpoint MiB |",
             "|---|---|---|---|---|---|---|"]
    for k, m in models.items():
        ts = sorted(times[k])
        med, p90 = statistics.median(ts), ts[int(0.9 * (len(ts) - 1))]
        mean_cos = cos(m)
        size = sk.measure(m, None, latency=False)["bytes"] / 2**20 if "peer" not in k else float("nan")
        lines.append(f"| {k} | {med:.1f} | {p90:.1f} | {base / med:.2f}× | {mean_cos:.4f} | {cos.last_min:.4f} | "
                     f"{size:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("# dynamic int8 on MiniLM-L6\n\n" + text + f"\n`{' '.join(sys.argv)}`, torch {torch.__version__}\n")


if __name__ == "__main__":
    main()
