"""SmolLM2-135M deployed to ONNX Runtime: slimkit GPTQ int4 (g32) exported with a KV cache vs the peer.

Rows (all in one process, 2 threads, same prompt and the same held-out text):

* torch fp32 eager (Hugging Face, KV cache) and slimkit's GPTQ int4 model in torch (its own layers);
* slimkit's ONNX decoder export (``slimkit/export/onnx_decoder.py``): fp32, and GPTQ int4 g32 as
  ``MatMulNBits`` built from slimkit's codes (accuracy_level 4, as the peer ships);
* the peer: onnxruntime-genai's model builder (``-p int4 -e cpu``: round-to-nearest MatMulNBits
  block 32, accuracy_level 4, GroupQueryAttention), when ``onnxruntime-genai`` is installed
  (``pip install .[deploy]``).

Decode tokens/s = greedy steps after a 32-token prompt (one token per step, KV cache fed back),
median of 3 runs; prefill = one forward of 128 tokens, median of 3; perplexity = mean token NLL over
8 x 256 Shakespeare *test* tokens (calibration uses the train split). The GPTQ model is cached in
``--cache`` so a rerun skips the ~5-minute calibration.

Run: ``.venv/bin/python benchmarks/deploy_llm.py [--cache DIR] [--steps N] [--no-peer]``
Writes ``docs/benchmarks/deploy_llm.md``.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import slimkit as sk
from slimkit.export.api import ExportOptions
from slimkit.export.onnx_decoder import export_decoder

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "deploy_llm.md"
THREADS = 2
PROMPT, PREFILL, RUNS = 32, 128, 3
RECIPE = {"steps": [{"quantize": {"method": "gptq", "bits": 4, "group_size": 32}}]}


# ----------------------------------------------------------------------------- runners
class OrtDecoder:
    """Any decoder ONNX file with Optimum/genai names (input_ids, attention_mask, past_key_values.*)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.past = {i.name: i for i in self.sess.get_inputs() if i.name.startswith("past_key_values")}
        self.out_names = [o.name for o in self.sess.get_outputs()]
        self.dtype = np.float16 if any("float16" in i.type for i in self.past.values()) else np.float32

    def empty(self) -> dict[str, np.ndarray]:
        # the genai builder names the head dim symbolically (kv_cache_dim): fall back to SmolLM2-135M's 64
        return {n: np.zeros((1, i.shape[1], 0, i.shape[3] if isinstance(i.shape[3], int) else 64), self.dtype)
                for n, i in self.past.items()}

    def step(self, ids: np.ndarray, past: dict[str, np.ndarray], total: int) -> tuple[np.ndarray, dict]:
        feed = {"input_ids": ids, "attention_mask": np.ones((1, total), np.int64), **past}
        if "position_ids" in {i.name for i in self.sess.get_inputs()}:
            feed["position_ids"] = np.arange(total - ids.shape[1], total, dtype=np.int64)[None]
        out = dict(zip(self.out_names, self.sess.run(None, feed)))
        nxt = {n: out[n.replace("past_key_values", "present")] for n in self.past}
        return out["logits"].astype(np.float32), nxt

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.step(ids.numpy(), self.empty(), ids.shape[1])[0])

    def decode(self, prompt: torch.Tensor, steps: int) -> tuple[float, list[int]]:
        logits, past = self.step(prompt.numpy(), self.empty(), prompt.shape[1])
        toks = [int(logits[0, -1].argmax())]
        t = time.perf_counter()
        for s in range(steps):
            logits, past = self.step(np.array([[toks[-1]]], np.int64), past, prompt.shape[1] + s + 1)
            toks.append(int(logits[0, -1].argmax()))
        return steps / (time.perf_counter() - t), toks


class TorchDecoder:
    """A Hugging Face causal LM (fp32, or slimkit's quantized layers) decoding with its KV cache."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()

    @torch.no_grad()
    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids).logits.float()

    @torch.no_grad()
    def decode(self, prompt: torch.Tensor, steps: int) -> tuple[float, list[int]]:
        out = self.model(prompt, use_cache=True)
        toks = [int(out.logits[0, -1].argmax())]
        past = out.past_key_values
        t = time.perf_counter()
        for _ in range(steps):
            out = self.model(torch.tensor([[toks[-1]]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            toks.append(int(out.logits[0, -1].argmax()))
        return steps / (time.perf_counter() - t), toks


# ----------------------------------------------------------------------------- measures
def perplexity(runner, batches: list[torch.Tensor]) -> float:
    nll, n = 0.0, 0
    for ids in batches:
        logits = runner.logits(ids)[0, :-1]
        nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        n += ids.shape[1] - 1
    return math.exp(nll / n)


def prefill_ms(runner, ids: torch.Tensor) -> float:
    runner.logits(ids)  # warm-up
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        runner.logits(ids)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def decode_tps(runner, prompt: torch.Tensor, steps: int) -> tuple[float, list[int]]:
    runner.decode(prompt, 4)  # warm-up
    runs = [runner.decode(prompt, steps) for _ in range(RUNS)]
    return statistics.median(r[0] for r in runs), runs[0][1]


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and "onnx" in f.name) / 1e6


# ----------------------------------------------------------------------------- pipeline
def gptq_model(model, tok, cache: Path):
    if (cache / "slimkit.json").exists():
        print(f"GPTQ model from cache {cache}", flush=True)
        return sk.load(cache), None
    calib = sk.zoo.load_data("shakespeare", "train", tokenizer=tok, seq_len=256, max_batches=32)
    t = time.perf_counter()
    res = sk.compress(model, RECIPE, calib=calib, progress=False, measure=False)
    seconds = time.perf_counter() - t
    sk.save(res.model, cache)
    return res.model, seconds


def genai_build(hf_dir: Path, out: Path, precision: str) -> Path | None:
    """The peer's own build; None (and a note) when onnxruntime-genai is not installed or fails."""
    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        print("onnxruntime-genai not installed: peer rows skipped (pip install .[deploy])", flush=True)
        return None
    if not (out / "model.onnx").exists():
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out),
               "-p", precision, "-e", "cpu", "-c", str(out.parent / "genai_cache")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"genai builder failed:\n{proc.stderr[-2000:]}", flush=True)
            return None
    return out / "model.onnx"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path("/tmp/slimkit-deploy-llm"))
    ap.add_argument("--steps", type=int, default=64, help="greedy decode steps timed per run")
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    args.cache.mkdir(parents=True, exist_ok=True)

    model, tok = sk.zoo.load_model("smollm2-135m")
    test = [b["input_ids"] for b in sk.zoo.load_data("shakespeare", "test", tokenizer=tok, seq_len=256, max_batches=8)]
    prompt, long = test[0][:, :PROMPT], test[1][:, :PREFILL]
    q, gptq_s = gptq_model(model, tok, args.cache / "gptq")

    runners: dict[str, tuple[object, str]] = {"torch fp32 eager (HF, KV cache)": (TorchDecoder(model), "")}
    runners["slimkit GPTQ int4 g32, torch (slimkit layers)"] = (TorchDecoder(q), "")
    for label, m, sub in (("slimkit export fp32 -> ORT", model, "ort_fp32"),
                          ("slimkit GPTQ int4 g32 -> ORT MatMulNBits", q, "ort_gptq")):
        d = args.cache / sub
        d.mkdir(exist_ok=True)
        t = time.perf_counter()
        export_decoder(m, d, ExportOptions(accuracy_level=4))
        print(f"{label}: exported in {time.perf_counter() - t:.1f} s", flush=True)
        runners[label] = (OrtDecoder(d / "model.onnx"), f"{dir_mb(d):.0f}")
    if not args.no_peer:
        hf_dir = args.cache / "hf_fp32"
        if not (hf_dir / "config.json").exists():
            model.save_pretrained(hf_dir)
            tok.save_pretrained(hf_dir)
        for precision in ("int4", "fp32"):
            path = genai_build(hf_dir, args.cache / f"genai_{precision}", precision)
            if path is not None:
                runners[f"onnxruntime-genai builder {precision} (RTN)" if precision == "int4"
                        else "onnxruntime-genai builder fp32"] = (OrtDecoder(path), f"{dir_mb(path.parent):.0f}")

    rows, ref_tokens, fp32_ppl, fp32_pre, fp32_tps = [], None, None, None, None
    for label, (runner, mb) in runners.items():
        steps = 16 if "torch (slimkit layers)" in label else args.steps  # slimkit's torch int4 is slow
        tps, toks = decode_tps(runner, prompt, steps)
        pre = prefill_ms(runner, long)
        ppl = perplexity(runner, test)
        if fp32_ppl is None:
            ref_tokens, fp32_ppl, fp32_pre, fp32_tps = toks, ppl, pre, tps
        n = min(len(toks), len(ref_tokens))
        same = sum(a == b for a, b in zip(toks[:n], ref_tokens[:n]))
        rows.append([label, f"{tps:.1f}", f"{tps / fp32_tps:.2f}x", f"{pre:.1f}", f"{pre / fp32_pre:.2f}",
                     f"{ppl:.2f}", f"{ppl / fp32_ppl:.3f}", mb or "", f"{same}/{n}"])
        print("| " + " | ".join(rows[-1]) + " |", flush=True)
    write(rows, args, gptq_s)


def write(rows: list[list[str]], args, gptq_s: float | None) -> None:
    import onnxruntime as ort

    head = ["model / runtime", "decode tok/s", "vs torch fp32", f"prefill {PREFILL} tok (ms)", "prefill vs fp32",
            "held-out ppl", "ppl x fp32", "ONNX MB", "greedy tokens = fp32"]
    lines = ["# Deploying SmolLM2-135M to ONNX Runtime (decoder export with KV cache)", "",
             f"`benchmarks/deploy_llm.py`, {THREADS} threads, ONNX Runtime {ort.__version__}, torch {torch.__version__}. "
             f"Decode: greedy tokens/s after a {PROMPT}-token prompt ({args.steps} steps; 16 for slimkit's torch int4), "
             f"median of {RUNS}; prefill: one {PREFILL}-token forward, median of {RUNS}; perplexity: 8 x 256 "
             "Shakespeare test tokens (calibration: 32 x 256 train tokens). "
             + (f"GPTQ calibration took {gptq_s:.0f} s." if gptq_s else "GPTQ model loaded from the run's cache."), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "The machine (2 cores) was shared with other jobs while this ran: times are indicative, "
              "ratios from the same run are the comparable numbers."]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
