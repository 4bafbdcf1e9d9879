"""Layer surgery, weight sharing and low-rank on real models: quality, bytes, latency.

Run: ``.venv/bin/python benchmarks/surgery.py`` → prints Markdown tables and writes
``docs/benchmarks/surgery.md``.

* SmolLM2-135M (30 blocks): ``drop_layers`` 4 and 8 blocks chosen by block influence (ShortGPT,
  calibration = Shakespeare *train* split) vs dropping the last blocks. Held-out perplexity on
  the *test* split, checkpoint bytes (really saved), latency timed round-robin with
  ``sk.measure.compare_latency`` (same inputs, fixed threads).
* MiniLM-L6 (sentence embeddings): ``share_weights`` k-means and ``low_rank`` SVD: bytes,
  Linear weight bytes, embedding cosine to the fp32 model on held-out lines, latency.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import slimkit as sk
from slimkit.lowrank.svd.core import LowRankLinear
from slimkit.measure.size import checkpoint_bytes
from slimkit.share.kmeans.core import ClusteredLinear


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def _linear_bytes_top(model: nn.Module) -> int:
    # LowRankLinear holds two nn.Linear children: count each compressed layer once, not its children
    seen: set[int] = set()
    total = 0
    for m in model.modules():
        if isinstance(m, (ClusteredLinear, LowRankLinear)):
            for c in m.modules():
                seen.add(id(c))
    for m in model.modules():
        if isinstance(m, ClusteredLinear):
            total += m.indices.numel() + m.codebook.numel() * 4
        elif isinstance(m, LowRankLinear):
            total += (m.first.weight.numel() + m.second.weight.numel()) * 4
        elif isinstance(m, nn.Linear) and id(m) not in seen:
            total += m.weight.numel() * m.weight.element_size()
    return total


def smollm_section(args: argparse.Namespace) -> str:
    model, tok = sk.zoo.load_model("smollm2-135m")
    calib = sk.zoo.load_data("shakespeare", "train", tokenizer=tok, seq_len=256, max_batches=args.calib)
    test = sk.zoo.load_data("shakespeare", "test", tokenizer=tok, seq_len=256, max_batches=8)
    ppl = sk.Perplexity(test)
    variants: dict[str, nn.Module] = {"fp32, 30 blocks": model}
    notes: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for n in args.drop:
        for method in ("influence", "last"):
            t = time.perf_counter()
            res = sk.compress(model, {"steps": [{"drop_layers": {"method": method, "n": n}}]}, calib=calib,
                              measure=False, progress=False)
            label = f"drop {n} by {'block influence' if method == 'influence' else 'last blocks'}"
            seconds[label] = time.perf_counter() - t
            variants[label] = res.model
            log(f"{label}: {seconds[label]:.1f} s")
            notes[label] = res.report.to_dict()["steps"][0]["notes"]["blocks_dropped"]
    lat = sk.measure.compare_latency(variants, test[0], runs=args.runs, warmup=1)
    log("latency done")
    base_lat = lat["fp32, 30 blocks"]["latency_ms"]
    rows = ["| variant | blocks dropped | held-out perplexity | × fp32 | checkpoint MiB | median ms (1×256 tok) | p90 ms | speed-up | step s |",
            "|---|---|---|---|---|---|---|---|---|"]
    base_ppl = None
    for label, m in variants.items():
        p = float(ppl(m))
        base_ppl = base_ppl or p
        size = checkpoint_bytes(m)
        log(f"{label}: ppl {p:.2f}")
        L = lat[label]
        rows.append(f"| {label} | {notes.get(label, '—')} | {p:.2f} | {p / base_ppl:.2f}× | {_mib(size)} | "
                    f"{L['latency_ms']:.0f} | {L['latency_p90_ms']:.0f} | {base_lat / L['latency_ms']:.2f}× | "
                    f"{seconds.get(label, 0):.1f} |")
    head = (f"### SmolLM2-135M: drop_layers\n\nCalibration: {len(calib)}×256 tokens of the Shakespeare train split "
            f"(block influence); perplexity on 8×256 tokens of the test split (other plays). Latency: "
            f"`compare_latency`, {args.runs} interleaved rounds, input 1×256 tokens, runtime "
            f"{lat['fp32, 30 blocks']['runtime']}.\n")
    return head + "\n" + "\n".join(rows) + "\n"


def minilm_section(args: argparse.Namespace) -> str:
    model, tok = sk.zoo.load_model("minilm-l6")
    lines = sk.zoo.load_data("shakespeare-lines", "test", tokenizer=tok, batch_size=32, seq_len=128, max_batches=4)
    cos = sk.CosineFidelity(lines)
    cos.prepare(model)
    recipes = {
        "share_weights kmeans 16 clusters (4-bit idx)": {"share_weights": {"method": "kmeans", "clusters": 16}},
        "share_weights kmeans 256 clusters (8-bit idx)": {"share_weights": {"method": "kmeans", "clusters": 256}},
        "share_weights cross_layer group 2 (mean)": {"share_weights": {"method": "cross_layer", "group_size": 2}},
        "low_rank svd energy 0.90": {"low_rank": {"method": "svd", "energy": 0.90}},
        "low_rank svd params_ratio 0.5": {"low_rank": {"method": "svd", "params_ratio": 0.5}},
    }
    variants: dict[str, nn.Module] = {"fp32": model}
    for label, step in recipes.items():
        variants[label] = sk.compress(model, {"steps": [step]}, measure=False, progress=False).model
        log(f"{label} built")
    lat = sk.measure.compare_latency(variants, lines[0], runs=args.runs, warmup=1)
    log("latency done")
    base_bytes = checkpoint_bytes(model)
    base_lin = _linear_bytes_top(model)
    rows = ["| variant | checkpoint MiB | × smaller | Linear weight MiB | Linear × smaller | mean cosine | min cosine | median ms | speed-up | runtime |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for label, m in variants.items():
        size = checkpoint_bytes(m)
        lin = _linear_bytes_top(m)
        c = cos(m)
        L = lat[label]
        rows.append(f"| {label} | {_mib(size)} | {base_bytes / size:.2f}× | {_mib(lin)} | {base_lin / lin:.2f}× | "
                    f"{c:.4f} | {cos.last_min:.4f} | {L['latency_ms']:.1f} | "
                    f"{lat['fp32']['latency_ms'] / L['latency_ms']:.2f}× | {L['runtime']} |")
    head = ("### MiniLM-L6: share_weights and low_rank\n\nCosine of mean-pooled embeddings to the fp32 model on "
            "128 held-out Shakespeare lines (4×32, 128 tokens); latency on one 32×128 batch, "
            f"{args.runs} interleaved rounds. No fine-tuning after compression.\n")
    return head + "\n" + "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--sections", nargs="+", default=["smollm", "minilm"])
    parser.add_argument("--calib", type=int, default=4)
    parser.add_argument("--drop", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="docs/benchmarks/surgery.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    parts = []
    for name in args.sections:
        log(f"section {name}")
        parts.append({"smollm": smollm_section, "minilm": minilm_section}[name](args))
        print(parts[-1], flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).with_suffix(f".{name}.partial.md").write_text(parts[-1])
    load1 = os.getloadavg()
    machine = (f"Machine: {os.cpu_count()} CPU cores shared with other jobs; load average (1/5/15 min) "
               f"{load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} at start, {load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} "
               f"at end; torch {torch.__version__}, {torch.get_num_threads()} threads.\n")
    text = "\n".join(parts) + "\n" + machine
    print(text)
    for name in args.sections:
        Path(args.out).with_suffix(f".{name}.partial.md").unlink(missing_ok=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("# Layer surgery, weight sharing, low-rank\n\n" + text + f"\n`{' '.join(sys.argv)}`\n")


if __name__ == "__main__":
    main()
