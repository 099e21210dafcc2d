"""Helpers of the batch scorer's tests, importable by Ray's worker processes too (they put tests/ on
their path): a run folder with a random model, a mixed list of lines, scorers that report their PID,
fail, sleep on some batches or report their threads."""

import os
import string
import time

import torch

from wavenet_conv import ConvModel, DataError, ModelConfig, Vocab
from wavenet_conv.cluster.scorer import BatchScorer
from wavenet_conv.store.checkpoint import Checkpoint

from helpers import randomize_

SPACED = Vocab(string.ascii_lowercase + " ")
BAD = ["x1", "Emma", "j.r", "zoë", "ann\u00a0lee", " ann\x0blee", "mary  ann", "a\tb", "\ufffd", "ann.\t", "bad\x07"]  # not names


def random_run(path, vocab: Vocab = SPACED, seed: int = 0) -> str:
    """A run folder at ``path`` holding a small ConvModel with random weights (float32)."""
    torch.manual_seed(seed)
    model = randomize_(ConvModel(ModelConfig(vocab_size=len(vocab), n_embd=6, n_hidden=16, n_layers=3)), seed).eval()
    Checkpoint.of_model(model, vocab, step=0).save(os.path.join(path, "checkpoint.pt"))
    return os.fspath(path)


def mixed_lines(n: int, names: list[str], every: int = 50) -> list[str]:
    """``n`` lines of ``names`` repeated, every ``every``-th a bad line, every ``every``-th + 7 empty and
    every ``every``-th + 13 a name with whitespace at either end (a name all the same)."""
    lines = []
    for i in range(n):
        if i % every == every - 1:
            lines.append(BAD[(i // every) % len(BAD)])
        elif i % every == 7:
            lines.append("")
        elif i % every == 13:
            lines.append(f" {names[i % len(names)]}\t")
        else:
            lines.append(names[i % len(names)])
    return lines


class SlowScorer(BatchScorer):
    """A ``BatchScorer`` that appends its PID to ``pid_file`` and sleeps ``pause`` seconds a batch, so a
    test can watch the job go and kill the worker in the middle of it."""

    def __init__(self, run, pid_file: str, pause: float = 0.05, **kwargs):
        super().__init__(run, **kwargs)
        self.pid_file, self.pause = pid_file, pause

    def kwargs(self) -> dict:
        return {**super().kwargs(), "pid_file": self.pid_file, "pause": self.pause}

    def __call__(self, batch):
        with open(self.pid_file, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(self.pause)
        return super().__call__(batch)


class FailingScorer(BatchScorer):
    """A ``BatchScorer`` whose every call raises ``DataError(message)``, as a bad batch would."""

    def __init__(self, run, message: str = "boom", **kwargs):
        super().__init__(run, **kwargs)
        self.message = message

    def kwargs(self) -> dict:
        return {**super().kwargs(), "message": self.message}

    def __call__(self, batch):
        raise DataError(self.message)


class JitterScorer(BatchScorer):
    """A ``BatchScorer`` that sleeps 0.3 s on every other batch (by the ``n`` of its first row), so that
    two workers finish their batches out of turn."""

    def __call__(self, batch):
        time.sleep(0.3 if batch["n"][0].as_py() // 10 % 2 == 0 else 0)
        return super().__call__(batch)


class ThreadsScorer(BatchScorer):
    """A ``BatchScorer`` that adds the torch threads its scorer runs on as a column, ``threads``."""

    def score(self, names, given=None):
        return {**super().score(names, given), "threads": [self.scorer().threads] * len(names)}  # what it runs on
