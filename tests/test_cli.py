"""The wavenet-conv command, run as a user runs it: in a subprocess."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from wavenet_conv import load_names
from wavenet_conv.checkpoint import load_model

from test_train import one_thread  # noqa: F401  (autouse)
from conftest import BUNDLED_NAMES, ROOT

SAMPLES = 5
SMALL = ["--n-embd", "8", "--n-hidden", "32", "--batch-size", "32", "--threads", "1"]


def cli(*args, stdin=None, timeout=120):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "wavenet_conv", *map(str, args)], input=stdin, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def small_names(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "small.txt"
    path.write_text("\n".join(load_names(BUNDLED_NAMES)[::32][:1000]) + "\n")
    return path


@pytest.fixture(scope="module")
def run(small_names, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    p = cli("train", "--data", small_names, "--out", out, "--steps", 150, "--samples", SAMPLES, *SMALL)
    assert p.returncode == 0, p.stderr
    return out, p.stdout


def test_train_prints_losses_and_samples_and_writes_the_run_folder(run):
    out, stdout = run
    assert "train " in stdout and " val " in stdout and " test " in stdout and "5 samples:" in stdout
    samples = stdout.split("5 samples:\n")[1].splitlines()
    assert len(samples) == 5 and all(s.endswith(("(new)", "(in training set)")) for s in samples)
    assert {"checkpoint.pt", "metrics.json", "loss.png"} <= set(os.listdir(out))
    assert json.loads((out / "metrics.json").read_text())["steps"] == 150


def test_score_agrees_with_score_names(run, small_names):
    from wavenet_conv.scoring import score_names

    out, _ = run
    names = ["emma", "olivia", "xzqj"]
    p = cli("score", out, "-", "--json", stdin="\n".join(names) + "\n")
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    model, vocab, _ = load_model(out)
    ref = score_names(model, names, vocab)
    assert [r["name"] for r in got["names"]] == names
    assert [r["nats"] for r in got["names"]] == pytest.approx(ref.nll.tolist(), abs=1e-5)
    assert got["summary"]["mean_loss"] == pytest.approx(ref.mean_loss, abs=1e-6)
    text = cli("score", out / "checkpoint.pt", small_names)
    lines = text.stdout.splitlines()
    assert text.returncode == 0 and len(lines) == 1001 and lines[-1].startswith("1000 names")
    first = lines[0].split()
    assert float(first[2]) == pytest.approx(float(first[1]) / (len(first[0]) + 1), abs=1e-4)


def test_sample_is_seeded_and_marks_training_names(run):
    out, _ = run
    a = cli("sample", out, "-n", 8, "--seed", 3, "--temperature", 0.8, "--top-k", 10, "--prefix", "ma")
    b = cli("sample", out, "-n", 8, "--seed", 3, "--temperature", 0.8, "--top-k", 10, "--prefix", "ma")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and len(a.stdout.splitlines()) == 8
    assert all(line.startswith("ma") and line.endswith(("(new)", "(in training set)")) for line in a.stdout.splitlines())


def test_ctrl_c_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(small_names, tmp_path):
    args = ["--data", small_names, "--steps", 400, "--checkpoint-every", 50, "--samples", 0, "--quiet", *SMALL]
    full = cli("train", "--out", tmp_path / "full", *args)
    assert full.returncode == 0, full.stderr
    env = {**os.environ, "PYTHONPATH": ROOT}
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "wavenet_conv", "train", "--out", str(cut), *map(str, args)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (cut / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert proc.returncode == 130 and "interrupted at step" in stdout and "Traceback" not in stderr
    step = load_model(cut).meta["step"]
    assert 50 <= step < 400
    resumed = cli("train", "--resume", cut, "--samples", 0, "--quiet", "--threads", 1)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["state_dict"]
    b = torch.load(cut / "checkpoint.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, run):
    d = tmp_path_factory.mktemp("bad")
    (d / "bad_chars.txt").write_text("anna\nbob\nzoë\n")
    (d / "dot.txt").write_text("anna\nbob\njo.ann\n")
    (d / "spaces.txt").write_text("anna\nmary ann\n")
    (d / "binary.txt").write_bytes(b"anna\n\xff\xfe\n")
    (d / "empty.txt").write_text("\n\n")
    data = (run[0] / "checkpoint.pt").read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 3])
    (d / "garbage.pt").write_bytes(b"\x00" * 100)
    return d


ERRORS = [
    (["train", "--data", "{bad}/missing.txt"], "no such file"),
    (["train", "--data", "{bad}/dot.txt"], "line 3"),
    (["train", "--data", "{bad}/spaces.txt"], "line 2"),
    (["train", "--data", "{bad}/binary.txt"], "UTF-8"),
    (["train", "--data", "{bad}/empty.txt"], "no names"),
    (["train", "--form", "lstm"], "invalid choice"),
    (["train", "--steps", "0"], ">= 1"),
    (["train", "--activation", "relu"], "invalid choice"),
    (["train", "--residual-input", "identity", "--residual"], "identity"),
    (["train", "--resume", "{bad}/nowhere"], "no such"),
    (["train", "--resume", "{run}", "--steps", "5"], "drop --steps"),
    (["train", "--resume", "{bad}/truncated.pt"], "corrupt or truncated"),
    (["score", "{bad}/garbage.pt", "{bad}/bad_chars.txt"], "corrupt or truncated"),
    (["score", "{run}", "{bad}/bad_chars.txt"], "line 3"),
    (["score", "{run}", "{bad}/missing.txt"], "no such file"),
    (["score", "{bad}", "-"], "no checkpoint.pt"),
    (["sample", "{run}", "--prefix", "zoë"], "--prefix"),
    (["sample", "{run}", "--top-k", "0"], ">= 1"),
    (["sample", "{run}", "--temperature", "-1"], "> 0"),
    (["sample", "{bad}/truncated.pt"], "corrupt or truncated"),
    ([], "required"),
    (["bogus"], "invalid choice"),
]


def main_in_process(argv, stdin, monkeypatch, capsys):
    """``main(argv)`` as the console script runs it: exit status, stdout, stderr."""
    from wavenet_conv.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("argv,message", ERRORS, ids=[" ".join(a)[:40] for a, _ in ERRORS])
def test_user_errors_are_one_line_and_exit_2(argv, message, bad_files, run, monkeypatch, capsys):
    argv = [a.format(bad=bad_files, run=run[0]) for a in argv]
    code, _, err = main_in_process(argv, "anna\n", monkeypatch, capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert message in err and err.startswith("wavenet-conv")


@pytest.mark.parametrize("i", [0, 1, 5, 11, 13])
def test_user_errors_in_a_subprocess(i, bad_files, run):
    argv, message = ERRORS[i]
    p = cli(*[a.format(bad=bad_files, run=run[0]) for a in argv], stdin="anna\n")
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr and message in p.stderr, p.stderr


def test_cuda_on_a_machine_without_it(run):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    p = cli("sample", run[0], "--device", "cuda")
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1 and "CUDA is not available" in p.stderr
