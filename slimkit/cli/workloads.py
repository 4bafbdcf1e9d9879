"""Default data for a model on the command line: calibration batches, a held-out evaluator and
example inputs, chosen by the model's task. Calibration always comes from the train split and
evaluation from the test split, so calibration never sees the held-out data.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from slimkit.core.errors import UnsupportedModelError

__all__ = ["Workload", "task_of", "workload_for", "TASKS"]

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
    config = getattr(model, "config", None)
    if config is not None:
        archs = getattr(config, "architectures", None) or [type(model).__name__]
        return "causal-lm" if any("CausalLM" in a for a in archs) else "embedding"
    raise UnsupportedModelError(
        f"cannot tell the task of a {type(model).__name__} on the command line; use the Python API with your own data"
    )


def workload_for(task: str, tokenizer: Any = None, *, seq_len: int = 256, eval_batches: int = 8,
                 calib_batches: int = 8, latency_tokens: int = 128) -> Workload:
    """Build the default calibration data, held-out evaluator and example inputs for ``task``."""
    if task == "causal-lm":
        return _causal_lm(tokenizer, seq_len, eval_batches, calib_batches, latency_tokens)
    if task == "embedding":
        return _embedding(tokenizer, calib_batches)
    if task == "image-classification":
        return _images(calib_batches)
    raise UnsupportedModelError(f"unknown task {task!r}; known tasks are {list(TASKS)}")


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


def _images(calib_batches: int) -> Workload:
    from slimkit.measure import Agreement

    test = natural_image_batches(seed=1, batches=4)
    calib = natural_image_batches(seed=0, batches=calib_batches)
    return Workload("image-classification", calib, Agreement(test), test[0][:1], None)


def natural_image_batches(*, seed: int, batches: int, batch_size: int = 16, size: int = 224) -> list[torch.Tensor]:
    """Random 224×224 crops of the two real photos scikit-learn ships, ImageNet-normalised.

    No ImageNet images can be had offline; crops of real photographs are natural-image inputs on
    which top-1 agreement with the uncompressed model is meaningful. Seeds 0 (calibration) and 1
    (evaluation) draw different crops.
    """
    from sklearn.datasets import load_sample_images

    photos = [torch.tensor(img).permute(2, 0, 1).float() / 255 for img in load_sample_images().images]
    gen = torch.Generator().manual_seed(seed)
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(3, 1, 1)
    out = []
    for _ in range(batches):
        crops = []
        for _ in range(batch_size):
            img = photos[int(torch.randint(len(photos), (1,), generator=gen))]
            side = int(torch.randint(160, min(img.shape[1:]) + 1, (1,), generator=gen))
            y = int(torch.randint(img.shape[1] - side + 1, (1,), generator=gen))
            x = int(torch.randint(img.shape[2] - side + 1, (1,), generator=gen))
            crop = img[:, y:y + side, x:x + side].unsqueeze(0)
            crops.append(nn.functional.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False))
        out.append((torch.cat(crops) - mean) / std)
    return out
