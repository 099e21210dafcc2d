"""Scoring on Ray (a local cluster of 3 logical CPUs, no dashboard, every job under a time limit): one
row per non-empty line with score_lines' numbers and the command's reasons, Parquet ids kept, a worker
killed in the middle of a job costing a retry and no row, score_dataset's rows in the input's order,
bad lines an error naming the first unless skip_invalid, the command on a cluster of its own (none of
Ray's noise on stderr) and joining one with --address."""

import os
import re
import signal
import threading
import time

import pytest

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")
import pyarrow as pa  # noqa: E402

from batch_helpers import FailingScorer, JitterScorer, SlowScorer, ThreadsScorer, mixed_lines, random_run  # noqa: E402
from helpers import BUNDLED_NAMES, cli, run_main, time_limit  # noqa: E402
from table_helpers import CELLS, WRITERS  # noqa: E402
from wavenet_conv import ConfigError, DataError, load_model, load_names, read_lines, score_lines  # noqa: E402
from wavenet_conv.cluster.scorer import BatchScorer  # noqa: E402
from wavenet_conv.cluster.job import score_dataset, score_files  # noqa: E402

LIMIT = 240  # seconds a job may take here before the test calls it a hang


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    """The module's local Ray cluster (conftest's ``ray_cluster``)."""
    yield


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return random_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def names_file(tmp_path_factory):
    """About 20,000 lines: names (some with spaces inside, some at either end), lines that are not
    names, empty lines, a line of whitespace, and a line whose bytes are not UTF-8."""
    words = load_names(BUNDLED_NAMES)
    words = [f"{a} {b}" if i % 7 == 0 else a for i, (a, b) in enumerate(zip(words, words[1:]))]
    data = "\n".join(mixed_lines(20_000, words)).encode() + b"\nann\xffe\n\n \t \nlast\n"
    path = tmp_path_factory.mktemp("input") / "names.txt"
    path.write_bytes(data)
    return path


def local_scores(run, path, chunk: int = 65536) -> tuple[dict, dict]:
    """What the local command gets for the file (with ``--chunk``) at one thread, as each worker runs:
    {line: nats}, {line: reason}."""
    model, vocab, _ = load_model(run)
    nats, reasons = {}, {}
    with open(path, "rb") as f:
        for part in score_lines(model, read_lines(f), vocab, chunk=chunk, skip_invalid=True):
            nats.update(zip(part.lines, part.scores.nll.tolist()))
            reasons.update(part.invalid)
    return nats, reasons


def check_rows(table: pa.Table, path, run, chunk: int = 65536) -> None:
    """Exactly one row per non-empty line of ``path``, with the local command's nats or reason."""
    nats, reasons = local_scores(run, path, chunk)
    rows = table.to_pylist()
    lines = [r["line"] for r in rows]
    assert len(lines) == len(set(lines)) == len(nats) + len(reasons)  # none twice, none lost
    assert set(lines) == set(nats) | set(reasons) and {r["path"] for r in rows} == {str(path)}
    for r in rows:
        if r["line"] in nats:
            assert abs(r["nats"] - nats[r["line"]]) <= 1e-9 and r["error"] is None
            assert r["targets"] == len(r["name"]) + 1
        else:
            assert r["nats"] is None and r["targets"] is None and r["error"] == reasons[r["line"]]


def test_a_text_file_gets_one_row_per_non_empty_line_with_the_local_numbers(cluster, run, names_file, tmp_path):
    with time_limit(LIMIT):
        counts = score_files(run, str(names_file), str(tmp_path / "out"), workers=1, skip_invalid=True)
    table = pq.read_table(tmp_path / "out")
    assert table.column_names == ["path", "line", "name", "nats", "targets", "nats_per_target", "percentile", "error"]
    assert table.schema.field("percentile").type == pa.float64() and table["percentile"].null_count == len(table)
    check_rows(table, names_file, run)
    nats, reasons = local_scores(run, names_file)
    assert (counts.names, counts.invalid, counts.empty, counts.rows) == (len(nats), len(reasons), 402, table.num_rows)
    assert counts.nats == pytest.approx(sum(nats.values()), rel=1e-12)
    assert reasons[20_001] == "not valid UTF-8 (byte 0xff at character 4)"
    assert table.filter(pa.compute.equal(table["line"], 20_001))["name"].to_pylist() == ["ann\ufffde"]


@pytest.mark.parametrize("spec", ["{d}", "{d}/*.txt"], ids=["folder", "glob"])
def test_files_of_a_folder_or_a_glob_are_keyed_by_path_and_line(cluster, run, tmp_path, spec):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("emma\n\nx1\n")
    (d / "b.txt").write_text("ava\nmary ann\n")
    (d / "_SUCCESS").write_text("")
    (d / ".hidden.txt").write_text("zed\n")
    (d / "sub" / "c.txt").write_text("cleo\n")
    with time_limit(LIMIT):
        counts = score_files(run, spec.format(d=d), str(tmp_path / "out"), skip_invalid=True)
    rows = sorted((r["path"], r["line"], r["name"]) for r in pq.read_table(tmp_path / "out").to_pylist())
    expected = [(f"{d}/a.txt", 1, "emma"), (f"{d}/a.txt", 3, "x1"), (f"{d}/b.txt", 1, "ava"), (f"{d}/b.txt", 2, "mary ann")]
    assert rows == sorted(expected + ([(f"{d}/sub/c.txt", 1, "cleo")] if spec == "{d}" else []))
    assert (counts.empty, counts.invalid) == (1, 1)


def test_the_command_on_lines_that_are_all_empty_says_so(cluster, run, tmp_path, monkeypatch, capsys):
    (tmp_path / "blank.txt").write_text("\n\n\n")
    with time_limit(LIMIT):
        code, out, err = run_main(["score", run, tmp_path / "blank.txt", "--engine", "ray", "--output", tmp_path / "out"],
                                  monkeypatch, capsys)
    assert code == 2 and err.splitlines()[-1] == f"wavenet-conv score: error: {tmp_path}/blank.txt: no names in it"


def test_parquet_files_that_disagree_are_one_line_not_a_traceback(cluster, run, tmp_path, monkeypatch, capsys):
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"uid": [1], "name": ["emma"]}), tmp_path / "in" / "a.parquet")
    pq.write_table(pa.table({"uid": [2], "name": [3]}), tmp_path / "in" / "b.parquet")  # names as numbers
    argv = ["score", run, tmp_path / "in", "--engine", "ray", "--output", tmp_path / "out", "--id-column", "uid"]
    with time_limit(LIMIT):
        code, _, err = run_main(argv, monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == (f"wavenet-conv score: error: {tmp_path}/in: Unable to merge: Field name has "
                                    "incompatible types: string vs int64")


def test_a_killed_worker_costs_a_retry_not_a_row(cluster, run, names_file, tmp_path):
    """SIGKILL the scoring actor's process twice in the middle of the job: Ray restarts it and retries
    its batches; the output still has exactly one row per non-empty line."""
    pid_file = tmp_path / "pids.txt"
    pid_file.touch()
    killed = []

    def kill_twice():
        deadline = time.monotonic() + LIMIT
        while len(killed) < 2 and time.monotonic() < deadline:
            pids = pid_file.read_text().split()
            if len(pids) >= 3 + 4 * len(killed) and pids[-1] not in killed:  # a few batches into each life
                killed.append(pids[-1])
                os.kill(int(pids[-1]), signal.SIGKILL)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_twice)
    killer.start()
    try:
        with time_limit(LIMIT):
            score_files(SlowScorer(run, str(pid_file), pause=0.1), str(names_file), str(tmp_path / "out"),
                        workers=1, chunk=500, skip_invalid=True)
    finally:
        killer.join()
    pids = pid_file.read_text().split()
    assert len(killed) == 2 and len(set(pids)) == 3 and pids[-1] not in killed  # two deaths, three lives
    check_rows(pq.read_table(tmp_path / "out"), names_file, run, chunk=500)


def parquet_input(folder, values: list, id_column: str, column: str) -> dict:
    """``values`` as two Parquet files in ``folder``, keyed by shuffled ids; returns {id: value}."""
    ids = [(i * 7919) % 100_003 for i in range(len(values))]
    folder.mkdir()
    half = len(values) // 2
    for k, part in enumerate([slice(0, half), slice(half, None)]):
        columns = {id_column: ids[part], column: values[part], "other": [1.5] * len(ids[part])}
        pq.write_table(pa.table(columns), folder / f"part{k}.parquet")
    return dict(zip(ids, values))


@pytest.mark.parametrize("id_column,column", [("uid", "name"), ("uid", "username"), ("username", "username")])
def test_a_parquet_input_keeps_its_ids(cluster, run, tmp_path, id_column, column):
    values = mixed_lines(3000, ["emma", "mary ann", "olivia"], every=20) + [None, " \t "]
    if id_column == column:  # the names are the key: unique ones
        values = list(dict.fromkeys(values))
    by_id = parquet_input(tmp_path / "in", values, id_column, column)
    with time_limit(LIMIT):
        counts = score_files(run, str(tmp_path / "in"), str(tmp_path / "out"), id_column=id_column,
                             column=None if column == "name" else column, skip_invalid=True)
    table = pq.read_table(tmp_path / "out")
    key = "name" if id_column == column else id_column
    assert table.column_names == ([] if key == "name" else [key]) + ["name", "nats", "targets", "nats_per_target",
                                                                     "percentile", "error"]
    got = {r[key]: r for r in table.to_pylist()}
    assert len(got) == table.num_rows == len(by_id) == counts.rows  # every row once, empty and null names too
    assert counts.empty == sum(v is None or not v.strip() for v in by_id.values()) > 2  # "", " \t " and a null
    expected = BatchScorer(run)(pa.table({"name": list(by_id.values())})).to_pylist()
    for (id_, value), e in zip(by_id.items(), expected):
        row = got[value if key == "name" else id_]
        assert row["name"] == value and row["error"] == e["error"]
        assert row["nats"] == e["nats"] or abs(row["nats"] - e["nats"]) <= 1e-9


def test_a_workers_input_error_is_the_libraries_not_rays(cluster, run, names_file, tmp_path):
    """A bad batch raises in a worker; the job raises that DataError, not Ray's wrapper of it."""
    with time_limit(LIMIT), pytest.raises(DataError, match="^column 'name', row 3: a bad batch$"):
        score_files(FailingScorer(run, "column 'name', row 3: a bad batch"), str(names_file), str(tmp_path / "out"))


def test_score_dataset_from_python(cluster, run):
    ds = ray.data.from_items([{"name": n, "n": i} for i, n in enumerate(["emma", "x1", "mary ann", ""] * 50)])
    with time_limit(LIMIT):
        rows = sorted(score_dataset(ds, BatchScorer(run, per_char=True), workers=1, chunk=64).take_all(),
                      key=lambda r: r["n"])
    expected = BatchScorer(run, per_char=True)(pa.table({"name": [r["name"] for r in rows]})).to_pylist()
    assert [r["error"] for r in rows] == [e["error"] for e in expected] and len(rows) == 200
    for r, e in zip(rows, expected):
        assert (r["char_nats"] is None) == (e["char_nats"] is None)
        assert r["char_nats"] is None or max(abs(a - b) for a, b in zip(r["char_nats"], e["char_nats"])) <= 1e-9


def test_score_dataset_keeps_the_inputs_order_on_two_workers(cluster, run):
    """Two actors, every other batch slow: the rows still come back in the input's order, a missing
    name (None, NaN or pandas' NA) with its reason; the input's own DataContext is left as it was."""
    pd = pytest.importorskip("pandas")
    names = ["emma", "x1", "mary ann", "", None, "olivia", float("nan"), "ava", pd.NA, "zoe"] * 24
    frame = pd.DataFrame({"n": range(len(names)), "name": pd.Series(names, dtype=object)})
    ds = ray.data.from_pandas([frame[i:i + 40] for i in range(0, len(names), 40)])
    with time_limit(LIMIT):
        rows = score_dataset(ds, JitterScorer(run), workers=2, chunk=10).take_all()
    assert [r["n"] for r in rows] == list(range(len(names)))
    expected = BatchScorer(run)(frame)
    assert [r["error"] for r in rows] == [e if isinstance(e, str) else None for e in expected["error"]]
    assert [r["error"] for r in rows[4:10]] == ["missing name (null)", None, "missing name (null)", None,
                                                "missing name (null)", None]
    assert ds.context.execution_options.preserve_order is False


def bad_folder(d):
    """A folder of a text file whose 4th line is not a name and a binary file (every line bad)."""
    d.mkdir()
    (d / "a.txt").write_text("emma\nava\n\nx1\nolivia\nj.r\n")
    (d / "b.bin").write_bytes(b"\x00\x01\x02\n\x89PNG\r\n\x1a\n")
    return d


def test_bad_lines_are_an_error_naming_the_smallest_path_and_line_once_every_row_is_written(cluster, run, tmp_path):
    d = bad_folder(tmp_path / "in")
    with time_limit(LIMIT), pytest.raises(DataError) as e:
        score_files(run, str(d), str(tmp_path / "out"), chunk=2)
    assert str(e.value).startswith(f"{d}/a.txt:4: character 2 '1' in 'x1' is not in the vocabulary")
    assert f"(first of 5 bad lines; {tmp_path / 'out'} holds every row" in str(e.value)
    rows = sorted((r["path"], r["line"], r["error"] is None) for r in pq.read_table(tmp_path / "out").to_pylist())
    assert [r[:2] for r in rows] == [(f"{d}/a.txt", i) for i in (1, 2, 4, 5, 6)] + [(f"{d}/b.bin", i) for i in (1, 2, 3)]
    assert sum(ok for *_, ok in rows) == 3


@pytest.mark.parametrize("skip", [False, True])
def test_the_command_on_a_folder_with_a_binary_file_exits_2_unless_skip_invalid(cluster, run, tmp_path, monkeypatch,
                                                                                 capsys, skip):
    d, out = bad_folder(tmp_path / "in"), tmp_path / "out"
    argv = ["score", run, d, "--engine", "ray", "--output", out, *(["--skip-invalid"] if skip else [])]
    with time_limit(LIMIT):
        code, stdout, err = run_main(argv, monkeypatch, capsys)
    assert pq.read_table(out).num_rows == 8
    if skip:
        assert code == 0 and stdout == f"{out}: 8 rows written (Parquet; one per non-empty line, keyed by path and line)\n"
        assert err.splitlines()[-1].startswith(f"{d}: 3 names scored")
    else:
        assert code == 2 and stdout == "" and "Traceback" not in err
        assert err.splitlines()[-1].startswith(f"wavenet-conv score: error: {d}/a.txt:4: character 2 '1' in 'x1' is "
                                               "not in the vocabulary")


@pytest.mark.parametrize("cpus", [1, 2])
def test_a_worker_scores_on_a_thread_per_cpu_ray_gave_it(cluster, run, cpus):
    def call():
        import pandas as pd  # in the worker

        return ThreadsScorer(run)(pd.DataFrame({"name": ["emma"]}))["threads"].tolist()

    with time_limit(LIMIT):
        assert ray.get(ray.remote(num_cpus=cpus)(call).remote()) == [cpus]


def test_too_few_cpus_for_the_workers_is_an_error_before_any_work(cluster, run, names_file, tmp_path):
    """On 3 CPUs, three actors of one CPU would leave none for reading and writing and the job would wait
    forever: refused at once."""
    with time_limit(30), pytest.raises(ConfigError, match=r"the Ray cluster has 3 CPUs: 3 workers of 1 CPU need 4 "):
        score_files(run, str(names_file), str(tmp_path / "out"), workers=3)
    assert not (tmp_path / "out").exists()


def test_the_command_starts_a_cluster_for_two_workers_and_counts_as_the_local_command(run, names_file, tmp_path):
    out = tmp_path / "out"
    ray_job = cli("score", run, names_file, "--engine", "ray", "--output", out, "--workers", 2, "--chars",
                  "--skip-invalid", timeout=LIMIT)
    local = cli("score", run, names_file, "--skip-invalid", timeout=LIMIT)
    assert ray_job.returncode == 0, ray_job.stderr[-2000:]
    assert ray_job.stdout == f"{out}: 19,602 rows written (Parquet; one per non-empty line, keyed by path and line)\n"
    assert ray_job.stderr.splitlines()[-1] == local.stderr.splitlines()[-1]  # the closing counts
    assert "Traceback" not in ray_job.stderr
    table = pq.read_table(out)
    check_rows(table, names_file, run)
    for r in table.to_pylist()[:500]:  # per character: its characters' nats, then the end's
        assert r["char_nats"] is None if r["error"] else abs(sum(r["char_nats"]) - r["nats"]) < 1e-4


def test_the_command_shows_none_of_rays_noise(run, tmp_path):
    """A job on a cluster of its own: on stderr the closing count alone, not Ray's notice of token
    authentication nor its core worker's line about an actor's arguments in the object store."""
    path = tmp_path / "names.txt"
    path.write_text("emma\nava\n\nolivia\n")
    job = cli("score", run, path, "--engine", "ray", "--output", tmp_path / "out", timeout=LIMIT)
    local = cli("score", run, path, timeout=LIMIT)
    assert job.returncode == 0, job.stderr[-2000:]
    assert "Token authentication" not in job.stderr and "constructor arguments in the object store" not in job.stderr
    assert not re.search(r"\bINFO\b", job.stderr)  # Ray Data's progress lines
    assert job.stderr.splitlines()[-1] == local.stderr.splitlines()[-1]


def test_the_command_joins_a_running_cluster_with_address(cluster, run, names_file, tmp_path):
    address = ray.get_runtime_context().gcs_address  # this module's cluster, joined by another process
    job = cli("score", run, names_file, "--engine", "ray", "--output", tmp_path / "out", "--address", address,
              "--skip-invalid", timeout=LIMIT)
    assert job.returncode == 0, job.stderr[-2000:]
    check_rows(pq.read_table(tmp_path / "out"), names_file, run)
    assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 3  # still up: the job only left it


def test_a_job_writes_the_local_percentiles_and_keeps_the_names_at_or_above_min_percentile(cluster, trained_run,
                                                                                          tmp_path):
    """A run with a percentile table: each name kept has the local command's percentile; with
    min_percentile the names below it and the lines that are not names are counted, not written."""
    run = trained_run[0]
    path = tmp_path / "names.txt"
    lines = mixed_lines(200, ["emma", "olivia", "xqzzyv", "ava", "zxcvbnm", "mia", "qqqqqq"])
    lines[49::50] = ["a\tb", "bad\x07", "\x07", "x\x07y"]  # no run scores these (a control character)
    path.write_text("\n".join(lines) + "\n")
    loaded = load_model(run)
    with open(path, "rb") as f:
        parts = list(score_lines(loaded.model, read_lines(f), loaded.vocab, skip_invalid=True,
                                 reference=loaded.reference))
    local = {line: p for part in parts for line, p in zip(part.lines, part.scores.percentile.tolist())}
    with time_limit(LIMIT):
        counts = score_files(run, str(path), str(tmp_path / "out"), skip_invalid=True, min_percentile=90)
    table = pq.read_table(tmp_path / "out")
    want = {line: p for line, p in local.items() if p >= 90}
    assert dict(zip(table["line"].to_pylist(), table["percentile"].to_pylist())) == want
    assert 0 < len(want) < len(local) and table["error"].null_count == len(table)
    assert (counts.names, counts.invalid, counts.rows) == (len(local), 4, len(want))


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "parquet"])
@pytest.mark.parametrize("keyed", [True, False], ids=["id", "row"])
def test_a_tables_every_non_empty_cell_is_written_with_the_local_scores(cluster, trained_run, tmp_path, kind, keyed):
    """Ray reads the same table formats through the same reader: every non-empty cell (accents, capitals,
    Cyrillic, digits: characters the run never saw) a row with a finite score and a percentile, keyed
    as asked (Parquet needs its id column), the blank cell counted; the numbers are the local scorer's."""
    if kind == "parquet" and not keyed:
        pytest.skip("Parquet rows are keyed by an id column")
    path = WRITERS[kind](tmp_path / f"people.{kind}")
    with time_limit(LIMIT):
        counts = score_files(trained_run[0], str(path), str(tmp_path / "out"), column="first_name",
                             id_column="id" if keyed else None)
    table = pq.read_table(tmp_path / "out")
    cells = [(f"u{i}", i + 1, c) for i, c in enumerate(CELLS) if c]
    want = load_model(trained_run[0]).scorer().names([c for _, _, c in cells])
    keys = table["id"].to_pylist() if keyed else list(zip(table["path"].to_pylist(), table["row"].to_pylist()))
    got = dict(zip(keys, zip(table["nats"].to_pylist(), table["percentile"].to_pylist(), table["name"].to_pylist())))
    assert (counts.names, counts.invalid, counts.empty) == (len(cells), 0, 1)
    if kind == "parquet":  # a row for every row of Parquet, its null cell's with the reason; CSV-like: as locally
        assert table.filter(pa.compute.is_valid(table["error"]))["error"].to_pylist() == ["missing name (null)"]
        table = table.filter(pa.compute.is_null(table["error"]))
    assert table["error"].null_count == len(table) == len(cells)
    for (key, row, cell), nats in zip(cells, want.nll.tolist()):
        assert got[key if keyed else (str(path), row)] == (nats, got[key if keyed else (str(path), row)][1], cell)
        assert 0 <= got[key if keyed else (str(path), row)][1] < 100


def test_the_command_scores_a_csv_column_on_ray_keyed_by_path_and_row(cluster, trained_run, tmp_path, monkeypatch,
                                                                       capsys):
    path = WRITERS["csv"](tmp_path / "people.csv")
    with time_limit(LIMIT):
        code, out, err = run_main(["score", trained_run[0], path, "--column", "first_name", "--engine", "ray",
                                   "--output", tmp_path / "out"], monkeypatch, capsys)
    n = sum(1 for c in CELLS if c)
    assert code == 0 and out == f"{tmp_path / 'out'}: {n} rows written (Parquet; one per non-empty row, keyed by " \
                                 "path and row)\n", err
    assert f"{n} names scored" in err and "1 empty" in err
    assert pq.read_table(tmp_path / "out")["row"].to_pylist() == [i + 1 for i, c in enumerate(CELLS) if c]
