"""Streaming compression (``sk.compress_stream``) measured: peak RSS, wall time, GB/min, exactness.

(a) A synthetic Llama with 7B shapes (hidden 4096, intermediate 11008, 32 layers, 32 heads, vocab
    32000, untied head), random float32 weights written once as one safetensors shard per block
    into ``--cache`` (~27 GB: more than this machine's RAM). RTN int4 g128 and GPTQ int4 g128 on
    8 x 256 random calibration tokens, each streamed in its own subprocess. ``--layers N`` streams
    only the first N blocks (a directory of symlinks to the same shards; stated in the table).
(b) SmolLM2-135M streamed vs loaded whole (``sk.compress`` + ``sk.save``), RTN and GPTQ int4 g64 on
    8 x 256 Shakespeare tokens, each in its own subprocess: every stored tensor compared, and the
    peak RSS ratio.

Peak RSS: the largest VmRSS sampled every 20 ms by a thread in the child, and the child's
``getrusage`` ``ru_maxrss``; the larger is reported. Run: ``python benchmarks/stream.py
[--skip-7b] [--skip-smollm] [--layers N]``; writes ``docs/benchmarks/stream.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks" / "stream.md"
SEVEN_B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False, max_position_embeddings=4096)


# ----------------------------------------------------------------------------- child processes
def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from slimkit.quantize.weight_only.apply import peak_rss_mb
    from slimkit.stream.memory import RssSampler, maxrss_mb

    import slimkit as sk

    recipe = {"steps": [{"quantize": {"method": args.method, "bits": 4, "group_size": args.group}}]}
    calib = _calib(args)
    _forget_loading_peak()
    t0 = time.perf_counter()
    with RssSampler() as sampler:
        base = sampler.peak
        if args.mode == "stream":
            res = sk.compress_stream(args.src, recipe, args.out, calib=calib, progress=False, overwrite=True)
            extra = res.report["stream"]
        else:
            model, _ = sk.zoo.load_model(args.src)
            res = sk.compress(model, recipe, calib=calib, progress=False, measure=False)
            del model
            sk.save(res.model, args.out, overwrite=True)
            extra = {}
    seconds = time.perf_counter() - t0
    hwm = peak_rss_mb()
    out = {"seconds": round(seconds, 1), "peak_rss_mb": round(max(sampler.peak, hwm), 1),
           "sampled_peak_mb": round(sampler.peak, 1), "vm_hwm_mb": hwm, "ru_maxrss_mb": round(maxrss_mb(), 1),
           "baseline_rss_mb": round(base, 1)}
    if extra:
        out.update(gb_per_min=extra["gb_per_min"], input_gb=extra["input_gb"],
                   max_block_peak_mb=max(b["peak_rss_mb"] for b in extra["blocks"]),
                   blocks=len(extra["blocks"]), setup_peak_rss_mb=extra["setup_peak_rss_mb"])
    Path(args.result).write_text(json.dumps(out))


def _forget_loading_peak() -> None:
    """Free what tokenizing the calibration text left behind and restart the kernel's peak-RSS
    counter (``clear_refs`` 5 resets VmHWM), so both modes' peaks cover compression only: without
    it, the streamed run's lifetime ``ru_maxrss`` was the text loading's transient peak (the
    whole-model run's quantize handler resets the counter itself, the streamed one does not)."""
    import ctypes
    import gc

    from slimkit.quantize.weight_only.apply import reset_peak_rss

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass
    reset_peak_rss()


def _calib(args: argparse.Namespace) -> list:
    import torch

    if args.calib == "shakespeare":
        import slimkit as sk

        tok = _tokenizer(args.src)
        batches = sk.zoo.load_data("shakespeare", "train", tokenizer=tok, seq_len=256, max_batches=8)
        return [{"input_ids": b["input_ids"][:1]} for b in batches][:8]
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(0, 32000, (1, 256), generator=g)} for _ in range(8)]


def _tokenizer(src: str):
    from slimkit.zoo.local import local_tokenizer

    return local_tokenizer(Path(src))


def run_child(mode: str, method: str, src: Path, out: Path, group: int, calib: str, threads: int) -> dict:
    result = out.parent / f"{out.name}.result.json"
    cmd = [sys.executable, __file__, "--child", mode, "--method", method, "--src", str(src), "--out", str(out),
           "--group", str(group), "--calib", calib, "--threads", str(threads), "--result", str(result)]
    print(f"[{time.strftime('%H:%M:%S')}] {mode} {method} {src.name}", flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    data = json.loads(result.read_text())
    print(f"    -> {data}", flush=True)
    return data


# ----------------------------------------------------------------------------- the synthetic 7B
def write_synthetic(dest: Path) -> Path:
    """Random float32 7B-shaped Llama, one shard per block (+ one for embeddings/norm/head); written once."""
    if (dest / "model.safetensors.index.json").is_file():
        return dest
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    tmp = dest.parent / (dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cfg = LlamaConfig(**SEVEN_B, architectures=["LlamaForCausalLM"])
    cfg.save_pretrained(tmp)
    g = torch.Generator().manual_seed(0)
    h, f, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    weight_map = {}

    def shard(name: str, tensors: dict) -> None:
        save_file(tensors, str(tmp / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})

    for i in range(n):
        p = f"model.layers.{i}."
        shapes = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (h, h), "self_attn.v_proj": (h, h),
                  "self_attn.o_proj": (h, h), "mlp.gate_proj": (f, h), "mlp.up_proj": (f, h), "mlp.down_proj": (h, f)}
        t = {p + k + ".weight": torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}
        t[p + "input_layernorm.weight"] = torch.ones(h)
        t[p + "post_attention_layernorm.weight"] = torch.ones(h)
        shard(f"model-{i + 1:05d}-of-{n + 1:05d}.safetensors", t)
        print(f"  wrote block {i}", flush=True)
    shard(f"model-{n + 1:05d}-of-{n + 1:05d}.safetensors",
          {"model.embed_tokens.weight": torch.randn(cfg.vocab_size, h, generator=g) * 0.02,
           "model.norm.weight": torch.ones(h), "lm_head.weight": torch.randn(cfg.vocab_size, h, generator=g) * 0.02})
    (tmp / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    os.replace(tmp, dest)
    return dest


def first_layers(src: Path, n: int) -> Path:
    """A directory streaming only the first ``n`` blocks: symlinks to the same shards, config edited."""
    dest = src.parent / f"{src.name}-first{n}"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    cfg["num_hidden_layers"] = n
    (dest / "config.json").write_text(json.dumps(cfg))
    index = json.loads((src / "model.safetensors.index.json").read_text())
    keep = {k: v for k, v in index["weight_map"].items()
            if not k.startswith("model.layers.") or int(k.split(".")[2]) < n}
    for name in set(keep.values()):
        (dest / name).symlink_to(src / name)
    (dest / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": keep}))
    return dest


# ----------------------------------------------------------------------------- comparisons
def compare_dirs(a: Path, b: Path) -> tuple[int, int]:
    """(tensors compared, tensors bit-identical) over every stored tensor of two checkpoints."""
    import torch
    from safetensors import safe_open

    def where(d: Path) -> dict:
        return {k: f for f in sorted(d.glob("*.safetensors")) for k in safe_open(str(f), "pt").keys()}

    wa, wb = where(a), where(b)
    if set(wa) != set(wb):
        return len(set(wa) | set(wb)), 0
    same = sum(torch.equal(safe_open(str(wa[k]), "pt").get_tensor(k), safe_open(str(wb[k]), "pt").get_tensor(k))
               for k in wa)
    return len(wa), same


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--method")
    ap.add_argument("--src")
    ap.add_argument("--out")
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--calib", default="random")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--result")
    ap.add_argument("--skip-7b", action="store_true")
    ap.add_argument("--skip-smollm", action="store_true")
    ap.add_argument("--layers", type=int, default=32, help="blocks of the synthetic 7B that GPTQ streams")
    ap.add_argument("--rtn-layers", type=int, default=32, help="blocks of the synthetic 7B that RTN streams")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "slimkit-bench"))
    ap.add_argument("--work", default="/tmp/slimkit-stream-bench")
    ap.add_argument("--keep", action="store_true", help="keep 7B rows already in results.json (same block count)")
    ap.add_argument("--doc-only", action="store_true", help="rewrite the doc from --work's results.json")
    args = ap.parse_args()
    if args.doc_only:
        write_doc(json.loads((Path(args.work) / "results.json").read_text()))
        return
    if args.child:
        args.mode = args.child
        child(args)
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results_file = work / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    if not args.skip_smollm:
        from slimkit.zoo.models import _smollm2_dir

        src = _smollm2_dir()  # converts the packaged GGUF into the cache once
        for method in ("rtn", "gptq"):
            runs = {mode: run_child(mode, method, src, work / f"smol-{mode}-{method}", 64, "shakespeare", 2)
                    for mode in ("whole", "stream")}
            runs["compared"] = compare_dirs(work / f"smol-whole-{method}", work / f"smol-stream-{method}")
            results[f"smollm2-{method}"] = runs
            results_file.write_text(json.dumps(results, indent=1))
    if not args.skip_7b:
        t0 = time.perf_counter()
        src = write_synthetic(Path(args.cache) / "llama-7b-synthetic-fp32")
        print(f"synthetic 7B ready in {time.perf_counter() - t0:.0f} s", flush=True)
        for method, n in (("rtn", args.rtn_layers), ("gptq", args.layers)):
            if args.keep and results.get(f"7b-{method}", {}).get("layers") == n:
                print(f"7b-{method}: kept from {results_file}", flush=True)
                continue
            s = src if n == 32 else first_layers(src, n)
            r = run_child("stream", method, s, work / f"7b-{method}", 128, "random", 2)
            r["layers"] = n
            shutil.rmtree(work / f"7b-{method}", ignore_errors=True)
            results[f"7b-{method}"] = r
            results_file.write_text(json.dumps(results, indent=1))
    write_doc(results)


def write_doc(results: dict) -> None:
    lines = ["# Streaming compression (`sk.compress_stream`)", "",
             "Generated by `benchmarks/stream.py`. Each run in its own subprocess (2 torch threads). Peak RSS = the "
             "larger of the child's `getrusage` ru_maxrss and its VmRSS sampled every 20 ms; the machine (2 cores, "
             "23 GiB RAM) was shared with other jobs, which affects wall time, not RSS.", ""]
    if "7b-rtn" in results or "7b-gptq" in results:
        lines += ["## (a) synthetic Llama, 7B shapes, fp32 random weights (27.0 GB on disk > 23 GiB RAM)", "",
                  "| run | blocks streamed | input GB | wall s | GB/min | peak RSS MB | max block peak MB | target | met |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for key, label, target in (("7b-rtn", "RTN int4 g128", 4096), ("7b-gptq", "GPTQ int4 g128, 8 x 256 tokens", 6144)):
            r = results.get(key)
            if r:
                lines.append(f"| {label} | {r['layers']} of 32 | {r['input_gb']} | {r['seconds']} | {r['gb_per_min']} | "
                             f"{r['peak_rss_mb']} | {r['max_block_peak_mb']} | <= {target} MB | "
                             f"{'yes' if r['peak_rss_mb'] <= target else 'NO'} |")
        lines.append("")
    if any(k.startswith("smollm2") for k in results):
        lines += ["## (b) SmolLM2-135M: streamed vs loaded whole (int4 g64, 8 x 256 Shakespeare tokens)", "",
                  "| method | tensors bit-identical | whole peak RSS MB | stream peak RSS MB | ratio | target <= 0.3 | "
                  "ratio over import baseline | whole s | stream s |", "|---|---|---|---|---|---|---|---|---|"]
        for method in ("rtn", "gptq"):
            r = results.get(f"smollm2-{method}")
            if r:
                ratio = r["stream"]["peak_rss_mb"] / r["whole"]["peak_rss_mb"]
                grown = ((r["stream"]["peak_rss_mb"] - r["stream"]["baseline_rss_mb"])
                         / (r["whole"]["peak_rss_mb"] - r["whole"]["baseline_rss_mb"]))
                n, same = r["compared"]
                lines.append(f"| {method} | {same}/{n} | {r['whole']['peak_rss_mb']} | {r['stream']['peak_rss_mb']} | "
                             f"{ratio:.2f} | {'met' if ratio <= 0.3 else 'MISSED'} | {grown:.2f} | {r['whole']['seconds']} | "
                             f"{r['stream']['seconds']} |")
        lines += ["", "`ratio over import baseline`: (peak - RSS after imports) of the streamed run over the same for the "
                  "whole-model run; the child's imports (torch, transformers, slimkit, tokenizer, data) alone hold "
                  "the `baseline_rss_mb` below, which no streaming can go under.", ""]
    lines += ["Raw numbers (`results.json` of the run):", "", "```json", json.dumps(results, indent=1), "```", ""]
    DOC.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
