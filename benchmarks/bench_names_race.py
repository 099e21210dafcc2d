"""Smoke test of benchmarks/names_race.py (the bundled model against the count models on held-out real
names and junk): ``--quick``, with ``--benchmark-disable`` (CI); skipped in a timing run.

    python -m pytest benchmarks/bench_names_race.py --benchmark-disable
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

CONTENDERS = ["model (percentile)", "model (nats per target)", "Kneser-Ney order 5", "gibberish-detector"]


def test_names_race_quick(request, capsys):
    if not request.config.getoption("benchmark_disable"):
        pytest.skip("smoke test of benchmarks/names_race.py: run with --benchmark-disable")
    for extra in ("faker", "gender_guesser", "nltk", "gibberish_detector"):
        pytest.importorskip(extra, reason="the race's extra: pip install -e '.[race]'")
    import names_race

    names_race.main(["--quick"])
    tables = capsys.readouterr().out.split("\n\n")
    aucs = [row.strip("| ").split(" | ") for row in tables[1].splitlines()[2:]]
    assert [row[0].split(" (discount")[0] for row in aucs] == CONTENDERS
    assert all(0.5 < float(cell) <= 1 for row in aucs for cell in row[1:5])  # better than chance on every kind
    flagged = [row.strip("| ").split(" | ") for row in tables[2].splitlines()[2:]]
    assert len(flagged) == 2 * (len(CONTENDERS) - 1) and all(cell.endswith("%") for row in flagged for cell in row[2:])
    calibration = tables[3].splitlines()
    assert calibration[2].startswith("| every held-out source |") and any("test split, ssa, LATIN" in r for r in calibration)
    designs = [row.strip("| ").split(" | ") for row in tables[4].splitlines()[2:]]
    assert [row[0] for row in designs] == ["by length group, nats per target (shipped)", "one table, nats per target",
                                           "one table, nats less log 26 a letter"]
    assert all(0.5 < float(cell) <= 1 for row in designs for cell in row[1:5])


def test_the_remembered_kneser_ney_gives_nltks_numbers(request):
    """KneserNey remembers every order's probabilities: the same nats as NLTK's model without it."""
    if not request.config.getoption("benchmark_disable"):
        pytest.skip("a check of benchmarks/names_race.py: run with --benchmark-disable")
    pytest.importorskip("nltk", reason="the race's extra: pip install -e '.[race]'")
    import math

    from nltk.lm import KneserNeyInterpolated
    from nltk.lm.preprocessing import padded_everygram_pipeline

    import names_race

    words = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "amelia", "harper", "evelyn", "abigail"] * 3
    ours = names_race.KneserNey(words, discount=0.75)
    plain = KneserNeyInterpolated(5, discount=0.75)
    plain.fit(*padded_everygram_pipeline(5, [list(w) for w in words]))
    for word in ["emma", "amelie", "xqzzyv", "ωμεγα"]:
        seq = ["<s>"] * 4 + list(word) + ["</s>"]
        nats = -sum(math.log(max(plain.score(seq[i], seq[i - 4:i]), 1e-6)) for i in range(4, len(seq))) / (len(word) + 1)
        assert ours(word) == nats and ours(word) == nats  # the second call: from what it remembered
