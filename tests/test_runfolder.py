"""The run folder: never a run overwritten by mistake, one training at a time (the lock), and every
problem with it found before the first step."""

import builtins
import importlib
import json
import math
import os
import socket
import subprocess
import sys

import pytest

from wavenet_conv import ModelConfig, RunFolderError, TrainingDiverged, train
from wavenet_conv.checkpoint import load_checkpoint
from wavenet_conv.runfolder import LOCK_NAME, RunFolder, process_start
from wavenet_conv.batches import NameBatches
from wavenet_conv.config import recipe

from conftest import interrupt_at, run_main

train_module = importlib.import_module("wavenet_conv.train")  # the module; wavenet_conv.train is the function
SMALL = ModelConfig(n_embd=8, n_hidden=32)
ARGS = ["--n-embd", 8, "--n-hidden", 32, "--batch-size", 32, "--steps", 20, "--samples", 0, "--quiet"]


def quick(**kw):
    return recipe("default", **{"steps": 20, "batch_size": 32, "checkpoint_every": 10, **kw})


@pytest.fixture
def finished_run(small_names, tmp_path):
    train(SMALL, quick(), data=small_names, out=tmp_path / "good", log=None)
    return tmp_path / "good"


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_train_refuses_a_folder_that_holds_a_run(finished_run, small_names, monkeypatch, capsys):
    before = snapshot(finished_run)
    code, _, err = run_main(["train", "--data", small_names, "--out", finished_run, *ARGS, "--steps", 3], monkeypatch, capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "holds a run" in err and "--resume" in err and "--force" in err and "--out" in err
    assert snapshot(finished_run) == before  # checkpoint, metrics and plot untouched
    with pytest.raises(RunFolderError, match="holds a run"):
        train(SMALL, quick(), data=small_names, out=finished_run, log=None)


def test_force_replaces_the_run(finished_run, small_names, monkeypatch, capsys):
    (finished_run / "notes.txt").write_text("mine")
    code, _, err = run_main(["train", "--data", small_names, "--out", finished_run, "--force", *ARGS, "--steps", 12],
                            monkeypatch, capsys)
    assert code == 0, err
    assert load_checkpoint(finished_run)["step"] == 12 and json.loads((finished_run / "metrics.json").read_text())["steps"] == 12
    assert (finished_run / "notes.txt").read_text() == "mine" and not (finished_run / LOCK_NAME).exists()


def test_force_never_leaves_two_runs_mixed(finished_run, small_names, monkeypatch):
    """The earlier run's files go as the new run claims the folder: a new run that stops before its
    first checkpoint leaves no stale checkpoint or metrics behind that would pass for its own."""
    real = train_module.batch_loss
    monkeypatch.setattr(train_module, "batch_loss", lambda *a: real(*a) * math.nan)
    with pytest.raises(TrainingDiverged):
        train(SMALL, quick(), data=small_names, out=finished_run, force=True, log=None, progress=False)
    assert os.listdir(finished_run) == []


def test_train_refuses_a_folder_with_other_files_unless_forced(small_names, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "metrics.json").write_text("{\"mine\": 1}")
    code, _, err = run_main(["train", "--data", small_names, "--out", folder, *ARGS], monkeypatch, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "not empty" in err and "--force" in err, err
    assert snapshot(folder) == {"metrics.json": b"{\"mine\": 1}"}
    assert run_main(["train", "--data", small_names, "--out", folder, "--force", *ARGS], monkeypatch, capsys)[0] == 0
    assert json.loads((folder / "metrics.json").read_text())["steps"] == 20


def test_an_empty_or_new_folder_is_fine(small_names, tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "new" / "deeper"):
        train(SMALL, quick(steps=5), data=small_names, out=folder, log=None)
        assert sorted(os.listdir(folder)) == ["checkpoint.pt", "loss.png", "metrics.json"]  # the lock is gone


def test_the_lock_is_held_from_before_the_first_step(small_names, tmp_path, monkeypatch):
    seen = []
    fetch = NameBatches.__call__

    def fetch_and_look(self, step):
        if step == 0:
            seen.append(json.loads((tmp_path / "run" / LOCK_NAME).read_text()))
        return fetch(self, step)

    monkeypatch.setattr(NameBatches, "__call__", fetch_and_look)
    train(SMALL, quick(steps=3), data=small_names, out=tmp_path / "run", log=None)
    assert seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_a_second_training_on_the_folder_refuses_at_once(small_names, tmp_path, monkeypatch, capsys):
    held = RunFolder(tmp_path / "run").claim()  # a training in progress (this process)
    try:
        code, _, err = run_main(["train", "--data", small_names, "--out", tmp_path / "run", *ARGS], monkeypatch, capsys)
        assert code == 2 and len(err.splitlines()) == 1 and "another training holds it" in err, err
        assert f"pid {os.getpid()}" in err and os.listdir(tmp_path / "run") == [LOCK_NAME]
    finally:
        held.release()
    assert not (tmp_path / "run").exists()  # the claim made it, and nothing was written


def test_resume_takes_the_lock(small_names, tmp_path):
    train(SMALL, quick(), data=small_names, out=tmp_path / "run", stop_at=10, log=None)
    held = RunFolder(tmp_path / "run", own_run=True).claim()
    with pytest.raises(RunFolderError, match="another training holds it"):
        train(resume=tmp_path / "run", log=None)
    held.release()
    assert train(resume=tmp_path / "run", log=None).metrics["steps"] == 20


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("holder", ["gone", "reused", "unreadable"])
def test_a_stale_lock_is_taken_over_with_a_note(holder, small_names, tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    lock = {"gone": {"pid": dead_pid(), "host": socket.gethostname()},
            # this process's PID, but a process that started at another time: the PID was reused
            "reused": {"pid": os.getpid(), "host": socket.gethostname(), "process_start": -1},
            "unreadable": None}[holder]
    if holder == "reused" and process_start(os.getpid()) is None:
        pytest.skip("no /proc: process start times are unknown here")
    (folder / LOCK_NAME).write_text("" if lock is None else json.dumps(lock))
    train(SMALL, quick(steps=5), data=small_names, out=folder, log=None)
    err = capsys.readouterr().err
    assert "taking over" in err and len([l for l in err.splitlines() if "taking over" in l]) == 1, err
    assert not (folder / LOCK_NAME).exists() and load_checkpoint(folder)["step"] == 5


def test_a_lock_from_another_host_is_refused(small_names, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 1234, "host": "elsewhere.example", "started": "then"}))
    with pytest.raises(RunFolderError, match="pid 1234 on elsewhere.example"):
        train(SMALL, quick(steps=5), data=small_names, out=folder, log=None)
    assert os.listdir(folder) == [LOCK_NAME]


def test_the_lock_is_released_on_errors_and_ctrl_c(small_names, tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 12)
    with pytest.raises(KeyboardInterrupt):
        train(SMALL, quick(), data=small_names, out=tmp_path / "cut", log=None)
    assert load_checkpoint(tmp_path / "cut")["step"] == 13 and not (tmp_path / "cut" / LOCK_NAME).exists()
    monkeypatch.undo()
    interrupt_at(monkeypatch, 15, times=2)  # the second Ctrl-C raises mid-step
    with pytest.raises(KeyboardInterrupt):
        train(resume=tmp_path / "cut", log=None)
    assert load_checkpoint(tmp_path / "cut")["step"] == 13 and not (tmp_path / "cut" / LOCK_NAME).exists()
    monkeypatch.undo()

    def broken(self, step):
        raise RuntimeError("a bug mid-run")

    monkeypatch.setattr(NameBatches, "__call__", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        train(resume=tmp_path / "cut", log=None)
    assert sorted(os.listdir(tmp_path / "cut")) == ["checkpoint.pt"]


@pytest.mark.parametrize("how", ["read-only", "simulated"])
def test_an_unwritable_folder_is_refused_before_the_first_step(how, small_names, tmp_path, monkeypatch, capsys):
    """A read-only ``--out`` (simulated where the tests run as root, who may write anywhere): refused
    at the claim, before the model is built, not at the first checkpoint."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if how == "read-only":
        folder.chmod(0o555)
        try:
            (folder / "probe").touch()
        except PermissionError:
            pass
        else:
            (folder / "probe").unlink()
            pytest.skip("this user may write into a read-only folder (root)")
    else:
        real_open, real_os_open = builtins.open, os.open

        def refuse(path):
            if str(path).startswith(str(folder)):
                raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(builtins, "open", lambda path, *a, **k: refuse(path) or real_open(path, *a, **k))
        monkeypatch.setattr(os, "open", lambda path, *a, **k: refuse(path) or real_os_open(path, *a, **k))
    steps = []
    fetch = NameBatches.__call__
    monkeypatch.setattr(NameBatches, "__call__", lambda self, s: steps.append(s) or fetch(self, s))
    try:
        code, _, err = run_main(["train", "--data", small_names, "--out", folder, *ARGS], monkeypatch, capsys)
    finally:
        folder.chmod(0o755)
    assert code == 2 and len(err.splitlines()) == 1 and "cannot write in the run folder" in err, err
    assert "Permission denied" in err and steps == []
