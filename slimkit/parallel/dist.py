"""torch.distributed plumbing for the training loop: process group from the torchrun environment,
rank-aware helpers, sharding a global batch across ranks, and wrapping a model in DDP / FSDP.

FSDP (``strategy: fsdp``): the loop trains a *copy* of the model sharded with FSDP2
``fully_shard`` (each rank keeps 1/N of the parameters, gradients and optimizer state) and
gathers the trained weights back into the user's plain module at the end
(:func:`sharded_copy`, :func:`gather_sharded`), so the result is an ordinary ``nn.Module``.

Data-parallel semantics: every rank sees the same list of *global* batches; each batch is split
along its first dimension into ``world_size`` shards and rank ``r`` trains on shard ``r``. DDP
averages the gradients, so with equal shards and mean-reduced losses one step equals the
single-process step on the whole batch.
"""
from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from slimkit.core.errors import DataError

__all__ = [
    "ensure_process_group",
    "is_distributed",
    "world_size",
    "rank",
    "is_main_process",
    "barrier",
    "shard_batch",
    "wrap_model",
    "unwrap_model",
    "all_reduce_mean",
    "local_device",
    "training_device",
    "note_strategy",
    "sharded_copy",
    "gather_sharded",
]


def ensure_process_group() -> bool:
    """Initialise the default process group when launched by torchrun (``WORLD_SIZE`` > 1).

    gloo on CPU, nccl when CUDA is available. Returns whether training is distributed.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return dist.get_world_size() > 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """True on rank 0 (and in a plain single process): the one that writes files."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def local_device() -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` under nccl, else the CPU."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def training_device(model: nn.Module) -> torch.device:
    """Where the training loop trains ``model``: this rank's GPU under nccl, else the device its
    parameters are on (the CPU for a parameterless module). Call after :func:`ensure_process_group`."""
    local = local_device()
    if local.type == "cuda":
        return local
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def note_strategy(strategy: str | None, ctx: Any = None) -> None:
    """Say how a training run is parallelised: ``world_size`` and ``strategy`` notes on ``ctx`` (a
    :class:`~slimkit.core.context.RunContext`) under a process group; a ``strategy`` asked for
    explicitly without one (not launched by torchrun) trains in one process, which is never silent:
    a warning plus a ``strategy`` note saying so."""
    if is_distributed():
        if ctx is not None:
            ctx.note("world_size", world_size())
            ctx.note("strategy", strategy or "ddp")
        return
    if strategy is None:
        return
    reason = ("not launched under torchrun" if "WORLD_SIZE" not in os.environ
              else f"WORLD_SIZE={os.environ['WORLD_SIZE']}")
    message = f"{strategy} requested, ran single-process: {reason}"
    warnings.warn(f"strategy: {message} (start it with torchrun or slimkit compress --nproc N)", stacklevel=2)
    if ctx is not None:
        ctx.note("strategy", message)


def _batch_len(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else None
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (tuple, list)) else ()
    for v in values:
        n = _batch_len(v)
        if n is not None:
            return n
    return None


def _take(batch: Any, n: int, index: int, parts: int) -> Any:
    if isinstance(batch, torch.Tensor):
        if batch.dim() and batch.shape[0] == n:
            return torch.tensor_split(batch, parts, dim=0)[index]
        return batch
    if isinstance(batch, Mapping):
        return {k: _take(v, n, index, parts) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_take(v, n, index, parts) for v in batch)
    return batch


def shard_batch(batch: Any, index: int, parts: int) -> Any:
    """Shard ``index`` of ``parts`` of a batch (tensor / tuple / dict) split along dimension 0.

    Tensors whose first dimension is not the batch size (e.g. a scalar) are passed unchanged.
    Raises :class:`DataError` when the batch has fewer rows than ranks.
    """
    if parts == 1:
        return batch
    n = _batch_len(batch)
    if n is None or n < parts:
        raise DataError(f"a training batch of {n} rows cannot be split across {parts} processes; "
                        f"use batches of at least {parts} (ideally a multiple of {parts}) rows")
    return _take(batch, n, index, parts)


def wrap_model(model: nn.Module, strategy: str | None = "ddp") -> nn.Module:
    """``model`` wrapped for data-parallel training: DistributedDataParallel (sharing ``model``'s
    parameters), or for ``fsdp`` a sharded *copy* (:func:`sharded_copy`; its parameters are new
    DTensors: optimise those, then :func:`gather_sharded` the result back into ``model``).

    ``strategy`` ``None`` means DDP. Without a process group the model is returned as is.
    """
    if not is_distributed():
        return model
    if strategy == "fsdp":
        return sharded_copy(model)
    from torch.nn.parallel import DistributedDataParallel

    device = local_device()
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


#: attributes every ``nn.Module`` has (parameter / buffer / submodule registries, hooks, ``training``)
_MODULE_SLOTS = frozenset(vars(nn.Module()))


def sharded_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` sharded in place with FSDP2 ``fully_shard`` (``model`` stays untouched).

    Only the parameter / buffer / submodule tree is copied; everything else a module holds as a
    plain attribute (a distillation teacher, hook state, a Hugging Face config) is shared with the
    original, so a teacher is never duplicated and hooks keep writing where their owner reads.
    """
    from torch.distributed.fsdp import fully_shard

    memo = {id(v): v for m in model.modules() for k, v in vars(m).items() if k not in _MODULE_SLOTS}
    work = copy.deepcopy(model, memo)
    return fully_shard(work)


def gather_sharded(work: nn.Module, model: nn.Module) -> None:
    """Copy the full parameters of the FSDP-sharded ``work`` into the plain ``model`` (all ranks take
    part: gathering is a collective); buffers (e.g. BatchNorm statistics) are taken from rank 0."""
    from torch.distributed.tensor import DTensor

    src = dict(work.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            w = src[name]
            p.copy_(w.full_tensor() if isinstance(w, DTensor) else w)
        bufs = dict(work.named_buffers())
        for name, b in model.named_buffers():
            b.copy_(bufs[name])
            if is_distributed():
                dist.broadcast(b, 0)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper (FSDP2 modules are their own)."""
    return model.module if hasattr(model, "module") and type(model).__name__ == "DistributedDataParallel" else model


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over ranks (itself in a single process)."""
    if not is_distributed():
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()
