"""The loss of an ensemble: runs' next-character distributions averaged (what a distilled student is
taught), on the lecture's val split (``--test``: and test).

    python experiments/ensemble.py names.txt runs/t0 runs/t1 [--test]
"""

from __future__ import annotations

import argparse

import torch

from wavenet_conv.training.minibatches import NameBatches
from wavenet_conv.data import lecture_split
from wavenet_conv.training.distill import load_teachers, soft_targets
from wavenet_conv.training.source import read_data


def ensemble_loss(models, words, vocab) -> float:
    """Nats per target of the models' averaged distributions over ``words``."""
    batches = NameBatches(words, vocab, len(words), 0, torch.device("cpu"))
    p = soft_targets(models, batches)
    return float(-p.gather(1, batches.y[:, None]).log().mean())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="names file the runs were trained on")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--test", action="store_true", help="also the test split")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    words, vocab, data = read_data(args.data)
    models, _ = load_teachers(args.runs, vocab, data)
    _, val, test = lecture_split(words)
    print(f"{len(models)} runs: val {ensemble_loss(models, val, vocab):.4f}"
          + (f"  test {ensemble_loss(models, test, vocab):.4f}" if args.test else ""))


if __name__ == "__main__":
    main()
