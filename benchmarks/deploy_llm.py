"""SmolLM2-135M deployed to ONNX Runtime: slimkit GPTQ int4 (g32) exported with a KV cache vs the peer.

Rows (all in one process, 2 threads, same prompt and the same held-out text):

* torch fp32 eager (Hugging Face, KV cache) and slimkit's GPTQ int4 model in torch (its own layers);
* slimkit's ONNX decoder export (``slimkit/export/onnx_decoder.py``): fp32, and GPTQ int4 g32 as
  ``MatMulNBits`` built from slimkit's codes (accuracy_level 4, as the peer ships), in two layouts:
  slimkit's default (asymmetric, int8 head and embedding) and the peer's (symmetric, int4 head, here
  calibrated by GPTQ: ``head_method: gptq``);
  each run by the plain ORT loop and by onnxruntime-genai's ``og.Generator`` (the export carries a
  ``genai_config.json``);
* slimkit's dynamic int8 model (per-channel int8 weights, per-token activations) in torch and
  exported (``MatMulIntegerToFloat`` on slimkit's int8 weights, activations quantized in the graph);
* the peer: onnxruntime-genai's model builder (``-p int4 -e cpu``: round-to-nearest MatMulNBits
  block 32, accuracy_level 4, GroupQueryAttention), when ``onnxruntime-genai`` is installed
  (``pip install .[deploy]``): its ONNX file run through the same plain ORT loop as ours (decode,
  prefill, perplexity), and its own ``og.Generator`` (decode only; static KV buffer) for reference.

ORT sessions: 2 intra-op threads, 1 inter-op, ORT_ENABLE_ALL, and ``session.intra_op.allow_spinning``
off unless ``--spin`` (busy-waiting workers collapse when the CPU is oversubscribed, as the shared
2-core machine these runs use is: ORT fp32 measured 3x slower than torch with spinning there).

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
# the peer's layout (symmetric int4 everywhere, head included) with GPTQ's weights: MatMulNBits without
# zero points and a 4-bit head decode faster (measured here in og.Generator: asymmetric + int8 head
# 0.76x the builder's int4, symmetric + int4 head 0.98x, same RTN weights). The head is GPTQ'd too:
# a round-to-nearest int4 head alone took held-out perplexity from 40.2 to 45.6 (ppl x1.26 in all).
RECIPE_SYM = {"steps": [{"quantize": {"method": "gptq", "bits": 4, "group_size": 32, "symmetric": True,
                                      "head_bits": 4, "head_method": "gptq"}}]}
INT8_RECIPE = {"steps": [{"quantize": {"method": "dynamic_int8", "per_channel": True}}]}
SPIN = False  # --spin sets it
NOTES = "## Investigation"  # docs section from here on is written by hand and kept on rewrite


# ----------------------------------------------------------------------------- runners
class OrtDecoder:
    """Any decoder ONNX file with Optimum/genai names (input_ids, attention_mask, past_key_values.*)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if SPIN else "0")
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


class GenaiGenerator:
    """onnxruntime-genai's own Generator (decode only) on a directory with a ``genai_config.json`` (the
    builder's build or slimkit's export): 2 intra-op threads via its config."""

    def __init__(self, build: Path, work: Path) -> None:
        import json

        import onnxruntime_genai as og

        work.mkdir(exist_ok=True)
        for f in build.iterdir():  # same files, a config with the thread count set
            if f.name != "genai_config.json" and not (work / f.name).exists():
                (work / f.name).symlink_to(f)
        cfg = json.loads((build / "genai_config.json").read_text())
        cfg["model"]["decoder"]["session_options"].update(intra_op_num_threads=THREADS, inter_op_num_threads=1)
        (work / "genai_config.json").write_text(json.dumps(cfg, indent=1))
        self.og, self.model = og, og.Model(str(work))

    def decode(self, prompt: torch.Tensor, steps: int) -> tuple[float, list[int]]:
        params = self.og.GeneratorParams(self.model)
        total = prompt.shape[1] + steps + 1
        params.set_search_options(max_length=total, min_length=total, do_sample=False)
        gen = self.og.Generator(self.model, params)
        gen.append_tokens(prompt[0].numpy().astype(np.int32))  # prefill; its logits give the first token
        gen.generate_next_token()
        toks = [int(gen.get_next_tokens()[0])]
        t = time.perf_counter()
        for _ in range(steps):
            gen.generate_next_token()
            toks.append(int(gen.get_next_tokens()[0]))
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


def interleaved(runners: dict[str, object], prompt: torch.Tensor, long: torch.Tensor, steps: int
                ) -> dict[str, dict]:
    """Decode tok/s and prefill ms, median of RUNS rounds that each visit every runner in turn, so a
    change of machine load during the run hits all rows alike (the rows' ratios are what compare)."""
    meas: dict[str, dict] = {k: {"tps": [], "pre": [], "toks": None} for k in runners}
    for label, r in runners.items():  # warm-up
        r.decode(prompt, 4)
        if hasattr(r, "logits"):
            r.logits(long)
    for _ in range(RUNS):
        for label, r in runners.items():
            tps, toks = r.decode(prompt, 16 if label in TORCH_SLOW else steps)  # slimkit's torch int4 is slow
            meas[label]["tps"].append(tps)
            meas[label]["toks"] = meas[label]["toks"] or toks
            if hasattr(r, "logits"):
                t = time.perf_counter()
                r.logits(long)
                meas[label]["pre"].append(1000 * (time.perf_counter() - t))
        print(f"round done, load {load_avg()}", flush=True)
    return {k: {"tps": statistics.median(m["tps"]), "pre": statistics.median(m["pre"]) if m["pre"] else None,
                "toks": m["toks"]} for k, m in meas.items()}


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and "onnx" in f.name) / 1e6


# ----------------------------------------------------------------------------- pipeline
def gptq_model(model, tok, cache: Path, recipe: dict = RECIPE):
    if (cache / "slimkit.json").exists():
        print(f"GPTQ model from cache {cache}", flush=True)
        return sk.load(cache), None
    calib = sk.zoo.load_data("shakespeare", "train", tokenizer=tok, seq_len=256, max_batches=32)
    t = time.perf_counter()
    res = sk.compress(model, recipe, calib=calib, progress=False, measure=False)
    seconds = time.perf_counter() - t
    sk.save(res.model, cache)
    return res.model, seconds


def genai_installed() -> bool:
    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        return False
    return True


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


TORCH_FP32 = "torch fp32 eager (HF, KV cache)"
TORCH_INT4 = "slimkit GPTQ int4 g32, torch (slimkit layers)"
ORT_INT4 = "slimkit GPTQ int4 g32 -> ORT MatMulNBits"
ORT_INT4_GEN = "slimkit GPTQ int4 g32 -> ORT, onnxruntime-genai og.Generator"
TORCH_SYM = "slimkit GPTQ int4 g32 symmetric, GPTQ int4 head, torch (slimkit layers)"
ORT_SYM = "slimkit GPTQ int4 g32 symmetric, GPTQ int4 head -> ORT MatMulNBits"
ORT_SYM_GEN = "slimkit GPTQ int4 g32 symmetric, GPTQ int4 head -> ORT, onnxruntime-genai og.Generator"
TORCH_SLOW = (TORCH_INT4, TORCH_SYM)  # slimkit's int4 layers in torch: 16 decode steps, not 64
PEER_INT4 = "onnxruntime-genai builder int4 (RTN), same ORT loop"
PEER_GEN = "onnxruntime-genai builder int4 (RTN), its og.Generator"
PEER_MNBQ = "peer: ORT MatMulNBitsQuantizer int4 (RTN, block 32) on slimkit's fp32 export"
OV_INT4 = "peer: NNCF compress_weights int4_asym g32 (RTN) -> OpenVINO"


def matmul_nbits_quantizer(fp32: Path, out: Path) -> Path:
    """``onnxruntime.quantization``'s own weight-only int4 (``MatMulNBitsQuantizer``, its default
    round-to-nearest ``DefaultWeightOnlyQuantConfig``: asymmetric, MatMul nodes only) with block 32 and
    accuracy_level 4 (as slimkit's export and the builder ship), on slimkit's fp32 decoder export."""
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)  # a line per node
    path = out / "model.onnx"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        quant = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=4, block_size=32, accuracy_level=4)
        quant.process()
        quant.model.save_model_to_file(str(path), use_external_data_format=True)
    return path


def load_avg() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def build_runners(args, model, tok, q, q8, qs) -> dict[str, tuple[object, str]]:
    runners: dict[str, tuple[object, str]] = {TORCH_FP32: (TorchDecoder(model), ""), TORCH_INT4: (TorchDecoder(q), ""),
                                              TORCH_SYM: (TorchDecoder(qs), ""),
                                              "slimkit dynamic int8 (per-token), torch": (TorchDecoder(q8), "")}
    generators = {ORT_INT4: ORT_INT4_GEN, ORT_SYM: ORT_SYM_GEN}
    for label, m, sub in (("slimkit export fp32 -> ORT", model, "ort_fp32"), (ORT_INT4, q, "ort_gptq"),
                          (ORT_SYM, qs, "ort_gptq_sym"),
                          ("slimkit dynamic int8 -> ORT MatMulIntegerToFloat", q8, "ort_int8")):
        d = args.cache / sub
        d.mkdir(exist_ok=True)
        t = time.perf_counter()
        export_decoder(m, d, ExportOptions(accuracy_level=4, tokenizer=tok))
        print(f"{label}: exported in {time.perf_counter() - t:.1f} s", flush=True)
        runners[label] = (OrtDecoder(d / "model.onnx"), f"{dir_mb(d):.0f}")
        if label in generators and genai_installed():  # the same file in onnxruntime-genai's own loop
            runners[generators[label]] = (GenaiGenerator(d, args.cache / f"{sub}_genai"), "")
    t = time.perf_counter()
    path = matmul_nbits_quantizer(args.cache / "ort_fp32" / "model.onnx", args.cache / "ort_mnbq")
    print(f"{PEER_MNBQ}: built in {time.perf_counter() - t:.1f} s", flush=True)
    runners[PEER_MNBQ] = (OrtDecoder(path), f"{dir_mb(path.parent):.0f}")
    add_openvino(args, runners)
    if args.no_peer:
        return runners
    hf_dir = args.cache / "hf_fp32"
    if not (hf_dir / "config.json").exists():
        model.save_pretrained(hf_dir)
        tok.save_pretrained(hf_dir)
    for precision in ("int4", "fp32"):
        path = genai_build(hf_dir, args.cache / f"genai_{precision}", precision)
        if path is None:
            continue
        label = PEER_INT4 if precision == "int4" else "onnxruntime-genai builder fp32, same ORT loop"
        runners[label] = (OrtDecoder(path), f"{dir_mb(path.parent):.0f}")
        if precision == "int4":
            runners[PEER_GEN] = (GenaiGenerator(path.parent, args.cache / "genai_int4_2threads"), "")
    return runners


SKIPPED: dict[str, str] = {}


def add_openvino(args, runners: dict) -> None:
    """NNCF ``compress_weights`` int4 of slimkit's fp32 decoder export, run by OpenVINO; skipped (with
    the reason, under the table) when openvino / nncf are missing or cannot read the export."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import deploy_openvino as ovpeer

    reason = ovpeer.missing_reason()
    if reason is None:
        try:
            xml = args.cache / "ov_int4" / "model.xml"
            xml.parent.mkdir(exist_ok=True)
            t = time.perf_counter()
            model = ovpeer.nncf_int4(args.cache / "ort_fp32" / "model.onnx", 32, xml)
            print(f"{OV_INT4}: built in {time.perf_counter() - t:.1f} s", flush=True)
            runners[OV_INT4] = (OvDecoder(ovpeer.OvModel(model, THREADS)), f"{ovpeer.ir_bytes(xml) / 1e6:.0f}")
            return
        except Exception as exc:  # noqa: BLE001 - the reason goes under the table
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
            print(f"{OV_INT4}: FAILED {reason}", flush=True)
    SKIPPED[OV_INT4] = reason


class OvDecoder(OrtDecoder):
    """The same greedy loop as :class:`OrtDecoder` on an OpenVINO compiled model (names as the ONNX file)."""

    def __init__(self, ov_model) -> None:  # noqa: ANN001 - deploy_openvino.OvModel
        self.ov = ov_model
        self.past = {n: None for n in ov_model.input_names if n.startswith("past_key_values")}
        self.out_names = ov_model.output_names
        self.dtype = np.float32
        shapes = {p.get_any_name(): p.get_partial_shape() for p in ov_model.compiled.inputs}
        self.kv_heads = {n: shapes[n][1].get_length() for n in self.past}
        self.head_dim = {n: shapes[n][3].get_length() for n in self.past}
        self.takes_position_ids = "position_ids" in ov_model.input_names

    def empty(self) -> dict[str, np.ndarray]:
        return {n: np.zeros((1, self.kv_heads[n], 0, self.head_dim[n]), self.dtype) for n in self.past}

    def step(self, ids: np.ndarray, past: dict[str, np.ndarray], total: int) -> tuple[np.ndarray, dict]:
        feed = {"input_ids": ids, "attention_mask": np.ones((1, total), np.int64), **past}
        if self.takes_position_ids:
            feed["position_ids"] = np.arange(total - ids.shape[1], total, dtype=np.int64)[None]
        out = {k: v.numpy() for k, v in self.ov.run_named(feed).items()}
        nxt = {n: out[n.replace("past_key_values", "present")] for n in self.past}
        return out["logits"].astype(np.float32), nxt


def main() -> None:
    global SPIN
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path("/tmp/slimkit-deploy-llm"))
    ap.add_argument("--steps", type=int, default=64, help="greedy decode steps timed per run")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--spin", action="store_true", help="let ORT's worker threads spin (ORT's default)")
    args = ap.parse_args()
    SPIN = args.spin
    torch.set_num_threads(THREADS)
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    args.cache.mkdir(parents=True, exist_ok=True)
    loads = [load_avg()]

    model, tok = sk.zoo.load_model("smollm2-135m")
    test = [b["input_ids"] for b in sk.zoo.load_data("shakespeare", "test", tokenizer=tok, seq_len=256, max_batches=8)]
    prompt, long = test[0][:, :PROMPT], test[1][:, :PREFILL]
    q, gptq_s = gptq_model(model, tok, args.cache / "gptq")
    qs, _ = gptq_model(model, tok, args.cache / "gptq_sym_gptq_head", RECIPE_SYM)
    q8 = sk.compress(model, INT8_RECIPE, progress=False, measure=False).model
    runners = build_runners(args, model, tok, q, q8, qs)

    res = interleaved({k: r for k, (r, _) in runners.items()}, prompt, long, args.steps)
    loads.append(load_avg())
    rows = []
    ref, ref_tokens = res[TORCH_FP32], res[TORCH_FP32]["toks"]
    for label, (runner, mb) in runners.items():
        tps, pre, toks = res[label]["tps"], res[label]["pre"], res[label]["toks"]
        ppl = res[label]["ppl"] = perplexity(runner, test) if hasattr(runner, "logits") else None
        n = min(len(toks), len(ref_tokens))
        same = sum(a == b for a, b in zip(toks[:n], ref_tokens[:n]))
        rows.append([label, f"{tps:.1f}", f"{tps / ref['tps']:.2f}x",
                     "" if pre is None else f"{pre:.1f}", "" if pre is None else f"{pre / ref['pre']:.2f}",
                     "" if ppl is None else f"{ppl:.2f}", "" if ppl is None else f"{ppl / ref['ppl']:.3f}",
                     mb or "", f"{same}/{n}"])
        print("| " + " | ".join(rows[-1]) + " |", flush=True)
        loads.append(load_avg())
    write(rows, targets(res), args, gptq_s, loads)


def targets(res: dict[str, dict]) -> list[str]:
    """Issue 10 item 3's SmolLM2 targets, each stated met or missed from this run's numbers, for both
    GPTQ layouts."""
    out = []
    for ort_row, gen_row, torch_row in ((ORT_INT4, ORT_INT4_GEN, TORCH_INT4), (ORT_SYM, ORT_SYM_GEN, TORCH_SYM)):
        out += [f"**{ort_row.split(' -> ')[0]}**:"] + ["  " + v for v in _targets(res, ort_row, gen_row, torch_row)]
    return out


def _targets(res: dict[str, dict], ort_row: str, gen_row: str, torch_row: str) -> list[str]:
    ours, fp32, torch_q = res[ort_row], res[TORCH_FP32], res[torch_row]
    out = []
    for mine, peer in ((ort_row, PEER_INT4), (gen_row, PEER_GEN)):  # same loop vs same loop
        if peer in res and mine in res:
            r = res[mine]["tps"] / res[peer]["tps"]
            out.append(f"decode >= 0.9x the peer's int4 build ({mine} vs {peer}): {res[mine]['tps']:.1f} vs "
                       f"{res[peer]['tps']:.1f} tok/s = {r:.2f}x -> {'MET' if r >= 0.9 else 'MISSED'}")
    if not any(p in res for p in (PEER_INT4, PEER_GEN)):
        out.append("decode vs the peer: not measured (onnxruntime-genai not installed) -> NOT SHOWN")
    r = ours["pre"] / fp32["pre"]
    out.append(f"prefill {PREFILL} tokens <= 0.5x torch fp32: {ours['pre']:.0f} vs {fp32['pre']:.0f} ms = {r:.2f}x "
               f"-> {'MET' if r <= 0.5 else 'MISSED'}")
    r = ours["ppl"] / fp32["ppl"]
    out.append(f"held-out perplexity <= x1.15 of fp32: x{r:.3f} -> {'MET' if r <= 1.15 else 'MISSED'}")
    r = abs(ours["ppl"] / torch_q["ppl"] - 1)
    out.append(f"perplexity within 1 % of slimkit's torch int4 model: {ours['ppl']:.2f} vs {torch_q['ppl']:.2f} "
               f"({100 * r:.2f} %) -> {'MET' if r <= 0.01 else 'MISSED'}")
    return out


def write(rows: list[list[str]], verdicts: list[str], args, gptq_s: float | None, loads: list[str]) -> None:
    import onnxruntime as ort

    head = ["model / runtime", "decode tok/s", "vs torch fp32", f"prefill {PREFILL} tok (ms)", "prefill vs fp32",
            "held-out ppl", "ppl x fp32", "ONNX MB", "greedy tokens = fp32"]
    lines = ["# Deploying SmolLM2-135M to ONNX Runtime (decoder export with KV cache)", "",
             f"`benchmarks/deploy_llm.py`, {THREADS} threads, ONNX Runtime {ort.__version__}, torch {torch.__version__}, "
             f"ORT intra-op spinning {'on' if SPIN else 'off'}. "
             f"Decode: greedy tokens/s after a {PROMPT}-token prompt ({args.steps} steps; 16 for slimkit's torch int4), "
             f"median of {RUNS}; prefill: one {PREFILL}-token forward, median of {RUNS} (decode and prefill measured in {RUNS} "
             "rounds visiting every row in turn); perplexity: 8 x 256 "
             "Shakespeare test tokens (calibration: 32 x 256 train tokens). "
             + (f"GPTQ calibration took {gptq_s:.0f} s." if gptq_s else "GPTQ model loaded from the run's cache."), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", f"Load average (1/5/15 min) at the start, after the timing rounds and after each row's perplexity: {'; '.join(loads)} "
              f"({os.cpu_count()} cores, shared with other jobs): absolute times are noisy, ratios between "
              "rows of the same run are the comparable numbers.", ""]
    if SKIPPED:
        lines += ["Skipped (no row): " + "; ".join(f"{k}: {v}" for k, v in SKIPPED.items()), ""]
    lines += ["Targets (issue 10, item 3):", ""]
    lines += [f"  - {v.strip()}" if v.startswith("  ") else f"- {v}" for v in verdicts]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    old = OUT.read_text() if OUT.exists() else ""
    notes = old[old.index(NOTES):] if NOTES in old else ""  # the hand-written investigation is kept
    OUT.write_text("\n".join(lines) + "\n" + ("\n" + notes if notes else ""))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
