"""Faults and load: SIGKILL at random moments, a disk that fills up mid-checkpoint, and a fuzz of the
names reader and the scorer. Nothing is lost, and nothing passes silently."""

import errno
import io
import os
import random
import signal
import string
import time

import pytest
import torch

import wavenet_conv.store.checkpoint as checkpoint_module
from wavenet_conv import (ConvModel, InputError, ModelConfig, load_names, parse_names, recipe, score_names,
                          train)
from wavenet_conv.store.checkpoint import Checkpoint
from wavenet_conv.store.loaded import load_model
from wavenet_conv.store.runfolder import LOCK_NAME

from helpers import VOCAB, cli, interrupt_at, run_main, without_notes

TINY = ["--n-embd", 4, "--n-hidden", 8, "--batch-size", 8, "--threads", 1, "--samples", 0, "--quiet"]
STEPS = 120
KILLS = 4
# the command with each checkpoint write held open 50 ms longer (before its fsync), so that a kill
# aimed at a write lands inside it, however fast the disk
SLOW_WRITES = ("import os, sys, time; fsync = os.fsync; os.fsync = lambda fd: (time.sleep(0.05), fsync(fd))[1]; "
               "from wavenet_conv.cli.main import main; sys.exit(main(sys.argv[1:]))")


def leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".checkpoint.pt.tmp")]


def wait_for(condition, proc, timeout=60.0):
    """Poll ``condition()`` every millisecond while ``proc`` runs."""
    t0 = time.monotonic()
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.001)


def wait_for_checkpoints(path, proc, count: int):
    """Until the checkpoint at ``path`` has been replaced ``count`` times."""
    seen = [stamp(path)]

    def replaced():
        now = stamp(path)
        if now not in (None, seen[-1]):
            seen.append(now)
        return len(seen) > count

    wait_for(replaced, proc)


def stamp(path):
    try:
        st = os.stat(path)
        return st.st_ino, st.st_mtime_ns
    except FileNotFoundError:
        return None


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_resume_is_exact(small_names, tmp_path):
    """Subprocesses: SIGKILL ends a real process, and nothing in it can catch the signal. A checkpoint
    every step, killed KILLS times at seeded random moments -- inside a checkpoint write (kills 0 and
    3), anywhere in a step (1), anywhere from startup on (2) -- each after a few checkpoints: after
    each kill the folder holds a checkpoint that loads, the next resume takes over the stale lock,
    and the run ends bit for bit where an uninterrupted one ends."""
    rng = random.Random(20261123)
    out = tmp_path / "run"
    ckpt = out / "checkpoint.pt"
    reference = train(ModelConfig(n_embd=4, n_hidden=8), recipe("default", steps=STEPS, batch_size=8, checkpoint_every=0),
                      data=small_names, log=None, progress=False).model.state_dict()
    last_step, mid_write = 0, 0
    for kill in range(KILLS):
        before = stamp(ckpt)
        args = ["--data", small_names, "--out", out, "--steps", STEPS, "--checkpoint-every", 1, *TINY] if kill == 0 \
            else ["--resume", out, *TINY[-5:]]
        proc = cli("train", *args, popen=True, python=("-c", SLOW_WRITES))
        if kill == 2:  # while starting up, claiming the folder or training
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            wait_for_checkpoints(ckpt, proc, rng.randint(1, 3))
            if kill in (0, 3):  # inside a write
                wait_for(lambda: leftovers(out), proc)
            time.sleep(rng.uniform(0.0, 0.03 if kill == 1 else 0.02))
        assert proc.poll() is None, "the run ended before it was killed: make it longer"
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        mid_write += bool(leftovers(out))  # killed inside a checkpoint write
        step = Checkpoint.load(out).step
        load_model(out)
        assert last_step <= step < STEPS and (kill == 0 or "taking over" in err or stamp(ckpt) == before), err
        last_step = step
    assert mid_write >= 2 and (out / LOCK_NAME).exists()  # the lock: left by the last kill
    done = cli("train", "--resume", out, "--checkpoint-every", 0, *TINY[-5:])
    assert done.returncode == 0 and "taking over" in done.stderr, done.stderr
    final = Checkpoint.load(out)
    assert final.step == STEPS and final.state_dict.keys() == reference.keys()
    assert all(torch.equal(final.state_dict[k], reference[k]) for k in reference)
    assert not leftovers(out) and not (out / LOCK_NAME).exists()
    print(f"{KILLS} kills survived ({mid_write} inside a checkpoint write), last at step {last_step} of {STEPS}")


@pytest.mark.slow
def test_ctrl_c_to_the_real_process_saves_lets_the_lock_go_and_exits_130(small_names, tmp_path):
    """A subprocess: a real SIGINT to the command, as a terminal's Ctrl-C sends it (the in-process
    tests raise it in the test's own process). The step in flight finishes, the checkpoint is saved,
    the lock goes, and the process exits 130 with one line on stderr."""
    out = tmp_path / "run"
    proc = cli("train", "--data", small_names, "--out", out, "--steps", 1_000_000, "--checkpoint-every", 5, *TINY,
               popen=True)
    try:
        wait_for(lambda: (out / "checkpoint.pt").exists(), proc)  # training is under way
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and without_notes(stderr) == "wavenet-conv: interrupted\n", stderr
    step = Checkpoint.load(out).step
    assert f"interrupted at step {step}; checkpoint saved" in stdout and 5 <= step < 1_000_000
    assert sorted(os.listdir(out)) == ["checkpoint.pt"]


class DiskFull:
    """``torch.save`` in the checkpoint writer: the ``nth`` call writes half the bytes, then fails."""

    def __init__(self, nth: int, fault: int = errno.ENOSPC):
        self.nth, self.fault, self.calls = nth, fault, 0
        self.real = checkpoint_module.torch.save

    def __call__(self, obj, f):
        self.calls += 1
        if self.calls != self.nth:
            return self.real(obj, f)
        buf = io.BytesIO()
        self.real(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(self.fault, os.strerror(self.fault))


FAULTS = [  # (which save fails, how, the checkpoint that stays)
    (1, "write", None), (2, "write", 10), (3, "fsync", 20), (4, "replace", 30),  # periodic, then the one at the end
    (2, "interrupt", 10),  # the save after a Ctrl-C
]


@pytest.mark.parametrize("nth,how,stays", FAULTS, ids=[f"{how}-{nth}" for nth, how, _ in FAULTS])
def test_a_failed_checkpoint_write_keeps_the_previous_one(nth, how, stays, small_names, tmp_path, monkeypatch):
    out = tmp_path / "run"
    if how in ("write", "interrupt"):
        monkeypatch.setattr(checkpoint_module.torch, "save", DiskFull(nth))
    else:  # os.fsync or os.replace, as the checkpoint writer calls them
        real, calls = getattr(os, how), []

        def failing(*a):
            calls.append(1)
            if len(calls) == nth:
                raise OSError(errno.EIO if how == "fsync" else errno.ENOSPC, "injected")
            return real(*a)

        monkeypatch.setattr(checkpoint_module.os, how, failing)
    if how == "interrupt":
        interrupt_at(monkeypatch, 14)
    kept = "no checkpoint was saved" if stays is None else f"the checkpoint of step {stays} stays"
    step = 15 if how == "interrupt" else 10 * nth if nth < 4 else 35
    with pytest.raises(OSError, match=rf"could not save the checkpoint of step {step} \(.*\); {kept}"):
        train(ModelConfig(n_embd=4, n_hidden=8), recipe("default", steps=35, batch_size=8, checkpoint_every=10),
              data=small_names, out=out, log=None, progress=False)
    if stays is None:
        assert not out.exists()  # the claim made the folder, and nothing was saved in it
    else:
        assert Checkpoint.load(out).step == stays and sorted(os.listdir(out)) == ["checkpoint.pt"]  # no lock, no temp


def test_a_full_disk_is_one_line_on_the_command_line(small_names, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(checkpoint_module.torch, "save", DiskFull(2))
    code, _, err = run_main(["train", "--data", small_names, "--out", tmp_path / "run", "--steps", 30,
                             "--checkpoint-every", 10, *TINY], monkeypatch, capsys)
    err = without_notes(err)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "No space left on device" in err and "the checkpoint of step 10 stays" in err


# ----------------------------------------------------------------------------- fuzz

N_BYTES, N_TEXTS, N_LISTS = 1500, 1500, 1000
PIECES = [string.ascii_lowercase * 6, "ABCXYZ019", " \t\r\x0b\x0c\x1c\x85\u00a0\u2028\u3000", ".", "\x00\x01\x1b\x7f\x9b",
          "\ufeff\u200b\u200d\u0301", "éøßñİﬁ", "\U0001f600\U000e0001\U0010ffff\uffff"]
SURROGATES = "\ud800\udbff\udc00\udfff"


def random_line(rng, pieces=PIECES) -> str:
    n = rng.choice([0, 1, 2, 5, 8, 12, 20]) if rng.random() < 0.97 else rng.randint(200, 3000)
    clean = rng.random() < 0.5  # half the lines are names the vocabulary covers
    return "".join(rng.choice(pieces[0] if clean or rng.random() < 0.7 else rng.choice(pieces)) for _ in range(n))


def random_text(rng, pieces=PIECES) -> str:
    lines = [random_line(rng, pieces) for _ in range(rng.randint(0, 6))]
    text = rng.choice(["\n", "\r\n"]).join(lines) + rng.choice(["", "\n", "\r\n", "\n\n"])
    return ("\ufeff" if rng.random() < 0.1 else "") + text


def random_bytes(rng) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    text = random_text(rng, PIECES + [SURROGATES])
    if kind == 1:
        return text.encode("utf-8", "surrogatepass")
    if kind == 2:
        return text.encode("latin-1", "replace")
    if kind == 3:
        return text.encode("utf-16", "surrogatepass")
    data = bytearray(text.encode("utf-8", "surrogatepass"))
    for _ in range(rng.randint(1, 3)):  # a few flipped bytes
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def scorable(name: str) -> bool:
    return bool(name) and all(c in VOCAB.chars for c in name)


def expected_names(text: str, bom_stripped: bool):
    """What the reader must return: the lines without whitespace at either end, blank ones left out,
    when every one is a name the vocabulary covers; None when it must refuse; "either" for a leading
    BOM where the reader does not promise to strip it."""
    if text.startswith("\ufeff"):
        if not bom_stripped:
            return "either"
        text = text[1:]
    names = [line.strip() for line in text.split("\n")]
    names = [n for n in names if n]
    return names if names and all(map(scorable, names)) else None


def check_error(e: Exception, where: str, messages: list) -> None:
    assert isinstance(e, InputError), f"{type(e).__name__} for {where}: {e}"
    message = str(e)
    assert message and "\n" not in message and "\r" not in message, repr(message)
    messages.append(message)


def check_read(read, source: str, expected, model, messages: list) -> None:
    """``read()`` returns exactly the expected names (and they all score), or raises an InputError."""
    try:
        names = read()
    except Exception as e:  # noqa: BLE001 -- which kinds is what is tested
        check_error(e, source, messages)
        assert expected is None or expected == "either", f"refused a good input: {e}"
        return
    assert expected is not None, f"accepted a bad input: {names[:3]}"
    assert all(map(scorable, names)), f"returned an unscorable name: {names}"
    if expected != "either":
        assert names == expected
    r = score_names(model, names, VOCAB)
    assert len(r.nll) == len(names) and torch.isfinite(r.nll).all()
    assert r.n_targets.tolist() == [len(n) + 1 for n in names]


def fuzz(tmp_path, surrogates: bool = False):
    """Every case through the reader (bytes in a file, text as from stdin) and the scorer (lists of
    names); returns (cases, the error messages seen, with the file name taken out)."""
    rng = random.Random(1123)
    torch.manual_seed(0)
    model = ConvModel(ModelConfig(n_embd=4, n_hidden=8, n_layers=2)).eval()
    messages, cases = [], 0
    for i in range(N_BYTES if not surrogates else 0):
        data = random_bytes(rng)
        path = tmp_path / f"{i}.txt"  # a new file each time: rewriting one is slow on some file systems
        path.write_bytes(data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            expected = None
        else:
            expected = expected_names(text, bom_stripped=True)
        check_read(lambda: load_names(path, VOCAB), str(path), expected, model, messages)
        messages[-1:] = [m.replace(str(path), "FILE") for m in messages[-1:]]
        cases += 1
    for _ in range(N_TEXTS if not surrogates else 0):
        text = random_text(rng, PIECES + ([SURROGATES] if rng.random() < 0.2 else []))
        check_read(lambda: parse_names(text, "<stdin>", VOCAB), "<stdin>", expected_names(text, False), model, messages)
        cases += 1
    for _ in range(N_LISTS):
        pieces = PIECES + ([SURROGATES] if surrogates else [])
        names = [random_line(rng, pieces) for _ in range(rng.randint(0, 5))]
        try:
            r = score_names(model, names, VOCAB)
        except Exception as e:  # noqa: BLE001
            check_error(e, f"score_names({names[:3]!r})", messages)
            assert not names or not all(map(scorable, names)), f"refused good names: {e}"
        else:
            assert names and all(map(scorable, names)), f"scored an unscorable name: {names}"
            assert len(r.nll) == len(names) and torch.isfinite(r.nll).all()
        cases += 1
    return cases, messages


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    return fuzz(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.slow  # the fuzz itself (the fixture) takes a few seconds
def test_fuzz_the_reader_and_the_scorer_raise_only_their_own_errors(fuzzed):
    cases, messages = fuzzed
    assert cases == N_BYTES + N_TEXTS + N_LISTS and cases // 2 < len(messages) < cases
    print(f"{cases} inputs fuzzed, {len(messages)} refused with the library's own one-line errors")


@pytest.mark.slow
def test_fuzz_error_messages_are_short(fuzzed):
    _, messages = fuzzed
    longest = max(messages, key=len)
    assert len(longest) <= 250, f"{len(longest)} characters: {longest[:300]}"


def test_fuzz_the_scorer_refuses_lone_surrogates_with_its_own_error(tmp_path):
    fuzz(tmp_path, surrogates=True)  # the scorer's part of the fuzz, with lone surrogates among the characters
