"""How many dev names does a percentile table need? Choose ``train``'s small-data note by measurement.

    python experiments/small_reference.py --out experiments/results/small_reference.md

A run's percentile table is made from its dev split (10% of its names file). Here the bundled model's
table is made again from n dev names drawn at random (``--seeds`` draws for each n), and each table
is held against the test split (names in neither the training nor any table): the share of test names
at or above the 90th and the 99th percentile, which a calibrated table puts at 10% and 1%. Reported:
the mean over the draws and the range that holds 90% of them (5th to 95th of the draws). The note
threshold is the smallest n whose 90% range of the share at or above the 90th stays within 10 +- 3
points (a user flagging the top decile gets between 7% and 13% of ordinary names).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from wavenet_conv import load_model  # noqa: E402
from wavenet_conv.data import lecture_split, load_names  # noqa: E402
from wavenet_conv.inference.percentiles import build_table  # noqa: E402
from wavenet_conv.paths import bundled_names  # noqa: E402

SIZES = (10, 25, 50, 100, 200, 400, 800, 1600, 3247)
BAND = 3.0  # points either side of 10% at the 90th


def shares(table, stat: np.ndarray, lengths: np.ndarray) -> tuple[float, float]:
    p = table.percentile(stat, lengths)
    return 100 * float((p >= 90).mean()), 100 * float((p >= 99).mean())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=40, help="draws of the dev names for each size")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="dev names per table (comma-separated)")
    ap.add_argument("--out", help="write the table here too (Markdown)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    run = load_model()
    _, dev, test = lecture_split(load_names(bundled_names()))
    scorer = run.scorer()
    d, t = scorer.names(dev), scorer.names(test)
    dev_stat, dev_len = (d.nll / d.n_targets).numpy(), (d.n_targets - 1).numpy()
    test_stat, test_len = (t.nll / t.n_targets).numpy(), (t.n_targets - 1).numpy()
    rng = np.random.default_rng(0)
    rows, chosen = [], None
    for n in (int(v) for v in args.sizes.split(",")):
        draws = np.array([shares(build_table(dev_stat[i], dev_len[i]), test_stat, test_len)
                          for i in (rng.choice(len(dev), n, replace=False) for _ in range(args.seeds if n < len(dev) else 1))])
        lo90, hi90 = np.percentile(draws[:, 0], [5, 95])
        lo99, hi99 = np.percentile(draws[:, 1], [5, 95])
        groups = len(build_table(dev_stat[:n], dev_len[:n]).starts)
        rows.append(f"| {n:,} | {groups} | {draws[:, 0].mean():.1f}% | {lo90:.1f}–{hi90:.1f}% | "
                    f"{draws[:, 1].mean():.1f}% | {lo99:.1f}–{hi99:.1f}% |")
        if chosen is None and 10 - BAND <= lo90 and hi90 <= 10 + BAND:
            chosen = n
    lines = [f"The bundled model; tables from n of its {len(dev):,} dev names, {args.seeds} random draws each; "
             f"held against its {len(test):,} test names.", "",
             "| dev names | length groups | test at or above the 90th: mean | 90% of draws | at or above the 99th: mean "
             "| 90% of draws |", "|---:|---:|---:|---:|---:|---:|", *rows, "",
             f"Smallest n with 90% of draws within 10 ± {BAND:g} points at the 90th: **{chosen}**."]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("# Percentiles from few dev names\n\n`python experiments/small_reference.py` (one thread).\n\n"
                    + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
