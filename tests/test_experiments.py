"""The research scripts in experiments/ still run against the library: each once, tiny, in this
process (their full runs take minutes to hours: experiments/SEARCH.md, REPRODUCE.md)."""

import json
import os
import sys

from helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))

import reproduce  # noqa: E402
import small_reference  # noqa: E402
import tune  # noqa: E402
import unknown_rate  # noqa: E402


def test_tune_runs_a_list_and_writes_its_table(small_names, tmp_path):
    configs = tmp_path / "runs.json"
    configs.write_text(json.dumps({"base": {"steps": 3, "batch_size": 8},
                                   "runs": [{"name": "a", "lr": 0.01}, {"name": "b", "n_hidden": 16}]}))
    tune.main([str(configs), str(small_names), "--out", str(tmp_path / "out.md")])
    rows = (tmp_path / "out.md").read_text().splitlines()
    assert [r.split(" | ")[0] for r in rows[-2:]] == ["| a", "| b"]
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


def test_reproduce_runs_a_row_of_the_lectures_table(small_names, tmp_path, capsys):
    reproduce.main([str(small_names), "--rows", "1", "--steps", "3", "--out", str(tmp_path / "table.md")])
    table = (tmp_path / "table.md").read_text()
    assert "3 SGD steps" in table and table.splitlines()[-1].startswith("| flat MLP, 3-char context")


def test_unknown_rate_measures_each_rate_and_keeps_one(small_names, tmp_path):
    out = tmp_path / "rates.md"
    unknown_rate.main([str(small_names), "--rates", "0", "0.05", "--steps", "3", "--seeds", "1", "--out", str(out),
                       "--runs-dir", str(tmp_path / "runs")])
    rows = out.read_text().splitlines()[4:]
    assert [r.split(" | ")[0].replace(" (kept)", "") for r in rows] == ["| 0", "| 0.05"] and sum("(kept)" in r for r in rows) == 1


def test_small_reference_measures_tables_of_each_size(tmp_path):
    out = tmp_path / "small.md"
    small_reference.main(["--seeds", "3", "--sizes", "50,400", "--out", str(out)])
    rows = [r for r in out.read_text().splitlines() if r.startswith("| 50 |") or r.startswith("| 400 |")]
    assert len(rows) == 2 and all(r.count("%") == 4 for r in rows)
