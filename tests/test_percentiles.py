"""Percentiles: the reference table (length groups, order statistics, the share below), the table a run
keeps (its dev split's, at the end of training), the ``percentile`` of ``ScoreResult``, and an older
run's table made from its names file on first use (or the reason there is none)."""

import numpy as np
import pytest
import torch

from wavenet_conv import ArgumentError, Scorer, load_names, score_names
from wavenet_conv.data import lecture_split, sha256_file
from wavenet_conv.inference.percentiles import ReferenceTable, build_table, percentiles, reference_table
from wavenet_conv.inference.streaming import score_lines
from wavenet_conv.store.loaded import load_model

from helpers import random_words

# three names of 1 character, two of 2, four of 3: with groups of at least 3, lengths 1 | 2 and up
STAT = [0.9, 0.1, 0.5, 2.0, 1.0, 3.0, 6.0, 4.0, 5.0]
LENGTHS = [1, 1, 1, 2, 2, 3, 3, 3, 3]


def test_lengths_are_gathered_into_groups_of_at_least_min_group_names():
    table = build_table(STAT, LENGTHS, min_group=3)
    assert table.starts == (1, 2) and table.names == 9
    assert [v.tolist() for v in table.values] == [[0.1, 0.5, 0.9], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]
    # a last group smaller than min_group joins the one before it; a single group takes every length
    assert build_table([3.0, 1.0, 2.0, 9.0], [1, 1, 1, 2], min_group=3).starts == (1,)
    assert build_table([3.0, 1.0, 2.0, 9.0], [1, 1, 1, 2], min_group=3).values[0].tolist() == [1.0, 2.0, 3.0, 9.0]
    assert build_table(STAT, LENGTHS, min_group=100).starts == (1,)  # fewer names than a group: one group


@pytest.mark.parametrize("starts,labels", [
    ((1,), ["every length"]), ((2, 5), ["up to 4", "5 and up"]), ((2, 5, 6, 8, 12), ["up to 4", "5", "6-7", "8-11", "12 and up"])])
def test_a_tables_groups_are_said_by_their_lengths(starts, labels):
    assert ReferenceTable(starts, tuple(np.array([1.0]) for _ in starts), 10).group_labels() == labels


def test_a_percentile_is_the_share_of_the_groups_reference_names_below():
    table = build_table(STAT, LENGTHS, min_group=3)
    got = table.percentile([0.5, 0.05, 1.0, 3.5, 7.0, 0.5, 0.3], [1, 1, 1, 3, 10, 0, 2])
    # length 1: 0.5 is past one of [0.1, 0.5, 0.9] (a tie is not below), 0.05 past none, 1.0 past all;
    # lengths 2 and up: 3.5 past three of six, 7.0 (length 10: the last group) past all six, 0.3 none;
    # length 0 is in the first group
    assert got.tolist() == [100 / 3, 0.0, 100.0, 50.0, 100.0, 100 / 3, 0.0] and got.dtype == np.float64


def gamma_table(n=20000, seed=0):
    """A one-group table of ``n`` gamma draws (a skewed statistic like nats per target), and the draws."""
    x = np.random.default_rng(seed).gamma(20.0, 0.1, n)
    return build_table(x, np.full(n, 5)), x


def test_past_its_95th_a_groups_percentile_is_its_fitted_tail_rising_past_the_largest_value():
    table, _ = gamma_table()
    ref, tail = table.values[0], table.tails[0]
    assert tail.threshold == ref[len(ref) - 101] and tail.mass == 100 / 2000 and 0.2 <= tail.shape <= 0.9
    below = np.linspace(ref[0] - 1, tail.threshold, 500)  # up to the threshold: the share below, as ever
    assert table.percentile(below, np.full(500, 5)).tolist() == (100.0 * np.searchsorted(ref, below) / 2000).tolist()
    above = tail.threshold + np.geomspace(1e-9, 1e3, 400) * tail.scale  # far past the largest value too
    assert above.max() > ref[-1] + 100
    p = table.percentile(above, np.full(400, 5))
    assert np.all(np.diff(p) > 0) and p.max() < 100.0 and p[0] == pytest.approx(95.0, abs=1e-6)


def test_the_tail_keeps_the_share_at_or_above_the_99th_of_the_statistics_own_draws():
    table, _ = gamma_table()
    fresh = np.random.default_rng(1).gamma(20.0, 0.1, 200000)
    p = table.percentile(fresh, np.full(len(fresh), 5))
    assert 0.094 <= (p >= 90).mean() <= 0.106 and 0.045 <= (p >= 95).mean() <= 0.055
    assert 0.007 <= (p >= 99).mean() <= 0.013


@pytest.mark.parametrize("values", [[1.0] * 40, [1.0] * 30 + [2.0] * 10, list(range(19))])
def test_a_tail_of_ties_or_a_small_group_never_gives_nan_or_more_than_100(values):
    table = build_table(values, [3] * len(values), min_group=1)
    p = table.percentile([0.0, 1.0, 1.5, 2.0, 3.0, 1e6], [3] * 6)
    assert np.isfinite(p).all() and (0 <= p).all() and (p <= 100).all()
    assert (table.tails[0] is None) == (len(values) < 20)


def test_a_large_group_keeps_evenly_spaced_order_statistics():
    table = build_table([5.0, 1.0, 4.0, 2.0, 3.0], [4] * 5, min_group=1, max_values=3)
    assert table.values[0].tolist() == [1.0, 3.0, 5.0] and table.names == 5


def test_a_table_survives_its_dict_and_a_bad_dict_is_refused():
    table = build_table(STAT, LENGTHS, min_group=3)
    again = ReferenceTable.from_dict(table.to_dict())
    assert again.starts == table.starts and again.names == 9
    assert all(np.array_equal(a, b) for a, b in zip(again.values, table.values))
    for bad in ({"starts": [2, 1], "values": [[1.0], [2.0]], "names": 2},  # starts not ascending
                {"starts": [1], "values": [[2.0, 1.0]], "names": 2},  # values not sorted
                {"starts": [1, 2], "values": [[1.0]], "names": 1},  # a group without values
                {"starts": [], "values": [], "names": 0},
                {"starts": [1], "values": [[float("nan"), 1.0]], "names": 2},  # not finite (np.diff: no order)
                {"starts": [1], "values": [[1.0, float("inf")]], "names": 2},
                {"starts": [1], "values": [[[1.0], [2.0]]], "names": 2}):  # not a list of numbers
        with pytest.raises(ValueError, match="ascending group starts"):
            ReferenceTable.from_dict(bad)


@pytest.mark.parametrize("stat,lengths,problem", [([], [], "non-empty"), ([1.0, 2.0], [1], "non-empty"),
                                                  ([1.0, float("nan")], [1, 2], "not finite")])
def test_build_table_refuses_what_is_no_reference(stat, lengths, problem):
    with pytest.raises(ArgumentError, match=f"build_table: stat .*{problem}"):
        build_table(stat, lengths)


def test_no_table_gives_no_percentiles():
    assert percentiles(None, torch.tensor([1.0]), torch.tensor([2])) is None


# ----------------------------------------------------------------------------- a run's table


def test_a_trained_run_keeps_the_table_of_its_dev_split(trained_run, small_names):
    loaded = load_model(trained_run[0])
    table, dev = loaded.reference, lecture_split(load_names(small_names))[1]
    assert isinstance(table, ReferenceTable) and loaded.no_reference is None
    assert table.names == len(dev) == 100  # the dev split's names, not the 800 it trained on
    again = reference_table(Scorer.of(loaded.model, loaded.vocab), dev)  # the same model, one thread: the same numbers
    assert again.starts == table.starts and all(np.array_equal(a, b) for a, b in zip(again.values, table.values))


def test_score_results_carry_the_tables_percentiles(trained_run, bundled_words):
    loaded = load_model(trained_run[0])
    names = bundled_words[::97] + random_words(50, seed=25, max_len=20) + ["emma", "xqzzyv", "qqqqqq"]
    r = score_names(loaded.model, names, loaded.vocab, reference=loaded.reference)
    want = loaded.reference.percentile((r.nll / r.n_targets).numpy(), [len(w) for w in names])
    assert r.percentile.dtype == torch.float64 and r.percentile.tolist() == want.tolist()
    assert 0 <= r.percentile.min() and r.percentile.max() <= 100 and len(set(want.tolist())) > 20
    parts = list(score_lines(loaded.model, names, loaded.vocab, chunk=64, reference=loaded.reference))
    assert torch.cat([p.scores.percentile for p in parts]).tolist() == want.tolist()
    assert score_names(loaded.model, names, loaded.vocab).percentile is None


@pytest.mark.parametrize("call", [score_names, score_lines])
def test_a_reference_that_is_no_table_is_refused(trained_run, call):
    loaded = load_model(trained_run[0])
    with pytest.raises(ArgumentError, match=f"{call.__name__}: reference must be a ReferenceTable"):
        list(call(loaded.model, ["emma"], loaded.vocab, reference=loaded.reference.to_dict()))


# ----------------------------------------------------------------------------- an older run


def saved_reference(run):
    return torch.load(run / "checkpoint.pt", weights_only=True).get("reference")


def test_an_older_runs_table_is_made_from_its_names_file_and_its_file_is_not_rewritten(older_run, trained_run):
    """The table its run would have saved, every time it is loaded; the checkpoint keeps its bytes (a
    student distilled from the run checks its sha256 on resume)."""
    run, _ = older_run
    before = sha256_file(run / "checkpoint.pt")
    loaded = load_model(run)
    assert loaded.no_reference is None and loaded.reference.to_dict() == load_model(trained_run[0]).reference.to_dict()
    assert saved_reference(run) is None and sha256_file(run / "checkpoint.pt") == before


@pytest.mark.parametrize("change", ["missing", "changed"])
def test_an_older_run_whose_names_file_is_gone_or_changed_has_no_table_and_says_why(older_run, change):
    run, data = older_run
    if change == "missing":
        data.rename(data.with_suffix(".moved"))
        why = f"its names file {data} is missing"
    else:
        data.write_bytes(data.read_bytes() + b"zed\n")
        why = f"its names file {data} has changed (sha256 "
    loaded = load_model(run)
    assert loaded.reference is None and loaded.no_reference.startswith(why) and saved_reference(run) is None
    r = score_names(loaded.model, ["emma"], loaded.vocab, reference=loaded.reference)
    assert r.percentile is None and r.nll.shape == (1,)


def test_a_model_saved_without_its_run_has_no_table(lecture_size_run):
    loaded = load_model(lecture_size_run)
    assert loaded.reference is None and "records no names file" in loaded.no_reference


# ----------------------------------------------------------------------------- the table format


def test_the_table_shows_a_percentile_rounded_down_so_it_agrees_with_min_percentile():
    from wavenet_conv.cli.output import format_rows, percent
    from wavenet_conv.inference.scoring import ScoreResult
    from wavenet_conv.inference.streaming import LineScores

    # 978 of 988 reference names below: 98.988, which --min-percentile 99 drops: it must not read 99.0
    assert percent(100 * 978 / 988) == "98.9" and percent(100 * 1999 / 2000) == "99.950"
    assert [percent(p) for p in (99.0, 99.5343, 99.97711, 99.999401, 99.99999999)] == \
        ["99.00", "99.53", "99.977", "99.99940", "99.999999"]
    assert percent(100.0) == "100.0" and percent(0.0) == "0.0" and percent(None) == "" and percent(float("nan")) == "nan"
    for n in (3, 7, 359, 988, 2000):  # every share a table can give: the shown tenth is at or above P iff it is
        for k in range(n + 1):
            p = float(100.0 * np.int64(k) / n)
            digits = len(percent(p).split(".")[1])
            assert float(percent(p)) == (100 * 10 ** digits * k // n) / 10 ** digits, (k, n)
    r = ScoreResult.from_nll(torch.tensor([9.0, 20.0], dtype=torch.float64), torch.tensor([5, 7]))
    r.percentile = torch.tensor([100 * 978 / 988, 100.0], dtype=torch.float64)
    rows = format_rows("table", LineScores([1, 2], ["emma", "ralphs"], r, [], 0), False, 12).splitlines()
    assert [row.split()[-1] for row in rows] == ["98.9", "100.0"]


def test_a_names_group_is_keyed_by_its_characters_not_its_targets():
    """A name of n characters has n + 1 targets; its group is that of n characters, in the table made
    from a run's names (``reference_table``) and in the percentile of a scored name (``percentiles``)."""
    table = build_table([0.0] * 3 + [10.0] * 3, [3, 3, 3, 4, 4, 4], min_group=3)  # groups: 3 | 4 characters
    assert table.starts == (3, 4)
    nll, n_targets = torch.tensor([4 * 5.0, 5 * 5.0]), torch.tensor([4, 5])  # 3 and 4 characters, 5 nats/target
    assert percentiles(table, nll, n_targets).tolist() == [100.0, 0.0]

    class Fixed:  # a scorer whose names score 1 nat per target: the table's groups are their lengths
        def names(self, names):
            n = torch.tensor([len(w) + 1 for w in names])
            return type("R", (), {"nll": n.double(), "n_targets": n})()

    made = reference_table(Fixed(), ["ab"] * 200 + ["abcde"] * 200)
    assert made.starts == (2, 5) and made.names == 400
