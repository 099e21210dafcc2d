"""Does fine-tuning the bundled model beat training from scratch on a small file of one country's names?

    pip install faker && python experiments/finetune.py --out experiments/results/finetune.md

The names: faker's Turkish and Polish first names (tr_TR, pl_PL; MIT licence), as their owners spell
them (ş, ğ, ı, ł, ż, ...), distinct, shuffled. The bundled model learned names of both locales from
data/world.tsv, so the 350 held out from every run are names that file does not hold (once
normalized); the names file holds 1,300 of the others. Each contender trains on the file with the default recipe (16 epochs, the
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

import build_world  # noqa: E402
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


def names() -> list[str]:
    from faker.providers.person.pl_PL import Provider as Polish
    from faker.providers.person.tr_TR import Provider as Turkish

    found = sorted({n for p in (Turkish, Polish) for n in (*p.first_names_male, *p.first_names_female)})
    random.Random(0).shuffle(found)
    return found


def split(everything: list[str]) -> tuple[list[str], list[str]]:
    """(the names file's names, the held-out names): those held out are none of data/world.tsv's."""
    known = {normalize(n, "both") for n, _ in build_world.read()}
    held = [n for n in everything if normalize(n, "both") not in known][:HELD_OUT]
    out = {normalize(n, "both") for n in held}  # nor a name of the file that reads as one of them
    return [n for n in everything if normalize(n, "both") not in out][:FILE_NAMES], held


def held_out_loss(result, held: list[str]) -> float:
    """Nats per target over the held-out names, as the run reads them (its normalization)."""
    model = result.model.eval()
    return score_names(model, result.vocab.normalized(held), result.vocab).mean_loss


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="training seeds for each contender")
    ap.add_argument("--out", help="write the table here too (Markdown)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    everything = names()
    file_names, held = split(everything)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "names.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(file_names) + "\n")
        for label, (init, name, overrides) in CONTENDERS.items():
            runs = []
            for seed in range(args.seeds):
                r = train(config=recipe(name, seed=seed, checkpoint_every=0, **overrides), data=path, init=init,
                          log=None, progress=False)
                runs.append((held_out_loss(r, held), r.metrics["val_loss"], r.metrics["train_seconds"], r.metrics["steps"]))
                print(label, seed, runs[-1], flush=True)
            mean = [sum(x[i] for x in runs) / len(runs) for i in range(4)]
            rows.append(f"| {label} | {mean[3]:,.0f} | {mean[0]:.4f} ({min(x[0] for x in runs):.4f}-"
                        f"{max(x[0] for x in runs):.4f}) | {mean[1]:.4f} | {mean[2]:.1f} |")
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
