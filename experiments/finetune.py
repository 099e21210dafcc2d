"""Does fine-tuning the bundled model beat training from scratch on a small file of one country's names?

    pip install -e ".[race]" && python experiments/finetune.py --out experiments/results/finetune.md

The names: Turkish and Polish first names that the bundled model never saw, as their owners spell them
(ş, ğ, ı, ł, ż, ...): faker's (tr_TR, pl_PL; MIT licence) and those of gender-guesser's dictionary
(its Turkey and Poland columns, any frequency; GNU FDL), less every name of data/world.tsv (which holds
a sample of both faker lists), distinct once normalized, shuffled: 350 held out from every run, 1,300
of the others in the names file. Each contender trains on the file with the default recipe (16 epochs, the
best val report kept; ``--init`` runs the ``finetune`` recipe) and is scored on the held-out names: nats
per target, every name scored (the unknown-character token takes what a run never saw). The first run
from scratch folds case and accents as the bundled model does, so that it predicts the same targets as
the fine-tuned ones (the second keeps the text as is: more symbols to tell apart); ``--init bundled``
starts from the bundled model's weights, BatchNorm statistics and normalization, its vocabulary extended
with the file's new characters. Each row is the mean over ``--seeds`` training seeds.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

sys.path.insert(0, os.path.join(ROOT, "data"))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import build_world  # noqa: E402
from names_race import nam_dict  # noqa: E402
from wavenet_conv import recipe, score_names, train  # noqa: E402
from wavenet_conv.data import normalize  # noqa: E402

FILE_NAMES = 1300
HELD_OUT = 350
CONTENDERS = {  # label: (train's init, its recipe, overrides)
    "from scratch (the default recipe), folding case and accents": (None, "default", dict(normalize="both")),
    "from scratch (the default recipe), the text as is": (None, "default", {}),
    "--init bundled (the finetune recipe: 8 epochs, lr 3e-3)": ("bundled", "finetune", {}),
    "--init bundled, the default recipe (16 epochs, lr 1e-2)": ("bundled", "default", {}),
}
# the finetune recipe's search (--grid): its settings changed one or two at a time
GRID = (
    (("lr", 1e-3),), (("lr", 1e-3), ("epochs", 16.0)), (("lr", 1e-2),), (("epochs", 4.0),), (("epochs", 16.0),),
    (("weight_decay", 0.0),), (("warmup", 0),), (("batch_size", 32), ("lr", 1e-3)), (("batch_size", 64), ("lr", 2e-3)),
    (("swa", 0.5), ("keep_best", False)),
)


def names() -> list[str]:
    """Turkish and Polish first names, none of data/world.tsv's, each once as normalized, shuffled."""
    from faker.providers.person.pl_PL import Provider as Polish
    from faker.providers.person.tr_TR import Provider as Turkish

    dictionary = nam_dict(min_frequency=1)
    found = sorted({n for p in (Turkish, Polish) for n in (*p.first_names_male, *p.first_names_female)}
                   | {n for c in ("nam_dict:turkey", "nam_dict:poland") for n in dictionary[c] if " " not in n})
    random.Random(0).shuffle(found)
    seen = {normalize(n, "both") for n, _ in build_world.read()}
    out = []
    for n in found:
        if normalize(n, "both") not in seen:
            seen.add(normalize(n, "both"))
            out.append(n)
    return out


def split(everything: list[str]) -> tuple[list[str], list[str]]:
    """(the names file's names, the held-out names)."""
    return everything[HELD_OUT:HELD_OUT + FILE_NAMES], everything[:HELD_OUT]


def held_out_loss(result, held: list[str]) -> float:
    """Nats per target over the held-out names, as the run reads them (its normalization)."""
    model = result.model.eval()
    return score_names(model, result.vocab.normalized(held), result.vocab).mean_loss


def row(label: str, contender: tuple, path: str, held: list[str], seeds: int) -> str:
    """One table row: a contender trained on the file at ``seeds`` seeds, scored on ``held``."""
    init, name, overrides = contender
    runs = []
    for seed in range(seeds):
        r = train(config=recipe(name, seed=seed, checkpoint_every=0, **overrides), data=path, init=init,
                  log=None, progress=False)
        runs.append((held_out_loss(r, held), r.metrics["val_loss"], r.metrics["train_seconds"], r.metrics["steps"]))
        print(label, seed, runs[-1], flush=True)
    mean = [sum(x[i] for x in runs) / len(runs) for i in range(4)]
    return (f"| {label} | {mean[3]:,.0f} | {mean[0]:.4f} ({min(x[0] for x in runs):.4f}-{max(x[0] for x in runs):.4f}) "
            f"| {mean[1]:.4f} | {mean[2]:.1f} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="training seeds for each contender")
    ap.add_argument("--grid", action="store_true", help="also fine-tune with each setting of GRID (the search)")
    ap.add_argument("--out", help="write the table here too (Markdown)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    file_names, held = split(names())
    contenders = {**CONTENDERS, **({"--init bundled, the finetune recipe with " + ", ".join(f"{k} {v}" for k, v in g):
                                    ("bundled", "finetune", dict(g)) for g in GRID} if args.grid else {})}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "names.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(file_names) + "\n")
        rows = [row(label, c, path, held, args.seeds) for label, c in contenders.items()]
    table = (f"{len(file_names):,} Turkish and Polish first names to train on, {len(held):,} held out; "
             f"{args.seeds} seeds a row, one CPU thread\n\n"
             "| run | steps | held-out nats per target (range) | dev | training seconds |\n|---|---:|---:|---:|---:|\n"
             + "\n".join(rows) + "\n")
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
