"""``wavenet-conv score --engine ray``: every mistake is one line and exit status 2 before a cluster
starts, in the command line's words; without Ray installed the job names the extra to install."""

import importlib.util

import pytest

from batch_helpers import random_run
from helpers import cli, run_main
import wavenet_conv.cli.commands as commands_module
from wavenet_conv import ArgumentError, CheckpointError, DataError
from wavenet_conv.cli.output import closing_count
from wavenet_conv.cluster.counts import Counts
from wavenet_conv.cluster.job import input_error

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray[data] (the ray extra)")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A run, a names file, and folders of Parquet and other files, good and bad."""
    d = tmp_path_factory.mktemp("inputs")
    random_run(d / "run")
    (d / "names.txt").write_text("emma\nx1\n")
    (d / "people.csv").write_text("uid,first_name,city\n1,emma,Paris\n")
    (d / "keyed.csv").write_text("nats,first_name\n1,emma\n")
    (d / "people.jsonl").write_text('{"uid": 1, "first_name": "emma"}\n')
    (d / "empty").mkdir()
    (d / "full").mkdir()
    (d / "full" / "scores.parquet").write_text("")
    if importlib.util.find_spec("pyarrow"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        (d / "parquet").mkdir()
        pq.write_table(pa.table({"uid": [1, 2], "name": ["emma", "x1"]}), d / "parquet" / "a.parquet")
        pq.write_table(pa.table({"uid": [1, 2], "name": [3, 4]}), d / "numbers.parquet")
        pq.write_table(pa.table({"error": ["k1", "k2"], "name": ["emma", "ava"]}), d / "keyed.parquet")
        (d / "mixed").mkdir()
        pq.write_table(pa.table({"name": ["emma"]}), d / "mixed" / "a.parquet")
        (d / "mixed" / "b.txt").write_text("emma\n")
    return d


RAY = ["--engine", "ray", "--output", "{d}/out"]
MISTAKES = [
    (["{d}/names.txt", "--output", "{d}/out"], "--output is for --engine ray"),
    (["{d}/names.txt", "--workers", "2"], "--workers is for --engine ray"),
    (["{d}/names.txt", "--engine", "ray"], "--engine ray writes a Parquet dataset: give --output DIR"),
    (["-", *RAY], "--engine ray reads files, not stdin"),
    (["{d}/names.txt", *RAY, "--shard", "0/2"], "--shard is for --engine local"),
    (["{d}/names.txt", *RAY, "--format", "tsv"], "--format is for --engine local"),
    (["{d}/names.txt", *RAY, "--device", "cuda"], "--engine ray scores on CUDA with --gpus-per-worker X"),
    (["{d}/nowhere.txt", *RAY], "nowhere.txt: no such file or folder"),
    (["{d}/empty", *RAY], "empty: no files in it"),
    (["{d}/mixed", *RAY], "mixed: holds files of more than one kind (parquet, text, by suffix): give one kind"),
    (["{d}/names.txt", *RAY, "--id-column", "uid"],
     "--id-column is for a table (CSV, TSV, JSONL or Parquet): text input's key is path and line"),
    (["{d}/names.txt", *RAY, "--column", "n"], "--column is for a table (CSV, TSV, JSONL or Parquet)"),
    (["{d}/people.csv", *RAY], "{d}/people.csv: give the column of names (--column NAME); its columns: uid, first_name"),
    (["{d}/people.csv", *RAY, "--column", "name"], "{d}/people.csv: no column 'name'; its columns: uid, first_name"),
    (["{d}/keyed.csv", *RAY, "--column", "first_name", "--id-column", "nats"],
     "--id-column 'nats': the output has a column 'nats' of its own"),
    (["{d}/people.jsonl", *RAY], "{d}/people.jsonl: give the key of the names (--column KEY)"),
    (["{d}/parquet", *RAY], "--id-column must name a column for Parquet input"),
    (["{d}/parquet", *RAY, "--id-column", "nope"],
     "--id-column 'nope': no such column in {d}/parquet/a.parquet; its columns: uid, name"),
    (["{d}/parquet", *RAY, "--id-column", "uid", "--column", "nom"], "--column 'nom': no such column in"),
    (["{d}/numbers.parquet", *RAY, "--id-column", "uid"],
     "--column 'name': the column holds int64 in {d}/numbers.parquet, not strings"),
    (["{d}/names.txt", "--engine", "ray", "--output", "{d}/full"], "--output {d}/full: not empty: give a new or empty folder"),
    (["{d}/names.txt", "--engine", "ray", "--output", "{d}/names.txt"], "--output {d}/names.txt: is a file, not a folder"),
    (["{d}/keyed.parquet", *RAY, "--id-column", "error"], "--id-column 'error': the output has a column 'error' of its own"),
    (["{d}/names.txt", *RAY, "--chunk", "0"], "--chunk must be an integer >= 1, got 0"),
    (["{d}/names.txt", *RAY, "--workers", "0"], "--workers must be an integer >= 1, got 0"),
    (["{d}/names.txt", *RAY, "--gpus-per-worker", "-1"], "--gpus-per-worker must be a positive finite number, got -1.0"),
    (["", *RAY], "the input is an empty path: give a file, folder, glob or URI"),
    (["{d}/names.txt", *RAY, "--address", "nowhere"], "--address must be auto, HOST:PORT or ray://HOST:PORT, got 'nowhere'"),
    (["{d}/names.txt", *RAY, "--address", "127.0.0.1:1"], "--address 127.0.0.1:1: nothing answers there"),
    (["{d}/names.txt", *RAY, "--min-percentile", "95"], "--min-percentile needs the run's percentiles, and {d}/run has "
     "none: its checkpoint records no names file"),
]


@needs_ray
@pytest.mark.parametrize("args,message", MISTAKES, ids=[m[:40] for _, m in MISTAKES])
def test_a_mistake_is_one_line_and_exit_2_before_any_cluster(inputs, monkeypatch, capsys, args, message):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("a Ray cluster was started"))
    argv = ["score", inputs / "run", *(a.format(d=inputs) for a in args)]
    code, out, err = run_main(argv, monkeypatch, capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("wavenet-conv score: error: ") and message.format(d=inputs) in err


@pytest.mark.parametrize("skip", [[], ["--skip-invalid"]], ids=["", "skip-invalid"])
@pytest.mark.parametrize("counts", [Counts(names=2, targets=7, nats=7.0, empty=1, invalid=1, rows=3), Counts(empty=3)],
                         ids=["names", "no names"])
def test_the_command_hands_its_options_to_score_files_and_closes_with_its_counts(counts, skip, inputs, monkeypatch,
                                                                                 capsys):
    """``score --engine ray`` without Ray: ``score_files`` (faked) gets the options as its arguments,
    once checked; the command prints what it wrote and the closing line of its ``Counts``."""
    calls, checks = [], []
    real_check = commands_module.check_engine_options
    monkeypatch.setattr(commands_module, "check_engine_options", lambda args: checks.append(1) or real_check(args))
    monkeypatch.setattr(commands_module, "score_files", lambda *a, **k: calls.append((a, k)) or counts)
    names, out = inputs / "names.txt", inputs / "out"
    argv = ["score", inputs / "run", names, "--engine", "ray", "--output", out, "--workers", 3, "--threads", 2,
            "--chars", "--lowercase", "--chunk", 100, *skip]
    code, stdout, stderr = run_main(argv, monkeypatch, capsys)
    (scorer, *where), kwargs = calls[0]
    assert len(calls) == 1 and len(checks) == 1 and where == [str(names), str(out)]
    assert scorer.kwargs() == dict(run=str(inputs / "run"), column="name", device="cpu", lowercase=True, per_char=True,
                                   unknown="score")
    assert kwargs == dict(workers=3, cpus_per_worker=2, gpus_per_worker=0, address=None, id_column=None,
                          column=None, chunk=100, skip_invalid=bool(skip), min_percentile=None)
    if counts.names:  # the run is a model alone: a note that it has no percentiles, then the closing line
        note = (f"wavenet-conv score: note: {inputs / 'run'}: no percentiles: its checkpoint records no names file "
                "(a model saved without its run)")
        refused = (f"wavenet-conv score: note: {inputs / 'run'} has no unknown-character token (saved before 1.1): a "
                   "name with a character outside ' abcdefghijklmnopqrstuvwxyz' is refused, not scored; a run trained "
                   "now scores every name")
        assert code == 0 and stderr == f"{note}\n{refused}\n{closing_count(str(names), counts)}\n"
        assert stdout == f"{out}: 3 rows written (Parquet; one per non-empty line, keyed by path and line)\n"
    else:
        assert code == 2 and stdout == "" and stderr == f"wavenet-conv score: error: {names}: no names in it\n"


class Wrapper(Exception):  # as Ray's RayTaskError: the worker's error in ``cause``
    def __init__(self, cause):
        super().__init__(str(cause))
        self.cause = cause


def test_input_error_finds_the_libraries_error_behind_rays_wrappers():
    error = DataError("x.txt:3: bad")
    try:
        try:
            raise error
        except DataError as e:
            raise RuntimeError("UDF failed") from e
    except RuntimeError as chained:
        assert input_error(Wrapper(chained)) is error and input_error(chained) is error
    assert input_error(Wrapper(RuntimeError("a bug"))) is None and input_error(ValueError("x")) is None


@pytest.mark.parametrize("line,kind", [
    ("wavenet_conv.errors.CheckpointError: runs/x: no checkpoint.pt in it", CheckpointError),
    ("wavenet_conv.errors.ArgumentError: score_lines: chunk must be an integer >= 1, got 0", ArgumentError),
])
def test_input_error_reads_a_workers_error_from_its_traceback_text(line, kind):
    """Ray Data keeps only the text of a worker's traceback: the last line names the error."""
    text = f"UDF failed to process a data block.\nTraceback (most recent call last):\n  File ...\n{line}\n"
    found = input_error(Wrapper(RuntimeError(text)))
    assert type(found) is kind and str(found) == line.split(": ", 1)[1]
    assert kind is not ArgumentError or (found.who, found.argument) == ("score_lines", "chunk")  # for its option
    assert input_error(RuntimeError("Traceback:\nwavenet_conv.errors.TrainingDiverged: step 3")) is None  # not a mistake


@needs_ray
def test_a_run_that_does_not_load_is_an_error_before_any_cluster(inputs, monkeypatch, capsys):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("a Ray cluster was started"))
    code, _, err = run_main(["score", inputs / "nope", inputs / "names.txt", *RAY[:2], "--output", inputs / "o"],
                            monkeypatch, capsys)
    assert code == 2 and "nope: no such checkpoint file or run folder" in err


def test_without_ray_the_job_names_the_extra_and_exits_2(inputs, tmp_path):
    hide_ray = "import sys; sys.modules['ray'] = None; from wavenet_conv.cli.main import main; sys.exit(main(sys.argv[1:]))"
    p = cli("score", inputs / "run", inputs / "names.txt", "--engine", "ray", "--output", tmp_path / "out",
            python=("-c", hide_ray))
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == ("wavenet-conv score: error: scoring on Ray needs Ray Data, which is not installed: "
                        "pip install 'ray[data]' aiohttp (in a checkout: pip install -e '.[ray]')\n")
    assert not (tmp_path / "out").exists()



@needs_ray
def test_a_folders_files_leave_out_hidden_and_underscore_ones_at_any_depth(tmp_path):
    import pyarrow.fs as pafs

    from wavenet_conv.cluster.reader import visible_files

    for rel in ("a.txt", "sub/b.txt", ".git/x.txt", "sub/.hidden", "_SUCCESS", "sub/_tmp/c.txt", "sub/d_e.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("emma\n")
    assert sorted(visible_files(pafs.LocalFileSystem(), str(tmp_path))) == ["a.txt", "sub/b.txt", "sub/d_e.txt"]


@needs_ray
def test_a_text_blocks_lines_are_numbered_from_its_first_and_stripped(tmp_path):
    from wavenet_conv import Vocab
    from wavenet_conv.cluster.reader import lines_table

    t = lines_table("f.txt", 5, [" emma\t", "", "ann\udcff", "x"], Vocab("abcdefghijklmnopqrstuvwxyz"))
    assert t["line"].to_pylist() == [5, 6, 7, 8] and t["path"].to_pylist() == ["f.txt"] * 4
    assert t["name"].to_pylist() == ["emma", "", "ann\ufffd", "x"]
    assert t["error"].to_pylist() == [None, None, "not valid UTF-8 (byte 0xff at character 4)", None]


@needs_ray
def test_the_writers_counts_of_names_empty_and_invalid_rows():
    import pyarrow as pa

    from wavenet_conv.cluster.writer import count

    table = pa.table({"name": ["emma", "", "  ", "x1", None], "nats": [5.0, None, None, None, None],
                      "targets": [5, None, None, None, None], "error": [None, "empty name", "empty name", "bad", "null"]})
    kept, c = count(table, drop_empty=False)
    assert (c.names, c.empty, c.invalid, c.rows, c.targets, c.nats) == (1, 2, 2, 5, 5, 5.0) and kept.num_rows == 5
    kept, c = count(table, drop_empty=True)  # text input: blank lines are counted, not written
    assert (c.names, c.empty, c.invalid, c.rows) == (1, 2, 2, 3) and kept["name"].to_pylist() == ["emma", "x1", None]


@needs_ray
@pytest.mark.parametrize("call", ["score_dataset", "score_files"])
@pytest.mark.parametrize("workers", [0, -1])
def test_the_library_refuses_workers_below_one_before_any_cluster(inputs, monkeypatch, call, workers):
    import ray

    from wavenet_conv.cluster import job

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("a Ray cluster was started"))
    args = (None, str(inputs / "run")) if call == "score_dataset" else (str(inputs / "run"), str(inputs / "names.txt"),
                                                                       str(inputs / "out"))
    with pytest.raises(ArgumentError, match=f"^{call}: workers must be an integer >= 1, got {workers}$") as e:
        getattr(job, call)(*args, workers=workers)
    assert (e.value.who, e.value.argument) == (call, "workers")


@needs_ray
def test_the_writer_finds_the_bad_row_of_the_smallest_key_in_any_block_order():
    """The job's "first" bad line: the smallest (path, line) over every block and write task, whatever
    order they come in; blank rows (an empty name, a null cell) are no bad rows; a null key sorts first."""
    import pyarrow as pa

    from wavenet_conv.cluster.writer import first_invalid, smallest

    def block(path, lines, errors):
        return pa.table({"path": [path] * len(lines), "line": lines, "name": ["x"] * len(lines), "error": errors})

    blocks = [block("b.txt", [1, 2], ["bad b1", None]), block("a.txt", [9, 3], ["bad a9", "empty name"]),
              block("a.txt", [10, 12], [None, "bad a12"]), block("a.txt", [1], [None])]
    for order in (blocks, blocks[::-1]):
        found = [first_invalid(t, ["path", "line"]) for t in order]
        assert smallest(found)[1:] == (("a.txt", 9), "bad a9")
    assert smallest([first_invalid(blocks[3], ["path", "line"]), None]) is None
    # a null cell is a blank row, no bad one
    parquet = pa.table({"uid": [7, None, 3, 1], "name": ["x1", "z", "y2", None],
                        "error": ["bad 7", "bad z", "bad 3", "missing name (null)"]})
    assert first_invalid(parquet, ["uid"])[1:] == ((None,), "bad z")
    assert first_invalid(parquet, [])[1:] == (("x1",), "bad 7")  # the names are the key
    assert first_invalid(parquet.slice(0, 1), [])[1:] == (("x1",), "bad 7")


@pytest.mark.parametrize("keys,first,message", [
    (["path", "line"], (("in/a.txt", 9), "bad"), "in/a.txt:9: bad (first of 3 bad lines; out holds every row, each "
                                                 "bad one with its reason in error)"),
    (["uid"], ((17,), "missing name (null)"), "in: uid 17: missing name (null) (first of 3 bad rows; out holds"),
])
def test_a_jobs_bad_line_is_named_as_the_local_command_names_it(keys, first, message):
    from wavenet_conv.cluster.job import invalid_error

    error = invalid_error((None, *first), keys, "in", "out", Counts(invalid=3))
    assert type(error) is DataError and str(error).startswith(message)


def test_dropped_lines_leaves_out_the_matching_lines_of_fd_2_and_passes_the_rest(capfd):
    import os
    import re

    from wavenet_conv.cluster.job import dropped_lines

    with dropped_lines(re.compile(rb"noise \d+")):
        os.write(2, b"keep 1\n[E] core: noise 42 here\nkeep 2\n")
        os.write(2, b"keep 3, no end of line")
    os.write(2, b"\nafter\n")
    assert capfd.readouterr().err == "keep 1\nkeep 2\nkeep 3, no end of line\nafter\n"


def test_dropped_records_leaves_out_a_loggers_matching_records(caplog):
    import logging

    from wavenet_conv.cluster.job import dropped_records

    logger = logging.getLogger("wavenet_conv.test_noise")
    caplog.set_level(logging.INFO, logger=logger.name)
    root = logging.getLogger()
    with dropped_records(root, "Token authentication is enabled"):
        logger.warning("Token authentication is enabled for this Ray cluster. Set ...")
        logger.warning("a real warning")
    logger.warning("Token authentication is enabled, after")
    assert [r.getMessage() for r in caplog.records] == ["a real warning", "Token authentication is enabled, after"]


def test_min_percentile_is_handed_to_the_job_which_counts_the_names_it_kept(trained_run, inputs, monkeypatch, capsys):
    """``score_files`` (faked) gets ``min_percentile``; the command says it wrote the names it kept."""
    calls, counts = [], Counts(names=10, targets=50, nats=100.0, rows=2)
    monkeypatch.setattr(commands_module, "score_files", lambda *a, **k: calls.append(k) or counts)
    names, out = inputs / "names.txt", inputs / "out"
    code, stdout, stderr = run_main(["score", trained_run[0], names, "--engine", "ray", "--output", out,
                                     "--min-percentile", "99.5"], monkeypatch, capsys)
    assert code == 0 and calls[0]["min_percentile"] == 99.5
    assert stdout == f"{out}: 2 rows written (Parquet; one per name kept, keyed by path and line)\n"
    assert stderr == closing_count(str(names), counts, 99.5) + "\n" and "kept 2 of 10 names at or above the 99.5th" in stderr


@needs_ray
@pytest.mark.parametrize("value,problem", [(95, "needs the run's percentiles, and .*run has none: its checkpoint records "
                                                "no names file"), (101, "must be a number from 0 to 100, got 101")])
def test_the_library_refuses_a_min_percentile_it_cannot_apply_before_any_cluster(inputs, monkeypatch, value, problem):
    import ray

    from wavenet_conv.cluster.job import score_files

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("a Ray cluster was started"))
    with pytest.raises(ArgumentError, match=f"score_files: min_percentile {problem}"):
        score_files(str(inputs / "run"), str(inputs / "names.txt"), str(inputs / "out"), min_percentile=value)
