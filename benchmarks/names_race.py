"""Names from anywhere: the bundled model against the count models people already use, on real first
names that none of them trained on, and on strings nobody calls a name.

    pip install -e ".[race]"                  # faker, gender-guesser, nltk, gibberish-detector
    python benchmarks/names_race.py            # the bundled model: markdown tables on stdout
    python benchmarks/names_race.py --run RUN --quick

Positives, spelled as their sources spell them, none of them a name of data/world.tsv once
normalized as the model normalizes: the faker locales that data/build_world.py keeps out of training
(``HELD_OUT``), and the first-name dictionary shipped by gender-guesser (Joerg Michael's nam_dict, a
source nothing here trains on; GNU FDL), the names of each of its countries' columns at a frequency of
at least ``NAM_FREQUENCY`` on its logarithmic 1-13 scale. Negatives, seeded: random letters, keyboard
walks and repeated patterns (``percentile_auc``'s), and shuffled names (a one-word positive's letters,
lowercased, in a random order, when that is no name of the data).

Contenders, the count models trained on the model's training split (the lecture split of
data/world.tsv, normalized as the model normalizes): the model's percentile (and its nats per target);
an order-5 interpolated Kneser-Ney character model (NLTK; its discount, 0.1 or 0.75, the one with the
lower dev loss), nats per target; gibberish-detector's bigram score. Measures: ROC AUC against each
negative kind (a tie counts half); the share of positives, and of each negative kind, at or above the
99th and 95th (the model's percentile; a count model's own quantile of its scores of the dev names that
are no training name, the names the model's table is made of); names per second on one thread.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "data"))

import build_world  # noqa: E402
from percentile_auc import NEGATIVES, auc  # noqa: E402
from wavenet_conv import load_model  # noqa: E402
from wavenet_conv.data import lecture_split  # noqa: E402
from wavenet_conv.device import cpu_name  # noqa: E402
from wavenet_conv.inference.percentiles import build_table  # noqa: E402

NAM_FREQUENCY = 3
PER_SOURCE = 200  # positives of a source, at most (a seeded sample): NLTK scores some 100 names a second
NEGATIVE_COUNT = 2000
LEVELS = (99, 95)


def world(vocab) -> tuple[dict, dict]:
    """The lecture split of data/world.tsv as the model reads it: {"train", "dev", "test"} of words
    (normalized), and the same of their sources."""
    rows = build_world.read()
    words, sources = vocab.normalized([n for n, _ in rows]), [s for _, s in rows]
    parts = ("train", "dev", "test")
    return dict(zip(parts, lecture_split(words))), dict(zip(parts, lecture_split(sources)))


def nam_dict(min_frequency: int = NAM_FREQUENCY) -> dict[str, list[str]]:
    """gender-guesser's dictionary: its names by country, those of at least ``min_frequency`` there."""
    import gender_guesser.detector as gg  # the benchmark's extra only

    path = os.path.join(os.path.dirname(gg.__file__), "data", "nam_dict.txt")
    out = {c: [] for c in gg.Detector.COUNTRIES}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line[0] in "#=" or line[29] == "+":  # a comment, or a line repeated for another sort order
                continue
            name = line.split()[1].replace("+", "-")
            for country, cell in zip(gg.Detector.COUNTRIES, line[30:-1]):
                if cell.strip() and int(cell, 16) >= min_frequency:
                    out[country].append(name)
    return {f"nam_dict:{c}": names for c, names in out.items() if names}


def positives(vocab, known: set[str]) -> dict[str, list[str]]:
    """Held-out real names by source, as written, those whose normalized form is not in ``known``."""
    faker = {f"faker:{loc}": names for loc, names in build_world.faker_lists().items() if loc in build_world.HELD_OUT}
    out = {}
    for source, names in {**faker, **nam_dict()}.items():
        names = [" ".join(n.split()) for n in names]  # one space between words, as a list's line is read
        kept = [n for n, w in zip(names, vocab.normalized(names)) if w not in known and len(w) >= 2]
        if kept:
            out[source] = list(dict.fromkeys(kept))
    return out


def shuffled_names(rng, names: list[str], known: set[str], n: int) -> list[str]:
    out = []
    for name in rng.permutation(np.array(names, dtype=object)):
        letters = list(name.lower())
        rng.shuffle(letters)
        word = "".join(letters)
        if name.isalpha() and word != name.lower() and word not in known and len(word) >= 3:
            out.append(word)
        if len(out) == n:
            break
    return out


class KneserNey:
    """NLTK's interpolated Kneser-Ney, order ``order``, over characters; nats per target (each
    character and the end), a probability floored at 1e-6 (NLTK gives 0 to a character never seen)."""

    def __init__(self, words: list[str], order: int = 5, discount: float = 0.1):
        from nltk.lm import KneserNeyInterpolated  # the benchmark's extra only
        from nltk.lm.preprocessing import padded_everygram_pipeline

        self.order, self.lm = order, KneserNeyInterpolated(order, discount=discount)
        self.lm.fit(*padded_everygram_pipeline(order, [list(w) for w in words]))
        # every order's probability remembered (its recursion calls the instance's attribute): the same
        # numbers, some 20 times sooner
        self.lm.unmasked_score = functools.lru_cache(maxsize=None)(self.lm.unmasked_score)
        self.prob = functools.lru_cache(maxsize=None)(lambda ch, ctx: self.lm.score(ch, list(ctx)))

    def __call__(self, word: str) -> float:
        seq = ["<s>"] * (self.order - 1) + list(word) + ["</s>"]
        k = self.order - 1
        return -sum(math.log(max(self.prob(seq[i], tuple(seq[i - k:i])), 1e-6)) for i in range(k, len(seq))) / (len(word) + 1)


class Gibberish:
    """gibberish-detector's model (add-10 bigrams over the training characters), trained on ``words``."""

    def __init__(self, words: list[str]):
        from gibberish_detector.detector import Detector  # the benchmark's extra only
        from gibberish_detector.model import Model

        model = Model("".join(sorted(set("".join(words)))))
        for w in words:
            model.train(w)
        self.detector = Detector(model, threshold=0.0)

    def __call__(self, word: str) -> float:
        return self.detector.calculate_probability_of_being_gibberish(word)


def kneser_ney(split: dict) -> tuple[KneserNey, float]:
    """The order-5 model of the discount with the lower dev loss, and that discount."""
    best = None
    for discount in (0.1, 0.75):
        lm = KneserNey(split["train"], discount=discount)
        dev = split["dev"][:1000]
        loss = sum(lm(w) * (len(w) + 1) for w in dev) / sum(len(w) + 1 for w in dev)
        if best is None or loss < best[0]:
            best = (loss, lm, discount)
    return best[1], best[2]


def counted(model, vocab):
    """A count model's scores of a list of words, each normalized as the model's vocabulary says."""
    return lambda words: np.array([model(w) for w in vocab.normalized(words)])


def contenders(loaded, split: dict) -> dict:
    """name -> (scores of a list of words (higher: more unusual), cut-offs at ``LEVELS``, or None for a
    percentile (its own levels))."""
    scorer = loaded.scorer()

    def percentile(words):
        return scorer.names(words).percentile.numpy()

    def nats(words):
        r = scorer.names(words)
        return (r.nll / r.n_targets).numpy()

    lm, discount = kneser_ney(split)
    out = {"model (percentile)": (percentile, None), "model (nats per target)": (nats, None),
           f"Kneser-Ney order 5 (discount {discount})": (counted(lm, loaded.vocab), None),
           "gibberish-detector": (counted(Gibberish(split["train"]), loaded.vocab), None)}
    train = set(split["train"])
    reference = [w for w in split["dev"] if w not in train]  # the names the bundled model's table is made of
    for name, (fn, _) in list(out.items())[2:]:
        dev = fn(reference)
        out[name] = (fn, {level: float(np.quantile(dev, level / 100)) for level in LEVELS})
    return out


def flagged(stat: np.ndarray, cuts, level: int) -> float:
    return float((stat >= (level if cuts is None else cuts[level])).mean())


def race(loaded, quick: bool) -> list[str]:
    torch.set_num_threads(1)
    split, sources = world(loaded.vocab)
    known = set(split["train"]) | set(split["dev"]) | set(split["test"])
    rng = np.random.default_rng(0)
    by_source = {s: sample(rng, names, 20 if quick else PER_SOURCE) for s, names in positives(loaded.vocab, known).items()}
    if quick:
        by_source = dict(list(by_source.items())[:8])
        split = {k: v[:2000] for k, v in split.items()}
    pos = list(dict.fromkeys(n for names in by_source.values() for n in names))  # a name of many sources once
    n = 100 if quick else NEGATIVE_COUNT
    lists = {"positives": pos, **{kind: make(rng, n) for kind, make in NEGATIVES.items()},
             "shuffled names": shuffled_names(rng, pos, known, n)}
    rivals = contenders(loaded, split)
    scores = {name: scored(fn, lists) for name, (fn, _) in rivals.items()}
    return (header(loaded, by_source, lists) + auc_table(scores) + flagged_table(rivals, scores)
            + calibration(rivals["model (percentile)"][0], pos, by_source, split, sources) + [""]
            + designs(loaded.scorer(), split, lists))


def sample(rng, names: list[str], n: int) -> list[str]:
    """At most ``n`` of ``names``, a seeded sample in their order."""
    return names if len(names) <= n else [names[i] for i in sorted(rng.choice(len(names), n, replace=False))]


def scored(fn, lists: dict) -> dict:
    """Each list's scores, and the positives' names per second."""
    t = time.perf_counter()
    out = {"positives": fn(lists["positives"])}
    out["names/s"] = len(lists["positives"]) / (time.perf_counter() - t)
    return {**out, **{k: fn(v) for k, v in lists.items() if k != "positives"}}


def header(loaded, by_source: dict, lists: dict) -> list[str]:
    negatives = {k: v for k, v in lists.items() if k != "positives"}
    return [f"Model: {loaded.path}. Positives: {len(lists['positives']):,} distinct real names of {len(by_source)} held-out "
            f"sources (at most {PER_SOURCE} each), none in the model's data; negatives: "
            f"{', '.join(f'{len(v):,} {k}' for k, v in negatives.items())}. {cpu_name()}, torch {torch.__version__}, "
            "one thread.", ""]


def auc_table(scores: dict) -> list[str]:
    kinds = [k for k in next(iter(scores.values())) if k not in ("positives", "names/s")]
    lines = ["| contender | " + " | ".join(f"AUC, {k}" for k in kinds) + " | names/s |", "|---|" + "---:|" * (len(kinds) + 1)]
    for name, s in scores.items():
        lines.append(f"| {name} | " + " | ".join(f"{auc(s['positives'], s[k]):.4f}" for k in kinds)
                     + f" | {s['names/s']:,.0f} |")
    return lines + [""]


def flagged_table(rivals: dict, scores: dict) -> list[str]:
    kinds = [k for k in next(iter(scores.values())) if k != "names/s"]
    lines = ["| contender | level | real names flagged | " + " | ".join(f"{k} caught" for k in kinds[1:]) + " |",
             "|---|---:|---:|" + "---:|" * (len(kinds) - 1)]
    for name, s in scores.items():
        if name == "model (nats per target)":
            continue
        for level in LEVELS:
            lines.append(f"| {name} | {level}th | "
                         + " | ".join(f"{flagged(s[k], rivals[name][1], level):.1%}" for k in kinds) + " |")
    return lines + [""]


def calibration(fn, pos: list[str], by_source: dict, split: dict, sources: dict) -> list[str]:
    """The model's share at or above the 99th and 95th: by held-out source, and among the test split's
    names that are no training name, by source (the SSA, faker) and script."""
    groups, train = {"every held-out source": pos, **by_source}, set(split["train"])
    for word, source in zip(split["test"], sources["test"]):
        if word not in train:  # as the reference table's names: none learned by heart
            kind = "ssa" if source == "ssa" else "faker"
            groups.setdefault(f"test split, {kind}, {build_world.script_of(word)}", []).append(word)
    lines = ["| names | n | at or above the 99th | at or above the 95th |", "|---|---:|---:|---:|"]
    for source, words in groups.items():
        p = fn(words)
        lines.append(f"| {source} | {len(words):,} | {(p >= 99).mean():.1%} | {(p >= 95).mean():.1%} |")
    return lines


def designs(scorer, split: dict, lists: dict) -> list[str]:
    """The percentile's design, measured: each a table of the dev names that are no training name (the
    shipped one by length group), and of a statistic: nats per target, or nats less ``log 26`` a letter
    (the likelihood ratio against uniform random letters, one table for every length)."""
    train = set(split["train"])
    results = {k: scorer.names(v) for k, v in {"reference": [w for w in split["dev"] if w not in train], **lists}.items()}
    per_target = {k: ((r.nll / r.n_targets).numpy(), (r.n_targets - 1).numpy()) for k, r in results.items()}
    ratio = {k: ((r.nll - math.log(26) * (r.n_targets - 1)).numpy(), np.zeros(len(r.nll), dtype=np.int64))
             for k, r in results.items()}
    one_group = {k: (stat, np.zeros_like(lengths)) for k, (stat, lengths) in per_target.items()}
    kinds = [k for k in lists if k != "positives"]
    lines = ["| percentile design | " + " | ".join(f"AUC, {k}" for k in kinds) + " | real names at or above the 99th, 95th | "
             + " | ".join(f"{k} at or above the 99th" for k in kinds[:3]) + " | real names of 2-3 letters at or above the 95th |",
             "|---|" + "---:|" * (2 * len(kinds) + 1)]
    short = (results["positives"].n_targets - 1).numpy() <= 3
    for name, stats in (("by length group, nats per target (shipped)", per_target),
                        ("one table, nats per target", one_group), ("one table, nats less log 26 a letter", ratio)):
        table = build_table(*stats["reference"])
        p = {k: table.percentile(*stats[k]) for k in lists}
        lines.append(f"| {name} | " + " | ".join(f"{auc(p['positives'], p[k]):.4f}" for k in kinds)
                     + f" | {(p['positives'] >= 99).mean():.1%}, {(p['positives'] >= 95).mean():.1%} | "
                     + " | ".join(f"{(p[k] >= 99).mean():.1%}" for k in kinds[:3]) + f" | {(p['positives'][short] >= 95).mean():.1%} |")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", help="a run folder trained on data/world.tsv (default: the bundled model)")
    p.add_argument("--quick", action="store_true", help="a few names of 8 sources, 100 negatives of each kind")
    args = p.parse_args(argv)
    loaded = load_model(args.run)
    if loaded.reference is None:
        sys.exit(f"{args.run}: no percentile table ({loaded.no_reference})")
    print("\n".join(race(loaded, args.quick)))


if __name__ == "__main__":
    main()
