"""How far does a small dev split's val loss move between draws of its names? The note ``train`` gives
when keep_best picks its weights on few dev names.

    python experiments/val_spread.py --out experiments/results/val_spread.md

The bundled model (that of data/world.tsv, whose val loss on these US names is 2.25) scores the dev
split of data/names.txt (3,247 names) once; for each n, 2,000 draws of n of those names give 2,000 val
losses (nats per target over the drawn names): their standard deviation is how uncertain a val loss of
n names is, for a model of about that loss (a better one spreads a little less).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from wavenet_conv import load_model, score_names  # noqa: E402
from wavenet_conv.data import lecture_split, load_names  # noqa: E402

SIZES = (20, 50, 100, 200, 400, 1000)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--draws", type=int, default=2000, help="draws of n names for each n")
    ap.add_argument("--out", help="write the table here too (Markdown)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    loaded = load_model()
    dev = lecture_split(load_names(os.path.join(ROOT, "data", "names.txt")))[1]
    r = score_names(loaded.model, dev, loaded.vocab)
    nll, targets = r.nll.numpy(), r.n_targets.numpy()
    rng = np.random.default_rng(0)
    lines = [f"The bundled model on the {len(dev):,} dev names of data/names.txt; {args.draws:,} draws of n names each.", "",
             "| dev names | standard deviation of the val loss (nats per target) |", "|---:|---:|"]
    for n in SIZES:
        picks = (rng.choice(len(dev), n, replace=False) for _ in range(args.draws))
        losses = [nll[i].sum() / targets[i].sum() for i in picks]
        lines.append(f"| {n:,} | {np.std(losses):.3f} |")
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
