"""The research scripts in experiments/ still run against the library: each once, tiny, in this
process (their full runs take minutes to hours: experiments/SEARCH.md, REPRODUCE.md)."""

import json
import os
import sys

from helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))

import reproduce  # noqa: E402
import sizing  # noqa: E402
import small_reference  # noqa: E402
import tune  # noqa: E402
import unknown_rate  # noqa: E402
import usernames  # noqa: E402


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


def test_sizing_measures_each_size_and_epochs(tmp_path):
    sizing.main(["--kinds", "usernames", "--sizes", "500", "--seeds", "1", "--epochs", "1,2", "--out", str(tmp_path / "s")])
    rows = [r for r in (tmp_path / "s.md").read_text().splitlines() if r.startswith("| usernames | 500 |")]
    assert len(rows) == 2 and len((tmp_path / "s.jsonl").read_text().splitlines()) == 2


def test_the_default_recipe_fits_2000_usernames(tmp_path, monkeypatch, capsys):
    """Trained with no option on 2,000 generated usernames, the default ends within 0.03 nats of the
    best dev loss of a scan of its length (4 to 32 epochs, the last weights), says which step it kept,
    and at most 30% of its samples are training strings."""
    from helpers import run_main
    from wavenet_conv import recipe, train

    path = tmp_path / "users.txt"
    path.write_text("\n".join(usernames.usernames(2000, seed=0)) + "\n")
    code, stdout, stderr = run_main(["train", "--data", path, "--out", tmp_path / "run", "--quiet", "--samples", 100],
                                    monkeypatch, capsys)
    assert code == 0, stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    scan = [train(config=recipe("default", epochs=e, keep_best=False, checkpoint_every=0, eval_test=False), data=path,
                  log=None).metrics["val_loss"] for e in (4.0, 8.0, 32.0)]
    assert metrics["val_loss"] <= min(scan) + 0.03
    assert f"kept the weights of step {metrics['kept_step']:,}" in stdout
    samples = stdout.split("100 samples:\n")[1].splitlines()
    assert len(samples) == 100 and sum(s.endswith("(in training set)") for s in samples) <= 30
