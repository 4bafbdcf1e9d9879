"""Shared fixtures: tiny models (built in milliseconds, no downloads) and test-only recipe steps.

Everything here is a fixture (test files do not import this module). Only the thread-count fixture
at the end is autouse (tests run single-threaded: they assert numbers, not speed).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from slimkit.core import registry
from slimkit.core.config import StepConfig


# ----------------------------------------------------------------------------- tiny models
class TinyMLP(nn.Module):
    """A plain user module (no ``config``): slimkit cannot rebuild it without ``model=``."""

    def __init__(self, d_in: int = 32, hidden: int = 64, d_out: int = 8) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.fc2(self.act(self.fc1(x)))))


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


@pytest.fixture
def make_mlp() -> Callable[..., TinyMLP]:
    """``make_mlp(seed=0, d_in=32, hidden=64, d_out=8)``: a seeded TinyMLP in eval mode."""

    def build(seed: int = 0, **kw: int) -> TinyMLP:
        torch.manual_seed(seed)
        return TinyMLP(**kw).eval()

    return build


@pytest.fixture
def make_cnn() -> Callable[..., TinyCNN]:
    def build(seed: int = 0) -> TinyCNN:
        torch.manual_seed(seed)
        return TinyCNN()

    return build


@pytest.fixture
def make_bert() -> Callable[..., nn.Module]:
    """A 2-layer BertModel built from a config (random weights)."""

    def build(seed: int = 0) -> nn.Module:
        import transformers

        torch.manual_seed(seed)
        cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, vocab_size=100, max_position_embeddings=64)
        return transformers.BertModel(cfg).eval()

    return build


@pytest.fixture
def make_llama() -> Callable[..., nn.Module]:
    """A 2-layer LlamaForCausalLM whose lm_head is tied to the input embedding."""

    def build(seed: int = 0) -> nn.Module:
        import transformers

        torch.manual_seed(seed)
        cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=1, vocab_size=100,
                                       max_position_embeddings=64, tie_word_embeddings=True)
        return transformers.LlamaForCausalLM(cfg).eval()

    return build


@pytest.fixture
def make_gpt2() -> Callable[..., nn.Module]:
    """A 2-layer GPT2LMHeadModel: its attention and MLP projections are HF ``Conv1D``, not Linear."""

    def build(seed: int = 0) -> nn.Module:
        import transformers

        torch.manual_seed(seed)
        cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_inner=64, vocab_size=100,
                                      n_positions=64, bos_token_id=0, eos_token_id=0)
        return transformers.GPT2LMHeadModel(cfg).eval()

    return build


@pytest.fixture
def token_batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (2, 12), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


# ----------------------------------------------------------------------------- test-only steps
@dataclasses.dataclass
class NoOptionsConfig(StepConfig):
    method: str = ""


class SleepyWrapper(nn.Module):
    """Wraps a model and sleeps on every forward: a step that makes the model slower."""

    def __init__(self, inner: nn.Module, seconds: float) -> None:
        super().__init__()
        self.inner = inner
        self.seconds = seconds

    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003
        time.sleep(self.seconds)
        return self.inner(*args, **kwargs)


@pytest.fixture
def test_steps() -> Iterator[dict[str, list]]:
    """Register, for one test, three ``prune`` methods that exist only in tests:

    * ``test_needs_calib``: declares ``needs=("calib",)``; records each call in ``calls["needs_calib"]``;
    * ``test_slow``: wraps the model in :class:`SleepyWrapper` (50 ms per forward);
    * ``test_noop``: returns the model unchanged; records each call in ``calls["noop"]``.
    """
    registry.load_builtin_steps()
    calls: dict[str, list] = {"needs_calib": [], "noop": [], "slow": []}

    def needs_calib(model, cfg, ctx):  # noqa: ANN001, ANN202
        calls["needs_calib"].append(len(ctx.calib))
        return model

    def slow(model, cfg, ctx):  # noqa: ANN001, ANN202
        calls["slow"].append(True)
        return SleepyWrapper(model, 0.05)

    def noop(model, cfg, ctx):  # noqa: ANN001, ANN202
        calls["noop"].append(True)
        return model

    added = {"test_needs_calib": (needs_calib, ("calib",)), "test_slow": (slow, ()), "test_noop": (noop, ())}
    for method, (fn, needs) in added.items():
        registry.register("prune", method, NoOptionsConfig, needs=needs)(fn)
    try:
        yield calls
    finally:
        for method in added:
            registry._REGISTRY["prune"].pop(method, None)


# ----------------------------------------------------------------------------- the one real model
@pytest.fixture(scope="session")
def minilm() -> tuple[nn.Module, object]:
    """MiniLM-L6 from the zoo (real pretrained weights), loaded once per session."""
    import slimkit as sk

    return sk.zoo.load_model("minilm-l6")


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """Tiny GEMMs with 2 spinning OpenMP threads on a shared 2-core box take ~40 ms instead of
    ~0.02 ms; unit tests assert numbers, not speed, so they run single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
