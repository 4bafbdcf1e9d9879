"""``slimkit compress --model DIR --recipe R.yaml --out OUT --stream [--data FILE] [--resume]``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from slimkit.core.errors import ConfigError, DataError

__all__ = ["run_compress_stream"]


def run_compress_stream(args: argparse.Namespace) -> int:
    """Stream a Hugging Face directory through the recipe; calibration from ``--data`` (split by
    document, as ``slimkit compress`` does) or the default Shakespeare text. No held-out evaluation:
    that would need the whole model in memory (run ``slimkit eval --model OUT`` afterwards)."""
    from rich.console import Console

    import slimkit as sk
    from slimkit.zoo.local import is_hf_dir

    recipe = sk.Recipe.from_yaml(args.recipe)
    src = Path(args.model)
    if not is_hf_dir(src):
        raise ConfigError(f"--stream needs --model to be a Hugging Face model directory (config.json + safetensors); "
                          f"got {args.model!r}")
    if getattr(args, "nproc", 1) != 1:
        raise ConfigError("--stream runs in one process; drop --nproc")
    show = not args.no_progress and not args.json
    result = sk.compress_stream(src, recipe, args.out, calib=_calib(args, recipe, src), overwrite=args.overwrite,
                                resume=args.resume, progress=show)
    stream = result.report["stream"]
    if args.json:
        Console().print_json(json.dumps(result.report))
    else:
        Console().print(f"streamed {len(stream['blocks'])} blocks ({stream['input_gb']} GB of weights) in "
                        f"{stream['seconds']} s ({stream['gb_per_min']} GB/min), peak RSS {stream['peak_rss_mb']} MB; "
                        f"saved to {result.path}")
    return 0


def _calib(args: argparse.Namespace, recipe: Any, src: Path) -> list[Any] | None:
    if "calib" not in recipe.needs():
        return None
    from slimkit.cli.workloads import workload_for, workload_from_files
    from slimkit.zoo.local import local_tokenizer

    tok = local_tokenizer(src)
    if tok is None:
        raise DataError(f"{src} has no tokenizer files, so calibration text cannot be tokenized for it")
    if args.data:
        return workload_from_files("causal-lm", tok, args.data, args.eval_data, seq_len=args.seq_len,
                                   calib_batches=args.calib_batches, eval_batches=args.eval_batches).calib
    return workload_for("causal-lm", tok, seq_len=args.seq_len, calib_batches=args.calib_batches,
                        eval_batches=args.eval_batches).calib
