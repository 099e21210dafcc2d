"""The suite's fixtures: one torch thread, the data files, a small conv model, and runs trained once
per session (tests that change a run get their own copy). Helpers are in helpers.py."""

import contextlib
import io
import os

import pytest
import torch

from helpers import (BUNDLED_NAMES, LECTURE_NAMES, ROOT, SMALL, SMALL_ARGS, VOCAB, copy_run, make_pair, randomize_,
                     time_limit, varied_names)
from wavenet_conv import ConvModel, ModelConfig, load_model, load_names, score_names, train
from wavenet_conv.store.checkpoint import Checkpoint
from wavenet_conv.cli.main import main
from wavenet_conv.models.config import recipe


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One torch thread, "auto" included (OMP_NUM_THREADS caps it, here and in the subprocesses): on a
    small shared CPU more threads than free cores slow these tiny models down by an order of magnitude,
    and float32 scores differ in their last bit from one thread count to another."""
    n, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(n)
    if omp is None:
        del os.environ["OMP_NUM_THREADS"]
    else:
        os.environ["OMP_NUM_THREADS"] = omp


@pytest.fixture(scope="session")
def small_names(tmp_path_factory):
    """1,000 names of the bundled file: a few hundred steps train in a second or two."""
    path = tmp_path_factory.mktemp("data") / "small.txt"
    path.write_text("\n".join(load_names(BUNDLED_NAMES)[::32][:1000]) + "\n")
    return path


@pytest.fixture
def lecture_words():
    if not os.path.exists(LECTURE_NAMES):
        pytest.skip(f"the lecture's names file is absent ({LECTURE_NAMES})")
    return load_names(LECTURE_NAMES)


@pytest.fixture
def bundled_words():
    return load_names(BUNDLED_NAMES)


@pytest.fixture
def conv():
    """A small ConvModel (2 layers) with random weights and statistics, float64, in eval mode."""
    return make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=2), torch.float64, seed=1)[1]


@pytest.fixture(scope="session")
def trained_run(small_names, tmp_path_factory):
    """A finished run, trained once by ``wavenet-conv train`` (150 steps, 5 samples at the end):
    (its folder, what the command printed). Read it; a test that changes a run takes ``finished_run``."""
    out = tmp_path_factory.mktemp("runs") / "run"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([str(a) for a in ["train", "--data", small_names, "--out", out, "--steps", 150, "--samples", 5,
                                      *SMALL_ARGS]])
    assert code == 0, stderr.getvalue()
    return out, stdout.getvalue()


@pytest.fixture
def finished_run(trained_run, tmp_path):
    """This test's own copy of the finished run."""
    return copy_run(trained_run[0], tmp_path / "good")


@pytest.fixture
def older_run(finished_run, small_names, tmp_path):
    """This test's copy of the finished run as a release before percentiles saved it (no ``reference``
    in its checkpoint), its names file a copy of its own, names.txt beside it, that a test may move or
    change: (the run folder, the names file)."""
    data = tmp_path / "names.txt"
    data.write_bytes(small_names.read_bytes())
    path = finished_run / "checkpoint.pt"
    d = torch.load(path, weights_only=True)
    del d["reference"]
    d["data"]["path"] = str(data)
    torch.save(d, path)
    return finished_run, data


@pytest.fixture(scope="session")
def stopped_run_once(small_names, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "stopped"
    train(SMALL, recipe("default", steps=80, batch_size=32, seed=5, checkpoint_every=0, keep_best=False), data=small_names, out=out,
          stop_at=30, log=None)
    return out


@pytest.fixture
def stopped_run(stopped_run_once, tmp_path):
    """This test's own copy of a run of 80 steps (seed 5, no periodic checkpoints or val reports) stopped at step 30."""
    return copy_run(stopped_run_once, tmp_path / "run")


@pytest.fixture(scope="session")
def lecture_size_run(tmp_path_factory):
    """A run folder holding a ConvModel of the lecture's size (the default config: n_embd 24, n_hidden
    128, 3 layers; float32; a-z) with random weights and BatchNorm statistics."""
    torch.manual_seed(3)
    model = randomize_(ConvModel(ModelConfig()), seed=3).eval()
    path = tmp_path_factory.mktemp("runs") / "lecture-size"
    Checkpoint.of_model(model, VOCAB, step=0).save(path / "checkpoint.pt")
    return path


@pytest.fixture(scope="session")
def varied_scores(lecture_size_run):
    """``varied_names()`` (3,000) under ``lecture_size_run``'s model, from one ``score_names`` call at
    one thread: (the model, the names, {name: nll}, {name: its per-target nlls as a tuple})."""
    model = load_model(lecture_size_run).model
    names = varied_names()
    r = score_names(model, names, VOCAB, per_char=True)
    return model, names, dict(zip(names, r.nll.tolist())), {w: tuple(r.chars(i).tolist()) for i, w in enumerate(names)}


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 3 logical CPUs for the module (two actors of one CPU and a reader and a
    writer, or one actor of two), no dashboard; its workers import this checkout."""
    ray = pytest.importorskip("ray")
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([ROOT, os.path.join(ROOT, "tests"), *filter(None, [path])])
    with time_limit(120):
        ray.init(address="local", num_cpus=3, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()
        if path is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = path
