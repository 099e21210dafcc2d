"""Reproduce the lecture's table with the lecture's recipe on a names file.

    python experiments/reproduce.py names.txt --out experiments/results/reproduce-lecture.md
    python experiments/reproduce.py data/names.txt --out experiments/results/reproduce-bundled.md

Five rows, each 200,000 SGD steps of 32 contexts (``recipe("lecture")``), ``torch.manual_seed(42)``
before the model is built, the lecture split, split losses in eval mode. The third row reproduces the
lecture's BatchNorm bug (statistics over axis 0 only for 3-D input, i.e. per position) with a BatchNorm
subclass swapped into the TreeModel here; the library's BatchNorm is the fixed one.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from wavenet_conv import BatchNorm, FlatConfig, FlatModel, ModelConfig, TreeModel, recipe, train
from wavenet_conv.data import sha256_file


class LectureBugBatchNorm(BatchNorm):
    """The lecture's first hierarchical BatchNorm: for (B, T, C) input it reduces over axis 0 only, so
    the statistics and the running buffers are per position, (T, C)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training or x.dim() != 3:
            return super().forward(x, mask)
        mean, var = x.mean(0), x.var(0, unbiased=True)  # (T, C): the bug
        with torch.no_grad():  # the buffers take the (T, C) shape on the first update, as in the lecture
            self.running_mean = torch.lerp(self.running_mean, mean, self.momentum)
            self.running_var = torch.lerp(self.running_var, var, self.momentum)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


def buggy_tree(config: ModelConfig) -> TreeModel:
    model = TreeModel(config)
    for block in model.blocks:
        block.norm = LectureBugBatchNorm(block.norm.num_features)  # no random init: the RNG stream is unchanged
    return model


# (label, params, train, val) of the lecture, and the model factory
ROWS = [
    ("flat MLP, 3-char context, n_embd 10, n_hidden 200", 12_097, 2.058, 2.105,
     lambda V: FlatModel(FlatConfig(vocab_size=V, n_embd=10, n_hidden=200, block_size=3))),
    ("flat MLP, 8-char context, n_embd 10, n_hidden 200", 22_097, 1.918, 2.027,
     lambda V: FlatModel(FlatConfig(vocab_size=V, n_embd=10, n_hidden=200, block_size=8))),
    ("hierarchical, n_embd 10, n_hidden 68 (BN over axis 0 only: the bug)", 22_397, 1.941, 2.029,
     lambda V: buggy_tree(ModelConfig(vocab_size=V, n_embd=10, n_hidden=68))),
    ("hierarchical, BN fixed", 22_397, 1.912, 2.022,
     lambda V: TreeModel(ModelConfig(vocab_size=V, n_embd=10, n_hidden=68))),
    ("hierarchical, n_embd 24, n_hidden 128", 76_579, 1.769, 1.993,
     lambda V: TreeModel(ModelConfig(vocab_size=V, n_embd=24, n_hidden=128))),
]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="names file")
    p.add_argument("--out", help="markdown file to write (default: print only)")
    p.add_argument("--rows", default="1,2,3,4,5", help="which rows, 1-based (default: all five)")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's 200,000 steps (smoke tests)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [ROWS[int(i) - 1] for i in args.rows.split(",")]
    tc = recipe("lecture", steps=args.steps, seed=args.seed, eval_test=False, checkpoint_every=0)
    lines = [
        f"Lecture recipe ({tc.steps:,} SGD steps of {tc.batch_size} contexts, lr {tc.lr:g} then "
        f"{tc.lr * tc.lr_decay:g}, seed {tc.seed}) on `{os.path.basename(args.data)}` "
        f"(sha256 {sha256_file(args.data)[:12]}…), lecture split; {machine()}; {time.strftime('%Y-%m-%d')}.",
        "",
        "| configuration | params | train | val | lecture train / val | Δ val | wall time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, params, l_train, l_val, make in rows:
        print(f"== {label}", flush=True)
        r = train(config=tc, data=args.data, make_model=make, progress=False, threads=None)
        m = r.metrics
        if m["params"] != params:
            print(f"   note: {m['params']:,} parameters, the lecture has {params:,}")
        lines.append(f"| {label} | {m['params']:,} | {m['train_loss']:.4f} | {m['val_loss']:.4f} | "
                     f"{l_train:.3f} / {l_val:.3f} | {m['val_loss'] - l_val:+.4f} | {m['train_seconds']:.0f} s |")
        print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
