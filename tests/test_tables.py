"""Columns of real tables (CSV, TSV, JSONL, Parquet): the reader, ``score --column/--id-column`` on
each format with the same numbers as the list it holds, ``--top K`` against the whole list's ranking,
and the progress line on a terminal only."""

import io
import json
import math

import pytest

from helpers import SMALL_ARGS, run_main, same_weights
from table_helpers import CELLS, WRITERS, write_csv
from wavenet_conv import Scorer, load_model, score_lines, train
from wavenet_conv.cli.output import Meter
from wavenet_conv.errors import DataError
from wavenet_conv.tables import Refused, Table, cell_name
from wavenet_conv.training.source import read_data


@pytest.mark.parametrize("kind", WRITERS)
def test_a_tables_column_is_read_a_row_at_a_time_with_its_keys(kind, tmp_path):
    path = WRITERS[kind](tmp_path / f"people.{kind}")
    rows = list(Table.open(path, "first_name", "id").rows())
    assert [r for r, _, _ in rows] == list(range(1, len(CELLS) + 1))
    assert [k for _, k, _ in rows] == [f"u{i}" for i in range(len(CELLS))]
    assert [cell_name(v) for _, _, v in rows] == CELLS  # the blank cell (or null, or missing key) is ""


@pytest.mark.parametrize("kind", ["csv", "tsv", "parquet"])
def test_a_missing_column_is_named_with_the_columns_there(kind, tmp_path):
    path = WRITERS[kind](tmp_path / f"people.{kind}")
    with pytest.raises(DataError, match=r"people\.\w+: no column 'name'; its columns: id, first_name"):
        Table.open(path, "name")
    with pytest.raises(DataError, match="give the column of names"):
        Table.open(path, None)  # three columns: which one?


def test_a_cell_that_is_no_string_gets_a_reason_and_a_null_is_blank():
    assert cell_name("  anna\t") == "anna" and cell_name(None) == "" and cell_name(float("nan")) == ""
    assert cell_name(12) == Refused("a int (12), not a string")
    assert cell_name([1]).reason.startswith("a list")


def test_jsonl_lines_that_are_no_objects_keep_their_rows_with_a_reason(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"n": "anna"}\n\nnot json\n[1]\n{"n": 3}\n{"n": "bob"}\n')
    rows = [(r, cell_name(v)) for r, _, v in Table.open(path, "n").rows()]
    assert [r for r, _ in rows] == [1, 2, 3, 4, 5]  # a blank line is no row
    assert rows[0][1] == "anna" and rows[4][1] == "bob"
    assert [v.reason.split(" (")[0] for _, v in rows[1:4]] == ["not JSON", "a JSON list, not an object", "a int"]


def test_score_lines_takes_a_pandas_column_with_nulls(conv):
    """A null cell (NaN, None) is a blank line, a number is a line with a reason: never a crash."""
    from helpers import VOCAB

    parts = list(score_lines(conv, ["anna", None, float("nan"), 7, "bob"], VOCAB, skip_invalid=True))
    assert parts[0].lines == [1, 5] and parts[0].empty == 2 and parts[0].invalid == [(4, "a int (7), not a string")]


def tsv_rows(stdout: str, key: str) -> list[list[str]]:
    header, *rows = stdout.splitlines()
    assert header.split("\t")[:2] == [key, "name"]
    return [r.split("\t") for r in rows]


@pytest.mark.parametrize("kind", WRITERS)
def test_score_gives_every_non_empty_cell_a_row_keyed_by_id(kind, trained_run, tmp_path, monkeypatch, capsys):
    """Every non-empty cell a row keyed by its id, exit 0, each with a finite score and a percentile
    (José, Łukasz, Светлана, "Anne Marie" in a run trained on a-z: their unseen characters score as
    its unknown token), the names as they came, the numbers those of the same names as a list; the
    blank cell counted; the closing line counts rows."""
    path = WRITERS[kind](tmp_path / f"people.{kind}")
    code, out, err = run_main(["score", trained_run[0], path, "--column", "first_name", "--id-column", "id",
                               "--format", "tsv"], monkeypatch, capsys)
    assert code == 0, err
    loaded = load_model(trained_run[0])
    want = {f"u{i}": name for i, name in enumerate(CELLS) if name}
    rows = tsv_rows(out, "id")
    assert {r[0]: r[1] for r in rows} == want
    expected = loaded.scorer().names(list(want.values()))
    assert [r[2] for r in rows] == [repr(v) for v in expected.nll.tolist()]
    assert [r[5] for r in rows] == [repr(v) for v in expected.percentile.tolist()]
    assert all(math.isfinite(float(r[2])) and 0 <= float(r[5]) <= 100 for r in rows)
    assert err.splitlines()[-1].endswith("1 row skipped (1 empty, 0 not names)")
    refused = run_main(["score", trained_run[0], path, "--column", "first_name", "--id-column", "id", "--format",
                        "tsv", "--skip-invalid", "--unknown", "error"], monkeypatch, capsys)  # as a run before 1.1
    assert {r[1] for r in tsv_rows(refused[1], "id")} == {"emma", "ava"}
    assert f"{path}: row 1: character 1 'J' in 'José' is not in the vocabulary" in refused[2]


def test_a_table_without_an_id_column_is_keyed_by_its_row(trained_run, tmp_path, monkeypatch, capsys):
    path = write_csv(tmp_path / "people.csv")
    code, out, err = run_main(["score", trained_run[0], path, "--column", "first_name", "--format", "jsonl",
                               "--skip-invalid", "--unknown", "error", "--lowercase"], monkeypatch, capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["row"], r["name"]) for r in rows] == [(4, "EMMA"), (11, "emma"), (12, "ava")]


def test_without_skip_invalid_a_tables_first_bad_row_stops_it_named_by_row(trained_run, tmp_path, monkeypatch, capsys):
    path = write_csv(tmp_path / "people.csv")
    code, out, err = run_main(["score", trained_run[0], path, "--column", "first_name", "--unknown", "error"],
                              monkeypatch, capsys)
    assert code == 2 and f"error: {path}: row 1: character 1 'J' in 'José'" in err


@pytest.mark.parametrize("argv,problem", [
    (["--column", "first_name"], "--column is for a table (a .csv, .tsv, .jsonl or .parquet FILE)"),
    (["--id-column", "id"], "--id-column is for a table"),
])
def test_column_options_are_for_a_table(trained_run, small_names, monkeypatch, capsys, argv, problem):
    code, _, err = run_main(["score", trained_run[0], small_names, *argv], monkeypatch, capsys)
    assert code == 2 and problem in err


@pytest.mark.parametrize("k", [1, 5, 40])
def test_top_k_gives_the_rows_the_whole_list_ranks_highest(trained_run, small_names, monkeypatch, capsys, k):
    """Ranked by percentile then nats per target, over chunks of 7 lines: the same rows, in the same
    order, as sorting the whole list's rows."""
    code, out, err = run_main(["score", trained_run[0], small_names, "--format", "tsv", "--chunk", 7, "--top", k],
                              monkeypatch, capsys)
    assert code == 0, err
    top = tsv_rows(out, "line")
    code, out, _ = run_main(["score", trained_run[0], small_names, "--format", "tsv"], monkeypatch, capsys)
    every = tsv_rows(out, "line")
    every.sort(key=lambda r: (-float(r[5]), -float(r[4]), int(r[0])))
    assert top == every[:k] and len(top) == k


def test_progress_shows_on_a_terminal_only():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    shown, piped = Terminal(), io.StringIO()
    for stream in (shown, piped):
        meter = Meter(stream, interval=0)
        meter.update(1000, 0.5)
        meter.close()
    assert "1,000 rows" in shown.getvalue() and "50%" in shown.getvalue() and piped.getvalue() == ""


# ----------------------------------------------------------------------------- train --column


def people_table(kind, tmp_path, names):
    """A table of ``names`` (and the issue's cells) in ``kind``'s format, its names in the column
    first_name beside an id and a city, with blank cells: the non-empty cells in order."""
    import table_helpers

    cells = [*CELLS, *names]  # the cells first: the JSONL writer drops the key of the blank one, at 9
    old, table_helpers.CELLS = table_helpers.CELLS, cells
    try:
        path = WRITERS[kind](tmp_path / f"people.{kind}")
    finally:
        table_helpers.CELLS = old
    return path, [c for c in cells if c]


@pytest.mark.parametrize("kind", WRITERS)
def test_train_reads_a_tables_column(kind, small_names, tmp_path, monkeypatch, capsys):
    """``train --data people.csv --column first_name``: the run's names are the column's non-empty
    cells in order (blank and null ones skipped), as the same names in a list give them; its record
    names the column, and --resume reads it again."""
    path, names = people_table(kind, tmp_path, small_names.read_text().split()[:300])
    args = ["--steps", 40, "--samples", 0, "--quiet", *SMALL_ARGS, "--normalize", "both", "--checkpoint-every", 20]
    code, _, err = run_main(["train", "--data", path, "--column", "first_name", "--out", tmp_path / "run", *args],
                            monkeypatch, capsys)
    assert code == 0, err
    words, vocab, record = read_data(path, text=("both", True, 3), column="first_name")
    listed = tmp_path / "names.txt"
    listed.write_text("\n".join(names) + "\n")
    assert words == read_data(listed, text=("both", True, 3))[0] and record["n_words"] == len(names) == 311
    run = load_model(tmp_path / "run")
    assert run.checkpoint.data["column"] == "first_name" and run.vocab == vocab
    # stopped half way, then resumed by the command line, which reads the column again: bit for bit
    train(run.checkpoint.model_config, run.checkpoint.train_config, path, out=tmp_path / "half", stop_at=20,
          progress=False, log=None)
    code, _, err = run_main(["train", "--resume", tmp_path / "half", "--quiet", "--samples", 0], monkeypatch, capsys)
    assert code == 0, err
    assert same_weights(load_model(tmp_path / "half").model, run.model)


@pytest.mark.parametrize("argv,problem", [
    (["--data", "{list}", "--column", "first_name"], "--column is for a table"),
    (["--data", "{csv}", "--column", "surname"], "{csv}: no column 'surname'; its columns: id, first_name, city"),
    (["--data", "{csv}"], "{csv}: give the column of names (--column NAME); its columns: id, first_name, city"),
    (["--data", "{jsonl}", "--column", "first_name"], "{jsonl}: row 2: a int (7), not a string"),
])
def test_train_on_a_table_refuses_what_is_wrong_before_any_work(argv, problem, small_names, tmp_path, monkeypatch, capsys):
    csv_path, _ = people_table("csv", tmp_path, [])
    jsonl_path = tmp_path / "bad.jsonl"
    jsonl_path.write_text('{"first_name": "anna"}\n{"first_name": 7}\n')
    fill = {"list": small_names, "csv": csv_path, "jsonl": jsonl_path}
    argv = [a.format(**fill) for a in argv]
    code, out, err = run_main(["train", *argv, "--out", tmp_path / "run", "--quiet"], monkeypatch, capsys)
    assert code == 2 and problem.format(**fill) in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
