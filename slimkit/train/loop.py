"""The one training loop of slimkit (finetune, distill, QAT and gradual pruning all call it).

``train(model, batches, loss_fn, opts)`` runs ``opts`` optimizer steps with torch.optim, gradient
accumulation and clipping, a warm-up + schedule, early stopping on a validation metric, periodic
resumable checkpoints, and data parallelism when launched by ``torchrun`` (DDP, or FSDP2 with
``strategy: fsdp``): each global batch is split across ranks, so the result matches the single
process run on the same batches (see :mod:`slimkit.parallel.dist`). Under FSDP the loop trains
a sharded copy and gathers the weights back into ``model`` at the end; early stopping,
checkpoints and callbacks need the live model and are refused with ``strategy: fsdp``.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from slimkit.core.context import RunContext
from slimkit.core.errors import ConfigError, DataError, SlimkitError
from slimkit.core.inputs import move_inputs
from slimkit.parallel import dist as pdist
from slimkit.train.optim import build_optimizer, build_scheduler, total_steps
from slimkit.train.options import TrainOptions
from slimkit.train.state import load_latest_train_state, run_fingerprint, save_train_state

__all__ = ["TrainOptions", "TrainCallback", "train", "LossFn"]

#: ``loss_fn(model, batch) -> scalar loss``; ``model`` may be the DDP wrapper: call it, do not poke it
LossFn = Callable[[nn.Module, Any], torch.Tensor]


class TrainCallback(Protocol):
    """Optional hooks (define any subset): ``on_train_start(model)``, ``on_step_end(step, model, loss)``
    (``step`` counts optimizer steps done, from 1) and ``on_train_end(model)``."""


def _hook(callbacks: Sequence[Any], name: str, *args: Any) -> None:
    for cb in callbacks:
        fn = getattr(cb, name, None)
        if fn is not None:
            fn(*args)


class _Order:
    """Which batch the ``micro``-th draw takes: a seeded permutation per epoch (resumable)."""

    def __init__(self, n: int, seed: int, shuffle: bool) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self._epoch, self._perm = -1, list(range(n))

    def __call__(self, micro: int) -> int:
        epoch, pos = divmod(micro, self.n)
        if self.shuffle and epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.n, generator=gen).tolist(), epoch
        return self._perm[pos]


class _EarlyStop:
    """Tracks the validation metric; keeps the best weights in memory."""

    def __init__(self, validate: Callable[[nn.Module], float] | None, opts: TrainOptions, state: dict[str, Any]) -> None:
        self.validate, self.opts, self.state = validate, opts, state
        self.higher = bool(getattr(validate, "higher_is_better", True))
        self.best_weights: dict[str, torch.Tensor] | None = None

    def check(self, model: nn.Module, step: int) -> bool:
        """Evaluate at ``step`` when due; returns True when training should stop."""
        if self.validate is None or self.opts.eval_every is None or step % self.opts.eval_every:
            return False
        model.eval()
        with torch.no_grad():
            metric = float(self.validate(model))
        model.train()
        self.state["evals"].append({"step": step, "metric": metric})
        observe = getattr(self.validate, "on_eval", None)  # e.g. a search trial reporting rungs to its pruner
        if observe is not None:
            observe(step, metric)
        best = self.state["best_metric"]
        if best is None or (metric > best if self.higher else metric < best):
            self.state["best_metric"], self.state["bad_evals"] = metric, 0
            self.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.state["bad_evals"] += 1
        return self.opts.patience is not None and self.state["bad_evals"] >= self.opts.patience

    def restore(self, model: nn.Module) -> None:
        if self.best_weights is not None and self.opts.patience is not None:
            model.load_state_dict(self.best_weights)


def _check_batches(batches: Any) -> list[Any]:
    data = list(batches) if batches is not None else []
    if not data:
        raise DataError("training data is empty: pass train=[batch, ...] (at least one batch)")
    return data


def train(
    model: nn.Module,
    batches: Sequence[Any],
    loss_fn: LossFn,
    opts: TrainOptions,
    *,
    ctx: RunContext | None = None,
    callbacks: Sequence[Any] = (),
    params: Sequence[nn.Parameter] | None = None,
    validate: Callable[[nn.Module], float] | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place on ``batches`` by minimising ``loss_fn(model, batch)``.

    ``params`` (default: the model's parameters with ``requires_grad``) may include parameters
    outside the model (distillation projections). ``validate(model) -> float`` (default
    ``ctx.evaluate``) drives ``eval_every`` / ``patience``; its ``higher_is_better`` attribute
    says which way is better (default higher); its optional ``on_eval(step, metric)`` method is
    called after each validation (a search trial reports intermediate quality to its pruner there,
    and may stop the training by raising). Returns ``{"steps", "final_loss", "history",
    "best_metric", "evals", "stopped_early", "resumed_from"}``; the model ends in eval mode.
    """
    opts = opts.train_options() if type(opts) is not TrainOptions else opts
    data = _check_batches(batches)
    pdist.ensure_process_group()
    pdist.note_strategy(opts.strategy, ctx)  # world size in the report; an unlaunched ddp/fsdp warns
    if pdist.local_device().type == "cuda":
        model.to(pdist.local_device())
    trainable = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError("nothing to train: the model has no parameter with requires_grad=True")
    validate = validate if validate is not None else (ctx.evaluate if ctx is not None else None)
    if opts.eval_every is not None and validate is None:
        raise DataError("eval_every needs a validation metric: pass eval= to compress (or validate= to train)")
    total = total_steps(opts, len(data))
    torch.manual_seed(opts.seed)
    fsdp = opts.strategy == "fsdp" and pdist.is_distributed()
    if fsdp:
        _check_fsdp(model, trainable, callbacks)
        wrapped = pdist.wrap_model(model, "fsdp")  # a sharded copy: train its (DTensor) parameters
        names = {id(p): n for n, p in model.named_parameters()}
        sharded = dict(wrapped.named_parameters())
        trainable = [sharded[names[id(p)]] for p in trainable]
    optimizer = build_optimizer(trainable, opts)
    scheduler = build_scheduler(optimizer, opts, total)
    state: dict[str, Any] = {"step": 0, "micro": 0, "history": [], "evals": [], "best_metric": None,
                             "bad_evals": 0, "fingerprint": run_fingerprint(model, total, len(data))}
    resumed = _resume(opts, model, optimizer, scheduler, trainable, state)
    if not fsdp:
        wrapped = pdist.wrap_model(model, opts.strategy)
    stopper = _EarlyStop(validate, opts, state)
    _hook(callbacks, "on_train_start", model)
    model.train()
    wrapped.train()
    stopped = False
    try:
        steps = range(state["step"], total)
        if ctx is not None and pdist.is_main_process():
            steps = ctx.progress(steps, "training", total=len(steps))
        order = _Order(len(data), opts.seed, opts.shuffle)
        for _ in steps:
            loss = _one_step(wrapped, data, order, loss_fn, opts, optimizer, scheduler, trainable, state)
            step = state["step"]
            state["history"].append({"step": step, "loss": loss, "lr": scheduler.get_last_lr()[0]})
            _hook(callbacks, "on_step_end", step, model, loss)
            stopped = stopper.check(model, step)
            if opts.checkpoint_every and (step % opts.checkpoint_every == 0 or step == total or stopped):
                _checkpoint(opts, state, model, optimizer, scheduler, trainable)
            if stopped:
                break
    finally:
        model.eval()
    if fsdp:
        pdist.gather_sharded(wrapped, model)
    stopper.restore(model)
    _hook(callbacks, "on_train_end", model)
    return {"steps": state["step"], "final_loss": state["history"][-1]["loss"] if state["history"] else None,
            "history": state["history"], "best_metric": state["best_metric"], "evals": state["evals"],
            "stopped_early": stopped, "resumed_from": resumed}


def _one_step(wrapped: nn.Module, data: list[Any], order: _Order, loss_fn: LossFn, opts: TrainOptions,
              optimizer: torch.optim.Optimizer, scheduler: Any, params: list[nn.Parameter],
              state: dict[str, Any]) -> float:
    """One optimizer step over ``grad_accum`` batches; returns the mean loss (averaged over ranks)."""
    optimizer.zero_grad(set_to_none=True)
    device = next((p.device for p in params), torch.device("cpu"))
    world, rank = pdist.world_size(), pdist.rank()
    total = torch.zeros((), device=device)
    for k in range(opts.grad_accum):
        batch = data[order(state["micro"])]
        batch = move_inputs(pdist.shard_batch(batch, rank, world), device)
        last = k == opts.grad_accum - 1
        sync = contextlib.nullcontext() if last or not hasattr(wrapped, "no_sync") else wrapped.no_sync()
        if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2: reduce-scatter on the last micro-batch only
            wrapped.set_requires_gradient_sync(last)
        with sync:
            loss = loss_fn(wrapped, batch)
            _check_loss(loss, state["step"] + 1)
            (loss / opts.grad_accum).backward()
        total += loss.detach()
        state["micro"] += 1
    if opts.clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, opts.clip_norm)
    optimizer.step()
    scheduler.step()
    state["step"] += 1
    return float(pdist.all_reduce_mean(total / opts.grad_accum))


def _check_fsdp(model: nn.Module, trainable: list[nn.Parameter], callbacks: Sequence[Any]) -> None:
    """FSDP trains a sharded copy, so everything must live in the model and nothing may watch it mid-run."""
    owned = {id(p) for p in model.parameters()}
    if any(id(p) not in owned for p in trainable):
        raise ConfigError("strategy = 'fsdp' needs every trained parameter inside the model (params= outside "
                          "it cannot be sharded); valid: strategy: ddp")
    if callbacks:
        raise ConfigError("strategy = 'fsdp' does not support training callbacks (e.g. gradual pruning masks); "
                          "valid: strategy: ddp")


def _check_loss(loss: Any, step: int) -> None:
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise DataError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}"
                        f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}")
    if not math.isfinite(float(loss.detach())):
        raise SlimkitError(f"training diverged: loss is {float(loss.detach())} at step {step} "
                           f"(try a lower lr or clip_norm)")


def _resume(opts: TrainOptions, model: nn.Module, optimizer: Any, scheduler: Any, params: list[nn.Parameter],
            state: dict[str, Any]) -> int | None:
    if opts.checkpoint_dir is None:
        return None
    saved = load_latest_train_state(opts.checkpoint_dir, model, optimizer, scheduler, params, state["fingerprint"])
    if saved is None:
        return None
    state.update(saved)
    return int(saved["step"])


def _checkpoint(opts: TrainOptions, state: dict[str, Any], model: nn.Module, optimizer: Any, scheduler: Any,
                params: list[nn.Parameter]) -> None:
    if pdist.is_main_process():
        save_train_state(opts.checkpoint_dir, state, model, optimizer, scheduler, params)
    pdist.barrier()
