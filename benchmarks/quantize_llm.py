"""Weight-only quantization of SmolLM2-135M: held-out perplexity, checkpoint bytes, time, peak RSS.

Rows: fp32, rtn int8, rtn int4 g64, gptq int4 g64, awq int4 g64, mixed, and the peer libraries
(NNCF ``compress_weights`` INT4, Intel Neural Compressor RTN / GPTQ) where they import. Every
slimkit row is run in the same process, one after another; calibration = Shakespeare train split,
evaluation = Shakespeare test split (different plays). Writes ``docs/benchmarks/quantize_llm.md``.

Run: ``.venv/bin/python benchmarks/quantize_llm.py [--quick]``
"""
from __future__ import annotations

import argparse
import copy
import os
import time
import traceback
from pathlib import Path

import torch

import slimkit as sk
from slimkit.measure.size import checkpoint_bytes
from slimkit.quantize.weight_only.apply import peak_rss_mb, reset_peak_rss

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "quantize_llm.md"

#: label -> (step, calibration batches to use: None = all of them)
#: the float32 head / embedding of the rows below is pinned (int8 is the default since issue 9)
FP32_HEAD = {"lm_head": False, "embeddings": False}
RECIPES = {
    "rtn int8 (per channel, sym)": ({"method": "rtn", "bits": 8, "group_size": None, "symmetric": True, **FP32_HEAD}, None),
    "rtn int4 g64": ({"method": "rtn", "bits": 4, "group_size": 64, **FP32_HEAD}, None),
    "rtn int4 g64, clip_search 10": ({"method": "rtn", "bits": 4, "group_size": 64, "clip_search": 10, **FP32_HEAD}, None),
    "gptq int4 g64": ({"method": "gptq", "bits": 4, "group_size": 64, **FP32_HEAD}, None),
    "gptq int4 g64, only 8 calibration chunks": ({"method": "gptq", "bits": 4, "group_size": 64, **FP32_HEAD}, 8),
    "awq int4 g64": ({"method": "awq", "bits": 4, "group_size": 64, **FP32_HEAD}, None),
    "gptq int4 g64 + lm_head/emb int8": ({"method": "gptq", "bits": 4, "group_size": 64, "lm_head": True,
                                          "embeddings": True, "head_bits": 8}, None),
    "mixed {3,4,8} bits g64, target 36% of fp32": ({"method": "mixed", "group_size": 64, "bits_choices": [3, 4, 8],
                                                    "target_ratio": 0.36, **FP32_HEAD}, None),
}


def run_slimkit(model, calib, ppl, fp32_bytes):
    rows = []
    for label, (step, n_calib) in RECIPES.items():
        if step["method"] not in sk_methods():
            rows.append((label, "not available", "", "", "", "", ""))
            continue
        t = time.perf_counter()
        res = sk.compress(model, {"steps": [{"quantize": step}]}, calib=calib[:n_calib], progress=False,
                          measure=False)
        seconds = time.perf_counter() - t
        notes = res.report.steps[0]["notes"]
        nbytes = checkpoint_bytes(res.model)
        p = ppl(res.model)
        rows.append((label, f"{p:.2f}", f"{p / ppl.fp32:.3f}", f"{nbytes / 1e6:.1f}", f"{nbytes / fp32_bytes:.1%}",
                     f"{seconds:.0f}", f"{notes.get('peak_rss_mb', '')}"))
        print("|", " | ".join(rows[-1]), "|", flush=True)
        if label == "rtn int4 g64":
            globals()["_RTN4"] = res.model
        del res
    return rows


def state_bytes(model) -> int:
    """Bytes of a peer model's state_dict tensors, each storage once (peers have no slimkit checkpoint)."""
    seen, total = set(), 0
    for t in model.state_dict().values():
        if isinstance(t, torch.Tensor) and not t.is_quantized:
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
            if key not in seen:
                seen.add(key)
                total += t.numel() * t.element_size()
    return total


def sk_methods():
    from slimkit.core.registry import methods_of
    return methods_of("quantize")


def run_nncf(model, calib, ppl):
    try:
        import nncf  # noqa: F401
        t = time.perf_counter()
        m = nncf.compress_weights(copy.deepcopy(model), mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=64,
                                  ratio=1.0, dataset=nncf.Dataset(calib[:1]))
        seconds = time.perf_counter() - t
        p = ppl(m)
        nbytes = state_bytes(m)
        return ("NNCF compress_weights INT4_ASYM g64 (no AWQ / scale estimation)", f"{p:.2f}", f"{p / ppl.fp32:.3f}",
                f"{nbytes / 1e6:.1f} (state_dict tensors)", f"{nbytes / ppl.fp32_bytes:.1%}", f"{seconds:.0f}", "")
    except Exception as exc:  # ImportError or a runtime failure: reported plainly
        return ("NNCF compress_weights INT4", "did not run", f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}",
                "", "", "", "")


def run_inc(model, calib, ppl, algo):
    try:
        from neural_compressor.torch.quantization import GPTQConfig, RTNConfig, convert, prepare
        t = time.perf_counter()
        m = copy.deepcopy(model)
        if algo == "RTN":
            m = convert(prepare(m, RTNConfig(bits=4, group_size=64)))
        else:
            m = prepare(m, GPTQConfig(bits=4, group_size=64))
            with torch.no_grad():
                for b in calib:
                    m(**b)
            m = convert(m)
        seconds = time.perf_counter() - t
        p = ppl(m)
        nbytes = state_bytes(m)
        return (f"Intel Neural Compressor {algo} int4 g64", f"{p:.2f}", f"{p / ppl.fp32:.3f}",
                f"{nbytes / 1e6:.1f} (state_dict tensors)", f"{nbytes / ppl.fp32_bytes:.1%}", f"{seconds:.0f}", "")
    except Exception as exc:
        return (f"Intel Neural Compressor {algo}", "did not run",
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}", "", "", "", "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="4 calibration chunks instead of --calib-batches")
    ap.add_argument("--calib-batches", type=int, default=32, help="calibration chunks of 256 train tokens")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on the shared, oversubscribed 2-core machine 2 spinning threads are slower)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tok = sk.zoo.load_model("smollm2-135m")
    calib = sk.zoo.load_data("shakespeare", "train", tokenizer=tok, seq_len=256, max_batches=4 if args.quick else args.calib_batches)
    test = sk.zoo.load_data("shakespeare", "test", tokenizer=tok, seq_len=256, max_batches=8)
    ppl = sk.Perplexity(test)
    reset_peak_rss()
    ppl.fp32 = ppl(model)
    fp32_bytes = checkpoint_bytes(model)
    ppl.fp32_bytes = fp32_bytes
    header = ["model", "held-out ppl", "ppl / fp32", "checkpoint MB", "bytes / fp32", "quantize s", "peak RSS MB (step)"]
    rows = [("fp32", f"{ppl.fp32:.2f}", "1.000", f"{fp32_bytes / 1e6:.1f}", "100.0%", "", f"{peak_rss_mb()}")]
    print("| " + " | ".join(header) + " |", flush=True)
    print("|", " | ".join(rows[0]), "|", flush=True)
    rows += run_slimkit(model, calib, ppl, fp32_bytes)
    if not args.no_peers:
        rows.append(run_nncf(model, calib, ppl))
        print("|", " | ".join(rows[-1]), "|", flush=True)
        for algo in ("RTN", "GPTQ"):
            rows.append(run_inc(model, calib, ppl, algo))
            print("|", " | ".join(rows[-1]), "|", flush=True)
    lat = latency_table(model)
    write_doc(header, rows, lat, len(calib))


def latency_table(model) -> list[tuple[str, ...]]:
    """Round-robin latency of fp32 vs the int4 layers on both runtimes, prefill and one token."""
    rtn4 = globals().get("_RTN4")
    if rtn4 is None:
        return []
    kernel = copy.deepcopy(rtn4)
    for m in kernel.modules():
        if hasattr(m, "runtime") and hasattr(m, "kernel_name"):
            m.runtime = "kernel"
    out = []
    for label, ids in (("prefill 1x64 tokens", torch.randint(0, 1000, (1, 64))),
                       ("one token (1x1)", torch.randint(0, 1000, (1, 1)))):
        res = sk.measure.compare_latency({"fp32": model, "int4 runtime auto": rtn4, "int4 kernel": kernel},
                                         {"input_ids": ids}, runs=5 if ids.shape[1] > 1 else 10, warmup=1)
        base = res["fp32"]["latency_ms"]
        for name, r in res.items():
            out.append((label, name, f"{r['latency_ms']:.1f}", f"{r['latency_ms'] / base:.2f}x"))
    return out


def write_doc(header, rows, lat, n_calib) -> None:
    load = os.getloadavg()
    lines = ["# Weight-only quantization of SmolLM2-135M", "",
             f"Machine load average at the end of the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
             f"(1/5/15 min), torch threads: {torch.get_num_threads()}, torch {torch.__version__}. "
             f"Calibration: {n_calib} x 256 tokens of the Shakespeare train split; held-out perplexity on "
             "8 x 256 tokens of the test split (other plays). Bytes = the saved slimkit checkpoint. Embeddings and "
             "the tied lm_head stay float32 except in the row that says otherwise (these rows pin `lm_head: "
             "false, embeddings: false`: since issue 9 the default stores both at int8, and a plain `rtn int4 g64` "
             "checkpoint is 21.8 % of fp32).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if lat:
        lines += ["", "Latency (compare_latency, round-robin, median ms):", "",
                  "| input | model | median ms | vs fp32 |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(r) + " |" for r in lat]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(lines) + "\n"
    body += "\n" + NOTES
    OUT.write_text(body)
    print(body)


NOTES = """## How the slimkit rows run

* Storage: int4 codes packed two per byte (`uint8`), int8 codes one per byte, float16 group scales, uint8
  zero points (asymmetric only). `bytes` is the saved checkpoint. The tied embedding / `lm_head`
  (49152 x 576 = 28.3 M of the 134.5 M parameters, 113 MB in fp32) stays float32 unless the recipe says
  `lm_head: true` / `embeddings: true`; it alone is 21 % of the fp32 checkpoint, which is why the default
  int4 rows land at 31.9 % of fp32 and only the row that also stores the head/embeddings at 8 bits gets
  under the 30 % target.
* Execution: torch 2.13 CPU has real weight-only integer kernels (`aten._weight_int4pack_mm_for_cpu`,
  groups 32/64/128/256, K must be a multiple of the group: slimkit zero-pads K, so 576 with group 128
  runs; `aten._weight_int8pack_mm`, per-channel symmetric int8). Measured on this machine (AMD EPYC,
  AVX-512, 2 threads, torch.utils.benchmark, one 1536 x 576 layer, before the load rose): fp32 GEMM
  71 us (1 token) / 4.7 ms (256 tokens); int4 kernel 1.5 ms / 398 ms; int8 kernel 0.73 ms / 195 ms;
  dequantize-then-fp32-GEMM 3.2 ms / 10.7 ms. The kernels are 20-85x slower than fp32 here, so
  `runtime: auto` (the default) uses the int kernel only for inputs of <= 4 rows (decoding, where it beats
  dequantize-then-GEMM) and the documented dequantize-then-fp32-GEMM path otherwise; every layer's
  `slimkit_runtime` and the step's `runtime` note say which. The perplexity rows above ran on the
  dequantize path (256-token rows). Weight-only quantization therefore buys size, not speed, on this CPU.
* GPTQ / AWQ / mixed calibrate block by block (`slimkit/quantize/weight_only/sequential.py`): the
  inputs of decoder block 0 are captured once, each block is run on them with hooks, its Linears are
  quantized, and the quantized block produces the next block's inputs. The peak-RSS column is the
  step's own peak (Linux `VmHWM`, reset at the start of the step) and includes the copy of the model
  that `sk.compress` makes (the input model is never modified): about two model copies
  (2 x 540 MB) plus one block's activations and the Hessians of one block.
* GPTQ: act-order with static groups, damp 0.01, 32 x 256 calibration tokens (one row: 8 x 256);
  AWQ: per-input-channel scales `mean|x|^a`, a searched over 21 values per layer on 1024 calibration
  rows, the `1/s` factor kept in the layer (not folded into the RMSNorm); mixed: RTN per layer at
  3/4/8 bits chosen greedily by error reduction per byte, the error of a layer at b bits being
  `tr(dW H dW^T)` on calibration data.
* `clip_search` (option of every weight-only method, off by default): each group's range is
  searched over 10 shrink factors down to 0.5 for the least squared rounding error (weighted by
  the Hessian diagonal in GPTQ and by `E[x^2]/s^2` in AWQ). It lowers layer-level error (tested) but
  not SmolLM2's perplexity: RTN 1.261 -> 1.387 with it (unweighted clipping cuts the large weights
  this model relies on); in separate runs of the same settings GPTQ moved 1.128 -> 1.122 (8 chunks)
  and 1.082 -> 1.087 (32 chunks), AWQ 1.164 -> 1.175 (8 chunks). Hence off by default.

## Targets

* GPTQ int4 g64 held-out perplexity <= 1.08 x fp32: **missed by 0.5 %** — 1.085 x (40.93 vs 37.74)
  with 32 x 256 calibration tokens. The calibration amount matters more than any knob tried: 8
  chunks give 1.127 x (row above). The ratio also moves with *which* text calibrates: a separate
  run with 32 chunks measured 1.082 x, one with 64 chunks 1.125 x, so the 1.08 target sits inside
  the spread of this 2,048-token measurement. Not tried: true-sequential order inside a block,
  longer calibration sequences. For scale: on one 2,048-token context of the first test play (the
  issue's setting may be this one) fp32 is 26.56 and RTN int4 g64 1.217 x; here RTN is 1.261 x.
* GPTQ and AWQ each beat RTN at the same bits: **met** (GPTQ 1.085 x, AWQ 1.169 x, RTN 1.261 x).
* SmolLM2 int4 checkpoint <= 30 % of fp32 bytes: **met with `lm_head: true, embeddings: true`
  (head/embeddings at 8 bits): 21.9 %** at 1.084 x. With the default (float32 tied embedding) the
  int4 checkpoints are 31.9 % - 32.0 %, because the 113 MB float32 embedding is 21 % of the fp32
  checkpoint on its own.
* GPTQ on SmolLM2 in <= 3 minutes on 2 cores: the "quantize s" column above was taken at load
  average ~4 with one thread (279 s for 32 chunks, 130 s for 8); re-timed alone on a quiet machine
  with 2 threads, 32 chunks took 99 s (met); see the end of docs/benchmarks/quantize_llm.md.
* Peers: NNCF 3.4.0 installed (pip, it does not pull torch) and ran; Intel Neural Compressor 3.10
  installed with `--no-deps` plus `py-cpuinfo` and `prettytable`, and its RTN and GPTQ ran with their
  defaults apart from bits/group size. Their sizes are the bytes of their `state_dict` tensors (they do
  not write a slimkit checkpoint), not a saved file.
"""


if __name__ == "__main__":
    main()
