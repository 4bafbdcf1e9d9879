"""MiniLM-L6 embeddings and MobileNetV2 under slimkit's int8 / half methods and peer toolkits.

Run: ``.venv/bin/python benchmarks/quantize_encoders.py [--parts minilm mobilenet]`` → prints
Markdown tables and writes ``docs/benchmarks/quantize_encoders.md`` (a part not run keeps its
section of the existing doc, so each part can be re-timed alone). All variants of a table are timed round-robin in one
process (``sk.measure.compare_latency``) with a fixed thread count and the same inputs, so machine
noise hits them alike; speed-ups are to the torch fp32 median of the same run. Cosine is computed
on held-out Shakespeare lines never used for calibration; MobileNetV2 top-1 / top-5 agreement
with fp32 on crops of the 8 held-out ``test`` photos of the zoo's ``photos`` set (calibration on
its 5 ``calib`` photos; the split is by photo, see ``slimkit.zoo.photos``).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

import slimkit as sk
from slimkit.core.registry import methods_of
from slimkit.zoo.photos import photo_names


class OrtEncoder(nn.Module):
    """An ONNX Runtime session behind the ``model(**batch) -> last_hidden_state`` interface."""

    def __init__(self, path: str, threads: int, runtime: str) -> None:
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.slimkit_runtime = runtime

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> Any:
        from transformers.modeling_outputs import BaseModelOutput

        feeds = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        # wrapped like the HF model's output so evaluators mean-pool it the same way
        return BaseModelOutput(last_hidden_state=torch.from_numpy(self.session.run(["last_hidden_state"], feeds)[0]))


class _Hidden(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def onnx_variants(model: nn.Module, batch: dict[str, torch.Tensor], threads: int, tmp: str) -> dict[str, nn.Module]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = os.path.join(tmp, "minilm.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Hidden(model), (batch["input_ids"], batch["attention_mask"]), fp32,
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}},
                          opset_version=17, dynamo=False)
    int8 = os.path.join(tmp, "minilm.int8.onnx")
    quantize_dynamic(fp32, int8, per_channel=True, weight_type=QuantType.QInt8)
    return {"ONNX Runtime fp32 (peer)": OrtEncoder(fp32, threads, "onnxruntime fp32"),
            "ONNX Runtime quantize_dynamic per-channel (peer)": OrtEncoder(int8, threads, "onnxruntime int8")}


def slimkit_variants(model: nn.Module, calib: list[Any]) -> dict[str, nn.Module]:
    recipes = {
        "slimkit bf16": {"method": "bf16"},
        "slimkit dynamic_int8 (per-token)": {"method": "dynamic_int8"},
        "slimkit static_int8 (minmax)": {"method": "static_int8", "observer": "minmax"},
        "slimkit static_int8 (percentile 99.99)": {"method": "static_int8", "observer": "percentile"},
        "slimkit static_int8 (minmax, auto_keep_dynamic 8)": {"method": "static_int8", "auto_keep_dynamic": 8},
        "slimkit smoothquant α=0.5 (static)": {"method": "smoothquant", "alpha": 0.5},
        "slimkit smoothquant α=0.5 (per-token)": {"method": "smoothquant", "alpha": 0.5, "activations": "per_token"},
    }
    if "mixed" in methods_of("quantize"):
        recipes["slimkit mixed (weight-only 4/8-bit, target_ratio 0.65)"] = {"method": "mixed", "bits_choices": [4, 8], "target_ratio": 0.65}
    out = {}
    for label, step in recipes.items():
        try:
            out[label] = sk.compress(model, {"steps": [{"quantize": step}]}, calib=calib, measure=False,
                                     progress=False).model
        except Exception as exc:  # noqa: BLE001 - a failing variant is reported, not fatal
            print(f"{label}: failed: {exc!r}", file=sys.stderr)
    return out


def peer_variants(model: nn.Module) -> dict[str, nn.Module]:
    out: dict[str, nn.Module] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["torch.ao quantize_dynamic (peer)"] = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
        try:
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_
        except ImportError:
            print("torchao: not installed (pip install torchao to add its int8 configs)", file=sys.stderr)
            return out
        for label, config in (("torchao Int8DynamicActivationInt8Weight (peer)", Int8DynamicActivationInt8WeightConfig()),
                              ("torchao Int8WeightOnly (peer)", Int8WeightOnlyConfig())):
            try:
                m = copy.deepcopy(model)
                quantize_(m, config)
                out[label] = m
            except Exception as exc:  # noqa: BLE001 - a failing peer is reported, not fatal
                print(f"{label}: failed: {exc!r}", file=sys.stderr)
    return out


def minilm_table(rounds: int, threads: int, cos_batches: int) -> list[str]:
    model, tok = sk.zoo.load_model("minilm-l6")
    batch = sk.zoo.load_data("shakespeare-lines", "test", tokenizer=tok, batch_size=32, seq_len=128, max_batches=1)[0]
    calib = sk.zoo.load_data("shakespeare-lines", "train", tokenizer=tok, batch_size=32, seq_len=128, max_batches=4)
    cos = sk.CosineFidelity(sk.zoo.load_data("shakespeare-lines", "test", tokenizer=tok, batch_size=32,
                                             seq_len=128, max_batches=cos_batches))
    cos.prepare(model)
    models: dict[str, nn.Module] = {"torch fp32": model, **slimkit_variants(model, calib), **peer_variants(model)}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            models.update(onnx_variants(model, batch, threads, tmp))
        except Exception:  # noqa: BLE001
            print("ONNX Runtime variants failed:\n" + traceback.format_exc(), file=sys.stderr)
        times = sk.measure.compare_latency(models, batch, runs=rounds, threads=threads)
        base = times["torch fp32"]["latency_ms"]
        ort = times.get("ONNX Runtime fp32 (peer)", {}).get("latency_ms")
        lines = ["| variant | runtime | median ms | p90 ms | speed-up vs torch fp32 | vs ORT fp32 | mean cosine | "
                 "min cosine | checkpoint MiB |", "|---|---|---|---|---|---|---|---|---|"]
        for k, m in models.items():
            t = times[k]
            mean_cos = cos(m)
            size = (f"{sk.measure(m, None, latency=False)['bytes'] / 2**20:.1f}"
                    if k.startswith(("slimkit", "torch fp32")) else "n/a")
            vs_ort = f"{ort / t['latency_ms']:.2f}×" if ort else "n/a"
            lines.append(f"| {k} | {t['runtime']} | {t['latency_ms']:.1f} | {t['latency_p90_ms']:.1f} | "
                         f"{base / t['latency_ms']:.2f}× | {vs_ort} | {mean_cos:.4f} | {cos.last_min:.4f} | {size} |")
    return lines


def _ao_fx_default(model: nn.Module, calib: list[torch.Tensor]) -> nn.Module:
    """torch.ao FX graph mode with its stock x86 qconfig (histogram activations, reduce_range)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), (calib[0][:1],))
        with torch.no_grad():
            for b in calib:
                prepared(b)
        return convert_fx(prepared)


MOBILENET_RECIPES = {
    "slimkit static_int8 per layer (graph: off)": {"method": "static_int8", "graph": "off"},
    "slimkit static_int8 graph (minmax)": {"method": "static_int8"},
    "slimkit static_int8 graph (percentile 99.99)": {"method": "static_int8", "observer": "percentile"},
    "slimkit static_int8 graph (minmax, features.0-1 float)": {"method": "static_int8",
                                                               "ignore": ["features.0", "features.1"]},
}


EFFICIENTNET_RECIPES = {
    "slimkit static_int8 per layer (graph: off)": {"method": "static_int8", "graph": "off"},
    "slimkit static_int8 per layer (graph: off, percentile 99.99)": {"method": "static_int8", "graph": "off",
                                                                     "observer": "percentile"},
    "slimkit static_int8 graph (minmax)": {"method": "static_int8"},
}
# (zoo model, input normalisation, recipes): EfficientNet-Lite0 takes [-1, 1] inputs
IMAGE_PARTS = {
    "mobilenet": ("mobilenet-v2", "imagenet", MOBILENET_RECIPES),
    "efficientnet": ("efficientnet-lite0", "symmetric", EFFICIENTNET_RECIPES),
}


def image_table(rounds: int, threads: int, calib_batches: int, part: str = "mobilenet") -> list[str]:
    """One image model's int8 table (``part`` names the model in IMAGE_PARTS)."""
    zoo_name, normalize, recipes = IMAGE_PARTS[part]
    model, _ = sk.zoo.load_model(zoo_name)
    model.eval()
    n_calib = len(photo_names("calib"))
    calib = sk.zoo.load_data("photos", "calib", crops_per_photo=-(-16 * calib_batches // n_calib),
                             max_batches=calib_batches, normalize=normalize)
    held_out = sk.zoo.load_data("photos", "test", normalize=normalize)  # 8 held-out photos x 8 crops
    agree = sk.TopKAgreement(held_out)
    agree.prepare(model)
    x_all = torch.cat(held_out)
    with torch.no_grad():
        ref = model(x_all)
    models: dict[str, nn.Module] = {"torch fp32": model}
    calib_s: dict[str, float] = {}
    failed: dict[str, str] = {}  # variants that raised, named under the table with their error
    for label, step in recipes.items():
        start = time.time()
        try:
            models[label] = sk.compress(model, {"steps": [{"quantize": step}]}, calib=calib, measure=False,
                                        progress=False).model
        except sk.SlimkitError as exc:
            failed[label] = f"{type(exc).__name__}: {exc}"
        calib_s[label] = time.time() - start
    try:
        start = time.time()
        models["torch.ao FX default x86 qconfig (peer)"] = _ao_fx_default(model, calib)
        calib_s["torch.ao FX default x86 qconfig (peer)"] = time.time() - start
    except Exception as exc:  # noqa: BLE001
        print(f"torch.ao FX: failed: {exc!r}", file=sys.stderr)
        failed["torch.ao FX default x86 qconfig (peer)"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    one = held_out[0][:1]
    times1 = sk.measure.compare_latency(models, one, runs=rounds, threads=threads)
    times16 = sk.measure.compare_latency(models, held_out[0], runs=max(3, rounds // 2), threads=threads)
    b1, b16 = times1["torch fp32"]["latency_ms"], times16["torch fp32"]["latency_ms"]
    lines = ["| variant | batch 1 median ms | speed-up b1 | batch 16 median ms | speed-up b16 | top-1 agreement | "
             "top-5 agreement | logit SQNR dB | GMACs (b1) | checkpoint MiB | quantize s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, m in models.items():
        with torch.no_grad():
            out = m(x_all)
        sqnr = float(10 * torch.log10(ref.pow(2).sum() / (ref - out).pow(2).sum())) if k != "torch fp32" else float("inf")
        size = f"{sk.measure(m, None, latency=False)['bytes'] / 2**20:.1f}" if not k.startswith("torch.ao") else "n/a"
        macs = sk.measure.count_macs(m, one) / 1e9
        scores = agree.scores(m)
        lines.append(f"| {k} | {times1[k]['latency_ms']:.1f} | {b1 / times1[k]['latency_ms']:.2f}× | "
                     f"{times16[k]['latency_ms']:.1f} | {b16 / times16[k]['latency_ms']:.2f}× | {scores['top1']:.4f} | "
                     f"{scores['top5']:.4f} | {sqnr:.1f} | {macs:.3f} | {size} | {calib_s.get(k, 0.0):.0f} |")
    runtimes = {k: times1[k]["runtime"] for k in models}
    lines += ["", "Runtimes: " + "; ".join(f"{k}: {v}" for k, v in runtimes.items())]
    if failed:
        lines += ["", "Failed (no row): " + "; ".join(f"{k}: `{v}`" for k, v in failed.items())]
    return lines


def _keep_section(path: Path, part: str) -> list[str]:
    """The section of a part not re-run this time, from the existing doc (so parts run alone)."""
    if not path.is_file():
        return [f"(part {part} not run yet)"]
    text = path.read_text(encoding="utf-8")
    start, end = f"<!-- part:{part} -->", f"<!-- /part:{part} -->"
    if start not in text or end not in text:
        return [f"(part {part} not run yet)"]
    return text[text.index(start) + len(start):text.index(end)].strip("\n").splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cos-batches", type=int, default=4, help="held-out batches of 32 lines for cosine")
    parser.add_argument("--calib-batches", type=int, default=4, help="MobileNetV2 calibration batches of 16 crops")
    parser.add_argument("--parts", nargs="+", choices=["minilm", "mobilenet", "efficientnet"],
                        default=["minilm", "mobilenet", "efficientnet"])
    parser.add_argument("--skip-mobilenet", action="store_true", help="same as --parts minilm")
    parser.add_argument("--out", default="docs/benchmarks/quantize_encoders.md")
    args = parser.parse_args()
    parts = ["minilm"] if args.skip_mobilenet else args.parts
    out = Path(args.out)
    torch.set_num_threads(args.threads)
    start, load0 = time.time(), os.getloadavg()
    sections: dict[str, list[str]] = {}
    if "minilm" in parts:
        minilm = minilm_table(args.rounds, args.threads, args.cos_batches)
        print("\n".join(minilm), flush=True)
        sections["minilm"] = [
            f"Cosine: mean-pooled embeddings vs torch fp32, {32 * args.cos_batches} held-out Shakespeare lines "
            "(calibration: 128 lines of the train split).", "", *minilm]
    for image_part in (p for p in ("mobilenet", "efficientnet") if p in parts):
        sections[image_part] = [
            f"Top-1 / top-5 agreement with fp32 on 64 crops of the 8 held-out `test` photos of the zoo's "
            f"`photos` set (calibration: {16 * args.calib_batches} crops of the 5 `calib` photos; split by photo, "
            f"so no test photo is seen in calibration); logit SQNR over the same 64 crops; "
            f"{args.rounds} (batch 1) and {max(3, args.rounds // 2)} (batch 16) round-robin rounds.", "",
            *image_table(args.rounds, args.threads, args.calib_batches, image_part)]
        print("\n".join(sections[image_part]), flush=True)
    load1 = os.getloadavg()
    machine = (f"Machine: {os.cpu_count()} CPU cores shared with other jobs; load average (1/5/15 min) "
               f"{load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f} at start, {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} at end; "
               f"{args.threads} threads; torch {torch.__version__}; parts {' '.join(parts)} in {time.time() - start:.0f} s; "
               f"`{' '.join(sys.argv)}`.")
    body = ["# int8 / half precision on encoders (MiniLM-L6, MobileNetV2, EfficientNet-Lite0)", ""]
    for part, title in (("minilm", "MiniLM-L6 embeddings, 32 sentences × 128 tokens"),
                        ("mobilenet", "MobileNetV2, static int8, 224 × 224"),
                        ("efficientnet", "EfficientNet-Lite0, static int8, 224 × 224")):
        lines = [machine, "", *sections[part]] if part in sections else _keep_section(out, part)
        body += [f"## {title}", "", f"<!-- part:{part} -->", *lines, f"<!-- /part:{part} -->", ""]
    notes = _keep_section(out, "analysis")
    body += ["## Analysis (written by hand after the run)", "", "<!-- part:analysis -->", *notes,
             "<!-- /part:analysis -->", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(body), encoding="utf-8")
    os.replace(tmp, out)  # atomic: never a half-written doc
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
