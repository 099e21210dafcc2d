"""The batch scorer alone (no Ray): pandas, Arrow and numpy batches get score_lines' numbers and the
command's reasons, a row per row; it pickles without its model, loads it once per process, and runs
its own torch threads."""

import pickle

import numpy as np
import pytest
import torch

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")

from batch_helpers import BAD, random_run, mixed_lines
from helpers import cuda_only, run_main
from wavenet_conv import DataError, load_model, score_lines
import wavenet_conv.cluster.scorer as batch_module
import wavenet_conv.cluster.scorer as scorer_module
from wavenet_conv import device as device_module
from wavenet_conv.inference.scoring import Scorer
from wavenet_conv.cluster.scorer import BatchScorer

NAMES = ["emma", "mary ann", "olivia", "de la cruz", "ava", "x"]
LINES = mixed_lines(400, NAMES, every=9)  # names, bad lines, empty lines
KINDS = {
    "pandas": lambda values: pd.DataFrame({"id": range(len(values)), "name": values}),
    "arrow": lambda values: pa.table({"id": range(len(values)), "name": values}),
    "numpy": lambda values: {"id": np.arange(len(values)), "name": np.array(values, dtype=object)},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return random_run(tmp_path_factory.mktemp("run"))


def expected(run, lines, **kwargs):
    """score_lines on ``lines``: {row: nats}, {row: per-character nats}, {row: reason}."""
    model, vocab, _ = load_model(run)
    nats, chars, reasons = {}, {}, {}
    for part in score_lines(model, lines, vocab, chunk=64, skip_invalid=True, per_char=True, **kwargs):
        for j, line in enumerate(part.lines):
            nats[line - 1], chars[line - 1] = part.scores.nll[j].item(), part.scores.chars(j).tolist()
        reasons.update({line - 1: reason for line, reason in part.invalid})
    return nats, chars, reasons


def column(out, name) -> list:
    """A column of any kind of batch as a list, nulls as None."""
    values = out[name]
    values = values.to_pylist() if hasattr(values, "to_pylist") else list(values)
    return [None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else v for v in values]


@pytest.mark.parametrize("kind", KINDS)
def test_every_row_gets_score_lines_numbers_or_the_reason(run, kind):
    lines = LINES + [None]
    out = BatchScorer(run)(KINDS[kind](lines))
    nats, _, reasons = expected(run, LINES)
    assert type(out) is type(KINDS[kind](lines)) and column(out, "id") == list(range(len(lines)))
    got_nats, got_targets, errors = column(out, "nats"), column(out, "targets"), column(out, "error")
    for i, line in enumerate(lines):
        if i in nats:
            assert abs(got_nats[i] - nats[i]) <= 1e-9 and errors[i] is None
            assert got_targets[i] == len(line.strip()) + 1
            assert column(out, "nats_per_target")[i] == pytest.approx(nats[i] / (len(line.strip()) + 1), abs=1e-12)
        else:
            assert got_nats[i] is None and column(out, "nats_per_target")[i] is None
            assert got_targets[i] == (0 if kind == "numpy" else None)
            assert errors[i] == reasons.get(i, "empty name" if line == "" else "missing name (null)")
    assert len(nats) > 300 and len(reasons) == 44 and errors.count("empty name") == 44
    assert errors[-1] == "missing name (null)"


@pytest.mark.parametrize("kind,missing", [("pandas", None), ("pandas", float("nan")), ("pandas", pd.NA),
                                          ("arrow", None), ("numpy", None), ("numpy", float("nan"))])
def test_a_missing_name_gives_its_reason_as_an_empty_one_does(run, kind, missing):
    out = BatchScorer(run)(KINDS[kind](["emma", missing, ""]))
    assert column(out, "error") == [None, "missing name (null)", "empty name"]
    assert column(out, "nats")[1:] == [None, None]


def test_arrow_columns_have_their_types_and_nulls(run):
    out = BatchScorer(run, per_char=True)(pa.table({"name": ["emma", "x1"]}))
    assert out.schema.field("nats").type == pa.float64() and out.schema.field("targets").type == pa.int64()
    assert out.schema.field("error").type == pa.string()
    assert out.schema.field("char_nats").type == pa.list_(pa.float64())
    assert out["nats"].null_count == out["targets"].null_count == out["char_nats"].null_count == 1
    assert out["error"].null_count == 1


@pytest.mark.parametrize("kind", KINDS)
def test_per_char_nats_are_score_lines(run, kind):
    out = BatchScorer(run, per_char=True)(KINDS[kind](LINES))
    _, chars, _ = expected(run, LINES)
    got = column(out, "char_nats")
    for i in range(len(LINES)):
        if i in chars:
            assert np.abs(np.asarray(got[i]) - chars[i]).max() <= 1e-9
        else:
            assert got[i] is None


def test_errors_are_the_reasons_the_command_prints(run, tmp_path, monkeypatch, capsys):
    path = tmp_path / "list.txt"
    path.write_text("\n".join(LINES) + "\n")
    code, _, err = run_main(["score", run, path, "--skip-invalid"], monkeypatch, capsys)
    # notes (the run has no percentiles, nor an unknown-character token), FILE:LINE: reason, then the counts
    note, refusal, *reports, _ = err.splitlines()
    printed = dict(line.split(": ", 1) for line in reports)
    assert note.startswith(f"wavenet-conv score: note: {run}: no percentiles: ")
    assert refusal.startswith(f"wavenet-conv score: note: {run} has no unknown-character token")
    errors = column(BatchScorer(run)(pd.DataFrame({"name": LINES})), "error")
    assert code == 0 and len(printed) == len(BAD) * 4
    assert {f"{path}:{i + 1}": e for i, e in enumerate(errors) if e not in (None, "empty name")} == printed


def test_a_row_with_an_error_of_its_own_keeps_it_unscored(run):
    batch = pd.DataFrame({"name": ["emma", "\ufffd", "ava"], "error": [None, "not valid UTF-8 (byte 0xff at character 1)", None]})
    out = BatchScorer(run)(batch)
    assert column(out, "error") == [None, "not valid UTF-8 (byte 0xff at character 1)", None]
    assert out["nats"].notna().tolist() == [True, False, True]


def test_lowercase_and_whitespace_at_either_end(run):
    """A value is scored as a line is: case folded with lowercase, whitespace at its ends stripped
    (the name column left as it came); whitespace inside it is still a reason; blank is empty."""
    names = ["Emma", "emma", "emma\n", " emma\t", "em\tma", "  "]
    out = BatchScorer(run, lowercase=True)(pd.DataFrame({"name": names}))
    assert out["nats"][:4].tolist() == [out["nats"][0]] * 4 and column(out, "error")[:4] == [None] * 4
    assert out["name"].tolist() == names
    assert column(out, "error")[4:] == ["character 3 '\\t' in 'em\\tma' is whitespace", "empty name"]


@pytest.mark.parametrize("batch,match", [
    (pd.DataFrame({"names": ["emma"]}), r"no column 'name' in the batch \(its columns: names\)"),
    (pd.DataFrame({"name": ["emma", 3]}), r"column 'name', row 2: a int, not a str: 3"),
    ({"name": np.array([1.5])}, r"column 'name', row 1: a float64, not a str"),
])
def test_a_batch_without_a_column_of_names_is_a_data_error(run, batch, match):
    with pytest.raises(DataError, match=match):
        BatchScorer(run)(batch)


def test_it_pickles_without_its_model_and_loads_it_once_per_process(run, monkeypatch):
    loads = []
    monkeypatch.setattr(batch_module, "_LOADED", {})
    monkeypatch.setattr(batch_module, "load_model", lambda *a, **k: loads.append(a) or load_model(*a, **k))
    scorer = BatchScorer(run, column="n", per_char=True)
    copy = pickle.loads(pickle.dumps(scorer))
    assert copy.kwargs() == scorer.kwargs() and len(pickle.dumps(scorer)) < 1000 and loads == []
    for s in (scorer, copy, BatchScorer(**scorer.kwargs())):
        s({"n": np.array(["emma"], dtype=object)})
    assert len(loads) == 1


@pytest.mark.parametrize("allotted,inside", [(None, 1), (2, 2), (1, 1)])
def test_each_call_runs_its_threads_and_puts_the_callers_back(run, monkeypatch, allotted, inside):
    """The scoring itself runs on the worker's threads, the CPUs Ray allotted to it, else 1 (not the
    library's "auto", which knows nothing of them), and the caller's count comes back."""
    seen, nll = [], Scorer.nll
    monkeypatch.setattr(Scorer, "nll", lambda *a: seen.append(torch.get_num_threads()) or nll(*a))
    monkeypatch.setattr(device_module, "auto_threads", lambda: 7)
    monkeypatch.setattr(scorer_module, "allotted_cpus", lambda: allotted)
    monkeypatch.setattr(scorer_module, "_SCORERS", {})
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        BatchScorer(run)(pd.DataFrame({"name": ["emma"]}))
        assert seen == [inside] and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@cuda_only
def test_the_scorer_on_cuda_gives_the_cpu_numbers(run):
    batch = pd.DataFrame({"name": LINES})
    cpu, cuda = BatchScorer(run)(batch), BatchScorer(run, device="cuda", per_char=True)(batch)
    assert cpu["error"].tolist() == cuda["error"].tolist()
    assert np.allclose(cpu["nats"], cuda["nats"], rtol=1e-4, atol=1e-4, equal_nan=True)


@pytest.mark.parametrize("kind", KINDS)
def test_every_scored_row_gets_score_lines_percentile(trained_run, kind):
    """A run with a percentile table: ``score_lines``' percentile on each scored row, null elsewhere."""
    run = trained_run[0]
    lines = mixed_lines(120, ["emma", "olivia", "xqzzyv", "ava", "zxcvbnm", "mia"], every=9)
    out = BatchScorer(run)(KINDS[kind](lines))
    loaded = load_model(run)
    want = {}
    for part in score_lines(loaded.model, lines, loaded.vocab, chunk=64, skip_invalid=True, reference=loaded.reference):
        want.update(zip((line - 1 for line in part.lines), part.scores.percentile.tolist()))
    got = column(out, "percentile")
    assert {i: v for i, v in enumerate(got) if v is not None} == want and len(want) > 90 and len(set(want.values())) > 3
    assert all(got[i] is None for i in range(len(lines)) if i not in want)


def test_a_run_without_a_table_gives_a_null_percentile(run):
    out = BatchScorer(run)(pa.table({"name": ["emma", "x1"]}))
    assert out.schema.field("percentile").type == pa.float64() and out["percentile"].null_count == 2
    assert out["nats"].null_count == 1


def test_a_row_exactly_at_min_percentile_is_kept_by_the_ray_writer():
    """Ray's ``min_percentile P`` keeps a row at exactly P, as the local ``--min-percentile`` does; a
    row without a percentile (not a name) is not kept."""
    pytest.importorskip("ray.data")
    from wavenet_conv.cluster.writer import kept

    table = pa.table({"name": ["a", "b", "c", "d"], "percentile": pa.array([89.99, 90.0, 90.01, None], pa.float64())})
    assert kept(table, 90.0)["name"].to_pylist() == ["b", "c"]
    assert kept(table, 90.01)["name"].to_pylist() == ["c"] and len(kept(table, None)) == 4
