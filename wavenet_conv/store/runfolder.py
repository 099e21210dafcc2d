"""The run folder: one training at a time in it, and never a run overwritten by mistake.

``RunFolder(path, own_run, force).claim()`` runs before the model is built, so that every problem
with the folder shows before the first step:

* it creates the folder and the lock file ``train.lock`` in it (JSON: pid, host, start time), which
  also proves the folder can be written. A second training on the folder refuses at once. A lock
  whose process is gone (on this host: its PID no longer runs, or now runs another process) is
  stale: it is taken over, with a note on stderr. A lock from another host cannot be checked: it is
  refused, naming the host and PID (delete ``train.lock`` once that training is gone).
* a new run (``own_run`` False) needs a new or empty folder: one that holds a run (``checkpoint.pt``)
  or other files is refused, unless ``force``, which removes the earlier run's own files
  (``checkpoint.pt``, ``metrics.json``, ``loss.png``, a recipe's ``recipe.json``) so that two runs
  never mix; other files stay (a recipe's teachers' folders too: see ``teachers``).
* a claim is made once: a folder already held (a recipe's, claimed for its teachers and then its
  student) stays held by the same ``RunFolder``, which ``train`` then does not release.
* it removes the temporary files of checkpoint writes that were killed (``.checkpoint.pt.tmp*``).

``release()`` removes the lock (and the folders the claim created, when nothing was written in
it); ``train`` calls it on every way out: the end, an error, Ctrl-C. Only SIGKILL (or a crash of the
interpreter) leaves the lock behind, and the next claim finds it stale.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from .checkpoint import CHECKPOINT_NAME
from ..errors import RunFolderError

LOCK_NAME = "train.lock"
PLAN_NAME = "recipe.json"  # a recipe with teachers: its plan (``teachers.py``), beside its teachers' folders
RUN_FILES = (CHECKPOINT_NAME, "metrics.json", "loss.png", PLAN_NAME)  # what a run writes in its folder
LEFTOVER = f".{CHECKPOINT_NAME}.tmp"  # the prefix of Checkpoint.save's temporary files


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot, from /proc), None where unknown: with the
    PID it tells a live lock holder from a new process that reuses a dead holder's PID."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[19])  # field 22, starttime
    except (OSError, ValueError, IndexError):
        return None


def holder_alive(holder: dict) -> bool:
    """Whether the training that wrote the lock ``holder`` may still run (True where it cannot be told)."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or os.name == "nt":
        return True  # another host's process (or no way to check): assume it runs
    if pid != os.getpid():
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, under another user
    start = holder.get("process_start")
    return start is None or process_start(pid) in (None, start)


def read_lock(path: Path) -> dict | None:
    """The lock's contents; None when it cannot be read or parsed (a holder killed while writing it)."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


@contextmanager
def folder_mutex(path: Path):
    """An exclusive ``flock`` on the folder while the lock is checked and written, so that two trainings
    starting together on this host cannot both take over the same stale lock (nothing where the
    platform has no ``flock``)."""
    try:
        import fcntl
        fd = os.open(path, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # releases the flock


class RunFolder:
    """A run folder to claim for one training (see the module's docstring)."""

    def __init__(self, path: str | os.PathLike, own_run: bool = False, force: bool = False, note=None):
        self.path = Path(path)
        self.own_run, self.force = own_run, force
        self.note = note or (lambda message: print(f"note: {message}", file=sys.stderr))
        self.token, self.held, self.created = None, False, []

    @property
    def lock(self) -> Path:
        return self.path / LOCK_NAME

    def claim(self) -> "RunFolder":
        """Claim the folder (see the module's docstring); a folder this object holds already stays held."""
        if self.held:
            return self
        # the folders this claim makes (the run folder and its missing parents), deepest first
        self.created = [p for p in (self.path, *self.path.parents) if not p.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise RunFolderError(f"{self.path}: not a folder (a file is in the way)") from None
        except OSError as e:
            raise RunFolderError(f"{self.path}: cannot create the run folder ({e.strerror})") from None
        try:
            with folder_mutex(self.path):
                self._take_lock()
        except OSError as e:
            self._remove_if_created()
            raise RunFolderError(f"{self.path}: cannot write in the run folder ({e.strerror})") from None
        try:
            self._check_contents()
        except BaseException:
            self.release()
            raise
        return self

    def _take_lock(self) -> None:
        try:
            fd = os.open(self.lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = read_lock(self.lock)
            if holder is not None and holder_alive(holder):
                raise RunFolderError(
                    f"{self.path}: another training holds it (pid {holder.get('pid')} on {holder.get('host')}, "
                    f"since {holder.get('started')}; its lock is {LOCK_NAME}): wait for it to end, or train "
                    "into another folder (out=...)") from None
            who = "an unreadable lock" if holder is None else f"the lock of pid {holder.get('pid')} (that process is gone)"
            self.note(f"{self.path}: taking over {who}, left by a training that did not end cleanly")
            fd = os.open(self.lock, os.O_WRONLY | os.O_TRUNC)
        self.token = uuid.uuid4().hex
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "process_start": process_start(os.getpid()), "token": self.token}
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(holder) + "\n")
        except OSError:  # a full disk: leave no empty lock behind
            self.lock.unlink()
            raise
        self.held = True

    def _check_contents(self) -> None:
        """Under the lock: a new run's folder is empty, or ``force`` clears the earlier run's files."""
        names = sorted(p.name for p in self.path.iterdir())
        for name in names:
            if name.startswith(LEFTOVER):  # a killed checkpoint write: nobody else writes here now
                (self.path / name).unlink()
        if self.own_run:
            return
        others = [n for n in names if n != LOCK_NAME and not n.startswith(LEFTOVER)]
        if not self.force:
            held = next((n for n in (CHECKPOINT_NAME, PLAN_NAME) if n in others), None)
            if held:
                raise RunFolderError(f"{self.path} holds a run (its {held}): resume it (resume=...), replace "
                                     "it (force=True) or train into another folder (out=...)")
            if others:
                shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
                raise RunFolderError(f"{self.path} is not empty ({len(others)} entries: {shown}) and holds no run: "
                                     "pass force=True to write into it anyway, or another folder (out=...)")
        for name in RUN_FILES:
            if name in others:
                (self.path / name).unlink()

    def release(self) -> None:
        """Remove the lock, if it is still this claim's; and the folder, if the claim made it and it is empty."""
        if not self.held:
            return
        self.held = False
        holder = read_lock(self.lock)
        if holder is not None and holder.get("token") == self.token:
            try:
                self.lock.unlink()
            except OSError:
                pass
        self._remove_if_created()

    def _remove_if_created(self) -> None:
        """Remove the folders the claim made, deepest first, as long as they are empty."""
        for folder in self.created:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                return
