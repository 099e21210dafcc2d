"""Choose the default unknown-character replacement rate (``TrainConfig.unknown_rate``) by measurement.

    python experiments/unknown_rate.py names.txt --out experiments/results/unknown_rate.md

For each rate, the default recipe trains on the file once per seed (one thread, the lecture's split,
seeds 42, 43, ...; runs kept under --runs-dir, a finished one not trained again) and three figures,
means over the seeds, are taken on the dev split:

* clean: nats per target of the dev names as they are (what the replacement may cost);
* one unseen: nats per target of the dev names with one character each (at a seeded random place)
  replaced by a character no training name has -- a real name with one letter the data never showed;
* unseen char: the mean nats of that one character alone, the price the unknown token has learned.

The rate kept is the one with the lowest "one unseen" loss among those whose clean loss is within
0.003 nats of the rate 0's (the token then learns only from the characters rarer than
``TrainConfig.rare_chars``, of which the lecture's names have none).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from wavenet_conv import load_model, score_names  # noqa: E402
from wavenet_conv.data import lecture_split, load_names  # noqa: E402
from wavenet_conv.models.config import recipe  # noqa: E402
from wavenet_conv.store.checkpoint import Checkpoint  # noqa: E402
from wavenet_conv.training.train import train  # noqa: E402

RATES = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02)
UNSEEN = "\u0167"  # ŧ: in no training name
TOLERANCE = 0.003  # nats per target of clean dev loss a rate may cost


def one_unseen(names: list[str], seed: int = 0) -> tuple[list[str], list[int]]:
    """Each name with one character (a seeded random place) replaced by ``UNSEEN``, and the places."""
    rng = random.Random(seed)
    at = [rng.randrange(len(n)) for n in names]
    return [n[:i] + UNSEEN + n[i + 1:] for n, i in zip(names, at)], at


def measure(run: str, dev: list[str]) -> dict:
    model, vocab, _ = load_model(run)
    torch.set_num_threads(1)
    clean = score_names(model, dev, vocab).mean_loss
    dirty, at = one_unseen(dev)
    r = score_names(model, dirty, vocab, per_char=True)
    unseen = sum(r.chars(i)[j].item() for i, j in enumerate(at)) / len(at)
    return {"clean": clean, "one_unseen": r.mean_loss, "unseen_char": unseen}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data")
    p.add_argument("--out", default="experiments/results/unknown_rate.md")
    p.add_argument("--runs-dir", default="runs/unknown-rate")
    p.add_argument("--rates", type=float, nargs="+", default=list(RATES))
    p.add_argument("--steps", type=int, help="steps of each run (default: the recipe's)")
    p.add_argument("--seeds", type=int, default=3, help="runs per rate (seeds 42, 43, ...): the figures are their means")
    args = p.parse_args(argv)
    dev = lecture_split(load_names(args.data))[1]
    rows = []
    for rate in args.rates:
        runs = []
        for seed in range(42, 42 + args.seeds):
            out = os.path.join(args.runs_dir, f"rate-{rate:g}-seed-{seed}")
            if not (os.path.exists(os.path.join(out, "checkpoint.pt")) and Checkpoint.load(out).finished):
                train(None, recipe("default", unknown_rate=rate, seed=seed, device="cpu", eval_test=False,
                                   steps=args.steps), data=args.data, out=out, force=True, log=None, progress=False,
                      threads=1)
            runs.append({**measure(out, dev), "train_seconds": Checkpoint.load(out).train_seconds})
        rows.append({"rate": rate, **{k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}})
        print(json.dumps(rows[-1]), flush=True)
    base = next(r for r in rows if r["rate"] == 0.0)["clean"] if any(r["rate"] == 0.0 for r in rows) else None
    fit = [r for r in rows if base is None or r["clean"] <= base + TOLERANCE]
    kept = min(fit, key=lambda r: r["one_unseen"])["rate"]
    lines = [f"Means of {args.seeds} seeds.", "", "| unknown_rate | clean dev | dev, one unseen character | that character (nats) | train s |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['rate']:g}{' (kept)' if r['rate'] == kept else ''} | {r['clean']:.4f} | {r['one_unseen']:.4f} | "
              f"{r['unseen_char']:.2f} | {r['train_seconds']:.0f} |" for r in rows]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
