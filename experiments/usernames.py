"""Generated usernames: strings that are not names, for measuring training on your own strings.

    python experiments/usernames.py -n 2000 --seed 0 > users.txt

Each is built the way people pick usernames, from the bundled first names, a list of surnames and of
words, with digits, years and underscores (``emma1994``, ``jsmith``, ``dark_wolf7``, ``kevin_rivera``,
``coolcat``; no ``.``, which ends a name). Distinct, lowercase, in the order drawn; the same ``seed``
gives the same list.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from wavenet_conv.data import load_names  # noqa: E402
from wavenet_conv.paths import bundled_names  # noqa: E402

SURNAMES = ("smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez gonzalez "
            "wilson anderson thomas taylor moore jackson martin lee perez thompson white harris sanchez clark "
            "ramirez lewis robinson walker young allen king wright scott torres nguyen hill flores green adams "
            "nelson baker hall rivera campbell mitchell carter roberts kim patel singh chen wang schmidt muller "
            "novak kowalski ivanov rossi silva costa santos murphy kelly cohen shah ali khan yilmaz").split()
WORDS = ("dark cool happy lucky silent crazy blue red little big super mega ultra shadow night fire ice storm "
         "wolf cat dog fox tiger dragon ninja gamer pixel coder rider hunter master king queen star moon sun "
         "sky rock metal jazz music art photo travel chef runner dev tech byte cloud river ocean forest").split()


def username(rng: random.Random, names: list[str]) -> str:
    first, last, word = rng.choice(names), rng.choice(SURNAMES), rng.choice(WORDS)
    digits = str(rng.choice([rng.randrange(10), rng.randrange(100), rng.randrange(1960, 2015)]))
    pattern = rng.randrange(8)
    if pattern == 0:
        return first + digits
    if pattern == 1:
        return first[0] + last + (digits if rng.random() < 0.4 else "")
    if pattern == 2:
        return first + "_" + last
    if pattern == 3:
        return word + rng.choice(WORDS) + (digits if rng.random() < 0.5 else "")
    if pattern == 4:
        return word + "_" + first
    if pattern == 5:
        return first + last[: rng.randrange(1, 4)] + (digits if rng.random() < 0.3 else "")
    if pattern == 6:
        return "the" + word + first
    return last + first[0] + digits


def usernames(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct generated usernames (``seed`` picks which)."""
    rng, names = random.Random(seed), load_names(bundled_names())
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen.setdefault(username(rng, names), None)
    return list(seen)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=2000, help="how many")
    ap.add_argument("--seed", type=int, default=0, help="which ones")
    args = ap.parse_args(argv)
    print("\n".join(usernames(args.n, args.seed)))


if __name__ == "__main__":
    main()
