"""Deploying compressed models to ONNX Runtime: every variant side by side in one run, 2 threads.

Run: ``.venv/bin/python benchmarks/deploy.py`` → prints Markdown tables and writes
``docs/benchmarks/deploy.md``.

* **MiniLM-L6** (32 held-out Shakespeare lines × 128 tokens): torch fp32 eager, ORT fp32 (slimkit's
  export), ONNX Runtime's own ``quantize_dynamic`` (per-channel) on that export (the peer),
  slimkit's int8 models exported to ORT, and heads + neurons pruned to 50 % of the MACs in ORT.
  Quality: mean and min cosine of the mean-pooled embeddings vs torch fp32 on 128 held-out lines.
* **MobileNetV2** (batch 16 of held-out photo crops): torch fp32, ORT fp32, slimkit static int8
  (per-layer, ``graph: off``: graph-mode int8 regions have no ONNX lowering) exported as QDQ,
  ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel, the same calibration photos) on
  the fp32 export (the peer), and channels pruned to 50 % of the MACs in ORT. Quality: top-1 / top-5
  agreement with fp32 on the held-out ``test`` photos (calibration: the ``calib`` photos).
* The SmolLM2 sections (``benchmarks/deploy_llm.py``: ONNX Runtime; ``benchmarks/deploy_gguf.py``:
  llama.cpp) are run as subprocesses and their Markdown included, unless ``--skip-llm``;
  ``--llm-from-docs`` includes what they last wrote without re-running them.

All variants of a table are timed round-robin in one process (``sk.measure.compare_latency``: one
pass of each per round, medians and p90s over the rounds) with torch and ORT on the same thread
count, so machine load hits them alike. Targets (issue 10) are judged from the numbers of the run.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import slimkit as sk
from slimkit.export.ort_model import OrtModel, onnx_size_bytes
from slimkit.measure.latency import runtime_name
from slimkit.zoo.photos import photo_names

sys.path.insert(0, str(Path(__file__).resolve().parent))
import deploy_openvino as ovpeer  # noqa: E402 - benchmarks/ is not a package

ROOT = Path(__file__).resolve().parent.parent
LLM_SCRIPTS = {"deploy_llm": ("SmolLM2-135M in ONNX Runtime", ROOT / "docs/benchmarks/deploy_llm.md"),
               "deploy_gguf": ("SmolLM2-135M in llama.cpp", ROOT / "docs/benchmarks/deploy_gguf.md")}
ORT_SPINNING = False  # --ort-spinning: keep ORT's default idle spinning (see quiet_threads)
HEADER = ("| variant | runtime | median ms | p90 ms | speed-up vs torch fp32 | vs ORT fp32 | {quality} | file MiB |",
          "|---|---|---|---|---|---|---|---|")


class Variant:
    """One row: the model to time, where it runs, and its shipped size."""

    def __init__(self, model: nn.Module, runtime: str, size_bytes: int, note: str = "") -> None:
        self.model, self.runtime, self.size_bytes, self.note = model, runtime, size_bytes, note


def torch_bytes(model: nn.Module) -> int:
    return int(sk.measure(model, None, latency=False)["bytes"])


def ort_variant(model_or_path: nn.Module | Path, out: Path, threads: int, tok: Any = None,
                example: torch.Tensor | None = None) -> Variant:
    """Export ``model`` with ``sk.export`` (or take an .onnx path) and wrap it in an ``OrtModel``."""
    path = model_or_path if isinstance(model_or_path, Path) else sk.export(model_or_path, out, format="onnx",
                                                                           tokenizer=tok, example_inputs=example)
    model = OrtModel(path, threads=threads)
    return Variant(model if ORT_SPINNING else quiet_threads(model), "ORT", onnx_size_bytes(path))


def quiet_threads(model: OrtModel) -> OrtModel:
    """Re-open the session with intra-op spinning off: ORT's idle threads otherwise spin for a while
    after each run and take the 2 shared cores from the next model of the round-robin (a torch
    model right after an ORT one ran up to 6× slower in a first run of this script)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = model.threads, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model.session = ort.InferenceSession(str(model.path), opts, providers=["CPUExecutionProvider"])
    return model


OV_FP32 = "peer: OpenVINO fp32 (slimkit's fp32 ONNX export)"
NNCF_INT8 = "peer: NNCF quantize int8 -> OpenVINO (same calib)"


def openvino_rows(rows: dict[str, Variant], failed: dict[str, str], skipped: dict[str, str], fp32_path: Path,
                  calib: list[Any], transformer: bool, tmp: Path, threads: int) -> None:
    """OpenVINO fp32 and NNCF int8 (``nncf.quantize`` on the same calibration batches) of slimkit's
    fp32 ONNX export; skipped with the reason when openvino / nncf are not installed."""
    reason = ovpeer.missing_reason()
    if reason is not None:
        skipped[OV_FP32] = skipped[NNCF_INT8] = reason
        return
    try_add(rows, failed, OV_FP32, lambda: Variant(ovpeer.OvModel(fp32_path, threads), "OpenVINO CPU",
                                                   onnx_size_bytes(fp32_path)))

    def int8() -> Variant:
        xml = tmp / f"nncf_{fp32_path.parent.name}.xml"
        return Variant(ovpeer.OvModel(ovpeer.nncf_int8(fp32_path, calib, transformer, xml), threads),
                       "OpenVINO CPU", ovpeer.ir_bytes(xml))

    try_add(rows, failed, NNCF_INT8, int8)


def compress(model: nn.Module, steps: list[dict], **data: Any) -> tuple[nn.Module, Any]:
    res = sk.compress(model, {"steps": steps}, progress=False, measure=False, **data)
    return res.model, res.report


def try_add(rows: dict[str, Variant], failed: dict[str, str], label: str, build: Callable[[], Variant]) -> None:
    """Build one variant; a failure is named under the table, not fatal to the run."""
    start = time.time()
    try:
        rows[label] = build()
        print(f"{label}: ready in {time.time() - start:.0f} s", flush=True)
    except Exception as exc:  # noqa: BLE001 - every failure is reported by name
        failed[label] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        print(f"{label}: FAILED\n{traceback.format_exc()}", file=sys.stderr, flush=True)


def footer(rows: dict, failed: dict[str, str], pruned_note: str, skipped: dict[str, str] | None = None) -> list[str]:
    """Lines under a table: each row's note (with ``pruned_note``), the rows skipped (and why), then the
    variants that failed."""
    lines: list[str] = []
    if skipped:
        lines += ["", "Skipped (no row): " + "; ".join(f"{k}: {v}" for k, v in skipped.items())]
    notes = [f"{k}: {v.note}" for k, v in rows.items() if v.note]
    if notes:
        lines += ["", "Notes: " + "; ".join(notes) + f" ({pruned_note})."]
    if failed:
        lines += ["", "Failed (no row): " + "; ".join(f"{k}: `{v}`" for k, v in failed.items())]
    return lines


def time_rows(rows: dict[str, Variant], inputs: Any, rounds: int, threads: int) -> dict[str, dict[str, Any]]:
    return sk.measure.compare_latency({k: v.model for k, v in rows.items()}, inputs, runs=rounds, threads=threads)


def table(rows: dict[str, Variant], times: dict[str, dict[str, Any]], quality: dict[str, str], quality_head: str,
          base: str, ort_base: str) -> list[str]:
    head = [HEADER[0].format(quality=quality_head), HEADER[1] + "---|" * quality_head.count("|")]
    b, o = times[base]["latency_ms"], times[ort_base]["latency_ms"]
    for k, v in rows.items():
        t = times[k]
        head.append(f"| {k} | {v.runtime} | {t['latency_ms']:.1f} | {t['latency_p90_ms']:.1f} | "
                    f"{b / t['latency_ms']:.2f}× | {o / t['latency_ms']:.2f}× | {quality[k]} | "
                    f"{v.size_bytes / 2 ** 20:.1f} |")
    return head


def verdict(ok: bool, text: str) -> str:
    return f"- **{'met' if ok else 'missed'}**: {text}"


# ----------------------------------------------------------------------------- MiniLM-L6
def minilm_section(args: argparse.Namespace, tmp: Path) -> list[str]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model, tok = sk.zoo.load_model("minilm-l6")
    model.eval()
    batch = sk.zoo.load_data("shakespeare-lines", "test", tokenizer=tok, batch_size=32, seq_len=128, max_batches=1)[0]
    calib = sk.zoo.load_data("shakespeare-lines", "train", tokenizer=tok, batch_size=32, seq_len=128, max_batches=4)
    held = sk.zoo.load_data("shakespeare-lines", "test", tokenizer=tok, batch_size=32, seq_len=128,
                            max_batches=args.cos_batches)
    cos = sk.CosineFidelity(held)
    cos.prepare(model)
    t = args.threads
    rows: dict[str, Variant] = {"torch fp32 eager": Variant(model, "torch eager", torch_bytes(model))}
    failed: dict[str, str] = {}
    try_add(rows, failed, "ORT fp32 (slimkit export)", lambda: ort_variant(model, tmp / "minilm_fp32", t, tok))
    fp32_path = tmp / "minilm_fp32" / "model.onnx"

    def peer() -> Variant:
        out = tmp / "minilm_qd.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(fp32_path), str(out), per_channel=True, weight_type=QuantType.QInt8)
        return ort_variant(out, out, t)

    try_add(rows, failed, "peer: ORT quantize_dynamic per-channel on the fp32 export", peer)
    skipped: dict[str, str] = {}
    openvino_rows(rows, failed, skipped, fp32_path, calib, True, tmp, t)
    int8_recipes = {
        "slimkit dynamic_int8 (per-token)": [{"quantize": {"method": "dynamic_int8"}}],
        "slimkit smoothquant α=0.5 (per-token)": [{"quantize": {"method": "smoothquant", "alpha": 0.5,
                                                                "activations": "per_token"}}],
        "slimkit static_int8 (minmax, auto_keep_dynamic 8)": [{"quantize": {"method": "static_int8",
                                                                             "auto_keep_dynamic": 8}}],
    }
    for label, steps in int8_recipes.items():
        def build(label: str = label, steps: list[dict] = steps) -> Variant:
            q, _ = compress(model, steps, calib=calib)
            if label == "slimkit dynamic_int8 (per-token)":  # the same model in slimkit's own torch layers
                rows[f"{label}, torch"] = Variant(q, runtime_name(q), torch_bytes(q))
            return ort_variant(q, tmp / label.split()[1].replace("α=", "a"), t, tok)

        try_add(rows, failed, f"{label} -> ORT", build)

    def pruned() -> Variant:
        example = calib[0]
        _, hrep = compress(model, [{"prune": {"method": "structured", "granularity": "head", "sparsity": 0.5,
                                               "importance": "activation"}}], example_inputs=example, calib=calib)
        kept = hrep.steps[0]["notes"]["macs_kept"]
        p, rep = compress(model, [
            {"prune": {"method": "structured", "granularity": "head", "sparsity": 0.5, "importance": "activation"}},
            {"prune": {"method": "structured", "granularity": "neuron", "target_macs": round(0.5 / kept, 4),
                       "importance": "activation", "round_to": 8}}], example_inputs=example, calib=calib)
        macs = sk.measure.count_macs(p, example) / sk.measure.count_macs(model, example)
        v = ort_variant(p, tmp / "minilm_pruned", t, tok)
        v.note = f"MACs kept {macs:.3f}"
        return v

    try_add(rows, failed, "slimkit structured heads 50 % + neurons, target_macs 0.5 -> ORT", pruned)
    times = time_rows(rows, batch, args.rounds, t)
    quality: dict[str, str] = {}
    mins: dict[str, float] = {}
    for k, v in rows.items():
        mean = cos(v.model)
        mins[k] = cos.last_min
        quality[k] = f"{mean:.4f} | {cos.last_min:.4f}"
    lines = table(rows, times, quality, "mean cosine | min cosine", "torch fp32 eager", "ORT fp32 (slimkit export)")
    lines += minilm_targets(rows, times, mins)
    lines += footer(rows, failed, "no recovery distillation here: the pruned row's cosine is before recovery, "
                    "see docs/benchmarks/prune.md for recovered quality", skipped)
    head = [f"{len(held) * 32} held-out Shakespeare lines for cosine (mean-pooled embeddings vs torch fp32); "
            f"latency on one batch of 32 × 128 tokens, {args.rounds} round-robin rounds; calibration (static / "
            "SmoothQuant / pruning importance): 128 train-split lines.", ""]
    return head + lines


def minilm_targets(rows: dict[str, Variant], times: dict[str, dict[str, Any]], mins: dict[str, float]) -> list[str]:
    out = ["", "Targets (issue 10):"]
    peer = "peer: ORT quantize_dynamic per-channel on the fp32 export"
    lat = {k: times[k]["latency_ms"] for k in rows}
    if peer in lat:
        for k in (k for k in rows if k.startswith("slimkit") and k.endswith("-> ORT") and "structured" not in k):
            ok = lat[k] <= lat[peer] and mins[k] >= 0.99
            out.append(verdict(ok, f"{k}: {lat[k]:.0f} ms vs quantize_dynamic {lat[peer]:.0f} ms "
                                   f"({lat[k] / lat[peer]:.2f}×; target ≤ 1.00×) at min cosine {mins[k]:.4f} "
                                   f"(target ≥ 0.99; quantize_dynamic: {mins[peer]:.4f})"))
    pr = "slimkit structured heads 50 % + neurons, target_macs 0.5 -> ORT"
    dense = "ORT fp32 (slimkit export)"
    if pr in lat and dense in lat:
        r = lat[pr] / lat[dense]
        out.append(verdict(r <= 0.6, f"MiniLM pruned to 50 % MACs in ORT: {r:.2f} of the dense ORT latency "
                                     "(target ≤ 0.60)"))
    return out


# ----------------------------------------------------------------------------- MobileNetV2
class _PhotoReader:
    """``CalibrationDataReader`` for ``quantize_static``: the same calib batches slimkit calibrates on."""

    def __init__(self, name: str, batches: list[torch.Tensor]) -> None:
        self.items = iter([{name: b.numpy()} for b in batches])

    def get_next(self) -> dict[str, Any] | None:
        return next(self.items, None)


STATIC_MNV2 = "slimkit static_int8 per layer (graph: off, minmax) -> ORT QDQ"
STATIC_MNV2_BC = "slimkit static_int8 per layer (graph: off, percentile 99.99) -> ORT QDQ"


def mobilenet_section(args: argparse.Namespace, tmp: Path) -> list[str]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model, _ = sk.zoo.load_model("mobilenet-v2")
    model.eval()
    n_calib = len(photo_names("calib"))
    calib = sk.zoo.load_data("photos", "calib", crops_per_photo=-(-16 * args.calib_batches // n_calib),
                             max_batches=args.calib_batches)
    held = sk.zoo.load_data("photos", "test")  # 8 held-out photos x 8 crops, batches of 16
    agree = sk.TopKAgreement(held)
    agree.prepare(model)
    t = args.threads
    rows: dict[str, Variant] = {"torch fp32 eager": Variant(model, "torch eager", torch_bytes(model))}
    failed: dict[str, str] = {}
    try_add(rows, failed, "ORT fp32 (slimkit export)", lambda: ort_variant(model, tmp / "mnv2_fp32", t, example=held[0][:2]))
    fp32_path = tmp / "mnv2_fp32" / "model.onnx"

    def static(sub: str, **options: Any) -> Variant:
        q, _ = compress(model, [{"quantize": {"method": "static_int8", "graph": "off", **options}}], calib=calib)
        return ort_variant(q, tmp / f"mnv2_static_{sub}", t, example=held[0][:2])

    try_add(rows, failed, STATIC_MNV2, lambda: static("off"))
    # the best of a grid run here (minmax / percentile / mse, bias correction, first conv and
    # classifier kept fp32; 4 and 16 calibration batches): percentile 99.99 with 16 batches
    try_add(rows, failed, STATIC_MNV2_BC, lambda: static("pct", observer="percentile", percentile=99.99))

    def torch_graph() -> Variant:
        q, _ = compress(model, [{"quantize": {"method": "static_int8"}}], calib=calib)
        return Variant(q, runtime_name(q), torch_bytes(q), "graph-mode int8 has no ONNX lowering yet")

    try_add(rows, failed, "slimkit static_int8 graph mode, torch (not exportable)", torch_graph)

    def peer() -> Variant:
        out = tmp / "mnv2_qs.onnx"
        name = OrtModel(fp32_path, threads=1).session.get_inputs()[0].name  # "input" (a plain module)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(fp32_path), str(out), _PhotoReader(name, calib), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        return ort_variant(out, out, t)

    try_add(rows, failed, "peer: ORT quantize_static QDQ per-channel (minmax, same calib photos)", peer)
    skipped: dict[str, str] = {}
    openvino_rows(rows, failed, skipped, fp32_path, calib, False, tmp, t)

    def pruned() -> Variant:
        example = calib[0]
        p, _ = compress(model, [{"prune": {"method": "structured", "granularity": "channel", "target_macs": 0.5,
                                           "round_to": 8}}], example_inputs=example)
        v = ort_variant(p, tmp / "mnv2_pruned", t, example=held[0][:2])
        v.note = f"MACs kept {sk.measure.count_macs(p, example[:1]) / sk.measure.count_macs(model, example[:1]):.3f}"
        return v

    try_add(rows, failed, "slimkit structured channels, target_macs 0.5 -> ORT", pruned)
    times = time_rows(rows, held[0], args.rounds, t)
    quality, top1 = {}, {}
    for k, v in rows.items():
        s = agree.scores(v.model)
        top1[k] = s["top1"]
        quality[k] = f"{s['top1']:.4f} | {s['top5']:.4f}"
    lines = table(rows, times, quality, "top-1 agreement | top-5 agreement", "torch fp32 eager",
                  "ORT fp32 (slimkit export)")
    lines += mobilenet_targets(rows, times, top1)
    lines += footer(rows, failed, "pruned row without recovery training: its agreement is before recovery, "
                    "see docs/benchmarks/prune.md", skipped)
    head = [f"Batch of {len(held[0])} crops of the held-out `test` photos, {args.rounds} round-robin rounds; "
            f"agreement with torch fp32 on all {sum(len(b) for b in held)} test crops; calibration "
            f"{sum(len(b) for b in calib)} crops of the {n_calib} `calib` photos (split by photo).", ""]
    return head + lines


def mobilenet_targets(rows: dict[str, Variant], times: dict[str, dict[str, Any]], top1: dict[str, float]) -> list[str]:
    out = ["", "Targets (issue 10):"]
    lat = {k: times[k]["latency_ms"] for k in rows}
    dense = "ORT fp32 (slimkit export)"
    for q in (STATIC_MNV2, STATIC_MNV2_BC):
        if q in lat and dense in lat:
            sp = lat[dense] / lat[q]
            out.append(verdict(sp >= 2.0 and top1[q] >= 0.9, f"{q}: {sp:.2f}× ORT fp32 at batch 16 (target ≥ 2×), "
                                                             f"top-1 agreement {top1[q]:.4f} (target ≥ 0.9)"))
    pr = "slimkit structured channels, target_macs 0.5 -> ORT"
    if pr in lat and dense in lat:
        r = lat[pr] / lat[dense]
        out.append(verdict(r <= 0.6, f"MobileNetV2 pruned to 50 % MACs in ORT: {r:.2f} of the dense ORT latency "
                                     "(target ≤ 0.60)"))
    return out


# ----------------------------------------------------------------------------- SmolLM2 (other scripts)
def llm_sections(run: bool) -> list[str]:
    """The SmolLM2 tables of deploy_llm.py / deploy_gguf.py (re-run unless ``run`` is False), headings demoted."""
    out: list[str] = []
    for script, (title, doc) in LLM_SCRIPTS.items():
        path = ROOT / "benchmarks" / f"{script}.py"
        if not path.is_file():
            out += [f"## {title}", "", f"(`benchmarks/{script}.py` does not exist: no rows)", ""]
            continue
        if run:
            proc = subprocess.run([sys.executable, str(path)], cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                out += [f"## {title}", "", f"`benchmarks/{script}.py` failed (exit {proc.returncode}): "
                        f"`{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}`", ""]
                continue
        if not doc.is_file():
            out += [f"## {title}", "", f"(`{doc.relative_to(ROOT)}` not written yet)", ""]
            continue
        body = doc.read_text(encoding="utf-8").splitlines()
        body = [("#" + line) if line.startswith("#") else line for line in body]
        how = "re-run by this script" if run else f"included from `{doc.relative_to(ROOT)}` as last written, not re-run"
        out += [f"## {title}", "", f"({how})", "", *body, ""]
    return out


# ----------------------------------------------------------------------------- main
def kept_analysis(path: Path) -> list[str]:
    """The hand-written analysis of the existing doc, so a re-run keeps it (and its numbers can be re-checked)."""
    start, end = "<!-- part:analysis -->", "<!-- /part:analysis -->"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if start not in text or end not in text:
        return ["(none yet)"]
    return text[text.index(start) + len(start):text.index(end)].strip("\n").splitlines()



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10, help="round-robin timing rounds per table")
    parser.add_argument("--cos-batches", type=int, default=4, help="held-out MiniLM batches of 32 lines for cosine")
    parser.add_argument("--calib-batches", type=int, default=16, help="MobileNetV2 calibration batches of 16 crops")
    parser.add_argument("--parts", nargs="+", choices=["minilm", "mobilenet"], default=["minilm", "mobilenet"])
    parser.add_argument("--skip-llm", action="store_true", help="leave out the SmolLM2 sections")
    parser.add_argument("--llm-from-docs", action="store_true",
                        help="include the SmolLM2 sections as deploy_llm.py / deploy_gguf.py last wrote them")
    parser.add_argument("--ort-spinning", action="store_true",
                        help="keep ORT's idle thread spinning (default off: it steals the next model's cores)")
    parser.add_argument("--out", default=str(ROOT / "docs/benchmarks/deploy.md"))
    args = parser.parse_args()
    global ORT_SPINNING
    ORT_SPINNING = args.ort_spinning
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    start, load0 = time.time(), os.getloadavg()
    body = ["# Deploy: compressed models in ONNX Runtime (and llama.cpp)", ""]
    sections = {"minilm": ("MiniLM-L6 embeddings, 32 sentences × 128 tokens", minilm_section),
                "mobilenet": ("MobileNetV2, 224 × 224, batch 16", mobilenet_section)}
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            title, fn = sections[part]
            lines = fn(args, Path(tmp))
            print("\n".join(lines), flush=True)
            body += [f"## {title}", "", *lines, ""]
    if not args.skip_llm:
        body += llm_sections(run=not args.llm_from_docs)
    load1 = os.getloadavg()
    machine = (f"Machine: {os.cpu_count()} CPU cores shared with other jobs; load average (1/5/15 min) "
               f"{load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f} at start, {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} "
               f"at end (above 2 means other jobs competed for the cores: absolute times are inflated, ratios "
               f"within a table are from the same interleaved rounds); {args.threads} threads (torch "
               f"set_num_threads, ORT intra-op; ORT idle spinning {'on' if args.ort_spinning else 'off'}); torch {torch.__version__}, onnxruntime {ort.__version__}; "
               f"{time.time() - start:.0f} s; `{' '.join(sys.argv)}`.")
    body.insert(2, machine)
    body.insert(3, "")
    out = Path(args.out)
    body += ["## Analysis (written by hand after the run; kept when the script re-writes the doc)", "",
             "<!-- part:analysis -->", *kept_analysis(out), "<!-- /part:analysis -->", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.tmp")
    tmp_out.write_text("\n".join(body) + "\n", encoding="utf-8")
    os.replace(tmp_out, out)  # atomic: never a half-written doc
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
