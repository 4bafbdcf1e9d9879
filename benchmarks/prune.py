"""Pruning, side by side in one run: unstructured / N:M on SmolLM2-135M, structured on MobileNetV2 and MiniLM-L6.

Run: ``.venv/bin/python benchmarks/prune.py`` → prints Markdown tables and writes
``docs/benchmarks/prune.md``.

* SmolLM2-135M held-out perplexity (Shakespeare test split; calibration on the train split) at 50 %
  unstructured and 2:4 for slimkit magnitude / wanda / sparsegpt, and ``torch.nn.utils.prune``
  global L1 magnitude as the peer. ``lm_head`` (tied to the embedding) is not pruned.
* Structured: MobileNetV2 (channels) and MiniLM-L6 (attention heads + MLP neurons, MLP neurons
  alone, layer_width) at 70 % and 50 % of the dense MACs; latency ratio vs dense timed round-robin in
  the same run (``sk.measure.compare_latency``), quality (top-1 / top-5 agreement with the dense
  model on the held-out ``test`` photos of the zoo's ``photos`` set, recovery on its ``train``
  photos; embedding cosine on held-out Shakespeare lines) before and after a short recovery distillation from the dense model
  through the shared training loop; Torch-Pruning's own ``MetaPruner`` (magnitude importance; for
  MiniLM with ``num_heads`` / ``prune_num_heads``) at the same ratios as the peer.

Parts run alone: ``--parts llm``, ``--parts mobilenet-v2``, ``--parts minilm`` (``--out`` to write
elsewhere than ``docs/benchmarks/prune.md``). ``--parts latency-alloc --out
docs/benchmarks/latency_allocation.md``: MobileNetV2 ``allocation: latency`` vs MACs allocation,
latency table validated on random widths (not in the default parts).
"""
from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune as torch_prune

import slimkit as sk
from slimkit.core.inputs import call_model, output_tensor
from slimkit.measure.macs import count_macs
from slimkit.train.loop import TrainOptions, train


def run(label: str, model: nn.Module, recipe_step: dict, **data: Any) -> tuple[nn.Module, float, dict]:
    t = time.perf_counter()
    res = sk.compress(model, {"steps": [{"prune": recipe_step}]}, progress=False, measure=False, **data)
    return res.model, time.perf_counter() - t, res.report.steps[0].get("notes", {})


# ----------------------------------------------------------------------------- SmolLM2 unstructured
def torch_global_magnitude(model: nn.Module, sparsity: float) -> nn.Module:
    """Peer: torch.nn.utils.prune.global_unstructured (L1) over every Linear except lm_head."""
    m = copy.deepcopy(model)
    params = [(mod, "weight") for n, mod in m.named_modules() if isinstance(mod, nn.Linear) and n != "lm_head"]
    torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=sparsity)
    for mod, name in params:
        torch_prune.remove(mod, name)
    return m


def llm_section(calib_batches: int, lines: list[str]) -> None:
    model, tok = sk.zoo.load_model("smollm2-135m")
    calib = sk.zoo.load_data("shakespeare", "train", tokenizer=tok, seq_len=256, max_batches=calib_batches)
    test = sk.zoo.load_data("shakespeare", "test", tokenizer=tok, seq_len=256, max_batches=8)
    ppl = sk.Perplexity(test)
    dense = ppl(model)
    rows = [("dense fp32", "-", dense, "-")]
    for method in ("magnitude", "wanda", "sparsegpt"):
        for pattern in (None, "2:4"):
            step = {"method": method, "sparsity": 0.5, "ignore": ["lm_head"]}
            if pattern:
                step["pattern"] = pattern
            pruned, secs, notes = run(method, model, step, calib=calib)
            rows.append((f"slimkit {method}", pattern or "50 %", ppl(pruned), f"{secs:.0f}"))
            print(rows[-1], notes, flush=True)
            del pruned
    t = time.perf_counter()
    peer = torch_global_magnitude(model, 0.5)
    rows.append(("torch.nn.utils.prune global L1 (peer)", "50 % global", ppl(peer), f"{time.perf_counter() - t:.0f}"))
    lines += [f"## SmolLM2-135M: held-out perplexity (Shakespeare test, 8×256 tokens; calibration {calib_batches}×256 train tokens)", "",
              "| method | sparsity | perplexity | × dense | prune time (s) |", "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {a} | {b} | {p:.2f} | {p / dense:.2f} | {s} |" for a, b, p, s in rows]
    lines.append("")
    print("\n".join(lines[-len(rows) - 4:]), flush=True)


# ----------------------------------------------------------------------------- structured
def distill_recover(student: nn.Module, teacher: nn.Module, batches: list[Any], steps: int, lr: float) -> nn.Module:
    """Short recovery: match the dense model's outputs (MSE on logits / hidden states) via the shared loop."""
    with torch.no_grad():
        targets = [output_tensor(call_model(teacher, b)).detach() for b in batches]
    data = list(range(len(batches)))

    def loss_fn(model: nn.Module, i: int) -> torch.Tensor:
        return F.mse_loss(output_tensor(call_model(model, batches[i])), targets[i])

    train(student, data, loss_fn, TrainOptions(steps=steps, lr=lr, optimizer="adamw"))
    return student


def tp_peer(model: nn.Module, example: Any, ratio: float, kind: str) -> nn.Module:
    """Torch-Pruning's own MetaPruner (group L2 magnitude) at the same per-group ratio."""
    m = copy.deepcopy(model)
    if kind == "cnn":
        ignored = [m.classifier]
        root_types = [nn.Conv2d]
    else:  # encoder: only the MLP neurons (intermediate), as slimkit's `neuron` granularity
        ignored = [mod for n, mod in m.named_modules() if isinstance(mod, nn.Linear) and "intermediate" not in n]
        root_types = [nn.Linear]
    pruner = tp.pruner.MetaPruner(m, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=ignored, root_module_types=root_types,
                                  forward_fn=lambda mod, x: call_model(mod, x),
                                  output_transform=lambda out: output_tensor(out))
    pruner.step()
    return m


def tp_bert_heads_peer(model: nn.Module, example: Any, head_ratio: float, neuron_ratio: float) -> nn.Module:
    """Torch-Pruning's MetaPruner on HF BERT: whole heads (``num_heads`` / ``prune_num_heads``) and MLP neurons.

    The residual stream and the pooler are ignored (as slimkit's head + neuron steps leave them);
    group L2 magnitude importance; afterwards the attention modules' head counts are updated, as in
    Torch-Pruning's own Hugging Face BERT example.
    """
    m = copy.deepcopy(model)
    atts = [mod for mod in m.modules() if hasattr(mod, "attention_head_size") and hasattr(mod, "query")]
    num_heads = {lin: a.num_attention_heads for a in atts for lin in (a.query, a.key, a.value)}
    pruner = tp.pruner.MetaPruner(m, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=neuron_ratio, ignored_layers=[m.pooler.dense, m.embeddings.word_embeddings],
                                  root_module_types=[nn.Linear], num_heads=num_heads, prune_num_heads=True,
                                  prune_head_dims=False, head_pruning_ratio=head_ratio,
                                  forward_fn=lambda mod, x: call_model(mod, x),
                                  output_transform=lambda out: output_tensor(out))
    pruner.step()
    for a in atts:
        a.num_attention_heads = pruner.num_heads[a.query]
        a.all_head_size = a.query.out_features
    return m


def minilm_structured_section(lines: list[str], steps: int, rounds: int) -> None:
    """MiniLM-L6 at 70 % / 50 % of the dense MACs: heads + neurons, neurons alone, layer_width, TP peer."""
    model, tok = sk.zoo.load_model("minilm-l6")
    calib = sk.zoo.load_data("shakespeare-lines", "train", tokenizer=tok, batch_size=16, seq_len=128, max_batches=8)
    evalb = sk.zoo.load_data("shakespeare-lines", "test", tokenizer=tok, batch_size=32, seq_len=128, max_batches=4)
    metric, example = sk.CosineFidelity(evalb), calib[0]
    timing_inputs = evalb[0]  # 32 sentences x 128 tokens, as benchmarks/quantize_encoders.py
    metric.prepare(model)
    dense_macs = count_macs(model, example)
    models: dict[str, nn.Module] = {"dense": model}
    quality: dict[str, tuple[float | None, float | None]] = {"dense": (metric(model), None)}
    macs: dict[str, float] = {"dense": 1.0}
    secs: dict[str, str] = {"dense": "-"}

    def add(label: str, pruned: nn.Module, seconds: float, comparable: bool = True) -> None:
        macs[label] = count_macs(pruned, example) / dense_macs
        secs[label] = f"{seconds:.0f}"
        if comparable:  # same embedding width as the dense model: cosine and recovery distillation apply
            before = metric(pruned)
            recovered = distill_recover(copy.deepcopy(pruned), model, calib, steps, 1e-4)
            quality[label], models[label] = (before, metric(recovered)), recovered
        else:
            quality[label], models[label] = (None, None), pruned
        print(label, f"MACs {macs[label]:.3f}", f"{seconds:.0f}s", quality[label], flush=True)

    for target in (0.7, 0.5):
        head_sparsity = round(1 - target, 2)
        t = time.perf_counter()  # heads first, then neurons to the overall target (each step's target is relative)
        heads, _, hnotes = run("structured", model, {"method": "structured", "granularity": "head",
                                                     "sparsity": head_sparsity, "importance": "activation"},
                               example_inputs=example, calib=calib)
        recipe = {"steps": [
            {"prune": {"method": "structured", "granularity": "head", "sparsity": head_sparsity, "importance": "activation"}},
            {"prune": {"method": "structured", "granularity": "neuron", "target_macs": round(target / hnotes["macs_kept"], 4),
                       "importance": "activation", "round_to": 8}}]}
        res = sk.compress(model, recipe, example_inputs=example, calib=calib, progress=False, measure=False)
        nnotes = res.report.steps[1]["notes"]
        add(f"slimkit heads {head_sparsity:.0%} + neurons, target_macs {target}", res.model, time.perf_counter() - t)
        del heads
        pruned, s, notes = run("structured", model, {"method": "structured", "granularity": "neuron",
                                                     "target_macs": target, "round_to": 8}, example_inputs=example)
        add(f"slimkit neurons only, target_macs {target}", pruned, s)
        pruned, s, notes = run("structured", model, {"method": "structured", "granularity": "layer_width",
                                                     "target_macs": target, "round_to": 8, "importance": "activation"},
                               example_inputs=example, calib=calib)
        add(f"slimkit layer_width {model.config.hidden_size} -> {pruned.config.hidden_size}, target_macs {target}",
            pruned, s, comparable=False)
        t = time.perf_counter()
        peer = tp_bert_heads_peer(model, example, head_sparsity, nnotes["group_ratio"])
        add(f"Torch-Pruning MetaPruner (peer): heads {head_sparsity:.0%}, neurons {nnotes['group_ratio']:.3f}",
            peer, time.perf_counter() - t)
    load = os.getloadavg()
    lat = sk.measure.compare_latency(models, timing_inputs, runs=rounds)
    base = lat["dense"]["latency_ms"]
    lines += ["## minilm-l6: structured pruning (heads, neurons, layer_width), latency vs dense in the same run", "",
              f"Latency: one batch of 32 sentences x 128 tokens, eager torch, {torch.get_num_threads()} threads, "
              f"{rounds} rounds round-robin (`sk.measure.compare_latency`), load average before timing "
              f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}. Cosine: mean-pooled embeddings vs the dense model on "
              f"{sum(len(b['input_ids']) for b in evalb)} held-out Shakespeare lines (test plays); calibration and "
              f"recovery use {sum(len(b['input_ids']) for b in calib)} train-split lines.", "",
              f"| model | MACs kept | prune s | latency ms (median) | x dense | embedding cosine after pruning | "
              f"after {steps}-step recovery distillation |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for k in models:
        q0, q1 = quality[k]
        lines.append(f"| {k} | {macs[k]:.3f} | {secs[k]} | {lat[k]['latency_ms']:.0f} | {lat[k]['latency_ms'] / base:.2f} | "
                     f"{'n/a' if q0 is None else f'{q0:.4f}'} | {'-' if q1 is None else f'{q1:.4f}'} |")
    lines.append("")
    print("\n".join(lines[-len(models) - 6:]), flush=True)


def structured_section(name: str, lines: list[str], steps: int, targets: tuple[float, ...] = (0.7, 0.5)) -> None:
    """MobileNetV2 channels: recovery trains on the zoo's ``photos`` train split, agreement is
    measured on the held-out ``test`` photos (disjoint by photo; see ``slimkit.zoo.photos``)."""
    model, _ = sk.zoo.load_model("mobilenet-v2")
    train_b = sk.zoo.load_data("photos", "train", batch_size=8)  # 8 photos x 8 crops
    evalb = sk.zoo.load_data("photos", "test")  # 8 held-out photos x 8 crops
    metric, example, gran, kind, lr = sk.TopKAgreement(evalb), train_b[0], "channel", "cnn", 1e-4
    timing_inputs = evalb[0][:4]
    metric.prepare(model)
    dense_macs = count_macs(model, example)
    models: dict[str, nn.Module] = {"dense": model}
    quality: dict[str, tuple[dict[str, float], dict[str, float] | None]] = {"dense": (metric.scores(model), None)}
    macs: dict[str, float] = {"dense": 1.0}
    for target in targets:
        for allocation in ("global", "uniform"):  # uniform last: its group ratio is the peer's ratio
            pruned, secs, notes = run("structured", model, {"method": "structured", "granularity": gran,
                                                            "target_macs": target, "round_to": 8,
                                                            "allocation": allocation}, example_inputs=example)
            label = f"slimkit structured {gran}, {allocation} allocation, target_macs {target}"
            before = metric.scores(pruned)
            recovered = distill_recover(copy.deepcopy(pruned), model, train_b, steps, lr)
            models[label] = recovered
            quality[label] = (before, metric.scores(recovered))
            macs[label] = count_macs(recovered, example) / dense_macs
            print(label, notes, f"{secs:.0f}s", quality[label], flush=True)
        peer = tp_peer(model, example, notes["group_ratio"], kind)
        plabel = f"Torch-Pruning MetaPruner (peer), ratio {notes['group_ratio']:.3f}"
        pbefore = metric.scores(peer)
        peer = distill_recover(peer, model, train_b, steps, lr)
        models[plabel] = peer
        quality[plabel] = (pbefore, metric.scores(peer))
        macs[plabel] = count_macs(peer, example) / dense_macs
        print(plabel, quality[plabel], flush=True)
    lat = sk.measure.compare_latency(models, timing_inputs, runs=15)
    base = lat["dense"]["latency_ms"]
    lines += [f"## {name}: structured pruning ({gran}), latency vs dense in the same run", "",
              f"Agreement with the dense model on {sum(len(b) for b in evalb)} crops of the 8 held-out `test` "
              f"photos; recovery distillation on {sum(len(b) for b in train_b)} crops of the 8 `train` photos "
              f"(zoo dataset `photos`, split by photo). Latency: a batch of {len(timing_inputs)} test crops.", "",
              f"| model | MACs kept | latency ms (median) | × dense | top-1 / top-5 agreement after pruning | "
              f"after {steps}-step recovery distillation |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for k in models:
        q0, q1 = quality[k]
        after = "-" if q1 is None else f"{q1['top1']:.4f} / {q1['top5']:.4f}"
        lines.append(f"| {k} | {macs[k]:.3f} | {lat[k]['latency_ms']:.1f} | {lat[k]['latency_ms'] / base:.2f} | "
                     f"{q0['top1']:.4f} / {q0['top5']:.4f} | {after} |")
    lines.append("")
    print("\n".join(lines[-len(models) - 4:]), flush=True)


# ----------------------------------------------------------------------------- latency allocation
def _group_widths(model: nn.Module, groups: list[str]) -> dict[str, int]:
    """Kept units of every channel group (its root conv's output channels)."""
    return {g: model.get_submodule(g).out_channels for g in groups}


def latency_alloc_section(lines: list[str], steps: int, threads: int, rounds: int, samples: int,
                          target: float = 0.55) -> None:
    """MobileNetV2: ``allocation: latency`` vs MACs (``global``) allocation, side by side in one run.

    Rows: dense; global at target_macs 0.5 (prune.md's row); latency at ``target``; latency at the
    global row's predicted ratio (equal predicted latency); global at the latency row's MACs
    (equal MACs). Every pruned model gets the same 30-step recovery distillation as the structured
    section. The latency table (eager torch, ``threads``) is validated on ``samples`` random width
    assignments from its grid, timed in the same interleaved loop as the rows.
    """
    import random
    import statistics

    from slimkit.core.heads import protected_names
    from slimkit.measure.latency_table import build_latency_table, width_grid
    from slimkit.prune.structured.core import build_graph, candidate_groups
    from slimkit.prune.structured.latency import channel_groups, prune_to_widths

    model, _ = sk.zoo.load_model("mobilenet-v2")
    model.eval()
    train_b = sk.zoo.load_data("photos", "train", batch_size=8)
    evalb = sk.zoo.load_data("photos", "test")
    top, cos = sk.TopKAgreement(evalb), sk.CosineFidelity(evalb)
    top.prepare(model)
    cos.prepare(model)
    timing_inputs = evalb[0][:4]
    example = train_b[0][:4]  # traces the model and sets the latency table's input shape (= timing batch shape)
    dense_macs = count_macs(model, example)
    DG = build_graph(model, example)
    groups = channel_groups(model, DG, candidate_groups(model, DG, "channel",
                                                        [model.get_submodule(n) for n in protected_names(model)]))
    base = {"method": "structured", "granularity": "channel", "round_to": 8}
    lat_step = {**base, "allocation": "latency", "latency_threads": threads}
    rows: dict[str, dict[str, Any]] = {"dense": {"model": model, "q0": None}}

    def add(label: str, step: dict) -> dict[str, Any]:
        pruned, secs, notes = run("structured", model, step, example_inputs=example)
        q0 = (top.scores(pruned), cos(pruned))
        recovered = distill_recover(copy.deepcopy(pruned), model, train_b, steps, 1e-4)
        rows[label] = {"model": recovered, "q0": q0, "q1": (top.scores(recovered), cos(recovered)), "secs": secs,
                       "notes": notes, "macs": count_macs(recovered, example) / dense_macs}
        print(label, {k: v for k, v in notes.items() if k != "kept_widths"}, f"{secs:.0f}s", rows[label]["q1"], flush=True)
        return rows[label]

    glob = add("global (MACs) allocation, target_macs 0.5", {**base, "allocation": "global", "target_macs": 0.5})
    lat = add(f"latency allocation, target_latency {target}", {**lat_step, "target_latency": target})
    table = build_latency_table(model, example, groups, round_to=8, threads=threads)  # from the cache: 0 measured
    for r in rows.values():
        r["pred"] = table.ratio(_group_widths(r["model"], list(groups)))
    g_pred = round(glob["pred"], 3)
    add(f"latency allocation, target_latency {g_pred} (= global's predicted)", {**lat_step, "target_latency": g_pred})
    add(f"global (MACs) allocation, target_macs {lat['macs']:.3f} (= latency {target}'s MACs)",
        {**base, "allocation": "global", "target_macs": round(lat["macs"], 3)})
    for r in rows.values():
        r["pred"] = table.ratio(_group_widths(r["model"], list(groups)))
    rng = random.Random(0)
    rand: dict[str, float] = {}
    timed = {k: r["model"] for k, r in rows.items()}
    for i in range(samples):
        w = {g: rng.choice(width_grid(table.full[g], round_to=8)) for g in groups}
        timed[f"random widths {i}"] = prune_to_widths(copy.deepcopy(model), example, w)
        rand[f"random widths {i}"] = table.ratio(w)
    load0 = os.getloadavg()
    lat_ms = sk.measure.compare_latency(timed, timing_inputs, runs=rounds, threads=threads)
    load1 = os.getloadavg()
    dense_ms = lat_ms["dense"]["latency_ms"]
    meas = {k: v["latency_ms"] / dense_ms for k, v in lat_ms.items()}
    pairs = [(rand[k], meas[k]) for k in rand] + [(r["pred"], meas[k]) for k, r in rows.items() if k != "dense"]
    corr = statistics.correlation([p for p, _ in pairs], [m for _, m in pairs])
    mae = statistics.mean(abs(p - m) for p, m in pairs)
    tnotes = lat["notes"]["latency_table"]
    lines += ["## MobileNetV2: `allocation: latency` vs MACs allocation (held-out photos)", "",
              f"`benchmarks/prune.py --parts latency-alloc` (one run). Latency table: {tnotes['layers']} layers (conv + "
              f"its BatchNorm / ReLU6), kept widths {{0.25, 0.375, ..., 1.0}} of each group rounded to multiples of 8, "
              f"eager torch, {threads} thread(s), input = a batch of {len(timing_inputs)} crops at 224 x 224; built in "
              f"{tnotes['seconds']} s (the first step measured it, later steps read the cache). Whole-model latency: "
              f"every model below (and {samples} models pruned to random grid widths, for validating the table) timed "
              f"round-robin in one loop, {rounds} rounds, median, {threads} thread(s), on 2 CPU cores shared with other "
              f"jobs (load average {load0[0]:.1f} before, {load1[0]:.1f} after the loop). Quality: top-1 / top-5 "
              f"agreement and mean logit cosine with the dense model on {sum(len(b) for b in evalb)} crops of the 8 "
              f"held-out `test` photos, before and after the same {steps}-step recovery distillation on the `train` "
              "photos as the structured section. `predicted` = the table's latency ratio for the model's kept widths.", "",
              "| model | MACs kept | predicted latency | measured latency ms (median) | measured × dense | "
              "top-1 / top-5 / cosine after pruning | after recovery |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for k, r in rows.items():
        fmt = (lambda q: f"{q[0]['top1']:.4f} / {q[0]['top5']:.4f} / {q[1]:.3f}")
        q0 = "1 / 1 / 1" if r["q0"] is None else fmt(r["q0"])
        q1 = "-" if r["q0"] is None else fmt(r["q1"])
        lines.append(f"| {k} | {r.get('macs', 1.0):.3f} | {r['pred']:.3f} | {lat_ms[k]['latency_ms']:.1f} | "
                     f"{meas[k]:.3f} | {q0} | {q1} |")
    lines += ["", f"Table validation: predicted vs measured latency ratio over the {samples} random-width models and the "
              f"{len(rows) - 1} pruned rows: Pearson r = {corr:.3f}, mean absolute error {mae:.3f}.", "",
              "| random widths | predicted | measured |", "| --- | ---: | ---: |"]
    lines += [f"| {k} | {rand[k]:.3f} | {meas[k]:.3f} |" for k in rand]
    labels = [k for k in rows if k != "dense"]
    lines += ["", "Kept channels per group (group = root conv; `full` = dense width):", "",
              "| group | full | " + " | ".join(labels) + " |", "| --- | ---: |" + " ---: |" * len(labels)]
    for g in groups:
        lines.append(f"| {g} | {table.full[g]} | " + " | ".join(str(rows[k]["model"].get_submodule(g).out_channels)
                                                             for k in labels) + " |")
    lines.append("")
    print("\n".join(lines[-(len(groups) + len(rows) + samples + 20):]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib-batches", type=int, default=16)
    parser.add_argument("--recover-steps", type=int, default=30)
    parser.add_argument("--mobilenet-targets", default="0.7,0.5", help="comma-separated target_macs (MobileNetV2 part)")
    parser.add_argument("--parts", default="llm,mobilenet-v2,minilm",
                        help="comma-separated: llm, mobilenet-v2, minilm, latency-alloc (run alone with "
                             "--out docs/benchmarks/latency_allocation.md)")
    parser.add_argument("--rounds", type=int, default=15, help="round-robin latency rounds (MiniLM part)")
    parser.add_argument("--latency-threads", type=int, default=1, help="threads of the latency-alloc part's timing")
    parser.add_argument("--latency-rounds", type=int, default=30, help="interleaved rounds (latency-alloc part)")
    parser.add_argument("--latency-samples", type=int, default=8, help="random-width models validating the table")
    parser.add_argument("--out", default="docs/benchmarks/prune.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    load = os.getloadavg()
    lines = ["# Pruning benchmark", "",
             f"Machine: {os.cpu_count()} CPU cores shared with other jobs, load average at start "
             f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; torch {torch.__version__}, {args.threads} threads, "
             f"eager PyTorch; torch-pruning {tp.__version__}. Everything below comes from one run of "
             "`benchmarks/prune.py`.", ""]
    parts = ["minilm" if p == "minilm-l6" else p for p in args.parts.split(",")]
    sections = [("llm", lambda: llm_section(args.calib_batches, lines)),
                ("mobilenet-v2", lambda: structured_section("mobilenet-v2", lines, args.recover_steps,
                                                                   tuple(float(t) for t in args.mobilenet_targets.split(",")))),
                ("minilm", lambda: minilm_structured_section(lines, args.recover_steps, args.rounds)),
                ("latency-alloc", lambda: latency_alloc_section(lines, args.recover_steps, args.latency_threads,
                                                                args.latency_rounds, args.latency_samples))]
    for name, section in sections:
        if name in parts:
            section()
            write(args.out, lines, start)  # after every section, so a cut-short run keeps what it measured


def write(out: str, lines: list[str], start: float) -> None:
    load = os.getloadavg()
    tail = f"Run so far took {time.time() - start:.0f} s; load average now {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}."
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(lines + [tail]) + "\n", encoding="utf-8")
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
