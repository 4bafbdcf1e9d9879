"""``sk.compress_stream``: compress a Hugging Face causal LM larger than RAM, one block at a time.

::

    sk.compress_stream("llama-7b/", {"steps": [{"quantize": {"method": "gptq", "bits": 4, "group_size": 128}}]},
                       "llama-7b-int4/", calib=batches)

The model is built on the meta device; the embeddings and head are read first, then each decoder
block's tensors are read from the shards, compressed by every recipe step (the methods' own math,
see :mod:`slimkit.stream.steps`), run on the calibration inputs to produce the next block's inputs
(sequential calibration, as the whole-model runner and llm-compressor do), written as one
safetensors shard and freed. The result is an ordinary slimkit checkpoint (``sk.load``, also
``lazy=True``; ``sk.export``), tensor for tensor the one ``sk.compress`` + ``sk.save`` writes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.core import provenance
from slimkit.core.errors import CheckpointError, ConfigError, DataError
from slimkit.core.inputs import as_batches
from slimkit.core.recipe import Recipe
from slimkit.core.sequential import capture_block_inputs
from slimkit.io.encodings import encode_tensor
from slimkit.quantize.weight_only.sequential import StatsHook
from slimkit.stream.activations import ActivationStore
from slimkit.stream.memory import RssSampler, maxrss_mb, release_freed_memory
from slimkit.stream.output import StreamOutput
from slimkit.stream.shards import ShardReader
from slimkit.stream.skeleton import block_list, build_skeleton, empty, fill, missing_tensors, outer_names
from slimkit.stream.steps import StreamStep, plan_steps

__all__ = ["compress_stream", "StreamResult", "DEFAULT_MAX_ACTIVATION_BYTES"]

#: calibration hidden states kept in memory up to this many bytes (all steps together), else spilled
DEFAULT_MAX_ACTIVATION_BYTES = 1 << 30


@dataclasses.dataclass
class StreamResult:
    """What :func:`compress_stream` returns: the output directory and the report it holds."""

    path: Path
    report: dict[str, Any]


def compress_stream(hf_dir: str | Path, recipe: Recipe | dict[str, Any] | list[Any] | str | Path,
                    out_dir: str | Path, *, calib: Iterable[Any] | None = None, overwrite: bool = False,
                    resume: bool = False, max_activation_bytes: int = DEFAULT_MAX_ACTIVATION_BYTES,
                    progress: bool = True, on_block: Callable[[int, dict[str, Any]], None] | None = None,
                    ) -> StreamResult:
    """Compress the causal LM in ``hf_dir`` block by block into the slimkit checkpoint ``out_dir``.

    Everything is checked before any block is read: the recipe (only prune steps, then at most one
    quantize step, of the streamable methods; anything else is a :class:`ConfigError` naming it),
    ``calib`` when a step needs it, the output path (slimkit's overwrite rules) and every shard
    (missing, truncated, an index naming an absent file: :class:`CheckpointError`). A failure or
    Ctrl-C leaves no output; ``resume=True`` continues a run that was killed, from its last
    finished block. Calibration hidden states beyond ``max_activation_bytes`` are spilled to disk.
    ``on_block(index, stats)`` is called after each finished block. The report (also in
    ``slimkit.json``) gives per-block seconds and peak RSS, the overall peak and GB/min.
    """
    start = time.perf_counter()
    src, out = Path(hf_dir).resolve(), Path(out_dir).resolve()
    plan = Recipe.coerce(recipe)
    batches = _calibration(calib, plan)
    steps = plan_steps(plan, len(batches), progress)
    if not isinstance(max_activation_bytes, int) or max_activation_bytes < 0:
        raise ConfigError(f"max_activation_bytes must be an integer >= 0, got {max_activation_bytes!r}")
    if out == src or src in out.parents:
        raise CheckpointError(f"refusing to write {out}: the output must lie outside the input {src}")
    reader = ShardReader(src)
    model = build_skeleton(src)
    prefix, blocks = block_list(model)
    missing = missing_tensors(model, reader)
    if missing:
        raise CheckpointError(f"{src}: the shards hold no tensor for {', '.join(missing[:5])}"
                              + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    target = StreamOutput(out, overwrite=overwrite, resume=resume, fingerprint=_fingerprint(src, plan, batches),
                          n_shards=len(blocks) + 1)
    try:
        with RssSampler() as sampler:
            return _run(model, prefix, blocks, steps, plan, batches, reader, target, sampler, max_activation_bytes,
                        on_block, start, src)
    except OSError as exc:
        target.discard()
        raise CheckpointError(f"streaming {src} into {out} failed: {exc}; no output was left") from None
    except BaseException:
        target.discard()
        raise


def _calibration(calib: Iterable[Any] | None, plan: Recipe) -> list[Any]:
    needs = [f"{s.name}:{s.method}" for s in plan.steps if "calib" in s.spec.needs]
    if calib is None:
        if needs:
            raise DataError(f"{', '.join(needs)} needs calibration data: pass calib=[batch, ...] (--data FILE)")
        return []
    batches = as_batches(calib, "calib")
    if needs and not batches:
        raise DataError("calib is empty")
    return batches


def _fingerprint(src: Path, plan: Recipe, batches: list[Any]) -> str:
    """What a resumed run must share with the killed one: input files, recipe, calibration data."""
    h = hashlib.sha256(json.dumps(plan.to_dict(), sort_keys=True, default=str).encode())
    for f in sorted(src.glob("*.safetensors")):
        h.update(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    for batch in batches:
        values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else [batch]
        for v in values:
            if isinstance(v, torch.Tensor):
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _run(model: nn.Module, prefix: str, blocks: nn.ModuleList, steps: list[StreamStep], plan: Recipe,
         batches: list[Any], reader: ShardReader, target: StreamOutput, sampler: RssSampler, limit: int,
         on_block: Callable[[int, dict[str, Any]], None] | None, start: float, src: Path) -> StreamResult:
    provenance.set_base(model, {"hf_dir": str(src)})
    outer = outer_names(model, prefix)
    fill(model, outer, reader)
    reader.close()
    stores, outer_edits = _prepare(model, prefix, steps, batches, target, limit)
    release_freed_memory()
    setup_rss = sampler.window()
    block_edits: list[list[dict[str, Any]]] = target.progress["edits"] or [[] for _ in steps]
    for i in range(target.done, len(blocks)):
        t0 = time.perf_counter()
        in_bytes = _block(model, prefix, i, steps, stores, reader, target, block_edits)
        stats = {"block": i, "seconds": round(time.perf_counter() - t0, 2), "input_mb": round(in_bytes / 2**20, 1),
                 "peak_rss_mb": sampler.window()}
        target.finish_block(block_edits, stats)
        for store in stores.values():
            store.drop_before(i + 1)
        if on_block is not None:
            on_block(i, stats)
    _write_outer(model, prefix, len(blocks), target)
    edits = [e for k in range(len(steps)) for e in block_edits[k] + outer_edits[k]]
    report = _report(steps, target, reader, sampler, setup_rss, start, limit, stores)
    return StreamResult(target.commit(_manifest(model, plan, edits, target, report)), report)


def _prepare(model: nn.Module, prefix: str, steps: list[StreamStep], batches: list[Any], target: StreamOutput,
             limit: int) -> tuple[dict[int, ActivationStore], list[list[dict[str, Any]]]]:
    """Per step in order: select its layers, capture its block-0 inputs (calibrated steps), then
    do its work outside the blocks, exactly when the whole-model runner would see its effect."""
    first = model.get_submodule(f"{prefix}.0")
    stores: dict[int, ActivationStore] = {}
    outer_edits: list[list[dict[str, Any]]] = []
    spill = None
    for k, step in enumerate(steps):
        step.chosen = step.select(model)
        if step.calib:
            with torch.no_grad():
                states = capture_block_inputs(model, first, batches)
            if spill is None:
                size = sum(_nbytes(a, kw) for a, kw in states) * sum(s.calib for s in steps)
                spill = size > limit
            stores[k] = ActivationStore(target.work / f"acts{k}", states, spill, 0)
            if target.done:
                stores[k].restore(target.done)
        mark = len(provenance.get_edits(model))
        step.outer(model, [n for n in step.chosen if not n.startswith(prefix + ".")])
        outer_edits.append(provenance.get_edits(model)[mark:])
    return stores, outer_edits


def _nbytes(args: tuple, kwargs: dict) -> int:
    h = args[0] if args else kwargs["hidden_states"]
    return h.numel() * h.element_size()


def _block(model: nn.Module, prefix: str, i: int, steps: list[StreamStep], stores: dict[int, ActivationStore],
           reader: ShardReader, target: StreamOutput, block_edits: list[list[dict[str, Any]]]) -> int:
    """Read, compress (every step), write and free block ``i``; returns the bytes read."""
    name = f"{prefix}.{i}"
    block = model.get_submodule(name)
    params = [f"{name}.{n}" for n, _ in block.named_parameters()]
    fill(model, params, reader)
    reader.close()  # drop the shard's memory map: its pages would count as this process's memory
    in_bytes = sum(p.numel() * 4 for p in block.parameters())
    for k, step in enumerate(steps):
        mark = len(provenance.get_edits(model))
        _apply_step(model, name, step, stores.get(k))
        block_edits[k].extend(provenance.get_edits(model)[mark:])
        block = model.get_submodule(name)
        if k in stores:
            stores[k].advance(block)
    tensors, encodings = _encode(model.get_submodule(name).state_dict(prefix=name + "."))
    target.write_shard(i, tensors, encodings)
    empty(model.get_submodule(name))
    del tensors
    release_freed_memory()
    return in_bytes


def _apply_step(model: nn.Module, name: str, step: StreamStep, store: ActivationStore | None) -> None:
    """One step on one block: statistics from the block's calibration inputs, then each layer."""
    local = {n: model.get_submodule(n) for n in step.chosen if n.startswith(name + ".")}
    stats: dict[str, Any] = {}
    if step.calib and local and store is not None:
        stats = {n: step.stats(n, m) for n, m in local.items()}  # type: ignore[misc]
        block = model.get_submodule(name)
        with _hooks(local, stats, step.hook), torch.no_grad():
            for args, kwargs in store.items():
                block(*args, **kwargs)
    for n, module in local.items():
        step.apply(model, n, module, stats.pop(n, None))


def _hooks(local: dict[str, nn.Module], stats: dict[str, Any], kind: str) -> Any:
    """The handlers' hooks: weight-only statistics see float32 [tokens, in] inputs; pruners see
    (module, input, output)."""
    if kind == "input":
        return StatsHook(local, lambda n, x: stats[n].add(x))
    return _PruneHooks(local, stats)


class _PruneHooks:
    """Forward hooks feeding ``stats[name].add(module, input, output)``, as calibrated pruning does."""

    def __init__(self, local: dict[str, nn.Module], stats: dict[str, Any]) -> None:
        self.handles = [m.register_forward_hook(
            lambda mod, inp, out, s=stats[n]: s.add(mod, inp[0].detach(), out.detach())) for n, m in local.items()]

    def __enter__(self) -> "_PruneHooks":
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()


def _encode(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    encodings: dict[str, Any] = {}
    for key, t in state.items():
        parts, record = encode_tensor(key, t)
        tensors.update(parts)
        encodings[key] = record
    return tensors, encodings


def _write_outer(model: nn.Module, prefix: str, n_blocks: int, target: StreamOutput) -> None:
    """The last shard: everything outside the blocks; tied tensors stored once (as ``sk.save`` does)."""
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix + ".")}
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    kept: dict[str, torch.Tensor] = {}
    target.progress["aliases"] = {}
    for key, t in state.items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if t.numel() > 0 and ident in seen:
            target.progress["aliases"][key] = seen[ident]
            continue
        seen[ident] = key
        kept[key] = t
    tensors, encodings = _encode(kept)
    target.write_shard(n_blocks, tensors, encodings)


def _manifest(model: nn.Module, plan: Recipe, edits: list[dict[str, Any]], target: StreamOutput,
              report: dict[str, Any]) -> dict[str, Any]:
    from slimkit.io.checkpoint import _manifest as whole_model_manifest

    provenance.set_recipe(model, plan.to_dict())
    manifest = whole_model_manifest(model, target.progress["encodings"], target.progress.get("aliases", {}), report)
    manifest["edits"] = edits
    return manifest


def _report(steps: list[StreamStep], target: StreamOutput, reader: ShardReader, sampler: RssSampler,
            setup_rss: float, start: float, limit: int, stores: dict[int, ActivationStore]) -> dict[str, Any]:
    seconds = time.perf_counter() - start
    gb = reader.nbytes / 1e9
    return {"stream": {
        "input_gb": round(gb, 3), "seconds": round(seconds, 1), "gb_per_min": round(gb / (seconds / 60), 3),
        "peak_rss_mb": round(max(sampler.peak, sampler.window()), 1), "ru_maxrss_mb": round(maxrss_mb(), 1),
        "setup_peak_rss_mb": setup_rss, "blocks": target.progress["blocks"],
        "resumed_at_block": target.resumed_at,
        "activations_spilled": any(s.spill for s in stores.values()), "max_activation_bytes": limit,
        "rss_method": "per block: max VmRSS sampled every 20 ms; overall: that and getrusage ru_maxrss"},
        "steps": [{"name": s.label, "config": s.cfg.to_dict(), "notes": dict(s.ctx.notes),
                   "skipped": list(s.ctx.skipped)} for s in steps]}
