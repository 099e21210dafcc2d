"""The bundled model (wavenet_conv/bundled/model.pt, made by data/build_model.py from data/world.tsv): its
recorded val loss reproduced exactly from the shipped weights on its split, its size, data and reference table,
real names of many countries as their owners write them below the 95th percentile and junk at the top,
``load_model()`` with no path, and the command line's ``score`` and ``sample`` without a run (a lone
path of ``score`` is the run when it is a run folder or checkpoint file, else the names file)."""

import fnmatch
import ast
import json
import math
import os
import re
import sys

import pytest
import torch

from batch_helpers import random_run
from helpers import ROOT, run_main
import wavenet_conv.paths as paths_module
from wavenet_conv import CheckpointError, ModelConfig, load_model, sample_names, score_names
from wavenet_conv.cli.commands import run_and_file
from wavenet_conv.cli.output import sample_lines
from wavenet_conv.cluster.scorer import BatchScorer
from wavenet_conv.data import lecture_split, sha256_file
from wavenet_conv.device import cpu_name
from wavenet_conv.inference.percentiles import ReferenceTable
from wavenet_conv.inference.sampling import MAX_LEN
from wavenet_conv.paths import BUNDLED_MODEL, BUNDLED_RECORD, bundled_model, run_path
from wavenet_conv.store.checkpoint import Checkpoint, is_run_path
from wavenet_conv.training.source import read_data
sys.path.insert(0, os.path.join(ROOT, "data"))
import build_model  # noqa: E402

MAX_BYTES = 400_000
WORLD = os.path.join(ROOT, "data", "world.tsv")


@pytest.fixture(scope="module")
def record():
    with open(BUNDLED_RECORD, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def bundled():
    return load_model()


@pytest.fixture(scope="module")
def splits(bundled):
    """The lecture split of data/world.tsv's names, as the model reads them."""
    return lecture_split(read_data(WORLD, bundled.vocab, column="name")[0])


def unseen(words, splits):
    known = set(splits[0])
    return [w for w in words if w not in known]


@pytest.mark.parametrize("split,key", [(1, "val_loss"), (2, "test_loss")])
def test_the_recorded_losses_are_reproduced_exactly(bundled, splits, record, split, key):
    """Bit for bit on a CPU like the one that made the model (float32 GEMMs may round otherwise on
    another: there, within 1e-6 nats)."""
    loss = score_names(bundled.model, splits[split], bundled.vocab).mean_loss
    assert record[key] == bundled.checkpoint.metrics[key]
    if cpu_name() == record["made_with"]["cpu"]:
        assert loss == record[key]
    else:
        assert loss == pytest.approx(record[key], abs=1e-6), f"made on {record['made_with']['cpu']}, run on {cpu_name()}"


def test_the_file_is_small_and_the_one_recorded(record):
    assert os.path.getsize(BUNDLED_MODEL) == record["bytes"] < MAX_BYTES
    assert sha256_file(BUNDLED_MODEL) == record["sha256"]


def test_it_is_the_small_recipe_at_the_lectures_size(bundled, record):
    ckpt = bundled.checkpoint
    assert ckpt.train_config.recipe == record["recipe"] == "small" and ckpt.finished
    assert ckpt.train_config.steps == build_model.STEPS  # the command pins the length it was built with
    V = len(bundled.vocab)  # '.', the letters of three scripts, a few signs, the unknown token
    assert ckpt.model_config == ModelConfig(vocab_size=V) and ckpt.kind == "conv"
    assert sum(p.numel() for p in bundled.model.parameters()) == record["params"] == 76_579 + (24 + 129) * (V - 27)


def test_it_knows_the_latin_cyrillic_and_greek_letters(bundled):
    chars = set(bundled.vocab.chars)
    assert set("abcdefghijklmnopqrstuvwxyz") | set("абвгдежзиклмнопрстуфхцчшщыэюя") | set("αβγδεζηθικλμνξοπρστυφχω") <= chars
    assert len(bundled.vocab) < 100  # the scoring speed: benchmarks/PERFORMANCE.md


def test_it_folds_case_and_accents_and_has_an_unknown_token(bundled, record):
    assert bundled.vocab.normalize == record["normalize"] == "both" and bundled.vocab.unknown
    assert record["unknown"] == {"token": True, "rate": bundled.checkpoint.train_config.unknown_rate, "rare_chars": 3}
    assert record["unknown"]["rate"] == 0.02
    r = bundled.scorer().names(["EMMA", "José", "Zoë", "emma", "jose", "zoe"])
    assert r.nll[:3].tolist() == r.nll[3:].tolist()


def test_it_scores_every_cell_of_a_real_table(tmp_path, monkeypatch, capsys):
    """The people a CRM export holds, as they wrote their names, in a CSV with quoted commas and an
    embedded newline: every non-empty cell a row with a finite score and a percentile, no note of
    refused names, exit 0."""
    from table_helpers import CELLS, write_csv

    path = write_csv(tmp_path / "people.csv")
    code, out, err = run_main(["score", path, "--column", "first_name", "--format", "tsv", "--threads", "1"],
                              monkeypatch, capsys)
    assert code == 0 and "refused" not in err, err
    rows = [row.split("\t") for row in out.splitlines()[1:]]
    assert [r[1] for r in rows] == [c for c in CELLS if c]
    assert all(math.isfinite(float(r[2])) and 0 <= float(r[5]) < 100 for r in rows)


def test_it_holds_only_the_model():
    ckpt = Checkpoint.load(BUNDLED_MODEL)
    assert ckpt.optimizer is None and ckpt.losses is None and ckpt.swa is None and ckpt.rng is None
    assert ckpt.teachers == [] and ckpt.train_hashes is None and ckpt.batchnorm


def test_its_data_is_the_world_names(bundled, record, splits):
    data = bundled.checkpoint.data
    assert data == record["data"] and (data["path"], data["column"]) == ("data/world.tsv", "name")
    assert data["sha256"] == sha256_file(WORLD) and data["n_words"] == sum(map(len, splits))


def test_its_reference_table_is_the_dev_names_it_never_trained_on(bundled, splits):
    table = ReferenceTable.from_dict(bundled.checkpoint.reference)
    assert table.names == len(unseen(splits[1], splits)) < 0.8 * len(splits[1]) and bundled.reference is not None


@pytest.mark.parametrize("name", ["path", "bundled"])
def test_no_path_its_path_and_its_name_load_the_same_model(bundled, name, monkeypatch, capsys, tmp_path):
    """load_model(), load_model(its path) and load_model("bundled") are one model; so are sample and
    sample bundled (the word --init takes too)."""
    again = load_model(bundled_model() if name == "path" else "bundled")
    assert bundled.path == again.path
    assert all(torch.equal(a, b) for a, b in zip(bundled.model.state_dict().values(), again.model.state_dict().values()))
    monkeypatch.chdir(tmp_path)  # no folder named bundled here
    outs = [run_main(["sample", *run, "-n", 3, "--seed", 1], monkeypatch, capsys) for run in ([], [again.path if name == "path" else "bundled"])]
    assert outs[0][0] == outs[1][0] == 0 and outs[0][1] == outs[1][1] and len(outs[0][1].splitlines()) == 3


def test_a_missing_bundled_model_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(paths_module, "BUNDLED_MODEL", str(tmp_path / "model.pt"))
    with pytest.raises(CheckpointError, match=r"^the bundled model is missing \(.*model\.pt\): give a run folder"):
        load_model()


def test_the_wheel_ships_it():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:  # tomllib: Python 3.11 on
        section = f.read().split("[tool.setuptools.package-data]")[1]
    patterns = ast.literal_eval(re.search(r"^wavenet_conv = (\[.*?\])", section, flags=re.M)[1])
    for path in (BUNDLED_MODEL, BUNDLED_RECORD):
        rel = os.path.relpath(path, os.path.join(ROOT, "wavenet_conv")).replace(os.sep, "/")
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), rel


def test_the_batch_scorer_without_a_run_is_the_bundled_model(bundled):
    out = BatchScorer()({"name": ["emma", "xqzzyv"]})
    expected = score_names(bundled.model, ["emma", "xqzzyv"], bundled.vocab).nll
    assert out["nats"].tolist() == expected.tolist()


# ----------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """A run folder, its checkpoint under another name, a names file, an empty folder, a missing path."""
    d = tmp_path_factory.mktemp("places")
    run = random_run(d / "run", seed=1)
    os.replace(os.path.join(run, "checkpoint.pt"), d / "model.bin")
    random_run(d / "run")
    (d / "names.txt").write_text("emma\nava\n")
    (d / "empty").mkdir()
    return d


@pytest.mark.parametrize("given,engine,expected", [
    ((None, None), "local", (None, "-")),
    (("-", None), "local", (None, "-")),
    (("{d}/names.txt", None), "local", (None, "{d}/names.txt")),
    (("{d}/run", None), "local", ("{d}/run", "-")),
    (("{d}/model.bin", None), "local", ("{d}/model.bin", "-")),
    (("{d}/run", "{d}/names.txt"), "local", ("{d}/run", "{d}/names.txt")),
    (("{d}/names.txt", "-"), "local", ("{d}/names.txt", "-")),  # two paths: RUN and FILE, as given
    (("{d}/empty", None), "ray", (None, "{d}/empty")),  # a folder of names files, for Ray
    (("s3://bucket/*.txt", None), "ray", (None, "s3://bucket/*.txt")),
])
def test_a_lone_path_is_the_run_when_it_is_one(places, given, engine, expected):
    fill = lambda v: None if v is None else v.format(d=places)  # noqa: E731
    assert run_and_file(*map(fill, given), engine) == tuple(map(fill, expected))


def test_a_lone_bundled_is_the_bundled_model_unless_a_file_has_that_name(bundled, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_and_file("bundled", None) == ("bundled", "-")
    code, out, _ = run_main(["score", "bundled", "--format", "tsv"], monkeypatch, capsys, stdin="emma\n")
    assert code == 0 and out.splitlines()[1].split("\t")[1] == "emma"
    (tmp_path / "bundled").write_text("ava\n")  # a names file of that name: FILE, as before
    assert run_and_file("bundled", None) == (None, "bundled")
    assert run_path("bundled") == "bundled" and run_path(None) == bundled_model()  # a path of that name wins everywhere


@pytest.mark.parametrize("path,message", [
    ("{d}/missing.txt", "{d}/missing.txt: no such file, run folder or checkpoint"),
    ("{d}/empty", "{d}/empty: a folder without checkpoint.pt: neither a run folder nor a names file"),
])
def test_a_lone_path_that_is_neither_is_one_line(places, path, message, monkeypatch, capsys):
    code, out, err = run_main(["score", path.format(d=places)], monkeypatch, capsys, stdin="emma\n")
    assert (code, out) == (2, "") and err == f"wavenet-conv score: error: {message.format(d=places)}\n"


def test_is_run_path_reads_no_pipe(places):
    r, w = os.pipe()
    try:
        os.write(w, b"PK\x03\x04")
        assert not is_run_path(f"/dev/fd/{r}") and os.read(r, 4) == b"PK\x03\x04"
    finally:
        os.close(r), os.close(w)


def nats_of(stdout: str) -> list[str]:
    """The nats column of a tsv."""
    return [row.split("\t")[2] for row in stdout.splitlines()[1:]]


def expected_nats(loaded, names) -> list[str]:
    return [repr(v) for v in score_names(loaded.model, names, loaded.vocab).nll.tolist()]


@pytest.mark.parametrize("argv,stdin,model", [
    (["{d}/names.txt"], "", "bundled"),
    ([], "emma\nava\n", "bundled"),
    (["-"], "emma\nava\n", "bundled"),
    (["{d}/run"], "emma\nava\n", "run"),
    (["{d}/model.bin"], "emma\nava\n", "other"),
    (["{d}/run", "{d}/names.txt"], "", "run"),
    (["{d}/run", "-"], "emma\nava\n", "run"),
])
def test_score_uses_the_bundled_model_without_a_run(places, bundled, argv, stdin, model, monkeypatch, capsys):
    argv = ["score", *(a.format(d=places) for a in argv), "--format", "tsv", "--threads", "1"]
    code, out, err = run_main(argv, monkeypatch, capsys, stdin=stdin)
    assert code == 0, err
    loaded = {"bundled": bundled, "run": load_model(places / "run"), "other": load_model(places / "model.bin")}[model]
    assert nats_of(out) == expected_nats(loaded, ["emma", "ava"])


@pytest.mark.parametrize("run", [None, "{d}/run"])
def test_sample_uses_the_bundled_model_without_a_run(places, bundled, run, monkeypatch, capsys):
    argv = ["sample", *([run.format(d=places)] if run else []), "-n", "5", "--seed", "3", "--threads", "1"]
    code, out, err = run_main(argv, monkeypatch, capsys)
    loaded = bundled if run is None else load_model(places / "run")
    drawn = sample_names(loaded.model, 5, loaded.vocab, generator=torch.Generator().manual_seed(3))
    assert code == 0 and out == sample_lines(drawn, [None] * 5, MAX_LEN), err


@pytest.mark.slow  # a Ray cluster
def test_ray_without_a_run_uses_the_bundled_model(ray_cluster, places, bundled, tmp_path, monkeypatch, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    code, _, err = run_main(["score", places / "names.txt", "--engine", "ray", "--output", tmp_path / "out"],
                            monkeypatch, capsys)
    assert code == 0, err
    rows = sorted(pq.read_table(tmp_path / "out").to_pylist(), key=lambda row: row["line"])
    assert [repr(row["nats"]) for row in rows] == expected_nats(bundled, ["emma", "ava"])


def test_its_percentiles_are_calibrated_on_held_out_names(bundled, splits):
    """The test split's names that are no training name (a few of them stand in the reference table
    too, as dev names): about 10% of them at or above the 90th percentile, overall and in every length group,
    about 1% at or above the 99th (benchmarks/PERFORMANCE.md)."""
    test = unseen(splits[2], splits)
    p = score_names(bundled.model, test, bundled.vocab, reference=bundled.reference).percentile.numpy()
    groups = bundled.reference.group_of([len(w) for w in test])
    assert 0.08 <= (p >= 90).mean() <= 0.12 and 0.003 <= (p >= 99).mean() <= 0.025
    for g in range(len(bundled.reference.starts)):
        assert 0.06 <= (p[groups == g] >= 90).mean() <= 0.14, f"length group {g}"  # ~300 names a group: 10 +- 4


def random_strings(n: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 11, (n,), generator=g).tolist()
    return ["".join(chr(97 + c) for c in torch.randint(0, 26, (k,), generator=g).tolist()) for k in lengths]


def test_random_strings_at_the_top_have_as_many_percentiles_as_scores(bundled):
    """Past the table's 95th a group's percentile is a fitted tail: strings far past every reference
    name still rank (1.0's table gave 82% of random strings exactly 100.0, 15 values among 1,870)."""
    r = score_names(bundled.model, random_strings(3000), bundled.vocab, reference=bundled.reference)
    top = r.percentile >= 99
    stat = (r.nll / r.n_targets)[top]
    assert top.float().mean() > 0.8 and (r.percentile < 100).all()
    assert len(set(r.percentile[top].tolist())) >= 0.9 * len(set(stat.tolist()))


GIBBERISH = ["xqzzyv", "bcdfghk", "qqqqqq", "zxcvbnm", "asdfgh", "qwerty", "qwertyuiop", "asdfghjkl", "jjjjjj", "hjkl"]


def test_strings_nobody_calls_a_name_land_above_the_95th_percentile(bundled):
    r = score_names(bundled.model, GIBBERISH + ["emma", "olivia"], bundled.vocab, reference=bundled.reference)
    assert (r.percentile[:-2] > 95).all() and (r.percentile[-2:] < 5).all(), r.percentile.tolist()


def test_real_names_as_written_sit_below_the_95th_and_junk_at_the_top(monkeypatch, capsys):
    """The issue's check: names of six countries as their owners write them, and three strings nobody
    calls a name, piped to ``score``: every row has a percentile."""
    names = ["José", "Łukasz", "Svetlana", "Ελένη", "Ngozi", "Kyoko", "xqzzyv", "zxcvbnm", "qqqqqq"]
    code, out, err = run_main(["score", "--format", "tsv", "--threads", "1"], monkeypatch, capsys,
                              stdin="\n".join(names) + "\n")
    assert code == 0 and "refused" not in err, err
    rows = [row.split("\t") for row in out.splitlines()[1:]]
    header = out.splitlines()[0].split("\t")
    percentile = [float(r[header.index("percentile")]) for r in rows]
    assert [r[header.index("name")] for r in rows] == names
    assert all(p < 95 for p in percentile[:6]) and all(p >= 99 for p in percentile[6:]), percentile
