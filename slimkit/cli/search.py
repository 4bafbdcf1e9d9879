"""``slimkit search``: the command-line face of :func:`slimkit.search`.

Two modes:

* a space: ``slimkit search --model M --space space.yaml --out DIR [--objectives quality,bytes]
  [--constraint "quality_drop<=2%"] [--n-trials N] [--budget-min T] [--strategy tpe|nsga2|random|evolution|rl|gradient]
  [--storage URL] [--workers N]``;
* a goal (no YAML): ``slimkit search --model M --goal "quality_drop<=2%" --minimize bytes|latency --out DIR``
  searches the built-in space of the model's task (:mod:`slimkit.search.recipes.builtin`) for the
  smallest / fastest recipe meeting the goal (30 minutes unless ``--n-trials`` / ``--budget-min``).

Calibration and held-out data come from the task's defaults or ``--data`` (as for ``slimkit compress``).
Running it again with the same ``--out`` resumes the search.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_search_parser", "run_search"]

EXIT_INTERRUPTED = 130
_GOAL_BUDGET_MIN = 30.0


def add_search_parser(sub: Any, add_data_options: Any) -> None:
    p = sub.add_parser("search", help="search recipes for the best quality / size / speed trade-off",
                       description="Multi-objective search over whole recipes (Optuna TPE / NSGA-II / random): writes "
                       "pareto.json, pareto.png, candidates/<trial>/recipe.yaml and best/ into --out. Give --space "
                       "YAML, or --goal with --minimize for the built-in space of the model's task. Running it again "
                       "with the same --out resumes the search.")
    p.add_argument("--model", required=True, help="zoo:NAME, hf:ORG/NAME, a saved slimkit directory or a Hugging Face "
                   "model directory")
    p.add_argument("--out", required=True, help="search directory (resumed if it is one; see --overwrite)")
    p.add_argument("--space", help="space YAML (recipe steps whose options may be {choice: [...]} or {low, high, step})")
    p.add_argument("--goal", action="append", default=[], metavar="CONSTRAINT",
                   help="e.g. 'quality_drop<=2%%', 'latency<=0.5' (repeatable); without --space: goal mode")
    p.add_argument("--minimize", choices=["bytes", "latency", "macs", "params"],
                   help="goal mode: what to make small (quality is the second objective)")
    p.add_argument("--objectives", default="quality,bytes",
                   help="space mode: comma-separated objectives, the first ranks 'best' (default quality,bytes)")
    p.add_argument("--constraint", action="append", default=[], help="space mode: like --goal (repeatable)")
    p.add_argument("--strategy", default="tpe", choices=["tpe", "nsga2", "random", "evolution", "rl", "gradient"],
                   help="sampler (default tpe); gradient learns per-layer sparsity maps of the space's prune step first")
    p.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"],
                   help="where latency and quality are measured: torch eager (default) or onnxruntime (each candidate "
                   "exported to ONNX, timed and scored in ONNX Runtime's CPU session)")
    p.add_argument("--n-trials", type=int, help="total trials of the study (a resumed study continues up to it)")
    p.add_argument("--budget-min", type=float, help="minutes of this run; no trial starts after it")
    p.add_argument("--storage", help="an Optuna storage URL (postgresql://... for many machines); default: a journal "
                   "file in --out")
    p.add_argument("--workers", type=int, default=1, help="processes on this machine sharing the study")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="start --out over instead of resuming it (only a "
                   "directory slimkit wrote is replaced)")
    add_data_options(p)
    p.add_argument("--calib-batches", type=int, default=8, help="calibration batches from the train split")
    p.add_argument("--eval-batches", type=int, default=8, help="held-out evaluation batches from the test split")
    p.add_argument("--no-progress", action="store_true", help="no per-trial lines on stderr")
    p.add_argument("--json", action="store_true", help="print the result (pareto.json) as JSON")


def run_search(args: argparse.Namespace) -> int:
    import slimkit as sk
    from slimkit.cli.commands import _workload, console
    from slimkit.cli.models import load_model_ref, parse_model_ref
    from slimkit.core.errors import ConfigError
    from slimkit.search.recipes import RecipeSpace, builtin_space

    space, objectives, constraints = _mode(args)
    if space is not None:
        space = RecipeSpace.from_yaml(space)  # checked before the model is loaded
    ref = parse_model_ref(args.model)
    if ref.kind == "onnx":
        raise ConfigError("search compresses a torch model; give a zoo name, hub id or directory, not an .onnx file")
    _check_out(args, ref)
    model, tok, zoo_name = load_model_ref(ref)
    work = _workload(args, model, tok, zoo_name)
    if space is None:
        space = builtin_space(work.task)
    budget_min = args.budget_min
    if budget_min is None and args.n_trials is None and args.goal and not args.space:
        budget_min = _GOAL_BUDGET_MIN
    result = sk.search(model, space, calib=work.calib, eval=work.evaluator, objectives=objectives,
                       constraints=constraints, strategy=args.strategy, n_trials=args.n_trials,
                       budget_s=budget_min * 60 if budget_min is not None else None, storage=args.storage,
                       seed=args.seed, out_dir=args.out, example_inputs=work.example_inputs, workers=args.workers,
                       overwrite=args.overwrite, progress=not args.no_progress and not args.json,
                       runtime=args.runtime)
    if args.json:
        from slimkit.cli.main import print_json

        print_json(result.to_dict())
    else:
        _print(result, console)
    return EXIT_INTERRUPTED if result.interrupted else 0


def _mode(args: argparse.Namespace) -> tuple[str | None, list[str], list[str]]:
    """(space file or None for goal mode, objectives, constraints), checked before any loading."""
    from slimkit.core.errors import ConfigError

    if args.space:
        if args.minimize:
            raise ConfigError("--minimize belongs to goal mode; with --space use --objectives (e.g. bytes,quality)")
        objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
        return args.space, objectives, list(args.constraint) + list(args.goal)
    if not args.goal or not args.minimize:
        raise ConfigError("give --space space.yaml, or goal mode: --goal 'quality_drop<=2%' --minimize bytes|latency")
    if args.constraint:
        raise ConfigError("--constraint belongs to space mode; in goal mode write every limit as --goal")
    return None, [args.minimize, "quality"], list(args.goal)


def _check_out(args: argparse.Namespace, ref: Any) -> None:
    """Refuse ``--out`` before the model is loaded (minutes for a zoo model) when the search would
    refuse it anyway: the input model's own directory, or a path that is not a search directory to
    resume (or, with ``--overwrite``, not one slimkit wrote holding only its own entries). The same
    rule as :func:`slimkit.search.recipes.files.prepare_out_dir`, which checks again when writing."""
    from slimkit.core.errors import CheckpointError
    from slimkit.io.outputs import check_replaceable
    from slimkit.search.recipes.files import is_search_dir

    out = Path(args.out).resolve()
    if ref.kind in ("dir", "hfdir") and Path(ref.value).resolve() == out:
        raise CheckpointError("--out must differ from the input model directory (the input is never touched)")
    if args.overwrite or not is_search_dir(out):
        check_replaceable(out, args.overwrite, "search output directory")


def _print(result: Any, console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"Pareto front ({len(result.pareto)} of {sum(t.state == 'COMPLETE' for t in result.trials)} "
                  f"complete trials, {result.strategy})")
    table.add_column("trial", justify="right")
    table.add_column("recipe")
    for o in result.objectives:
        table.add_column(f"{o.name} {'↑' if o.maximize else '↓'}", justify="right")
    for c in result.constraints:
        table.add_column(str(c), justify="right")
    for cand in result.pareto:
        steps = " + ".join(f"{n}:{_short(o)}" for s in cand.recipe.to_dict()["steps"] for n, o in s.items())
        row = [str(cand.number), steps] + [f"{cand.metrics[o.key]:.4g}" for o in result.objectives]
        row += [f"{k.value(cand.metrics):.4g} {'ok' if k.met(cand.metrics) else 'miss'}" for k in result.constraints]
        table.add_row(*row)
    console.print(table)
    console.print(("best: " if result.best else "no best: ") + result.reason)
    if result.interrupted:
        console.print("[yellow]interrupted: the front above is what was found so far[/yellow]")
    if result.out_dir:
        console.print(f"wrote {Path(result.out_dir)}/pareto.json, pareto.png, candidates/"
                      + (", best/" if result.best else ""))


def _short(options: dict[str, Any]) -> str:
    keys = ("sparsity", "bits", "group_size", "target_macs", "granularity")
    shown = ",".join(f"{k}={options[k]}" for k in keys if options.get(k) is not None)
    return f"{options.get('method')}({shown})" if shown else str(options.get("method"))
