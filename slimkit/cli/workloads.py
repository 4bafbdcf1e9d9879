"""Default data for a model on the command line: calibration batches, a held-out evaluator and
example inputs, chosen by the model's task. Calibration always comes from the train split and
evaluation from the test split, so calibration never sees the held-out data.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from slimkit.core.errors import DataError, UnsupportedModelError

__all__ = ["Workload", "task_of", "workload_for", "workload_from_files", "train_batches", "TASKS"]

TASKS = ("causal-lm", "embedding", "image-classification")
_ZOO_TASKS = {
    "smollm2-135m": "causal-lm",
    "minilm-l6": "embedding",
    "mpnet-base": "embedding",
    "mobilenet-v2": "image-classification",
    "efficientnet-lite0": "image-classification",
}


@dataclasses.dataclass
class Workload:
    task: str
    calib: list[Any]
    evaluator: Any
    example_inputs: Any
    #: tokens processed by one call on example_inputs (for tokens/s), None for images
    tokens_per_call: int | None


def task_of(model: nn.Module, zoo_name: str | None = None) -> str:
    """The task of a model: from its zoo entry, else from a Hugging Face config, else by its output."""
    if zoo_name in _ZOO_TASKS:
        return _ZOO_TASKS[zoo_name]
    if getattr(model, "slimkit_task", None) in TASKS:  # an exported model run by ONNX Runtime
        return model.slimkit_task
    config = getattr(model, "config", None)
    if config is not None:
        archs = getattr(config, "architectures", None) or [type(model).__name__]
        return "causal-lm" if any("CausalLM" in a for a in archs) else "embedding"
    raise UnsupportedModelError(
        f"cannot tell the task of a {type(model).__name__} on the command line; use the Python API with your own data"
    )


def workload_for(task: str, tokenizer: Any = None, *, seq_len: int = 256, eval_batches: int = 8,
                 calib_batches: int = 8, latency_tokens: int = 128, zoo_name: str | None = None) -> Workload:
    """Build the default calibration data, held-out evaluator and example inputs for ``task``."""
    if task == "causal-lm":
        return _causal_lm(tokenizer, seq_len, eval_batches, calib_batches, latency_tokens)
    if task == "embedding":
        return _embedding(tokenizer, calib_batches)
    if task == "image-classification":
        return _images(calib_batches, _IMAGE_NORMALIZATION.get(zoo_name or "", "imagenet"))
    raise UnsupportedModelError(f"unknown task {task!r}; known tasks are {list(TASKS)}")


def workload_from_files(task: str, tokenizer: Any, data: str, eval_data: str | None = None, *, seq_len: int = 256,
                        eval_batches: int = 8, calib_batches: int = 8, latency_tokens: int = 128) -> Workload:
    """The user's own data (``--data FILE`` / ``--eval-data FILE``, see :func:`slimkit.data.load`): split by
    document into calibration and held-out parts, evaluated the way :func:`workload_for` evaluates ``task``."""
    from slimkit import data as sk_data
    from slimkit.measure import CosineFidelity, Perplexity, TopKAgreement

    if task == "image-classification":
        calib, held = sk_data.load(data, eval_path=eval_data, batch_size=8)
        calib, held = [_pixels(b) for b in calib[:calib_batches]], [_pixels(b) for b in held[:eval_batches]]
        return Workload(task, calib, TopKAgreement(held), held[0][:1], None)
    if tokenizer is None:
        raise DataError(f"--data {data}: this model has no tokenizer, so text data cannot be tokenized for it")
    if task not in ("causal-lm", "embedding"):
        raise UnsupportedModelError(f"unknown task {task!r}; known tasks are {list(TASKS)}")
    calib, held = sk_data.load(data, tokenizer=tokenizer, seq_len=seq_len, eval_path=eval_data)
    if not isinstance(held[0], dict):
        raise DataError(f"--data {data}: labelled rows are not supported on the command line for {task}; "
                        "drop the label column or use the Python API")
    calib, held = calib[:calib_batches], held[:eval_batches]
    if task == "causal-lm":
        example = {"input_ids": held[0]["input_ids"][:, :latency_tokens]}
        return Workload(task, calib, Perplexity(held), example, example["input_ids"].shape[1])
    return Workload(task, calib, CosineFidelity(held), held[0], int(held[0]["input_ids"].numel()))


def _pixels(batch: Any) -> Any:
    """Image batches without their folder labels (agreement with the uncompressed model needs none)."""
    return batch[0] if isinstance(batch, tuple) else batch


def train_batches(work: Workload, processes: int = 1) -> list[Any]:
    """Training data for a recipe's training steps (finetune, distill, QAT, gradual pruning): the
    calibration sequences of the train split (never the held-out test split).

    Causal LM: batches of ``processes`` consecutive sequences (one per data-parallel process, so
    every rank of ``--nproc N`` gets a row) with ``labels`` = ``input_ids``, the language-modelling
    target (the model shifts it by one); sequences beyond a multiple of ``processes`` are left out.
    Distillation on these batches mixes that next-token loss in with weight ``1 - alpha``.
    Other tasks: the calibration batches unchanged (unlabelled: distillation learns from the teacher,
    and a finetune step says it needs labels).
    """
    if work.task != "causal-lm":
        return list(work.calib)
    import torch

    ids = torch.cat([b["input_ids"] for b in work.calib])
    if ids.shape[0] < processes:
        raise DataError(f"{ids.shape[0]} training sequences cannot give each of {processes} processes a row; "
                        f"use --calib-batches {processes} or more")
    n = ids.shape[0] // processes
    return [{"input_ids": ids[i * processes:(i + 1) * processes],
             "labels": ids[i * processes:(i + 1) * processes].clone()} for i in range(n)]


def _causal_lm(tok: Any, seq_len: int, eval_batches: int, calib_batches: int, latency_tokens: int) -> Workload:
    from slimkit import zoo
    from slimkit.measure import Perplexity

    test = zoo.load_data("shakespeare", "test", tokenizer=tok, seq_len=seq_len, max_batches=eval_batches)
    calib = zoo.load_data("shakespeare", "train", tokenizer=tok, seq_len=seq_len, max_batches=calib_batches)
    example = {"input_ids": test[0]["input_ids"][:, :latency_tokens]}
    return Workload("causal-lm", calib, Perplexity(test), example, latency_tokens)


def _embedding(tok: Any, calib_batches: int) -> Workload:
    from slimkit import zoo
    from slimkit.measure import CosineFidelity

    test = zoo.load_data("shakespeare-lines", "test", tokenizer=tok, batch_size=32, seq_len=128, max_batches=2)
    calib = zoo.load_data("shakespeare-lines", "train", tokenizer=tok, batch_size=32, seq_len=128,
                          max_batches=calib_batches)
    # latency on 8 sentences x 128 tokens: a 32-sentence batch takes ~1.5 s per call on 2 cores
    example = {k: v[:8] for k, v in test[0].items()}
    return Workload("embedding", calib, CosineFidelity(test), example, 8 * 128)


#: zoo image models whose inputs are not ImageNet mean/std normalised
_IMAGE_NORMALIZATION = {"efficientnet-lite0": "symmetric"}


def _images(calib_batches: int, normalize: str = "imagenet") -> Workload:
    """Crops of the zoo's ``photos``: calibration from the ``calib`` photos, top-1/top-5
    agreement with the uncompressed model on the held-out ``test`` photos (disjoint by photo)."""
    from slimkit import zoo
    from slimkit.measure import TopKAgreement

    test = zoo.load_data("photos", "test", normalize=normalize)
    calib = zoo.load_data("photos", "calib", max_batches=calib_batches, normalize=normalize)
    return Workload("image-classification", calib, TopKAgreement(test), test[0][:1], None)
