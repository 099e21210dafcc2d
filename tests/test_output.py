"""output.py: the rows of ``wavenet-conv score`` in each format (nats, targets, nats per target; bits
in the table's per-character column), the closing count, and the sample lines' tags."""

import json
import math

import pytest

from helpers import VOCAB
from wavenet_conv import ConvModel, ModelConfig, score_names
from wavenet_conv.cli.output import closing_count, format_rows, header, sample_lines
from wavenet_conv.cluster.counts import Counts
from wavenet_conv.inference.streaming import LineScores


@pytest.fixture(scope="module")
def part():
    model = ConvModel(ModelConfig(n_embd=4, n_hidden=8, n_layers=2)).eval()
    names = ["emma", "bo"]
    return LineScores([3, 7], names, score_names(model, names, VOCAB, per_char=True, threads=1), [], 0)


def test_tsv_and_jsonl_rows_are_nats_targets_and_their_ratio(part):
    r = part.scores
    tsv = [row.split("\t") for row in format_rows("tsv", part, True, 8).splitlines()]
    rows = [json.loads(row) for row in format_rows("jsonl", part, True, 8).splitlines()]
    for i, (t, j) in enumerate(zip(tsv, rows)):
        nats, n = r.nll[i].item(), int(r.n_targets[i])
        assert t[:2] == [str(part.lines[i]), part.names[i]] and int(t[3]) == n == j["targets"] == len(part.names[i]) + 1
        assert float(t[2]) == pytest.approx(nats, abs=1e-6) and j["nats"] == pytest.approx(nats, abs=1e-6)
        assert float(t[4]) == pytest.approx(nats / n, abs=1e-6) and j["nats_per_target"] == pytest.approx(nats / n, abs=1e-6)
        chars = r.chars(i).tolist()
        assert [float(v) for v in t[5].split(",")] == pytest.approx(chars, abs=1e-4) == j["char_nats"]


def test_the_tables_characters_are_in_bits_each_under_its_character(part):
    r = part.scores
    for i, row in enumerate(format_rows("table", part, True, 8).splitlines()):
        labels = row.rsplit("   ", 1)[1].split("  ")
        want = [f"{ch} {v / math.log(2):.2f}" for ch, v in zip(part.names[i] + ".", r.chars(i).tolist())]
        assert labels == want and f"{r.nll[i].item() / int(r.n_targets[i]):11.4f}" in row


def test_the_closing_count_gives_nats_and_bits_per_target():
    line = closing_count("list.txt", Counts(names=2, targets=8, nats=8 * 2.0, empty=1, invalid=3))
    assert line == (f"list.txt: 2 names scored (8 targets, end tokens included: 2.0000 nats, {2 / math.log(2):.4f} "
                    "bits per target); 4 lines skipped (1 empty, 3 not names)")


def test_sample_lines_tag_each_sample():
    assert sample_lines(["ann", "bob", "cy"], [True, False, None], 64) == "ann  (in training set)\nbob  (new)\ncy\n"
    assert sample_lines(["abcd"], [False], 4) == "abcd…  (cut at max length 4)\n"


@pytest.mark.parametrize("fmt,columns", [("tsv", ["line", "name", "nats", "targets", "nats_per_target"]),
                                         ("table", ["line", "name", "nats", "nats/target"])])
def test_the_header_names_each_column_over_it(part, fmt, columns):
    head = header(fmt, False, 8)
    rows = format_rows(fmt, part, False, 8).splitlines()
    assert head.split() == columns
    if fmt == "tsv":
        assert all(len(row.split("\t")) == len(columns) for row in rows)
    else:  # right-aligned over the values
        assert all(len(row) == len(head.rstrip("\n")) for row in rows)


def test_the_counts_of_a_job_are_the_sum_of_its_parts(part):
    other = LineScores([9], ["ava"], part.scores, [(8, "not a name")], 2)  # scores reused: only the sums matter
    total = sum([Counts.of_part(part), Counts.of_part(other)], Counts())
    nats, targets = float(part.scores.nll.sum()), int(part.scores.n_targets.sum())
    assert total == Counts(names=3, targets=2 * targets, nats=pytest.approx(2 * nats), empty=2, invalid=1, rows=3)
