"""The run folder: never a run overwritten by mistake, one training at a time (the lock), and every
problem with it found before the first step."""

import builtins
import errno
import functools
import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch

import wavenet_conv.store.runfolder as runfolder_module
from wavenet_conv import CheckpointError, ModelConfig, RunFolderError, TrainingDiverged, TreeModel, train
from wavenet_conv.training.minibatches import NameBatches
from wavenet_conv.store.checkpoint import Checkpoint
from wavenet_conv.store.runfolder import LOCK_NAME, RunFolder, process_start

from helpers import SMALL, SMALL_ARGS, interrupt_at, open_fds, run_main, train_module
from helpers import quick as recipe_quick

ARGS = [*SMALL_ARGS, "--steps", 20, "--samples", 0, "--quiet"]
quick = functools.partial(recipe_quick, steps=20, checkpoint_every=10)


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_train_refuses_a_folder_that_holds_a_run(finished_run, small_names, monkeypatch, capsys):
    before = snapshot(finished_run)
    code, _, err = run_main(["train", "--data", small_names, "--out", finished_run, *ARGS, "--steps", 3], monkeypatch, capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "holds a run" in err and "--resume" in err and "--force" in err and "--out" in err
    assert snapshot(finished_run) == before  # checkpoint, metrics and plot untouched
    with pytest.raises(RunFolderError, match=r"holds a run .*: resume it \(resume=\.\.\.\), replace it \(force=True\) "
                                             r"or train into another folder \(out=\.\.\.\)$") as e:
        train(SMALL, quick(), data=small_names, out=finished_run, log=None)
    assert "--" not in str(e.value)  # the library speaks Python: the command line says its options


def test_force_replaces_the_run(finished_run, small_names, monkeypatch, capsys):
    (finished_run / "notes.txt").write_text("mine")
    code, _, err = run_main(["train", "--data", small_names, "--out", finished_run, "--force", *ARGS, "--steps", 12],
                            monkeypatch, capsys)
    assert code == 0, err
    assert Checkpoint.load(finished_run).step == 12 and json.loads((finished_run / "metrics.json").read_text())["steps"] == 12
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
    with pytest.raises(RunFolderError, match=r"not empty .*: pass force=True to write into it anyway, or another folder "
                                             r"\(out=\.\.\.\)$"):
        train(SMALL, quick(), data=small_names, out=folder, log=None)
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
    assert not (folder / LOCK_NAME).exists() and Checkpoint.load(folder).step == 5


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
    assert Checkpoint.load(tmp_path / "cut").step == 13 and not (tmp_path / "cut" / LOCK_NAME).exists()
    monkeypatch.undo()
    interrupt_at(monkeypatch, 15, times=2)  # the second Ctrl-C raises mid-step
    with pytest.raises(KeyboardInterrupt):
        train(resume=tmp_path / "cut", log=None)
    assert Checkpoint.load(tmp_path / "cut").step == 13 and not (tmp_path / "cut" / LOCK_NAME).exists()
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


# ----------------------------------------------------------------------------- every way out of a claim


@pytest.mark.parametrize("then", ["force", "emptied"])
@pytest.mark.parametrize("contents", ["a run", "other files"])
def test_a_claim_refused_by_the_folder_check_leaves_no_lock(contents, then, finished_run, small_names, tmp_path):
    """The claim takes the lock before it looks at the folder: when the check refuses the folder, the
    claim lets the lock go (not only ``train``'s cleanup), and leaves no file descriptor open. A later
    training into the folder (with force, or once it is emptied) is then not refused as 'another
    training holds it'."""
    folder = finished_run if contents == "a run" else tmp_path / "mine"
    if contents == "other files":
        folder.mkdir()
        (folder / "notes.txt").write_text("mine")
    before, fds = snapshot(folder), open_fds()
    with pytest.raises(RunFolderError, match="holds a run" if contents == "a run" else "not empty"):
        RunFolder(folder).claim()
    assert snapshot(folder) == before and open_fds() == fds  # no lock left, nothing open
    if then == "emptied":
        for p in folder.iterdir():
            p.unlink()
    train(SMALL, quick(steps=5), data=small_names, out=folder, force=then == "force", log=None)
    assert Checkpoint.load(folder).step == 5 and LOCK_NAME not in os.listdir(folder)


def full_disk(monkeypatch):
    """``os.fdopen`` (the lock's writer) as on a full disk: the file opens, its write fails."""
    real = os.fdopen

    class FullDisk:
        def __init__(self, fd, *args, **kwargs):
            self.file = real(fd, *args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runfolder_module.os, "fdopen", FullDisk)


@pytest.mark.parametrize("folder_was", ["new", "there"])
def test_a_lock_that_cannot_be_written_leaves_nothing_behind(folder_was, tmp_path, monkeypatch):
    """The lock file is created, then its write fails (a full disk): the claim is refused in one line,
    the empty lock file goes, and so does the folder when the claim made it; no descriptor stays open."""
    folder = tmp_path / "run"
    if folder_was == "there":
        folder.mkdir()
    fds = open_fds()
    full_disk(monkeypatch)
    with pytest.raises(RunFolderError, match=r"cannot write in the run folder \(No space left on device\)"):
        RunFolder(folder).claim()
    monkeypatch.undo()
    assert open_fds() == fds
    if folder_was == "new":
        assert not folder.exists()
    else:
        assert os.listdir(folder) == []


@pytest.mark.parametrize("failure", ["the lock's write", "the first steps"])
def test_a_claim_that_fails_removes_every_folder_it_made(failure, small_names, tmp_path, monkeypatch):
    """``--out new/run`` makes new/ and new/run/: when the claim fails, or the run fails before it writes
    anything, both go again, not only the last one."""
    with pytest.raises((RunFolderError, TrainingDiverged)):
        if failure == "the lock's write":
            full_disk(monkeypatch)
            RunFolder(tmp_path / "new" / "run").claim()
        else:
            train(SMALL, quick(lr=1e6, checkpoint_every=0), data=small_names, out=tmp_path / "new" / "run", log=None)
    assert os.listdir(tmp_path) == []


def test_release_leaves_a_lock_that_is_no_longer_its_own(tmp_path):
    """A claim whose lock was taken over meanwhile (its process looked gone) releases nothing: the new
    holder's lock stays, and so does the folder."""
    held = RunFolder(tmp_path / "run").claim()
    lock = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
    (tmp_path / "run" / LOCK_NAME).write_text(json.dumps({**lock, "token": "another training's"}))
    held.release()
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["token"] == "another training's"


def failing_make_model(vocab_size):
    raise RuntimeError("make_model failed")


# what fails once the folder is claimed: (train's arguments, the error's message)
NEW_RUN_FAILURES = {
    "make_model raises": (dict(make_model=failing_make_model), "make_model failed"),
    "a model the form cannot train": (dict(make_model=lambda V: TreeModel(ModelConfig(vocab_size=V))), "ConvModel"),
}


@pytest.mark.parametrize("folder_was", ["new", "there"])
@pytest.mark.parametrize("failure", NEW_RUN_FAILURES)
def test_a_new_run_that_fails_after_the_claim_lets_the_folder_go(failure, folder_was, small_names, tmp_path):
    """Building the model comes after the claim: when it fails, the lock goes, and the folder too
    when the claim made it."""
    folder = tmp_path / "run"
    if folder_was == "there":
        folder.mkdir()
    kwargs, message = NEW_RUN_FAILURES[failure]
    with pytest.raises(Exception, match=message):
        train(config=quick(steps=5), data=small_names, out=folder, log=None, **kwargs)
    assert (not folder.exists()) if folder_was == "new" else os.listdir(folder) == []


def spoil(ckpt: Checkpoint, part: str) -> None:
    """A checkpoint that reads, and fails when the run is rebuilt from it (after the claim)."""
    if part == "weights":  # CheckpointError: the weights do not fit the model config
        del ckpt.state_dict[next(iter(ckpt.state_dict))]
    elif part == "optimizer":  # the optimizer's state does not fit the model's parameters
        ckpt.optimizer["param_groups"] = ckpt.optimizer["param_groups"][:1]
    else:  # torch refuses the RNG state
        ckpt.rng["torch"] = torch.zeros(3, dtype=torch.uint8)


@pytest.mark.parametrize("part", ["weights", "optimizer", "rng"])
def test_a_resume_that_fails_after_the_claim_leaves_the_run_as_it_was(part, stopped_run):
    """The checkpoint is read before the claim, the model, optimizer and RNG are rebuilt from it after:
    when that fails, the lock goes and the run's folder is left as it was."""
    ckpt = Checkpoint.load(stopped_run)
    spoil(ckpt, part)
    ckpt.save(stopped_run / "checkpoint.pt")
    before = snapshot(stopped_run)
    with pytest.raises(CheckpointError):  # one line on the command line, not a traceback
        train(resume=stopped_run, log=None)
    assert snapshot(stopped_run) == before and sorted(before) == ["checkpoint.pt"]  # no lock, the checkpoint untouched



def test_force_clears_every_file_a_run_writes_and_nothing_else(tmp_path):
    """A recipe's recipe.json too; a teacher's folder and the user's other files stay."""
    for name in ("checkpoint.pt", "metrics.json", "loss.png", "recipe.json", "notes.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "teacher-0").mkdir()
    folder = RunFolder(tmp_path, force=True)
    folder.claim()
    try:
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LOCK_NAME, "notes.txt", "teacher-0"])
    finally:
        folder.release()
