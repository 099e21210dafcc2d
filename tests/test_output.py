"""output.py: the rows of ``wavenet-conv score`` in each format (nats, targets, nats per target; bits
in the table's per-character column), the closing count, and the sample lines' tags."""

import json
import math

import pytest

import torch

from helpers import VOCAB, random_words, run_main
from wavenet_conv import ConvModel, ModelConfig, score_names
from wavenet_conv.cli.output import closing_count, format_rows, header, percent, sample_lines
from wavenet_conv.cluster.counts import Counts
from wavenet_conv.inference.scoring import ScoreResult
from wavenet_conv.inference.streaming import LineScores
from wavenet_conv.store.loaded import load_model


@pytest.fixture(scope="module")
def part():
    model = ConvModel(ModelConfig(n_embd=4, n_hidden=8, n_layers=2)).eval()
    names = ["emma", "bo"]
    return LineScores([3, 7], names, score_names(model, names, VOCAB, per_char=True), [], 0)


def strict_json(row: str) -> dict:
    """A jsonl row parsed as strict JSON: NaN, Infinity and -Infinity refused."""
    def refuse(token):
        raise ValueError(f"{token} is not JSON: {row}")
    return json.loads(row, parse_constant=refuse)


def parse_rows(fmt: str, text: str) -> list[dict]:
    """``score``'s tsv or jsonl output -> a dict a row, numbers parsed (tsv's ``char_nats`` a list)."""
    if fmt == "jsonl":
        return [strict_json(row) for row in text.splitlines()]
    head, *rows = text.splitlines()
    kinds = dict(line=int, name=str, nats=float, targets=int, nats_per_target=float,
                 percentile=lambda v: None if v == "" else float(v), char_nats=lambda v: [float(x) for x in v.split(",")],
                 unknown=lambda v: [int(x) for x in v.split(",")] if v else [])
    columns = head.split("\t")
    return [{c: kinds[c](v) for c, v in zip(columns, row.split("\t"), strict=True)} for row in rows]


@pytest.mark.parametrize("fmt", ["tsv", "jsonl"])
def test_tsv_and_jsonl_rows_are_nats_targets_and_their_ratio_exactly(part, fmt):
    r = part.scores
    rows = parse_rows(fmt, header(fmt, True, 8) + format_rows(fmt, part, True, 8))
    for i, row in enumerate(rows):
        nats, n = r.nll[i].item(), int(r.n_targets[i])
        assert (row["line"], row["name"], row["targets"]) == (part.lines[i], part.names[i], len(part.names[i]) + 1) and n == row["targets"]
        assert row["nats"] == nats and row["nats_per_target"] == nats / n and row["char_nats"] == r.chars(i).tolist()


# floats whose shortest round-trip text has 17 significant digits, tiny, huge and whole ones: 6 decimals
# (or any fixed count) loses each but the last
HARD = [0.1 + 0.2, 2 / 3, 1e-300, 123456.78901234567, 19.6994, 5e16, 20.0]


@pytest.mark.parametrize("fmt", ["tsv", "jsonl"])
def test_every_float_is_written_as_the_shortest_text_that_parses_back_to_it(fmt):
    nll = torch.tensor(HARD, dtype=torch.float64)
    n = torch.full((len(HARD),), 3)
    scores = ScoreResult.from_nll(nll, n, char_nll=torch.tensor(HARD * 3, dtype=torch.float64))
    part = LineScores(list(range(1, len(HARD) + 1)), ["abc"] * len(HARD), scores, [], 0)
    rows = parse_rows(fmt, header(fmt, True, 8) + format_rows(fmt, part, True, 8))
    assert [row["nats"] for row in rows] == HARD and [row["nats_per_target"] for row in rows] == [v / 3 for v in HARD]
    assert [row["char_nats"] for row in rows] == [(HARD * 3)[3 * i:3 * i + 3] for i in range(len(HARD))]
    text = format_rows(fmt, part, True, 8)
    assert all(repr(v) in text for v in HARD) and "0.30000000000000004" in text  # repr's text, not more digits


def test_a_non_finite_number_keeps_tsv_parseable_and_jsonl_valid_json():
    """A finite model gives finite scores; a broken one must still give parseable rows: tsv writes
    Python's inf and nan, jsonl null (JSON has neither)."""
    bad = [math.inf, math.nan]
    scores = ScoreResult.from_nll(torch.tensor(bad), torch.tensor([2, 2]), char_nll=torch.tensor([1.5, math.inf, math.nan, 0.25]))
    part = LineScores([1, 2], ["a", "b"], scores, [], 0)
    tsv = parse_rows("tsv", header("tsv", True, 8) + format_rows("tsv", part, True, 8))
    assert tsv[0]["nats"] == math.inf and math.isnan(tsv[1]["nats"]) and tsv[0]["char_nats"] == [1.5, math.inf]
    rows = parse_rows("jsonl", format_rows("jsonl", part, True, 8))
    assert [(r["nats"], r["nats_per_target"], r["char_nats"]) for r in rows] == [(None, None, [1.5, None]), (None, None, [None, 0.25])]


# lengths 1 to 20, and names that share a length with others and ones that do not
CLI_NAMES = random_words(120, seed=24, max_len=20) + ["emma", "x", "abcdefghijklmnopqrstuvwxyzabcdefghij"]


@pytest.mark.parametrize("chars", [False, True], ids=["nats", "chars"])
@pytest.mark.parametrize("fmt", ["tsv", "jsonl"])
def test_the_commands_rows_carry_score_names_float64_exactly(trained_run, fmt, chars, monkeypatch, capsys):
    out, _ = trained_run
    code, stdout, stderr = run_main(["score", out, "-", "--format", fmt, *(["--chars"] if chars else [])],
                                    monkeypatch, capsys, stdin="\n".join(CLI_NAMES) + "\n")
    assert code == 0, stderr
    model, vocab, _ = load_model(out)
    ref = score_names(model, CLI_NAMES, vocab, per_char=True)
    rows = parse_rows(fmt, stdout)
    assert [(r["line"], r["name"]) for r in rows] == list(enumerate(CLI_NAMES, 1))
    for i, r in enumerate(rows):
        nats, n = ref.nll[i].item(), int(ref.n_targets[i])
        assert r["nats"] == nats and r["targets"] == n and r["nats_per_target"] == nats / n
        assert (r["char_nats"] == ref.chars(i).tolist()) if chars else ("char_nats" not in r)


def test_shard_rows_carry_the_whole_lists_numbers_exactly(trained_run, small_names, monkeypatch, capsys):
    out, _ = trained_run
    score = lambda *more: run_main(["score", out, small_names, "--format", "jsonl", "--chars", *more], monkeypatch, capsys)
    code, stdout, stderr = score()
    assert code == 0, stderr
    whole = {r["line"]: r for r in parse_rows("jsonl", stdout)}
    joined = {}
    for k in range(3):
        code, stdout, stderr = score("--shard", f"{k}/3")
        assert code == 0, stderr
        joined.update((r["line"], r) for r in parse_rows("jsonl", stdout))
    assert len(whole) == 1000 and joined == whole  # every row, its nats, ratio and char_nats to the bit


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


@pytest.mark.parametrize("fmt,columns", [("tsv", ["line", "name", "nats", "targets", "nats_per_target", "percentile"]),
                                         ("table", ["line", "name", "nats", "nats/target", "percentile"])])
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


@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "table"])
def test_every_format_carries_score_names_percentile(trained_run, fmt, monkeypatch, capsys):
    """tsv and jsonl: ``ScoreResult.percentile`` to the bit; the table: to one decimal, under its header."""
    out, _ = trained_run
    code, stdout, stderr = run_main(["score", out, "-", "--format", fmt], monkeypatch, capsys,
                                    stdin="\n".join(CLI_NAMES) + "\n")
    assert code == 0 and "percentile" not in stderr, stderr
    loaded = load_model(out)
    want = score_names(loaded.model, CLI_NAMES, loaded.vocab, reference=loaded.reference).percentile.tolist()
    if fmt == "table":
        head, *rows = stdout.splitlines()
        assert head.split()[4] == "percentile" and [row.split()[4] for row in rows] == [percent(p) for p in want]
        assert all(0 <= float(percent(p)) <= p < float(percent(p)) + 0.1 for p in want)
    else:
        assert [r["percentile"] for r in parse_rows(fmt, stdout)] == want
    assert len(set(want)) >= 5  # not one value for all


@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "table"])
def test_a_percentile_is_blank_without_a_table(part, fmt):
    rows = format_rows(fmt, part, False, 8).splitlines()
    assert part.scores.percentile is None and len(rows) == 2
    if fmt == "table":
        assert all(row.endswith(" " * 12) and len(row.split()) == 4 for row in rows)
    else:
        assert [r["percentile"] for r in parse_rows(fmt, header(fmt, False, 8) + "\n".join(rows))] == [None, None]


@pytest.mark.parametrize("fmt", ["tsv", "jsonl"])
def test_format_rows_writes_each_percentile_exactly_and_only_the_rows_it_is_told_to_keep(part, fmt):
    pct = [12.5, 100 * 2 / 3]  # 66.66666666666667: a float of 16 digits
    scores = ScoreResult(**{**vars(part.scores), "percentile": torch.tensor(pct, dtype=torch.float64)})
    kept = LineScores(part.lines, part.names, scores, [], 0)
    rows = lambda keep=None: parse_rows(fmt, header(fmt, True, 8) + format_rows(fmt, kept, True, 8, keep))  # noqa: E731
    assert [r["percentile"] for r in rows()] == pct
    assert [(r["line"], r["name"], r["percentile"], r["char_nats"]) for r in rows([1])] == \
        [(7, "bo", pct[1], part.scores.chars(1).tolist())]
    assert rows([]) == [] and format_rows("table", kept, False, 8, []) == ""


@pytest.mark.parametrize("p,words", [(95, "95th"), (1, "1st"), (2, "2nd"), (3, "3rd"), (11, "11th"), (12, "12th"),
                                     (22, "22nd"), (99.5, "99.5th"), (0, "0th"), (100, "100th")])
def test_the_closing_count_says_how_many_names_were_kept(p, words):
    line = closing_count("list.txt", Counts(names=3203, targets=8, nats=16.0, rows=12), p)
    assert line.endswith(f"; kept 12 of 3,203 names at or above the {words} percentile")
    assert "kept" not in closing_count("list.txt", Counts(names=3203, targets=8, nats=16.0, rows=12))


@pytest.mark.parametrize("names,empty,invalid,said", [
    (1, 1, 0, "1 name scored (2 targets, end tokens included: 1.0000 nats, 1.4427 bits per target); 1 line skipped "
              "(1 empty, 0 not names)"),
    (2, 0, 0, "2 names scored (4 targets, end tokens included: 1.0000 nats, 1.4427 bits per target); 0 lines skipped "
              "(0 empty, 0 not names)"),
])
def test_the_closing_line_says_one_name_and_one_line(names, empty, invalid, said):
    c = Counts(names=names, targets=2 * names, nats=2.0 * names, empty=empty, invalid=invalid)
    assert closing_count("list.txt", c) == f"list.txt: {said}"
