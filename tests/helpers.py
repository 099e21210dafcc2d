"""What the tests share besides fixtures: paths, the vocabulary, random names and models, the variant
grid, the command line (in process and in a subprocess) and a Ctrl-C at a known step.

Tests import these with ``from helpers import ...`` (pytest puts tests/ on ``sys.path``); the
fixtures are in conftest.py.
"""

import importlib
import io
import itertools
import os
import random
import shutil
import signal
import string
import subprocess
import sys
from contextlib import contextmanager, nullcontext

import pytest
import torch

from wavenet_conv import ConvModel, ModelConfig, TreeModel, Vocab
from wavenet_conv.training.minibatches import NameBatches
from wavenet_conv.cli.main import main
from wavenet_conv.models.config import ACTIVATIONS, NORMS, recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED_NAMES = os.path.join(ROOT, "data", "names.txt")
VOCAB = Vocab(string.ascii_lowercase)


def find_lecture_names() -> str:
    """The lecture's names.txt (makemore's): $WAVENET_CONV_LECTURE_NAMES, the checkout's own
    names.txt (gitignored), or one in a ``shared`` folder beside the checkout."""
    candidates = [os.environ.get("WAVENET_CONV_LECTURE_NAMES", ""), os.path.join(ROOT, "names.txt"),
                  os.path.join(os.path.dirname(ROOT), "shared", "names.txt")]
    return next((p for p in candidates if p and os.path.exists(p)), candidates[1])


LECTURE_NAMES = find_lecture_names()

# ----------------------------------------------------------------------------- the command line


def cli(*args, stdin=None, timeout=120, popen=False, python=("-m", "wavenet_conv")):
    """``wavenet-conv ARGS`` in a subprocess, at the checkout's root, on one thread (``popen``: started,
    not waited for; ``python``: what runs the command, e.g. ``("-c", code)``). ``stdin``: str, or bytes
    for a binary stdin (then the result's stdout and stderr are bytes too)."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, *python, *map(str, args)]
    text = not isinstance(stdin, bytes)
    if popen:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    return subprocess.run(argv, input=stdin, capture_output=True, text=text, timeout=timeout, cwd=ROOT, env=env)


def run_main(argv, monkeypatch, capsys, stdin=""):
    """``main(argv)`` as the console script runs it: exit status, stdout, stderr."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode("utf-8", "surrogateescape"))))
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


# ----------------------------------------------------------------------------- models and names

# every combination of the config's own activations and norms, with and without residual and skip: a
# new activation or norm is in every test that takes the grid
VARIANTS = [
    dict(activation=a, norm=n, residual=r, skip=s)
    for a, n, r, s in itertools.product(ACTIVATIONS, NORMS, (False, True), (False, True))
]


def variant_id(v: dict) -> str:
    return f"{v['activation']}-{v['norm']}" + ("-res" if v["residual"] else "") + ("-skip" if v["skip"] else "")


# configurations whose widths differ (n_inner, n_skip, n_head, the first layer's residual input)
SEPARATE_WIDTHS = {
    "res-none": dict(residual=True, residual_input="none"),
    "res-identity": dict(residual=True, residual_input="identity", n_embd=6),
    "res-inner": dict(residual=True, n_inner=4, activation="gated"),
    "skip-widths": dict(skip=True, n_skip=9, n_head=3),
    "all-widths": dict(residual=True, skip=True, n_inner=3, n_skip=5, n_head=8, activation="glu", norm="layer"),
}


def random_words(n: int, seed: int = 0, min_len: int = 1, max_len: int = 12, alphabet=string.ascii_lowercase):
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(min_len, max_len))) for _ in range(n)]


# made-up names per length: every one letter; the lengths a block or a bucket could cut at (n + 1
# positions around 8, 16, 32, 64); many short ones (the group's rows then land around 128, 256 and 384
# in some list); and long names (60 to 100 characters)
MADE_UP = {1: 26, 2: 100, 3: 120, 7: 60, 8: 60, 9: 60, 15: 40, 16: 40, 17: 40, 31: 40, 32: 40, 33: 40,
           **{n: 2 for n in range(60, 101)}, 63: 12, 64: 12, 65: 12}


def varied_names(n: int = 3000, seed: int = 0) -> list[str]:
    """``n`` distinct names (a-z) in a shuffled order: ``MADE_UP``'s of each length, then names of the
    bundled file."""
    rng = random.Random(seed)
    names = set(string.ascii_lowercase)
    for length, count in MADE_UP.items():
        made = {w for w in names if len(w) == length}
        while len(made) < count:
            made.add("".join(rng.choices(string.ascii_lowercase, k=length)))
        names |= made
    with open(BUNDLED_NAMES, encoding="utf-8") as f:
        bundled = sorted(set(f.read().split()) - names)
    names = sorted(names) + rng.sample(bundled, n - len(names))
    rng.shuffle(names)
    return names


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Perturb every parameter and give every normalization non-trivial statistics/affines."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():  # relative to each tensor's spread, so deep models stay realistic
        spread = p.std().item() if p.numel() > 1 and p.std() > 0 else 1.0
        p.add_(scale * spread * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p) + 0.1 * scale * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p))
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(0.5 * torch.randn(b.shape, generator=g, dtype=torch.float64).to(b))
        elif name.endswith("running_var"):
            b.copy_((0.2 + 2.0 * torch.rand(b.shape, generator=g, dtype=torch.float64)).to(b))
    return model


def make_pair(config: ModelConfig, dtype=torch.float64, seed: int = 0, device="cpu"):
    """A TreeModel with random weights/statistics and its ConvModel twin, both in eval mode."""
    torch.manual_seed(seed)
    tree = randomize_(TreeModel(config).to(device=device, dtype=dtype), seed).eval()
    return tree, ConvModel.from_tree(tree)


def devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# ----------------------------------------------------------------------------- training

train_module = importlib.import_module("wavenet_conv.training.train")  # the module; wavenet_conv.training.train is the function
SMALL = ModelConfig(n_embd=8, n_hidden=32)  # a model that trains a few hundred steps in a second or two
# the same on the command line
SMALL_ARGS = ["--n-embd", 8, "--n-hidden", 32, "--batch-size", 32, "--threads", 1]


def quick(name: str = "default", **overrides):
    """A recipe cut short for the tests: 300 steps of 32 names, a checkpoint every 100, no val reports
    unless asked for (keep_best off)."""
    return recipe(name, **{"steps": 300, "batch_size": 32, "checkpoint_every": 100, "keep_best": False, **overrides})


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def copy_run(run, to):
    """A copy of a run folder at ``to`` (a run trained once, for a test that changes it)."""
    shutil.copytree(run, to)
    return to


def interrupt_at(monkeypatch, step: int, times: int = 1):
    """Ctrl-C (a real SIGINT to this process) ``times`` times while the training batch of ``step`` is
    fetched: an interrupt at a known step, whatever the machine's speed."""
    fetch = NameBatches.__call__

    def fetch_and_interrupt(self, s):
        if s == step:
            for _ in range(times):
                signal.raise_signal(signal.SIGINT)
        return fetch(self, s)

    monkeypatch.setattr(NameBatches, "__call__", fetch_and_interrupt)


def open_fds() -> set | None:
    """This process's open file descriptors (None where /proc/self/fd cannot be read)."""
    try:
        return set(os.listdir("/proc/self/fd"))
    except OSError:
        return None


@contextmanager
def time_limit(seconds: int):
    """A ``TimeoutError`` in this (the main) thread if the block runs longer than ``seconds``: a job that
    hangs fails its test instead of the suite."""
    def expire(signum, frame):
        raise TimeoutError(f"the block ran over {seconds} s: it hangs")  # a job that hangs fails its test

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def threads_set_to(n: int):
    """The caller's torch thread count is ``n`` inside the block (the suite's one thread after it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def modes(model: torch.nn.Module) -> list[bool]:
    """Every submodule's train/eval mode, in order."""
    return [m.training for m in model.modules()]


def ends_with(error):
    """``pytest.raises(error)``, or nothing when ``error`` is None (the block returns)."""
    return nullcontext() if error is None else pytest.raises(error)


def without_notes(err: str) -> str:
    """stderr of the command line without its notes (``wavenet-conv train: note: ...``, e.g. a small
    names file's), for the tests that read what else it says."""
    return "".join(line for line in err.splitlines(keepends=True) if ": note: " not in line)
