"""Does the percentile rank as well as the nats per target it is made from? ROC AUC of each, real
names held out from training against strings nobody calls a name.

    python benchmarks/percentile_auc.py                 # the bundled model; its test split
    python benchmarks/percentile_auc.py --run RUN --names names.txt

Positives: the run's test split of its names file (the lecture's split: neither the training names
nor the dev names its percentile table was made from; a table's column as the run read it). Negatives, seeded, of the positives' lengths
(3 to 10 letters): uniform random letters; keyboard walks (a run along a row of a QWERTY keyboard,
turning at its ends); repeated patterns (one to three letters repeated). Contenders, each higher =
more unusual: the nats per target; the percentile as ``score`` gives it (a fitted tail past each
length group's 95th); and the step percentile of 1.0 (the share of the group below, 100.0 past its
largest value). The AUC counts a tie as half. Also: how many distinct values the random strings at or
above the 99th get, against how many distinct nats per target they have.
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
from wavenet_conv.data import lecture_split  # noqa: E402
from wavenet_conv.device import cpu_name  # noqa: E402
from wavenet_conv.training.source import read_data  # noqa: E402

ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def random_strings(rng, n: int) -> list[str]:
    return ["".join(rng.choice(list(LETTERS), rng.integers(3, 11))) for _ in range(n)]


def keyboard_walks(rng, n: int) -> list[str]:
    """A walk along one keyboard row from a random key, a random way, turning back at the row's ends."""
    out = []
    for _ in range(n):
        row, k = ROWS[rng.integers(len(ROWS))], int(rng.integers(4, 11))
        i, step = int(rng.integers(len(row))), int(rng.choice([-1, 1]))
        walk = []
        for _ in range(k):
            walk.append(row[i])
            if not 0 <= i + step < len(row):
                step = -step
            i += step
        out.append("".join(walk))
    return out


def repeated_patterns(rng, n: int) -> list[str]:
    out = []
    for _ in range(n):
        unit = "".join(rng.choice(list(LETTERS), rng.integers(1, 4)))
        out.append((unit * 10)[:int(rng.integers(max(3, len(unit) * 2), 11))])
    return out


NEGATIVES = {"random letters": random_strings, "keyboard walks": keyboard_walks, "repeated patterns": repeated_patterns}


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a negative scores above a positive), a tie counting half (the Mann-Whitney U over both sizes)."""
    both = np.concatenate([pos, neg])
    order = np.argsort(both, kind="stable")
    ranks = np.empty(len(both))
    sorted_ = both[order]
    _, first, counts = np.unique(sorted_, return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # mid-ranks, from 1
    return float((ranks[len(pos):].sum() - len(neg) * (len(neg) + 1) / 2) / (len(pos) * len(neg)))


def step_percentile(table, stat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """1.0's percentile: the share of the group's values below, 100.0 past its largest."""
    out, groups = np.empty(len(stat)), table.group_of(lengths)
    for g, ref in enumerate(table.values):
        out[groups == g] = 100.0 * np.searchsorted(ref, stat[groups == g], side="left") / len(ref)
    return out


def test_split(loaded, path: str | None) -> list[str]:
    """The test split of the run's names file (``path``: another copy of it), read as the run read it."""
    data = loaded.checkpoint.data
    path = path or os.path.join(ROOT, data["path"])  # the bundled model's is the repository's file
    return lecture_split(read_data(path, loaded.vocab, column=data.get("column"))[0])[2]


def statistics(loaded, names: list[str]) -> dict[str, np.ndarray]:
    r = score_names(loaded.model, names, loaded.vocab, reference=loaded.reference)
    stat, lengths = (r.nll / r.n_targets).numpy(), np.array([len(w) for w in names])
    return {"nats per target": stat, "percentile": r.percentile.numpy(),
            "1.0's step percentile": step_percentile(loaded.reference, stat, lengths)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", help="a run folder (default: the bundled model)")
    p.add_argument("--names", help="the run's names file (default: the one it records)")
    p.add_argument("--negatives", type=int, default=3000, help="strings of each negative kind")
    p.add_argument("--quick", action="store_true", help="300 negatives of each kind, 300 positives")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    loaded = load_model(args.run)
    if loaded.reference is None:
        sys.exit(f"{args.run}: no percentile table ({loaded.no_reference})")
    positives = test_split(loaded, args.names)
    n = 300 if args.quick else args.negatives
    positives = positives[:n] if args.quick else positives
    rng = np.random.default_rng(0)
    pos = statistics(loaded, positives)
    lines = [f"Positives: {len(positives):,} held-out names; {n:,} negatives of each kind; "
             f"{cpu_name()}, torch {torch.__version__}.", "",
             "| negatives | " + " | ".join(f"AUC, {c}" for c in pos) + " | at or above the 99th | "
             "distinct percentiles / distinct nats there (1.0's) |",
             "|---|" + "---:|" * (len(pos) + 2)]
    for kind, make in NEGATIVES.items():
        neg = statistics(loaded, make(rng, n))
        top = neg["percentile"] >= 99
        distinct = (len(set(neg["percentile"][top].tolist())), len(set(neg["nats per target"][top].tolist())),
                    len(set(neg["1.0's step percentile"][neg["1.0's step percentile"] >= 99].tolist())))
        lines.append(f"| {kind} | " + " | ".join(f"{auc(pos[c], neg[c]):.4f}" for c in pos)
                     + f" | {top.mean():.1%} | {distinct[0]:,} / {distinct[1]:,} ({distinct[2]:,}) |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
