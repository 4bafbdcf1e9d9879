"""Implementations of the ``slimkit`` sub-commands (argument parsing lives in :mod:`slimkit.cli.main`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from slimkit.core.errors import CheckpointError, DataError

__all__ = ["run_demo", "run_compress", "run_eval", "run_export", "run_inspect", "run_zoo"]

# a pipe or CI log has no width: use a wide one so the table is not squeezed into 80 columns
console = Console(width=None if sys.stdout.isatty() else 170)
err = Console(stderr=True)


def _status(text: str, show: bool = True) -> Any:
    """A spinner on stderr for anything that takes more than a second."""
    import contextlib

    return err.status(text) if show else contextlib.nullcontext()


# ----------------------------------------------------------------------------- compress
def run_compress(args: argparse.Namespace) -> int:
    import slimkit as sk
    from slimkit.cli.models import load_model_ref, parse_model_ref
    from slimkit.io.outputs import check_replaceable

    if getattr(args, "stream", False):
        from slimkit.stream.cli import run_compress_stream

        return run_compress_stream(args)
    recipe = sk.Recipe.from_yaml(args.recipe)  # validated before the model is loaded
    ref = parse_model_ref(args.model)
    out = Path(args.out).resolve()
    if ref.kind == "dir" and Path(ref.value).resolve() == out:
        raise CheckpointError("--out must differ from the input model directory (the input is never touched)")
    check_replaceable(out, args.overwrite)  # before any work: a user's directory is refused untouched
    show = not args.no_progress and not args.json
    with _status(f"loading {ref}", show):
        model, tok, zoo_name = load_model_ref(ref)
    with _status("preparing calibration and held-out data", show):
        work = _workload(args, model, tok, zoo_name)
    result = sk.compress(model, recipe, calib=work.calib, eval=work.evaluator, example_inputs=work.example_inputs,
                         train=_train_data(recipe, work), progress=show, name=str(ref))
    from slimkit.parallel import is_main_process

    if not is_main_process():  # under --nproc only rank 0 writes the output
        return 0
    with _status(f"saving {out}", show):
        result.save(out, overwrite=args.overwrite)
    _print_report(result.report, args.json)
    if not args.json:
        console.print(f"saved to {out}")
    return 0


def _workload(args: argparse.Namespace, model: Any, tok: Any, zoo_name: str | None) -> Any:
    """Calibration and held-out data: the user's ``--data`` (split by document) or the task's defaults."""
    from slimkit.cli.workloads import task_of, workload_for, workload_from_files

    task = task_of(model, zoo_name)
    calib_batches = getattr(args, "calib_batches", 8)
    if getattr(args, "data", None):
        return workload_from_files(task, tok, args.data, args.eval_data, seq_len=args.seq_len,
                                   calib_batches=calib_batches, eval_batches=args.eval_batches)
    if getattr(args, "eval_data", None):
        raise DataError("--eval-data needs --data (the calibration part)")
    return workload_for(task, tok, calib_batches=calib_batches, eval_batches=args.eval_batches, zoo_name=zoo_name)


def _train_data(recipe: Any, work: Any) -> list[Any] | None:
    """Training batches when a step trains (finetune / distill / ...): the train split, causal LMs
    labelled with their own tokens, one row per process of ``--nproc`` (this run's world size)."""
    if "train" not in recipe.needs():
        return None
    from slimkit.cli.workloads import train_batches
    from slimkit.parallel import ensure_process_group, world_size

    ensure_process_group()  # under torchrun (--nproc N) every worker sees the world size
    return train_batches(work, world_size())


# ----------------------------------------------------------------------------- eval
def run_eval(args: argparse.Namespace) -> int:
    import slimkit as sk
    from slimkit.cli.models import load_model_ref, parse_model_ref

    ref = parse_model_ref(args.model)
    show = not args.json
    with _status(f"loading {ref}", show):
        model, tok, zoo_name = load_model_ref(ref)
    work = _workload(args, model, tok, zoo_name)
    with _status("measuring", show):
        metrics = _measure_for_eval(model, work.example_inputs)
        if hasattr(work.evaluator, "prepare"):
            work.evaluator.prepare(model)
        metrics["quality"] = float(work.evaluator(model))
    report = sk.Report(name=str(ref), quality={"name": work.evaluator.name,
                                               "higher_is_better": work.evaluator.higher_is_better})
    report.add_variant(str(ref), metrics)
    _print_report(report, args.json)
    return 0


def _measure_for_eval(model: Any, example_inputs: Any) -> dict[str, Any]:
    """``sk.measure`` for a torch model; for an ONNX file its bytes on disk and ORT latency (same method)."""
    import slimkit as sk

    if not hasattr(model, "session"):
        return sk.measure(model, example_inputs)
    from slimkit.export.ort_model import onnx_size_bytes
    from slimkit.measure.latency import measure_latency

    return {"bytes": onnx_size_bytes(model.path), **measure_latency(model, example_inputs)}


# ----------------------------------------------------------------------------- export
def run_export(args: argparse.Namespace) -> int:
    import slimkit as sk
    from slimkit.cli.models import parse_model_ref

    ref = parse_model_ref(args.dir)
    if ref.kind not in ("dir", "hfdir"):
        raise CheckpointError(f"export takes a saved slimkit directory or a Hugging Face directory, not {args.dir!r}")
    with _status(f"exporting {ref.value} to {args.format}", not args.json):
        path = sk.export(ref.value, args.out, format=args.format, overwrite=args.overwrite, dequantize=args.dequantize)
    if args.json:
        from slimkit.cli.main import print_json

        print_json({"format": args.format, "path": str(path)})
    else:
        console.print(f"exported {args.format}: {path}")
    return 0


# ----------------------------------------------------------------------------- inspect
def run_inspect(args: argparse.Namespace) -> int:
    from slimkit.io.checkpoint import read_manifest

    manifest = read_manifest(args.dir)
    files = {p.name: p.stat().st_size for p in Path(args.dir).iterdir() if p.is_file()}
    encodings: dict[str, int] = {}
    for rec in manifest.get("encodings", {}).values():
        encodings[rec.get("encoding", "dense")] = encodings.get(rec.get("encoding", "dense"), 0) + 1
    base = {k: v for k, v in manifest.get("base", {}).items() if k != "hf_config"}
    summary = {"dir": str(Path(args.dir).resolve()), "format_version": manifest["format_version"],
               "slimkit_version": manifest.get("slimkit_version"), "base": base, "recipe": manifest.get("recipe"),
               "edits": len(manifest.get("edits", [])), "edit_ops": sorted({e["op"] for e in manifest.get("edits", [])}),
               "tensors": len(manifest.get("encodings", {})), "encodings": encodings,
               "tied_aliases": len(manifest.get("aliases", {})), "files": files, "bytes": sum(files.values())}
    if args.json:
        from slimkit.cli.main import print_json

        print_json({**summary, "report": manifest.get("report")})
        return 0
    for key, value in summary.items():
        console.print(f"[bold]{key}[/bold]: {value}")
    if manifest.get("report"):
        from slimkit.report import Report

        console.print(_table_from_dict(manifest["report"]))
    return 0


def _table_from_dict(data: dict[str, Any]) -> Any:
    from slimkit.report import Report

    rep = Report(name=data.get("name", "model"), quality=data.get("quality"), before=data.get("before", {}),
                 after=data.get("after", {}), steps=data.get("steps", []), variants=data.get("variants", []))
    return rich_table(rep)


# ----------------------------------------------------------------------------- zoo
def run_zoo(args: argparse.Namespace) -> int:
    from rich.table import Table

    from slimkit import zoo

    entries = zoo.entries()
    if args.json:
        from slimkit.cli.main import print_json

        print_json(entries)
        return 0
    table = Table(title="slimkit zoo")
    for col in ("name", "kind", "installed", "hub id", "package", "description"):
        table.add_column(col)
    for e in entries:
        table.add_row(e["name"], e["kind"], "yes" if e["installed"] else "no", str(e.get("hub_id") or "–"),
                      str(e.get("package") or "–"), str(e.get("description") or ""))
    console.print(table)
    return 0


# ----------------------------------------------------------------------------- demo
def run_demo(args: argparse.Namespace) -> int:
    from slimkit.cli.demo import demo

    report = demo(out_dir=args.out, eval_batches=args.eval_batches, progress=not args.json, tiny=args.tiny,
                  overwrite=args.overwrite)
    _print_report(report, args.json)
    if not args.json:
        console.print(f"wrote {Path(args.out).resolve()}/report.json, report.md, report.png")
    return 0


# ----------------------------------------------------------------------------- output
def rich_table(report: Any) -> Any:
    """The report's rows as a rich table (the same cells as the Markdown table)."""
    from rich.table import Table

    from slimkit.report.markdown import COLUMNS, format_row

    quality = report.quality or {}
    table = Table(title=f"slimkit: {report.name}")
    table.add_column("variant")
    for key, title, _ in COLUMNS:
        if key == "quality":
            arrow = "↑" if quality.get("higher_is_better", True) else "↓"
            title = f"{quality.get('name', 'quality')} {arrow}"
        table.add_column(title, justify="right")
    for row in report.rows():
        table.add_row(*format_row(row))
    return table


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        from slimkit.cli.main import print_json

        print_json(report.to_dict())
        return
    console.print(rich_table(report))
    for w in report.warnings:
        console.print(f"[yellow]{w}[/yellow]")
