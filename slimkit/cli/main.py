"""``slimkit`` command line: a thin layer over the Python API.

Every command has ``--help``; ``--json`` prints machine-readable output; bad input prints one
``error:`` line and exits non-zero (2 for bad input, 130 for Ctrl-C), never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "build_parser"]

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimkit", description="Compress trained PyTorch / Hugging Face models "
                                     "and measure size, latency and quality on real held-out data.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_demo(sub)
    _add_compress(sub)
    _add_eval(sub)
    _add_export(sub)
    _add_inspect(sub)
    _add_zoo(sub)
    from slimkit.cli.search import add_search_parser

    add_search_parser(sub, _add_data_options)
    return parser


def _version() -> str:
    from slimkit import __version__

    return f"slimkit {__version__}"


def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="compress SmolLM2-135M several ways and print the measured table",
                       description="Load SmolLM2-135M and compress it several ways (magnitude 50%, wanda 2:4, "
                       "dynamic int8, GPTQ int4, mixed precision, drop 4 blocks, drop 4 + healing distillation, "
                       "magnitude + int8); print held-out Shakespeare perplexity, checkpoint bytes and speed; write report.{json,md,png}.")
    p.add_argument("--out", default="slimkit-demo", help="report directory (default: ./slimkit-demo); must not exist "
                   "unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is a directory slimkit wrote (a directory holding other files is never touched)")
    p.add_argument("--eval-batches", type=int, default=8, help="held-out chunks of 256 tokens (default 8 = 2,048 tokens)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--tiny", action="store_true",
                   help="the same variants on a random 4-block Llama over byte tokens (a seconds-long smoke run)")


def _add_compress(sub: Any) -> None:
    p = sub.add_parser("compress", help="run a recipe on a model and save the result",
                       description="Run a YAML recipe on a model, measure before/after/each step on held-out "
                       "data, and save the checkpoint with report.{json,md,png} into --out.")
    p.add_argument("--model", required=True, help="zoo:NAME, hf:ORG/NAME, a saved slimkit directory or a Hugging Face "
                   "model directory (config.json + safetensors)")
    p.add_argument("--recipe", required=True, help="recipe YAML file")
    p.add_argument("--out", required=True, help="output directory (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is a directory slimkit wrote (a directory holding other files is never touched)")
    _add_data_options(p)
    p.add_argument("--calib-batches", type=int, default=8, help="calibration batches from the train split")
    p.add_argument("--eval-batches", type=int, default=8, help="held-out evaluation batches from the test split")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel training processes for distill/finetune steps (torchrun: gloo on CPU, nccl on GPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--stream", action="store_true", help="a Hugging Face causal LM directory compressed block by block "
                   "from its safetensors shards, never loaded whole (models larger than RAM; see sk.compress_stream)")
    p.add_argument("--resume", action="store_true", help="with --stream: continue a killed run from its last finished block")


def _add_eval(sub: Any) -> None:
    p = sub.add_parser("eval", help="measure a model: size, MACs, latency and held-out quality",
                       description="Measure params, checkpoint bytes, MACs, latency and held-out quality of a model.")
    p.add_argument("--model", required=True, help="zoo:NAME, hf:ORG/NAME, a saved slimkit directory or a Hugging Face "
                   "model directory (config.json + safetensors)")
    _add_data_options(p)
    p.add_argument("--eval-batches", type=int, default=8, help="held-out evaluation batches")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")


def _add_data_options(p: Any) -> None:
    p.add_argument("--data", help="your data: a .txt/.md file or folder, a .jsonl/.csv with a 'text' column, or an "
                   "image folder; split by document into calibration and held-out parts (default: the zoo's data)")
    p.add_argument("--eval-data", help="the held-out part explicitly (then all of --data is calibration)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per text chunk for --data (default 256)")


def _add_export(sub: Any) -> None:
    p = sub.add_parser("export", help="write a model for ONNX Runtime, llama.cpp or plain transformers",
                       description="Export a saved slimkit directory (or a Hugging Face directory) to ONNX, GGUF or "
                       "a Hugging Face directory that transformers loads without slimkit.")
    p.add_argument("dir", help="a saved slimkit directory or a Hugging Face model directory")
    p.add_argument("--format", required=True, choices=["onnx", "gguf", "hf"], help="the target runtime's format")
    p.add_argument("--out", required=True, help="output directory (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is a directory slimkit wrote (a directory holding other files is never touched)")
    p.add_argument("--dequantize", action="store_true", help="write quantized layers as float weights (hf)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_inspect(sub: Any) -> None:
    p = sub.add_parser("inspect", help="show what a saved checkpoint contains",
                       description="Show a checkpoint's base model, recipe, structural edits, tensor encodings, "
                       "bytes on disk and stored report, without loading the model.")
    p.add_argument("dir", help="a directory written by slimkit")
    p.add_argument("--json", action="store_true", help="print as JSON")


def _add_zoo(sub: Any) -> None:
    p = sub.add_parser("zoo", help="list the models and datasets slimkit knows by name",
                       description="List zoo models and datasets, their hub ids and whether each is installed.")
    p.add_argument("--json", action="store_true", help="print as JSON")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from slimkit.core.errors import SlimkitError

    try:
        if getattr(args, "nproc", 1) > 1:
            from slimkit.parallel.launch import launch_cli, under_torchrun

            if not under_torchrun():  # re-run this very command under torchrun with N workers
                return launch_cli(argv, args.nproc)
        return _dispatch(args)
    except KeyboardInterrupt:
        print("error: interrupted; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (SlimkitError, ValueError, FileNotFoundError, PermissionError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - the CLI promises no traceback
        if os.environ.get("SLIMKIT_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {_one_line(exc)} (set SLIMKIT_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _dispatch(args: argparse.Namespace) -> int:
    from slimkit.cli import commands

    handler = {"demo": commands.run_demo, "compress": commands.run_compress, "eval": commands.run_eval,
               "export": commands.run_export, "inspect": commands.run_inspect, "zoo": commands.run_zoo,
               "search": _run_search}[args.command]
    return handler(args)


def _run_search(args: argparse.Namespace) -> int:
    from slimkit.cli.search import run_search

    return run_search(args)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
