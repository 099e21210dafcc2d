"""How long should the default recipe train on a file of n strings? Choose its schedule by measurement.

    python experiments/sizing.py --out experiments/results/sizing

For names (drawn from the bundled names) and generated usernames (``usernames.py``) of several sizes,
the default recipe (the lecture's model, whole names, AdamW, linear warmup and decay to 0) trains for
a grid of epochs (passes over the file's training split; steps = epochs x train names / 128, warmup
min(200, steps / 8)), evaluating its dev split 20 times along the way. Reported for each: the dev loss
of the run's weights (the last step's; with keep_best, as the default has it, the kept ones), the lowest
dev loss along the way and its step, the test loss of the run's weights, and the share of 200 samples
that are training strings. Each cell is the mean over ``--seeds`` draws
of the file (and the training seed with it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "experiments"))

from usernames import usernames  # noqa: E402
from wavenet_conv import ModelConfig, recipe, sample_names, train  # noqa: E402
from wavenet_conv.data import load_names  # noqa: E402
from wavenet_conv.paths import bundled_names  # noqa: E402

GRID = {500: (2, 4, 8, 16, 32, 64, 128), 2000: (4, 8, 16, 32, 64, 128), 30000: (4, 8, 16)}
BATCH = 128


def corpus(kind: str, n: int, seed: int) -> list[str]:
    if kind == "usernames":
        return usernames(n, seed)
    names = load_names(bundled_names())
    return random.Random(seed).sample(names, n)


def one_run(path: str, n_train: int, epochs: float, seed: int, overrides: dict) -> dict:
    steps = max(1, math.ceil(epochs * n_train / BATCH))
    tc = recipe("default", steps=steps, warmup=min(200, steps // 8), eval_every=max(1, steps // 20), seed=seed,
                checkpoint_every=0, **overrides)
    res = train(ModelConfig(), tc, data=path, log=None, progress=False)
    curve = res.metrics["val_curve"]
    best_step, best_val = min(curve, key=lambda sv: sv[1])
    model = res.model.eval()
    samples = sample_names(model, 200, res.vocab, generator=torch.Generator().manual_seed(seed))
    train_set = set(res.train_words)
    return dict(steps=steps, val=res.metrics["val_loss"], best_val=min(best_val, res.metrics["val_loss"]),
                best_step=best_step if best_val < res.metrics["val_loss"] else steps, test=res.metrics["test_loss"],
                copied=sum(s in train_set for s in samples) / len(samples), seconds=res.metrics["train_seconds"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", default="names,usernames", help="which strings (comma-separated)")
    ap.add_argument("--sizes", default=",".join(map(str, GRID)), help="file sizes (comma-separated, from the grid)")
    ap.add_argument("--seeds", type=int, default=2, help="draws of each file")
    ap.add_argument("--epochs", help="epochs to try (comma-separated; default: the grid's for each size)")
    ap.add_argument("--set", default="{}", help="TrainConfig fields for every run, as JSON")
    ap.add_argument("--out", help="write OUT.jsonl (a row a run) and OUT.md (the means)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    overrides, rows = json.loads(args.set), []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            for n in map(int, args.sizes.split(",")):
                grid = tuple(map(float, args.epochs.split(","))) if args.epochs else GRID[n]
                for seed in range(args.seeds):
                    path = os.path.join(tmp, f"{kind}-{n}-{seed}.txt")
                    with open(path, "w") as f:
                        f.write("\n".join(corpus(kind, n, seed)) + "\n")
                    for epochs in grid:
                        row = dict(kind=kind, n=n, seed=seed, epochs=epochs,
                                   **one_run(path, int(0.8 * n), epochs, seed, overrides))
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    table = summary(rows)
    print(table)
    if args.out:
        with open(args.out + ".jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        with open(args.out + ".md", "w") as f:
            f.write(table)


def summary(rows: list[dict]) -> str:
    keys = sorted({(r["kind"], r["n"], r["epochs"]) for r in rows})
    lines = ["| strings | n | epochs | steps | dev, the run's | dev, best along the way (step) | test, the run's | samples copied |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, n, epochs in keys:
        cell = [r for r in rows if (r["kind"], r["n"], r["epochs"]) == (kind, n, epochs)]
        mean = lambda k: sum(r[k] for r in cell) / len(cell)  # noqa: E731
        lines.append(f"| {kind} | {n:,} | {epochs:g} | {cell[0]['steps']:,} | {mean('val'):.4f} | {mean('best_val'):.4f} "
                     f"({mean('best_step'):.0f}) | {mean('test'):.4f} | {100 * mean('copied'):.0f}% |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
