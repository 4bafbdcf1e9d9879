"""Per-layer allocation by evolutionary search (EvoPress-style) on SmolLM2-135M, side by side with
the uniform and heuristic allocations at exactly the same budget.

Run: ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/search.py`` → prints the table and writes
``docs/benchmarks/search.md`` (+ ``search.json``, the per-row results cache: ``--rows a b`` re-runs
only those rows, the others are read from the cache; ``--fresh`` ignores it).

Calibration (level databases, block influence, OWL, fitness): the Shakespeare *train* plays;
perplexity on the held-out *test* plays. Row groups (each row of a group at the same budget):

* ``s70``: 70 % unstructured, uniform SparseGPT / OWL SparseGPT / searched SparseGPT levels (same nonzeros)
* ``s50``: 50 %, uniform SparseGPT / searched
* ``drop8``: 8 of 30 blocks dropped, block influence (ShortGPT) / searched
* ``q3``: GPTQ g128 at an average of 3 bits among 2/3/4/8 (nominal bits: slimkit packs 3-bit codes two
  per byte, so the *stored* bytes of 3-bit equal 4-bit's; see the notes), uniform 3-bit / searched
* ``q425``: GPTQ g128, stored bytes of an average of 4.25 bits per weight (scales/zeros included),
  uniform 4-bit g128 for reference (4.19 bits) / searched among 2/3/4/8

Searched rows: prune and drop_layers through ``sk.compress`` with the ``search`` step; the two
quantize rows drive the same engine (``evolve`` + KL fitness) with the bit-width space built with
``cost`` / ``target_avg_bits`` (the search config has no such fields), then run the found step
normally. Every searched model is the found recipe step run normally (not the search's database).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import slimkit as sk
from slimkit.core.context import RunContext
from slimkit.core.recipe import Recipe
from slimkit.quantize.weight_only import WeightOnlyLinear
from slimkit.quantize.weight_only.apply import peak_rss_mb, reset_peak_rss
from slimkit.search.evolution.core import CostTable, evolve
from slimkit.search.fitness import OutputDivergence
from slimkit.search.quant_levels import QuantLevelSpace, _start, layer_cost, quant_space
from slimkit.search.space import SpaceOptions

ROWS = ["fp32", "s70_uniform", "s70_owl", "s70_search", "drop8_influence", "drop8_search", "s50_uniform", "s50_search",
        "q3_uniform", "q3_search", "q425_uniform", "q425_search"]
LABELS = {
    "fp32": "fp32", "s70_uniform": "70 % SparseGPT uniform", "s70_owl": "70 % SparseGPT OWL",
    "s70_search": "70 % SparseGPT searched", "s50_uniform": "50 % SparseGPT uniform",
    "s50_search": "50 % SparseGPT searched", "drop8_influence": "drop 8/30 blocks, block influence",
    "drop8_search": "drop 8/30 blocks, searched", "q3_uniform": "GPTQ g128 uniform 3-bit",
    "q3_search": "GPTQ g128 avg 3 bits (2/3/4/8) searched", "q425_uniform": "GPTQ g128 uniform 4-bit (4.19 bits)",
    "q425_search": "GPTQ g128 avg 4.25 bits (2/3/4/8) searched",
}
#: (row, reference row, max ratio, what): the issue's targets
TARGETS = [
    ("s70_search", "s70_uniform", 0.6, "searched <= 0.6x uniform SparseGPT"),
    ("s70_search", "s70_owl", 1.0, "searched < OWL"),
    ("s50_search", "s50_uniform", 0.95, "searched <= 0.95x uniform"),
    ("drop8_search", "drop8_influence", 0.7, "searched <= 0.7x block influence"),
    ("q3_search", "q3_uniform", 0.8, "searched <= 0.8x uniform 3-bit GPTQ"),
    ("q425_search", "fp32", 1.08, "searched <= 1.08x fp32"),
]
REFERENCE = {"s70": "s70_uniform", "s50": "s50_uniform", "drop8": "drop8_influence", "q3": "q3_uniform",
             "q425": "q425_uniform"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- budgets
def linear_nonzeros(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(m.weight)) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and n != "lm_head")


def quant_budget(model: nn.Module) -> dict[str, Any]:
    """Stored bytes of the non-head weight-only layers and their nominal average bits."""
    stored = nominal = weights = 0
    for name, m in model.named_modules():
        if isinstance(m, WeightOnlyLinear) and name != "lm_head":
            b = sum(t.numel() * t.element_size() for t in m.slimkit_weights().values())
            stored += b
            nominal += 8 * (b - m.qweight.numel()) + m.in_features * m.out_features * m.bits
            weights += m.in_features * m.out_features
    return {"stored_bytes": stored, "avg_bits_stored": 8 * stored / weights, "avg_bits_nominal": nominal / weights}


def budget_of(group: str, model: nn.Module) -> dict[str, Any]:
    if group in ("s70", "s50"):
        return {"nonzeros": linear_nonzeros(model)}
    if group == "drop8":
        return {"blocks": len(model.model.layers)}
    if group in ("q3", "q425"):
        return quant_budget(model)
    return {"nonzeros": linear_nonzeros(model), "blocks": len(model.model.layers)}


# ----------------------------------------------------------------------------- rows
def database_allowance(row: str, results: dict[str, Any], args: argparse.Namespace) -> float:
    """Seconds the search step may spend before evolving (level database + reference outputs), on
    top of ``--search-s``: the search step's ``budget_s`` counts from the step's start, so on a
    shared machine a fixed allowance would give the evolution a time that depends on the load.
    ``--database-s`` when given; else ``DATABASE_FACTOR`` × the wall time of the group's reference
    row, measured just before in the same run (uniform SparseGPT: one calibration pass + one
    SparseGPT sweep per layer; the database is one pass + one sweep per level), + 120 s."""
    if args.database_s is not None:
        return float(args.database_s)
    group = row.split("_")[0]
    ref = results.get(REFERENCE[group], {}).get("wall_s")
    if ref is None:
        raise SystemExit(f"row {row}: --database-s not given and the reference row {REFERENCE[group]} has no "
                         f"wall time in the results cache; run it first or pass --database-s")
    levels = 2 * args.levels + 1 if group in ("s70", "s50") else 1
    return DATABASE_FACTOR * ref * (1 + levels) / 2 + 120.0


#: safety factor on the database estimate (the load of a shared machine varies)
DATABASE_FACTOR = 1.5


def search_options(row: str, results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    return {"generations": args.generations, "offspring": args.offspring, "selection": args.selection,
            "budget_s": round(args.search_s + database_allowance(row, results, args)), "seed": 0,
            "fitness_holdout": args.holdout, "database": args.database}


def stage_tokens(args: argparse.Namespace) -> int:
    """Calibration tokens scored per generation (all stages, the parent joining the last)."""
    pool, total = args.offspring, 0
    for k, (survivors, tokens) in enumerate(args.selection):
        pool += 1 if k == len(args.selection) - 1 else 0
        total += pool * tokens
        pool = survivors
    return total


def search_stats(note: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    gens = len(note["generations"])
    evolution = sum(g["seconds"] for g in note["generations"])
    return {"generations": gens, "candidates": note["trials"], "tokens": gens * stage_tokens(args),
            "search_s": note["search_seconds"], "evolution_s": round(evolution, 1),
            "database_s": round(note["search_seconds"] - evolution, 1), "budget_s": note["budget_s"],
            "stopped_by": note["stopped_by"],
            "fitness_uniform": note["uniform_fitness"], "fitness_searched": note["searched_fitness"]}


def run_step(model: nn.Module, step: dict[str, Any], calib: list[Any]) -> tuple[nn.Module, dict[str, Any]]:
    res = sk.compress(model, {"steps": [step]}, calib=calib, progress=False, measure=False)
    return res.model, {"recipe": res.recipe.to_dict()["steps"][0], "notes": res.report.to_dict()["steps"][0]["notes"]}


def searched_step(model: nn.Module, wrapped: dict[str, Any], calib: list[Any], args: argparse.Namespace,
                  options: dict[str, Any], **extra: Any) -> tuple[nn.Module, dict[str, Any]]:
    out, info = run_step(model, {"search": {"method": "evolution", "step": wrapped, **options, **extra}}, calib)
    note = info["notes"]["search"]
    return out, {**search_stats(note, args), "allocation": note["allocation"], "found": info["recipe"]}


#: the level database mode of this run (--database), read by the quantize rows' own space builder
DATABASE = ["sequential"]

#: the GPTQ level database of the quantize rows, built once per process (q3 and q425 use the same widths,
#: group size and calibration; only the cost model and the start differ): (space, seconds it took)
_QUANT_DB: dict[str, Any] = {}


def quant_levels(model: nn.Module, calib: list[Any], bits: int, cost: str,
                 target: float | None) -> tuple[QuantLevelSpace, float, bool]:
    """The bit-width space of a quantize row: its own GPTQ database the first time, then the same
    stored levels re-costed (``cost``) with the row's start (``bits`` everywhere, or the widest fill
    not above ``target`` average bits), exactly as :func:`quant_space` computes them.
    Returns (space, database seconds, whether the database was shared)."""
    step = Recipe.from_dict([{"quantize": {"method": "gptq", "bits": bits, "group_size": 128}}]).steps[0]
    if "space" not in _QUANT_DB:
        began = time.perf_counter()
        ctx = RunContext(calib=calib, show_progress=False)
        space = quant_space(model, step, ctx, SpaceOptions(levels=[2, 3, 4, 8], calib=calib, database=DATABASE[0]),
                            target_avg_bits=target,
                            cost=cost)
        _QUANT_DB.update(space=space, seconds=time.perf_counter() - began)
        return space, _QUANT_DB["seconds"], False
    base: QuantLevelSpace = _QUANT_DB["space"]
    cfg = step.config
    costs = [[layer_cost(r, c, b, cfg.group_size, cfg.symmetric, hb, cost) for b in base.bits]
             for r, c, hb in base.shapes]
    limit = None if target is None else math.floor(target * base.n_weights / (1 if cost == "nominal" else 8))
    start = _start(costs, base.bits, bits, limit, f"target_avg_bits = {target!r}")
    base.restore(model)
    return QuantLevelSpace(step, base.units, base.shapes, base.bits, start, base.store, cost, base.others), \
        _QUANT_DB["seconds"], True


def searched_bits(model: nn.Module, calib: list[Any], args: argparse.Namespace, bits: int, cost: str,
                  target: float | None) -> tuple[nn.Module, dict[str, Any]]:
    """The search step's flow for a bit-width space with ``cost`` / ``target_avg_bits``."""
    began = time.perf_counter()
    # the search step's split (EvolutionSearchConfig.split_calibration): the last --holdout batches feed
    # the fitness only; the final run below calibrates on every batch
    database, held = (calib[:-args.holdout], calib[-args.holdout:]) if args.holdout else (calib, calib)
    fitness = OutputDivergence(model, held, None)  # every held-out calibration token, as the search step keeps
    space, db_s, shared = quant_levels(model, database, bits, cost, target)
    fitness.apply = lambda a: space.apply(model, a)
    costs = CostTable([[space.cost(u, lvl) for lvl in range(n)] for u, n in enumerate(space.n_levels)])
    sample = fitness.sample(np.random.default_rng([0, 1]), args.selection[-1][1])
    uniform_fit = fitness.score(space.uniform(), sample)
    deadline = time.perf_counter() + args.search_s
    evolve_began = time.perf_counter()
    out = evolve(space.uniform(), costs, fitness, generations=args.generations, offspring=args.offspring,
                 selection=args.selection, rng=np.random.default_rng(0), deadline=deadline)
    evolution_s = time.perf_counter() - evolve_began
    searched_fit = fitness.score(out.best, sample)
    search_s = time.perf_counter() - began + (db_s if shared else 0.0)
    space.restore(model)
    found = space.to_step(out.best)
    start_bits = space.avg_bits(space.uniform())
    if costs.total(out.best) != space.budget():
        raise RuntimeError(f"searched bits cost {costs.total(out.best)} != budget {space.budget()}")
    result, _ = run_step(model, found, calib)
    gens = len(out.history)
    values = [b for b in found["quantize"]["bits"].values()]
    return result, {"generations": gens, "candidates": out.trials + 2, "tokens": gens * stage_tokens(args),
                    "search_s": round(search_s, 1), "database_s": round(db_s, 1), "database_shared": shared,
                    "evolution_s": round(evolution_s, 1), "stopped_by": out.stopped_by,
                    "fitness_uniform": uniform_fit, "fitness_searched": searched_fit, "cost": cost,
                    "budget_avg_bits": round(start_bits, 4),
                    "bits_histogram": {str(b): values.count(b) for b in (2, 3, 4, 8)}, "found_bits": found["quantize"]["bits"]}


def build_row(row: str, model: nn.Module, calib: list[Any], args: argparse.Namespace,
              results: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    group = row.split("_")[0]
    if row == "fp32":
        return model, {}
    if group in ("s70", "s50"):
        prune = {"method": "sparsegpt", "sparsity": 0.7 if group == "s70" else 0.5}
        if row.endswith("uniform"):
            return run_step(model, {"prune": prune}, calib)[0], {}
        if row.endswith("owl"):
            return run_step(model, {"prune": {**prune, "allocation": "owl"}}, calib)[0], {}
        return searched_step(model, {"prune": prune}, calib, args, search_options(row, results, args),
                             levels=args.levels, level_step=args.level_step)
    if group == "drop8":
        drop = {"method": "influence", "n": 8}
        if row.endswith("influence"):
            out, info = run_step(model, {"drop_layers": drop}, calib)
            return out, {"dropped": info["notes"]["blocks_dropped"]}
        out, info = searched_step(model, {"drop_layers": drop}, calib, args, search_options(row, results, args))
        return out, {**info, "dropped": info["found"]["drop_layers"]["blocks"]}
    bits, target, cost = (3, None, "nominal") if group == "q3" else (4, 4.25, "stored")
    if row.endswith("uniform"):
        return run_step(model, {"quantize": {"method": "gptq", "bits": bits, "group_size": 128}}, calib)[0], {}
    return searched_bits(model, calib, args, bits, cost, target)


# ----------------------------------------------------------------------------- table
def budget_text(group: str, b: dict[str, Any]) -> str:
    if group in ("s70", "s50"):
        return f"{b['nonzeros']:,} nonzeros"
    if group == "drop8":
        return f"{b['blocks']} blocks"
    if group in ("q3", "q425"):
        return f"{b['stored_bytes']:,} B ({b['avg_bits_stored']:.3f} b stored, {b['avg_bits_nominal']:.3f} b nominal)"
    return f"{b['nonzeros']:,} nonzeros, {b['blocks']} blocks"


def table(results: dict[str, Any]) -> str:
    fp32 = results.get("fp32", {}).get("ppl")
    lines = ["| row | held-out ppl | × fp32 | × uniform | budget check | generations | candidates | tokens scored | "
             "wall s | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in ROWS:
        r = results.get(row)
        if r is None:
            lines.append(f"| {LABELS[row]} | not run | | | | | | | | |")
            continue
        group = row.split("_")[0]
        ref = results.get(REFERENCE.get(group, ""), {}).get("ppl")
        x_fp = f"{r['ppl'] / fp32:.3f}" if fp32 else ""
        x_un = f"{r['ppl'] / ref:.3f}" if ref and row != REFERENCE.get(group) else ""
        lines.append(f"| {LABELS[row]} | {r['ppl']:.2f} | {x_fp} | {x_un} | {budget_text(group, r['budget'])} | "
                     f"{r.get('generations', '')} | {r.get('candidates', '')} | {r.get('tokens', '')} | "
                     f"{r['wall_s']:.0f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> str:
    out = []
    for row, ref, limit, what in TARGETS:
        if row not in results or ref not in results:
            out.append(f"* {what}: not run")
            continue
        ratio = results[row]["ppl"] / results[ref]["ppl"]
        ok = ratio < limit if limit == 1.0 else ratio <= limit
        out.append(f"* {what}: **{'met' if ok else 'missed'}** ({results[row]['ppl']:.2f} vs "
                   f"{results[ref]['ppl']:.2f}, ×{ratio:.3f})")
    for row in ROWS:
        if row.endswith("search") and row in results:
            s = results[row]["search_s"]
            out.append(f"* {LABELS[row]}: search {s:.0f} s (≤ 30 min on 2 cores: {'met' if s <= 1800 else 'missed'}), "
                       f"stopped by {results[row]['stopped_by']}")
    return "\n".join(out)


def holdout_text(k: int) -> str:
    if not k:
        return " (database and fitness share them)"
    return f" (the last {k} for the fitness only, the others for the level database)"


def details(results: dict[str, Any]) -> str:
    out = []
    for row in ROWS:
        r = results.get(row)
        if not r or not row.endswith(("search", "influence")):
            continue
        bits = []
        if "dropped" in r:
            bits.append(f"dropped blocks {r['dropped']}")
        if "evolution_s" in r:
            budget = f", budget_s {r['budget_s']}" if r.get("budget_s") else ""
            shared = " (built once for both quantize searches, counted in each)" if r.get("database_shared") else ""
            bits.append(f"search {r['search_s']:.0f} s = level database + reference {r['database_s']:.0f} s{shared} + "
                        f"evolution {r['evolution_s']:.0f} s ({r['generations']} generations, {r['candidates']} "
                        f"candidates scored, stopped by {r['stopped_by']}{budget})")
        if "settings" in r and row.endswith("search"):
            st = r["settings"]
            bits.append(f"settings: offspring {st['offspring']}, selection {st['selection']}, evolution ≤ "
                        f"{st['search_s']:.0f} s, calibration {st['calib']} × 256 tokens"
                        f"{holdout_text(st.get('holdout', 0))}, level database "
                        f"{st.get('database', 'dense')}, sparsity levels ±{st['levels']} × "
                        f"{st['level_step']}, torch threads: {st.get('threads', '?')}")
        if "fitness_uniform" in r:
            bits.append(f"KL to fp32 on the last stage's tokens: start {r['fitness_uniform']:.4f} → found "
                        f"{r['fitness_searched']:.4f}")
        if "bits_histogram" in r:
            bits.append(f"layers per width {r['bits_histogram']} (cost {r['cost']}, budget {r['budget_avg_bits']} "
                        f"avg bits)")
        if "allocation" in r and row.startswith("s"):
            vals = list(r["allocation"].values())
            bits.append(f"layer sparsities min {min(vals):.3f} / mean {np.mean(vals):.3f} / max {max(vals):.3f}")
        out.append(f"* {LABELS[row]}: " + "; ".join(bits))
    return "\n".join(out)


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=None, help=f"rows to (re)run, of {ROWS}")
    parser.add_argument("--quick", action="store_true", help="tiny data and searches (a smoke run)")
    parser.add_argument("--generations", type=int, default=400)
    parser.add_argument("--offspring", type=int, default=8)
    parser.add_argument("--selection", type=json.loads, default=[[2, 256], [1, 1024]])
    parser.add_argument("--search-s", type=float, default=480.0, help="wall budget of each search's evolution (s)")
    parser.add_argument("--database", choices=["sequential", "dense"], default="sequential",
                        help="level databases on the inputs of the earlier blocks at their uniform level "
                             "(sequential, slimkit's default) or on the dense model's (EvoPress)")
    parser.add_argument("--holdout", type=int, default=0,
                        help="calibration chunks only the KL fitness sees (the search step's fitness_holdout); "
                             "the level database reads the others, the final run all of them")
    parser.add_argument("--database-s", type=float, default=None,
                        help="allowance for the level database on top of --search-s (the search step's budget_s "
                             "counts from the step's start); default: estimated from the group's reference row")
    parser.add_argument("--levels", type=int, default=2, help="sparsity levels on each side of the target")
    parser.add_argument("--level-step", type=float, default=0.1)
    parser.add_argument("--calib", type=int, default=16, help="calibration chunks of 256 train tokens")
    parser.add_argument("--test", type=int, default=8, help="held-out chunks of 256 test tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="ignore the results cache")
    parser.add_argument("--merge", nargs="+", default=[], help="results caches of other runs (e.g. rows run in a "
                        "second process with another --out) whose rows are added to this one's cache first")
    parser.add_argument("--doc-only", action="store_true", help="write the doc from the cache, run nothing")
    parser.add_argument("--note", action="append", default=[], help="a paragraph about this run for the doc "
                        "(machine load, how rows were split over processes, ...); repeatable")
    parser.add_argument("--out", default="docs/benchmarks/search.md")
    args = parser.parse_args()
    if args.quick:
        args.calib, args.test, args.generations, args.search_s, args.levels = 4, 2, 2, 60.0, 1
        args.selection = [[2, 64], [1, 128]]
    torch.set_num_threads(args.threads)
    DATABASE[0] = args.database
    cache_path = Path(args.out).with_suffix(".json")
    results: dict[str, Any] = {} if args.fresh or not cache_path.exists() else json.loads(cache_path.read_text())
    results = results.get("rows", {}) if "rows" in results else results
    for other in args.merge:
        results.update(json.loads(Path(other).read_text())["rows"])
    if args.merge:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps({"rows": results}, indent=1, default=str))
    if args.doc_only:
        write(args, results, os.getloadavg())
        return
    todo = args.rows or [r for r in ROWS if r not in results]
    unknown = sorted(set(todo) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; valid rows are {ROWS}")
    load0 = os.getloadavg()
    model, tok = sk.zoo.load_model("smollm2-135m")
    calib = sk.zoo.load_data("shakespeare", "train", tokenizer=tok, seq_len=256, max_batches=args.calib)
    test = sk.zoo.load_data("shakespeare", "test", tokenizer=tok, seq_len=256, max_batches=args.test)
    ppl = sk.Perplexity(test)
    for row in [r for r in ROWS if r in todo]:
        log(f"row {row}")
        reset_peak_rss()
        began = time.perf_counter()
        out, info = build_row(row, model, calib, args, results)
        wall = time.perf_counter() - began
        p = float(ppl(out))
        results[row] = {"ppl": p, "wall_s": wall, "peak_rss_mb": peak_rss_mb(), "budget": budget_of(row.split("_")[0], out),
                        "settings": {k: getattr(args, k) for k in ("generations", "offspring", "selection", "search_s",
                                                                   "levels", "level_step", "calib", "test", "quick",
                                                                   "threads", "holdout", "database")},
                        **info}
        log(f"{row}: ppl {p:.2f} in {wall:.0f} s; {budget_text(row.split('_')[0], results[row]['budget'])}")
        del out
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps({"rows": results}, indent=1, default=str))
        write(args, results, load0)


def command_line() -> str:
    """This process's command line, ``--note`` paragraphs left out (they are in the doc already)."""
    argv, out, skip = sys.argv, [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--note":
            skip = True
        else:
            out.append(a)
    return " ".join(out) + (" --note ..." if "--note" in argv else "")


def write(args: argparse.Namespace, results: dict[str, Any], load0: tuple[float, float, float]) -> None:
    load1 = os.getloadavg()
    if args.doc_only:  # the rows ran earlier: their load is in --note, not in this process's
        load_text = "doc written from the results cache (--doc-only)"
    else:
        load_text = (f"load average (1/5/15 min) {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} at start, "
                     f"{load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} at the last row")
    text = (f"# Per-layer allocation by evolutionary search (SmolLM2-135M)\n\n"
            f"Calibration: {args.calib} × 256 tokens of the Shakespeare train plays (level databases, block influence, "
            f"OWL, KL fitness); perplexity on {args.test} × 256 tokens of the held-out test plays. Search settings of "
            f"the run that wrote this doc (each searched row's own are under Details): "
            f"{args.offspring} offspring per generation, selection {args.selection} ([survivors, tokens] per stage), "
            f"at most {args.generations} generations or {args.search_s:.0f} s of evolution per search (the search "
            f"step's budget_s = that + an allowance for the level database, "
            f"{'%.0f s' % args.database_s if args.database_s is not None else 'estimated from the reference row'}), "
            f"seed 0; sparsity levels: ±{args.levels} × {args.level_step} around the target.\n\n"
            + table(results) + "\n\n## Targets (issue 11)\n\n" + targets(results)
            + "\n\n## Details\n\n" + details(results) + "\n\n" + NOTES
            + "".join(f"\n\n{n}" for n in args.note)
            + f"\n\nMachine: {os.cpu_count()} CPU cores shared with other jobs; " + load_text
            + f"; torch {torch.__version__}, torch threads: {args.threads}; "
              f"{time.strftime('%Y-%m-%d %H:%M')}.\n\n`{command_line()}`\n")
    Path(args.out).write_text(text)
    print(table(results), flush=True)


NOTES = """## Notes

* The budget check column is measured on each row's model: the searched prune rows keep the uniform step's Linear
  nonzeros exactly, the searched drop row keeps 22 blocks, the searched quantize rows keep their start's exact cost.
  OWL's allocation (λ band, weighted mean exactly the target) rounds each layer's count on its own, so its total can
  differ from uniform's by a few weights per layer (shown in the column). ``× uniform`` divides by the group's
  reference row (uniform SparseGPT, block influence, uniform 3-bit, uniform 4-bit).
* ``q3``: slimkit stores 3-bit codes two per byte, exactly like 4-bit codes, so a uniform 3-bit checkpoint is as
  large as a 4-bit one. The search at the *stored* budget would simply move every layer to 4 bits for free; the
  row is therefore searched at EvoPress's *nominal* average of 3 bits (``cost: nominal``: bits as if densely packed
  + scales/zeros) and its stored bytes are shown beside it, which differ from uniform 3-bit's.
* ``q425``: budget = the stored bytes of 4.25 bits per weight (scales/zeros included) over the quantized Linears;
  the search starts at 4-bit g128 everywhere with some layers widened to 8 bits up to the budget
  (``target_avg_bits``), and keeps the start's exact bytes. The output head and the embeddings are int8 in every
  quantized row (slimkit's default), outside the budget.
* Level switches move one level on one layer and one level the other way on a layer with exactly the opposite cost
  step (in practice: same shape). With widths 2/3/4/8 the 4↔8 step is 4× the others, so 8-bit levels are reached
  only through another 8-bit layer.
* Level databases: ``sequential`` (slimkit's default since 2026-12-07) computes block k's levels on the inputs
  that blocks 0..k-1 give at their uniform level, so the search's start is the wrapped step's own model;
  ``dense`` (EvoPress's, and every row run before that change) on the uncompressed model's inputs. Each searched
  row's Details line names its database. The final model is always the found step re-run normally (block by
  block), which differs from the database's stitched model outside the first block.
* Fitness pool: since 2026-12-07 the KL fitness draws each stage's tokens from every calibration token it keeps
  (the last ``--holdout`` chunks, or all). Rows run before that change (Details: calibration 6 x 256, no holdout
  mentioned) kept only one stage's worth (256 tokens), so every generation was scored on the same tokens. Both quantize searches use the same widths, group size and calibration, so the
  database is built once per run (by the first of them) and re-costed for the other (its start computed exactly
  as ``quant_space`` does; its search time counts the database's seconds too).
* Wall time is the whole row (database, search, final run); peak RSS is the process's since the row began."""


if __name__ == "__main__":
    main()
