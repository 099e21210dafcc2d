"""The wavenet-conv command, run in process through ``main`` as the console script runs it; in a
subprocess only where the real process matters (each such test says why)."""

import argparse
import inspect
import io
import json
import math
import os
import re
import sys
from dataclasses import fields

import pytest
import torch

import wavenet_conv.cli.commands as commands_module
import wavenet_conv.inference.sampling as sampling_module
import wavenet_conv.device as device_module
from wavenet_conv import (ArgumentError, ConfigError, ConvModel, DataError, ModelConfig, RunFolderError, TrainConfig,
                          __version__, sample_names, score_names)
from wavenet_conv.store.checkpoint import Checkpoint
from wavenet_conv.store.loaded import load_model
from wavenet_conv.cli.main import main
from wavenet_conv.cli.output import ordinal
from wavenet_conv.cli.parser import MODEL_OPTIONS, TRAIN_OPTIONS, build_parser, flag, in_our_words

from helpers import ROOT, SMALL_ARGS, cli, interrupt_at, run_main, without_notes


def test_train_prints_losses_and_samples_and_writes_the_run_folder(trained_run):
    out, stdout = trained_run
    assert "train " in stdout and " val " in stdout and " test " in stdout and "5 samples:" in stdout
    samples = stdout.split("5 samples:\n")[1].splitlines()
    assert len(samples) == 5 and all(s.endswith(("(new)", "(in training set)")) for s in samples)
    assert {"checkpoint.pt", "metrics.json", "loss.png"} <= set(os.listdir(out))
    assert json.loads((out / "metrics.json").read_text())["steps"] == 150


def test_score_agrees_with_score_names(trained_run, small_names, monkeypatch, capsys):
    out, _ = trained_run
    names = ["emma", "olivia", "xzqj"]
    code, stdout, stderr = run_main(["score", out, "-", "--format", "jsonl", "--chars"], monkeypatch, capsys,
                                    stdin="\n".join(names) + "\n")
    assert code == 0, stderr
    rows = [json.loads(line) for line in stdout.splitlines()]
    model, vocab, _ = load_model(out)
    ref = score_names(model, names, vocab, per_char=True)
    assert [r["line"] for r in rows] == [1, 2, 3] and [r["name"] for r in rows] == names
    assert [r["nats"] for r in rows] == ref.nll.tolist()  # exact: the same float64, printed to round-trip
    assert [r["targets"] for r in rows] == [5, 7, 5]
    assert [r["nats_per_target"] for r in rows] == (ref.nll / ref.n_targets).tolist()
    for i, r in enumerate(rows):
        assert r["char_nats"] == ref.chars(i).tolist()
    assert set(rows[0]) == {"line", "name", "nats", "targets", "nats_per_target", "percentile", "char_nats", "unknown"}
    assert [r["unknown"] for r in rows] == [[], [], []]
    assert re.fullmatch(r"<stdin>: 3 names scored \(17 targets, end tokens included: \d\.\d{4} nats, \d\.\d{4} bits "
                        r"per target\); 0 lines skipped \(0 empty, 0 not names\)\n", stderr), stderr
    code, text, _ = run_main(["score", out / "checkpoint.pt", small_names], monkeypatch, capsys)
    lines = text.splitlines()
    assert code == 0 and len(lines) == 1001 and lines[0].split() == ["line", "name", "nats", "nats/target", "percentile"]
    line, name, nats, per, _ = lines[1].split()
    assert line == "1" and float(per) == pytest.approx(float(nats) / (len(name) + 1), abs=1e-4)


def score_rows(stdout: str) -> dict:
    """tsv output -> {line: (name, nats, targets)}, checking the header."""
    header, *rows = stdout.splitlines()
    assert header.split("\t") == ["line", "name", "nats", "targets", "nats_per_target", "percentile"]
    return {int(r[0]): (r[1], float(r[2]), int(r[3])) for r in (row.split("\t") for row in rows)}


MIXED = ["anna", "", "Bob", "2pac", "cy", "mary ann", "e.f", "zoë", "", "gus", "h\u00e9", "ava"]


def test_score_skip_invalid_reports_every_bad_line_and_counts_everything(trained_run, tmp_path, monkeypatch, capsys):
    out, _ = trained_run
    path = tmp_path / "mixed.txt"
    path.write_bytes("\n".join(MIXED).encode() + b"\nbin\xffary\n")
    code, stdout, stderr = run_main(["score", out, path, "--format", "tsv", "--skip-invalid", "--chunk", "3",
                                     "--unknown", "error"], monkeypatch, capsys)
    assert code == 0, stderr
    rows = score_rows(stdout)
    assert {line: v[0] for line, v in rows.items()} == {1: "anna", 5: "cy", 10: "gus", 12: "ava"}
    *reports, closing = stderr.splitlines()
    assert [r.split(":")[1] for r in reports] == ["3", "4", "6", "7", "8", "11", "13"]
    assert all(r.startswith(f"{path}:") for r in reports)
    assert reports[-1] == f"{path}:13: not valid UTF-8 (byte 0xff at character 4)"
    assert re.fullmatch(rf"{re.escape(str(path))}: 4 names scored \(16 targets, .*\); 9 lines skipped \(2 empty, 7 not names\)", closing)
    assert len(rows) + len(reports) + 2 == len(MIXED) + 1  # scored + reported + empty = lines
    stdout = run_main(["score", out, path, "--format", "tsv", "--skip-invalid", "--lowercase", "--unknown", "error"],
                      monkeypatch, capsys)[1]
    assert score_rows(stdout)[3][0] == "Bob"  # shown as it came, scored case folded


def test_every_string_is_scored_its_unseen_characters_as_the_unknown_token(trained_run, tmp_path, monkeypatch, capsys):
    """A run trained now has an unknown-character token: capitals, digits, '.', accents and a space in
    a run trained on a-z are scored, each as that token (marked with --chars), and every row of a line
    that is a name agrees bit for bit with score_names on the same strings."""
    out, _ = trained_run
    path = tmp_path / "mixed.txt"
    path.write_text("\n".join(MIXED) + "\n")
    code, stdout, stderr = run_main(["score", out, path, "--format", "jsonl", "--chars"], monkeypatch, capsys)
    assert code == 0 and "unknown-character token" not in stderr, stderr
    rows = [json.loads(line) for line in stdout.splitlines()]
    names = [n for n in MIXED if n]
    assert [r["name"] for r in rows] == names
    model, vocab, _ = load_model(out)
    assert vocab.unknown and len(vocab) == 28 and vocab.chars == "abcdefghijklmnopqrstuvwxyz"
    ref = score_names(model, names, vocab)
    assert [r["nats"] for r in rows] == ref.nll.tolist()
    assert all(math.isfinite(r["nats"]) and r["percentile"] is not None for r in rows)
    unknown = {r["name"]: r["unknown"] for r in rows if r["unknown"]}
    assert unknown == {"Bob": [1], "2pac": [1], "mary ann": [5], "e.f": [2], "zoë": [3], "h\u00e9": [2]}
    # the unknown token's cost is the model's: "Bob" scores as a name whose first character is it
    one = score_names(model, ["bob", "Bob", "Xob"], vocab, per_char=True)
    assert one.chars(1)[1:].tolist() == one.chars(2)[1:].tolist() != one.chars(0)[1:].tolist()
    table = run_main(["score", out, "-", "--chars"], monkeypatch, capsys, stdin="zoë\n")[1]
    assert "[ë]" in table.splitlines()[1] and "[z]" not in table


def test_score_stops_at_the_first_bad_line_with_the_rows_before_it(trained_run, tmp_path, monkeypatch, capsys):
    out, _ = trained_run
    path = tmp_path / "mixed.txt"
    path.write_text("\n".join(MIXED) + "\n")
    code, stdout, stderr = run_main(["score", out, path, "--format", "tsv", "--unknown", "error"], monkeypatch, capsys)
    assert code == 2
    assert stderr.strip() == f"wavenet-conv score: error: {path}:3: character 1 'B' in 'Bob' is not in the vocabulary 'abcdefghijklmnopqrstuvwxyz'"
    assert list(score_rows(stdout)) == [1]  # the complete rows before the bad line, none after


def test_shards_joined_by_line_number_equal_the_whole_list(trained_run, small_names, monkeypatch, capsys):
    out, _ = trained_run
    whole = score_rows(run_main(["score", out, small_names, "--format", "tsv"], monkeypatch, capsys)[1])
    shards = [run_main(["score", out, small_names, "--format", "tsv", "--shard", f"{k}/3"], monkeypatch, capsys)
              for k in range(3)]
    joined = {}
    for k, (code, stdout, stderr) in enumerate(shards):
        assert code == 0, stderr
        rows = score_rows(stdout)
        assert all((line - 1) % 3 == k for line in rows)
        joined.update(rows)
    assert sorted(joined) == sorted(whole) and len(whole) == 1000
    for line, (name, nats, targets) in whole.items():  # scored in other lists, to the same bits
        assert joined[line] == (name, nats, targets)


@pytest.mark.slow
def test_stdin_reads_like_a_file(trained_run, tmp_path, monkeypatch, capsys):
    """A subprocess: the real process's stdin, a binary pipe (a BOM, CRLF, bytes that are not UTF-8),
    read as the names file with the same bytes is."""
    out, _ = trained_run
    data = b"\xef\xbb\xbfemma\r\n\r\nava\r\n"
    (tmp_path / "bom.txt").write_bytes(data)
    code, from_file, _ = run_main(["score", out, tmp_path / "bom.txt", "--format", "tsv"], monkeypatch, capsys)
    from_stdin = cli("score", out, "--format", "tsv", stdin=data)
    assert from_stdin.returncode == 0 and code == 0
    assert from_stdin.stdout.decode() == from_file and list(score_rows(from_file)) == [1, 3]
    binary = cli("score", out, stdin=b"emma\n\x89PNG\r\n\x1a\n" + bytes(range(256)) * 70)
    err = binary.stderr.decode()
    assert binary.returncode == 2 and err.strip() == "wavenet-conv score: error: <stdin>:2: not valid UTF-8 (byte 0x89 at character 1)"


def test_sample_is_seeded_and_marks_training_names(trained_run, monkeypatch, capsys):
    out, _ = trained_run
    argv = ["sample", out, "-n", 8, "--seed", 3, "--temperature", 0.8, "--top-k", 10, "--prefix", "ma"]
    code, a, err = run_main(argv, monkeypatch, capsys)
    assert code == 0, err
    assert run_main(argv, monkeypatch, capsys)[1] == a and len(a.splitlines()) == 8
    assert all(line.startswith("ma") and line.endswith(("(new)", "(in training set)")) for line in a.splitlines())


@pytest.mark.parametrize("option", [["--top-k", 1], ["--temperature", 0.001]], ids=["top-k", "temperature"])
def test_sample_uses_top_k_and_temperature(trained_run, option, monkeypatch, capsys):
    """Greedy (or nearly): the seed no longer matters; without the option it does."""
    out, _ = trained_run
    seeded = [run_main(["sample", out, "-n", 10, "--seed", seed, *option], monkeypatch, capsys)[1] for seed in (1, 2)]
    assert seeded[0] == seeded[1] and len(set(seeded[0].splitlines())) == 1
    plain = [run_main(["sample", out, "-n", 10, "--seed", seed], monkeypatch, capsys)[1] for seed in (1, 2)]
    assert plain[0] != plain[1]


def test_version_is_the_packages(monkeypatch, capsys):
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        assert re.search(r'^version = "(.+)"$', f.read(), flags=re.M)[1] == __version__
    assert run_main(["--version"], monkeypatch, capsys)[1] == f"wavenet-conv {__version__}\n"


def test_the_torch_the_package_accepts_is_the_one_ci_tests():
    """pyproject's minimum torch is the version .ci/run installs, and the README says so."""
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        minimum = re.search(r'"torch>=([0-9.]+)"', f.read())[1]
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        tested = re.search(r"torch==([0-9.]+)", f.read())[1]
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert tested.startswith(minimum + ".") and f"`torch>={minimum}`" in readme and f"torch=={tested}" in readme


@pytest.mark.slow
def test_the_entry_points_are_main():
    """A subprocess: the entry points themselves. The console script is ``cli.main:main``, and
    ``python -m wavenet_conv`` runs it (its errors' exit status: ``test_user_errors_in_a_subprocess``)."""
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        assert re.search(r'^wavenet-conv = "wavenet_conv\.cli\.main:main"$', f.read(), flags=re.M)
    p = cli("--version")
    assert p.returncode == 0 and p.stdout == f"wavenet-conv {__version__}\n" and p.stderr == ""


def test_sample_max_len_default_is_the_library_default():
    args = build_parser().parse_args(["sample", "RUN"])
    assert args.max_len == inspect.signature(sample_names).parameters["max_len"].default


def test_every_config_field_is_an_option_with_help():
    assert set(MODEL_OPTIONS) == {f.name for f in fields(ModelConfig)} - {"vocab_size"}  # the data sets it
    assert set(TRAIN_OPTIONS) | {"recipe", "device"} == {f.name for f in fields(TrainConfig)}
    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    actions = {a.dest: a for a in train_parser._actions}
    for name in MODEL_OPTIONS + TRAIN_OPTIONS:
        assert flag(name) in actions[name].option_strings and len(actions[name].help) > 10, name


@pytest.mark.parametrize("command", ["train", "score", "sample", "check"])
def test_every_command_that_computes_takes_device(command):
    argv = [command] + (["RUN"] if command in ("score", "sample") else []) + ["--device", "cpu"]
    assert build_parser().parse_args(argv).device == "cpu"


def test_check_compares_the_two_forms_and_times_them_in_float32(small_names, monkeypatch, capsys):
    code, out, err = run_main(["check", "--data", small_names, "--depth", "2", "--device", "cpu"], monkeypatch, capsys)
    assert code == 0, err
    equal, race = out.splitlines()[1:]
    assert equal.startswith("float64:") and float(equal.split(": ")[-1]) <= 1e-10
    assert race.startswith("float32") and all(f"{form} " in race for form in ("tree form", "conv form", "fast path"))


def test_resume_applies_what_can_change_and_samples_with_the_run_seed(stopped_run, monkeypatch, capsys):
    argv = ["train", "--resume", stopped_run, "--checkpoint-every", 25, "--eval-every", 20, "--samples", 4, "--quiet"]
    code, out, err = run_main(argv, monkeypatch, capsys)
    assert code == 0, err
    ckpt = Checkpoint.load(stopped_run)
    assert ckpt.train_config.checkpoint_every == 25 and ckpt.train_config.seed == 5
    assert [s for s, _ in ckpt.metrics["val_curve"]] == [40, 60]
    samples = out.split("4 samples:\n")[1]
    code, sampled, err = run_main(["sample", stopped_run, "-n", 4, "--seed", 5], monkeypatch, capsys)
    assert code == 0 and samples == sampled  # the run's seed, not the command line's default


def test_resume_keeps_the_runs_device_unless_given(stopped_run, monkeypatch, capsys):
    """A run trained with --device cpu resumes on the cpu (the default, auto, would take a GPU)."""
    ckpt = Checkpoint.load(stopped_run)
    assert ckpt.train_config.device == "auto"
    code, _, err = run_main(["train", "--resume", stopped_run, "--device", "cpu", "--quiet", "--samples", 0,
                             "--checkpoint-every", 40], monkeypatch, capsys)
    assert code == 0, err
    code, _, err = run_main(["train", "--resume", stopped_run, "--quiet", "--samples", 0], monkeypatch, capsys)
    assert code == 0 and Checkpoint.load(stopped_run).train_config.device == "cpu", err


@pytest.mark.parametrize("option", ["seed", "steps", "lr", "recipe"] + list(MODEL_OPTIONS))
def test_resume_refuses_options_that_change_the_run(stopped_run, option, monkeypatch, capsys):
    value = {"recipe": "lecture", "activation": "gated", "norm": "layer", "residual_input": "none", "lr": "0.5"}.get(option, "7")
    flags = [flag(option)] if option in ("residual", "skip") else [flag(option), value]
    code, _, err = run_main(["train", "--resume", stopped_run, *flags], monkeypatch, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and flag(option) in err, err
    assert Checkpoint.load(stopped_run).step == 30


def test_ctrl_c_saves_and_resume_matches_an_uninterrupted_run(small_names, tmp_path, monkeypatch, capsys):
    args = ["--data", small_names, "--steps", 120, "--checkpoint-every", 50, "--samples", 0, "--quiet", *SMALL_ARGS]
    assert run_main(["train", "--out", tmp_path / "full", *args], monkeypatch, capsys)[0] == 0
    interrupt_at(monkeypatch, 70)
    code, out, err = run_main(["train", "--out", tmp_path / "cut", *args], monkeypatch, capsys)
    assert code == 130 and "interrupted at step 71" in out and "Traceback" not in err
    assert f"go on with --resume {tmp_path / 'cut'}" in out  # the report in the command line's words
    assert Checkpoint.load(tmp_path / "cut").step == 71
    monkeypatch.undo()
    assert run_main(["train", "--resume", tmp_path / "cut", "--samples", 0, "--quiet"], monkeypatch, capsys)[0] == 0
    a, b = Checkpoint.load(tmp_path / "full").state_dict, Checkpoint.load(tmp_path / "cut").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, trained_run):
    d = tmp_path_factory.mktemp("bad")
    (d / "bad_chars.txt").write_text("anna\nbob\nzoë\n")
    (d / "tab.txt").write_text("anna\nbob\njo\tann\n")
    (d / "spaces.txt").write_text("anna\nmary  ann\n")
    (d / "binary.txt").write_bytes(b"anna\n\xff\xfe\n")
    (d / "empty.txt").write_text("\n\n")
    (d / "three.txt").write_text("anna\nbob\ncleo\n")
    data = (trained_run[0] / "checkpoint.pt").read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 3])
    (d / "garbage.pt").write_bytes(b"\x00" * 100)
    return d


ERRORS = [
    (["train", "--data", "{bad}/missing.txt"], "no such file"),
    (["train", "--data", "{bad}/tab.txt"], "tab.txt:3: character 3 '\\t' in 'jo\\tann' is whitespace"),
    (["train", "--data", "{bad}/spaces.txt"], "spaces.txt:2: character 6 ' ' in 'mary  ann' is whitespace after another space"),
    (["train", "--data", "{bad}/binary.txt"], "binary.txt:2: not valid UTF-8 (byte 0xff at character 1)"),
    (["train", "--data", "{bad}/empty.txt"], "no names"),
    (["train", "--form", "lstm"], "invalid choice"),
    (["train", "--steps", "0"], "--steps must be an integer from 1 to 100,000,000, got 0"),
    (["train", "--steps", "100000000000"], "--steps must be an integer from 1 to 100,000,000, got 100000000000"),
    (["train", "--n-layers", "40"], "--n-layers must be an integer from 1 to 16, got 40"),
    (["train", "--form", "tree", "--batch-size", "100000000000"], "--batch-size must be an integer from 1 to 1,000,000"),
    (["train", "--n-embd", "0"], "--n-embd must be an integer >= 1"),
    (["train", "--activation", "relu"], "invalid choice"),
    (["train", "--residual-input", "identity", "--residual"], "identity"),
    (["train", "--resume", "{bad}/nowhere"], "no such"),
    (["train", "--resume", "{run}", "--steps", "5"], "--steps: the run being resumed is at step 150, so it goes on to 150 "
                                                   "steps or more, not 5"),
    (["train", "--resume", "{bad}/truncated.pt"], "corrupt or truncated"),
    (["score", "{bad}/garbage.pt", "{bad}/bad_chars.txt"], "corrupt or truncated"),
    (["score", "{run}", "{bad}/bad_chars.txt", "--unknown", "error"],
     "bad_chars.txt:3: character 3 'ë' in 'zoë' is not in the vocabulary"),
    (["score", "{run}", "{bad}/missing.txt"], "no such file"),
    (["score", "{bad}", "-"], "no checkpoint.pt"),
    (["sample", "{run}", "--prefix", "zo\x07"], "--prefix"),
    (["sample", "{run}", "--top-k", "0"], ">= 1"),
    (["sample", "{run}", "--temperature", "-1"], "--temperature must be a positive finite number, got -1.0"),
    (["sample", "{run}", "-n", "-1"], "-n must be an integer >= 0, got -1"),
    (["train", "--samples", "-1", "--steps", "1"], "--samples must be an integer >= 0, got -1"),
    (["score", "{run}", "--chunk", "0"], "--chunk must be an integer >= 1, got 0"),
    (["score", "{run}", "--threads", "0"], "--threads must be 'auto' or an integer from 1 to 4,096"),
    (["score", "{run}", "--shard", "3/3"], "error: argument --shard: K/N needs 0 <= K < N, got 3/3 (see"),
    (["score", "{run}", "--shard", "x"], "error: argument --shard: must be K/N (e.g. 0/4), got 'x' (see"),
    (["sample", "{run}", "--temperature", "inf"], "finite"),
    (["sample", "{run}", "--prefix", "anna", "--max-len", "3"], "--max-len must be an integer >= 4, got 3"),
    (["sample", "{bad}/truncated.pt"], "corrupt or truncated"),
    (["check", "--data", "{bad}/tab.txt"], "tab.txt:3:"),
    ([], "required"),
    (["bogus"], "invalid choice"),
    (["train", "--lr", "inf"], "--lr must be a finite number, got inf"),
    (["train", "--weight-decay", "nan"], "--weight-decay must be a finite number, got nan"),
    (["train", "--weight-decay", "-1"], "--weight-decay must be a finite number >= 0, got -1.0"),
    (["train", "--seed", "99999999999999999999999"], "--seed must be an integer in [0, 2**32)"),
    (["train", "--data", "{bad}/three.txt"], "3 name(s) are too few for the lecture's 80/10/10 split: its val split"),
    (["train", "--out", "{run}"], "holds a run (its checkpoint.pt): resume it (--resume), replace it (--force)"),
    (["sample", "{run}", "--seed", "99999999999999999999999"], "must be an integer in [-2**63, 2**64) (a 64-bit torch seed)"),
    (["check", "--seed", "-99999999999999999999999"], "64-bit torch seed"),
    (["train", "--resume", ""], "--resume is an empty path"),
    (["train", "--out", "", "--steps", "1"], "--out is an empty path"),
    (["train", "--data", "", "--steps", "1"], "--data is an empty path"),
    (["train", "--recipe", "small", "--out", "", "--steps", "1"], "--out is an empty path"),
    (["sample", ""], "an empty path is not a run folder or checkpoint file"),
    (["check", "--data", "{bad}/three.txt"], "three.txt: 3 name(s) are too few for the lecture's 80/10/10 split"),
    (["export", "{run}", "{bad}"], ": is a folder, not an ONNX file to write"),
    (["export", "{run}", "{bad}/nowhere/model.onnx"], "model.onnx: no folder"),
    (["sample", "{run}", "--threads", "99999999999999999999"], "--threads must be 'auto' or an integer from 1 to 4,096"),
]


@pytest.mark.parametrize("argv,message", ERRORS, ids=[" ".join(a)[:40] for a, _ in ERRORS])
def test_user_errors_are_one_line_and_exit_2(argv, message, bad_files, trained_run, monkeypatch, capsys):
    argv = [a.format(bad=bad_files, run=trained_run[0]) for a in argv]
    code, _, err = run_main(argv, monkeypatch, capsys, stdin="anna\n")
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert message in err and err.startswith("wavenet-conv")


@pytest.mark.slow
@pytest.mark.parametrize("i", [0, 1, 5, 12, 14])
def test_user_errors_in_a_subprocess(i, bad_files, trained_run):
    """A subprocess: the console script's own exit status and one-line stderr, for a few of the errors
    above (a missing file, a bad names file, an argparse error, a truncated checkpoint, a bad name)."""
    argv, message = ERRORS[i]
    p = cli(*[a.format(bad=bad_files, run=trained_run[0]) for a in argv], stdin="anna\n")
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr and message in p.stderr, p.stderr


OPTION_ERRORS = [  # (argv, the option that the library's argument is on the command line)
    (["sample", "{run}", "--max-len", "0"], "--max-len"), (["sample", "{run}", "-n", "-1"], "-n"),
    (["sample", "{run}", "--top-k", "0"], "--top-k"), (["sample", "{run}", "--temperature", "0"], "--temperature"),
    (["sample", "{run}", "--prefix", "a\tb"], "--prefix"), (["score", "{run}", "--chunk", "0"], "--chunk"),
    (["score", "{run}", "--threads", "0"], "--threads"), (["sample", "{run}", "--threads", "0"], "--threads"),
    (["train", "--samples", "-1"], "--samples"),
]


@pytest.mark.parametrize("argv,option", OPTION_ERRORS, ids=[" ".join(a[2:]) for a, _ in OPTION_ERRORS])
def test_an_argument_error_is_worded_with_the_commands_option(argv, option, trained_run, monkeypatch, capsys):
    """The library's ``ArgumentError`` names its function and argument (``sample_names: max_len must
    be ...``); the command line says it with the option the user typed (``--max-len must be ...``)."""
    code, _, err = run_main([a.format(run=trained_run[0]) for a in argv], monkeypatch, capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert re.match(rf"wavenet-conv {argv[0]}: error: {option} (must be|is not the start of a name)", err), err
    assert not re.search(r"\b(sample_names|sample_batches|score_lines|score_names)\b", err), err


TRANSLATIONS = [  # (a library error, as the command line shows it)
    (ArgumentError("sample_names", "max_len", "must be an integer >= 4, got 3"), "--max-len must be an integer >= 4, got 3"),
    (ArgumentError("score_files", "cpus_per_worker", "must be an integer >= 1, got 0"),
     "--threads must be an integer >= 1, got 0"),
    (ArgumentError("train", "teachers", "cannot be given with resume=RUN"), "--teacher cannot be given with --resume RUN"),
    (ArgumentError("score_lines", "vocab", "has 3 tokens"), "score_lines: vocab has 3 tokens"),  # no option: as it is
    (ConfigError("TrainConfig.steps is 150 in the run, not 5"), "--steps is 150 in the run, not 5"),
    (RunFolderError("runs/a holds a run: resume it (resume=runs/a), replace it (force=True) or train elsewhere (out=PATH)"),
     "runs/a holds a run: resume it (--resume runs/a), replace it (--force) or train elsewhere (--out PATH)"),
    (RunFolderError("runs/a holds a run: resume it (resume=...) or train elsewhere (out=...)"),
     "runs/a holds a run: resume it (--resume) or train elsewhere (--out)"),  # any value: the option alone
    (DataError("teacher 1 stopped: go on with resume_recipe('runs/a b')"), "teacher 1 stopped: go on with --resume runs/a b"),
    (ConfigError("pass residual=False or skip=True."), "pass --no-residual or --skip."),
    (DataError("runs/lr=0.1/names.txt:3: model_config=x and x=1"), "runs/lr=0.1/names.txt:3: model_config=x and x=1"),
    (DataError("two\nlines"), "two lines"),
    (DataError("f.txt:2: character 5 ' ' in 'mary out=x' is not in the vocabulary"),  # a quoted name stays as it is
     "f.txt:2: character 5 ' ' in 'mary out=x' is not in the vocabulary"),
    (ConfigError("ModelConfig: residual_input='identity' needs residual=True"), "ModelConfig: --residual-input identity needs --residual"),
]


@pytest.mark.parametrize("error,shown", TRANSLATIONS, ids=[str(e)[:40] for e, _ in TRANSLATIONS])
def test_the_command_line_says_the_librarys_words_as_its_options(error, shown):
    """An argument (``ArgumentError``'s, or ``name=VALUE`` in any message) and a config field become the
    option the user types; a word that is no option, or is inside a path, stays as it is."""
    assert in_our_words(error) == shown


def test_a_library_bug_is_not_reported_as_the_users_mistake(trained_run, monkeypatch, capsys):
    """Only the library's own input errors (and OSError) become one-line errors; a plain ValueError
    from inside the library is a bug and keeps its traceback."""
    def broken(*a, **k):
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(commands_module, "scored_lines", broken)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"anna\n")))
    with pytest.raises(ValueError, match="internal"):
        main(["score", str(trained_run[0]), "-"])


def test_cuda_on_a_machine_without_it(trained_run, monkeypatch, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_main(["sample", trained_run[0], "--device", "cuda"], monkeypatch, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "CUDA is not available" in err


@pytest.mark.slow
def test_export_writes_an_onnx_model_that_scores_like_the_run(trained_run, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    from wavenet_conv import sequences

    out, _ = trained_run
    code, stdout, stderr = run_main(["export", out, tmp_path / "model.onnx"], monkeypatch, capsys)
    assert code == 0, stderr
    assert "wrote" in stdout and "'tokens' int64 (B, T)" in stdout
    model, vocab, _ = load_model(out)
    # what serving needs to prepare the text as the run does (docs/SERVING.md)
    assert f"text normalized: {vocab.normalize}; unknown-character token: {vocab.unknown_id}" in stdout
    x = sequences(["emma", "olivia", "q"], vocab).x
    (logits,) = onnxruntime.InferenceSession(str(tmp_path / "model.onnx")).run(None, {"tokens": x.numpy()})
    with torch.no_grad():
        assert (torch.from_numpy(logits) - model(x)).abs().max().item() <= 1e-4


def test_export_without_the_extra_says_how_to_get_it(trained_run, tmp_path, monkeypatch, capsys):
    import importlib.util

    out, _ = trained_run
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    code, stdout, stderr = run_main(["export", out, tmp_path / "m.onnx"], monkeypatch, capsys)
    assert code == 2 and stdout == ""
    assert stderr.strip() == ("wavenet-conv export: error: ONNX export needs onnx, which is not installed: "
                              "pip install onnx onnxscript onnxruntime (in a checkout: pip install -e '.[onnx]')")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("command,default", [("train", 1), ("score RUN", 5), ("sample RUN", 5), ("check", 1),
                                             ("export RUN OUT", 5)])
def test_every_subcommand_takes_threads(command, default, monkeypatch):
    """The thread policy: the library's default for the command (1 for training and timing, "auto"
    for the rest) unless --threads says otherwise, set for the command's run and put back after it
    (main may run inside a Python process)."""
    words = command.split()
    assert build_parser().parse_args(words + ["--threads", "3"]).threads == 3
    assert build_parser().parse_args(words + ["--threads", "auto"]).threads == "auto"
    seen = []
    monkeypatch.setitem(commands_module.COMMANDS, words[0], lambda args: seen.append(torch.get_num_threads()))
    monkeypatch.setattr(device_module, "auto_threads", lambda: 5)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(words) == 0 and main(words + ["--threads", "3"]) == 0 and main(words + ["--threads", "auto"]) == 0
        assert seen == [default, 3, 5] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_diverging_run_exits_3_naming_the_step(small_names, tmp_path, monkeypatch, capsys):
    argv = ["train", "--data", small_names, "--out", tmp_path / "run", "--lr", "1e6", "--checkpoint-every", 3, *SMALL_ARGS]
    code, out, err = run_main(argv, monkeypatch, capsys)
    err = without_notes(err)  # the small file's note
    assert code == 3 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    what = (r"the loss of step \d+ is (nan|inf|-inf), the first non-finite one|"
            r"the model's weights or optimizer state became non-finite after step \d+, by step \d+")
    assert re.match(rf"wavenet-conv train: error: training diverged: ({what}) \(is --lr 1e\+06 too high\?\); "
                    r"the checkpoint of step \d+ stays$", err.strip()), err
    ckpt = Checkpoint.load(tmp_path / "run")
    assert all(torch.isfinite(t).all() for t in ckpt.state_dict.values()) and torch.isfinite(ckpt.losses).all()
    assert "run folder" not in out and "exit status: " in build_parser().format_help()


def test_progress_is_plain_lines_in_a_log_and_quiet_silences_it(small_names, tmp_path, monkeypatch, capsys):
    argv = ["train", "--data", small_names, "--steps", 30, "--samples", 0, *SMALL_ARGS]
    code, _, err = run_main([*argv, "--out", tmp_path / "a"], monkeypatch, capsys)  # stderr is not a terminal here
    err = without_notes(err)  # the small file's note
    assert code == 0 and "\r" not in err
    assert [line.split("  ")[0] for line in err.splitlines()] == ["step 10/30", "step 30/30"], err
    assert all(re.search(r"loss \d+\.\d{4} +\d+\.\d steps/s  \d+:\d\d left$", line) for line in err.splitlines())
    code, _, err = run_main([*argv, "--out", tmp_path / "b", "--quiet"], monkeypatch, capsys)
    assert code == 0 and without_notes(err) == ""


def test_samples_cut_at_max_len_are_marked(trained_run, monkeypatch, capsys):
    code, out, err = run_main(["sample", trained_run[0], "-n", 30, "--seed", 1, "--max-len", 1], monkeypatch, capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 30 and all(line.endswith("…  (cut at max length 1)") and len(line.split("…")[0]) == 1
                                    or line in ("  (new)", "  (in training set)") for line in lines), lines
    assert any("(cut" in line for line in lines)
    code, out, _ = run_main(["sample", trained_run[0], "-n", 30, "--seed", 1], monkeypatch, capsys)
    assert "(cut" not in out


@pytest.mark.parametrize("command", ["sample", "export"])
def test_an_unfinished_run_says_so(command, stopped_run, trained_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(commands_module, "export_onnx", lambda model, path: path)  # the note, not the export
    extra = [tmp_path / "m.onnx"] if command == "export" else ["-n", 2]
    code, _, err = run_main([command, stopped_run, *extra], monkeypatch, capsys)
    assert code == 0 and err == (f"wavenet-conv {command}: note: {stopped_run} is an unfinished run (step 30 of 80); "
                                 f"wavenet-conv train --resume {stopped_run} finishes it\n")
    code, _, err = run_main([command, trained_run[0], *extra], monkeypatch, capsys)
    assert code == 0 and err == ""


def test_scoring_an_unfinished_run_says_so(stopped_run, monkeypatch, capsys):
    code, _, err = run_main(["score", stopped_run, "-"], monkeypatch, capsys, stdin="anna\n")
    assert code == 0 and err.startswith(f"wavenet-conv score: note: {stopped_run} is an unfinished run (step 30 of 80)")


def test_sample_streams_batches_of_bounded_memory(trained_run, monkeypatch, capsys):
    """Many names are sampled a batch at a time (memory flat in -n): every name comes out, seeded."""
    from wavenet_conv.inference.sampling import batch_size

    assert batch_size(ConvModel(ModelConfig())) == (64 << 20) // ((1 + 2 + 4) * 2 * 128 * 4)  # 7 KB a name
    assert batch_size(ConvModel(ModelConfig(n_layers=6))) == (64 << 20) // (63 * 2 * 128 * 4)
    monkeypatch.setattr(sampling_module, "batch_size", lambda model: 3)
    outs = [run_main(["sample", trained_run[0], "-n", 10, "--seed", 5], monkeypatch, capsys)[1] for _ in range(2)]
    assert outs[0] == outs[1] and len(outs[0].splitlines()) == 10


@pytest.mark.parametrize("argv,n_hidden,length,swa,teachers", [
    ([], 128, 16.0, 0.0, 0),
    (["--recipe", "small"], 128, 30.0, 0.25, 2),
    (["--recipe", "best"], 384, 20.0, 0.25, 2),
    (["--recipe", "best", "--n-hidden", "64", "--steps", "10"], 64, 10, 0.25, 2),
    (["--recipe", "best", "--distill", "0"], 384, 20.0, 0.25, 0),
    (["--recipe", "wide"], 384, 20.0, 0.25, 0),
    (["--recipe", "gpu"], 128, 16.0, 0.0, 0),
    (["--recipe", "lecture"], 128, 200_000, 0.0, 0),
])
def test_a_recipe_names_the_model_and_its_training(argv, n_hidden, length, swa, teachers, monkeypatch, capsys, tmp_path):
    """A recipe's model and its length: epochs (a float), or steps given (an int)."""
    seen = {}

    def fake_train(model_config, config, teachers=None, *args, **kw):  # train, or train_recipe (teachers first)
        seen.update(model=model_config, config=config, teachers=teachers or [])
        raise KeyboardInterrupt  # stop before any work

    monkeypatch.setattr(commands_module, "train", fake_train)
    monkeypatch.setattr(commands_module, "train_recipe", fake_train)
    code, _, _ = run_main(["train", "--out", tmp_path / "r", *argv], monkeypatch, capsys)
    assert code == 130
    config = seen["config"]
    assert seen["model"].n_hidden == n_hidden and config.swa == swa
    assert (config.epochs, config.steps) == ((length, 1600) if isinstance(length, float) else (None, length))
    assert len(seen["teachers"]) == teachers


@pytest.mark.parametrize("error,shown", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                  "tried to allocate 400000000000000 bytes. Error code 12"), "400000000000000 bytes asked for at once"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0)"), "20.00 GiB asked for at once"),
    (MemoryError(), "MemoryError"),
])
def test_out_of_memory_is_one_line_not_a_traceback(error, shown, trained_run, monkeypatch, capsys):
    def too_big(*args, **kwargs):
        raise error

    monkeypatch.setattr(commands_module, "sample_batches", too_big)
    code, _, err = run_main(["sample", trained_run[0], "-n", 5], monkeypatch, capsys)
    assert code == 2 and err == f"wavenet-conv sample: error: out of memory ({shown}): ask for less (a smaller model, " \
                                 "batch, list or sample)\n"


def test_another_runtime_error_is_a_bug_with_its_traceback(trained_run, monkeypatch, capsys):
    def bug(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(commands_module, "sample_batches", bug)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        main(["sample", str(trained_run[0]), "-n", "5"])


PERCENTILE_NAMES = ["emma", "olivia", "ava", "xqzzyv", "qqqqqq", "zxcvbnm", "mia", "asdfghjkl", "noah", "liam"]


@pytest.mark.parametrize("p", [0, "emma's", 99.5])
def test_min_percentile_keeps_the_rows_at_or_above_it_and_counts_them(trained_run, p, monkeypatch, capsys):
    out, _ = trained_run
    loaded = load_model(out)
    pct = score_names(loaded.model, PERCENTILE_NAMES, loaded.vocab, reference=loaded.reference).percentile.tolist()
    p = pct[0] if p == "emma's" else p  # a name exactly at P is kept
    code, stdout, stderr = run_main(["score", out, "-", "--format", "jsonl", "--min-percentile", p], monkeypatch, capsys,
                                    stdin="\n".join(PERCENTILE_NAMES) + "\n\n")
    assert code == 0, stderr
    want = [(i + 1, name, v) for i, (name, v) in enumerate(zip(PERCENTILE_NAMES, pct)) if v >= p]
    assert [(r["line"], r["name"], r["percentile"]) for r in map(json.loads, stdout.splitlines())] == want
    assert 0 < len(want) <= len(PERCENTILE_NAMES) and (p > 0) == (len(want) < len(PERCENTILE_NAMES))
    assert p != pct[0] or want[0][1] == "emma"
    [closing] = stderr.splitlines()
    assert closing.endswith(f"; 1 line skipped (1 empty, 0 not names); kept {len(want)} of 10 names at or above the "
                            f"{ordinal(p)} percentile"), closing


@pytest.mark.parametrize("value", ["101", "-1", "nan", "x"])
def test_min_percentile_is_a_number_from_0_to_100(trained_run, value, monkeypatch, capsys):
    code, stdout, stderr = run_main(["score", trained_run[0], "-", "--min-percentile", value], monkeypatch, capsys,
                                    stdin="emma\n")
    assert code == 2 and stdout == "" and stderr == (f"wavenet-conv score: error: argument --min-percentile: must be a "
                                                     f"number from 0 to 100, got {value!r} (see --help)\n")


def test_an_older_runs_percentiles_come_from_its_names_file(older_run, trained_run, monkeypatch, capsys):
    run, _ = older_run
    code, stdout, stderr = run_main(["score", run, "-", "--format", "tsv"], monkeypatch, capsys, stdin="emma\nxqzzyv\n")
    assert code == 0 and len(stderr.splitlines()) == 1 and "percentile" not in stderr, stderr
    code, same, _ = run_main(["score", trained_run[0], "-", "--format", "tsv"], monkeypatch, capsys, stdin="emma\nxqzzyv\n")
    assert stdout == same and [row.split("\t")[5] for row in stdout.splitlines()[1:]] != ["", ""]
    assert Checkpoint.load(run).reference is None  # the run's file is not rewritten


@pytest.mark.parametrize("change", ["missing", "changed"])
def test_an_older_run_without_its_names_file_scores_with_a_blank_percentile_and_says_why_once(
        older_run, change, monkeypatch, capsys):
    run, data = older_run
    if change == "missing":
        data.unlink()
    else:
        data.write_text("emma\nolivia\n")
    names = "\n".join(PERCENTILE_NAMES * 8000) + "\n"  # more than one chunk: still one note
    code, stdout, stderr = run_main(["score", run, "-", "--format", "tsv", "--chunk", "50000"], monkeypatch, capsys,
                                    stdin=names)
    assert code == 0, stderr
    assert {row.split("\t")[5] for row in stdout.splitlines()[1:]} == {""} and len(stdout.splitlines()) == 80001
    note, closing = stderr.splitlines()
    why = f"its names file {data} is missing" if change == "missing" else f"its names file {data} has changed (sha256 "
    assert note.startswith(f"wavenet-conv score: note: {run}: no percentiles: {why}") and "80,000 names scored" in closing
    code, stdout, stderr = run_main(["score", run, "-", "--min-percentile", "95"], monkeypatch, capsys, stdin="emma\n")
    assert code == 2 and stdout == "" and stderr.startswith(
        f"wavenet-conv score: error: --min-percentile needs the run's percentiles, and {run} has none: {why}")
    assert stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["train", "score", "sample", "check", "export"])
def test_device_help_mentions_resume_only_where_there_is_one(command):
    from wavenet_conv.cli.parser import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    device = next(a for a in sub._actions if "--device" in a.option_strings)
    has_resume = any("--resume" in a.option_strings for a in sub._actions)
    assert ("--resume" in device.help) == has_resume == (command == "train")


@pytest.mark.parametrize("fmt", ["table", "tsv"])
def test_an_error_on_the_first_line_prints_no_header(fmt, trained_run, monkeypatch, capsys):
    code, out, err = run_main(["score", trained_run[0], "--format", fmt, "--unknown", "error"], monkeypatch, capsys,
                              stdin="x\x07y\nemma\n")
    assert code == 2 and out == "" and "<stdin>:1:" in err
    code, out, err = run_main(["score", trained_run[0], "--format", fmt], monkeypatch, capsys, stdin="emma\nx\x07y\n")
    assert code == 2 and out.splitlines()[0].split()[:2] == ["line", "name"] and "emma" in out  # rows before it kept
