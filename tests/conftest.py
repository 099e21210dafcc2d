"""Shared test helpers: vocabularies, random names, models with random non-trivial weights, the
data files, and one torch thread for the whole suite."""

import io
import itertools
import os
import random
import signal
import string
import subprocess
import sys

import pytest
import torch

from wavenet_conv import ConvModel, ModelConfig, TreeModel, Vocab, load_names
from wavenet_conv.cli import main
from wavenet_conv.batches import NameBatches

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


def cli(*args, stdin=None, timeout=120, popen=False, python=("-m", "wavenet_conv")):
    """``wavenet-conv ARGS`` in a subprocess, at the checkout's root, on one thread (``popen``: started,
    not waited for; ``python``: what runs the command, e.g. ``("-c", code)``)."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, *python, *map(str, args)]
    if popen:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def run_main(argv, monkeypatch, capsys, stdin=""):
    """``main(argv)`` as the console script runs it: exit status, stdout, stderr."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode("utf-8", "surrogateescape"))))
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One torch thread: on a small shared CPU, more threads than free cores slow these tiny models
    down by an order of magnitude (the results do not depend on it)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def small_names(tmp_path_factory):
    """1,000 names of the bundled file: a few hundred steps train in a second or two."""
    path = tmp_path_factory.mktemp("data") / "small.txt"
    path.write_text("\n".join(load_names(BUNDLED_NAMES)[::32][:1000]) + "\n")
    return path

ACTIVATIONS = ("tanh", "gated", "glu")
NORMS = ("batch", "layer", "none")
# every combination of activation x norm x residual x skip
VARIANTS = [
    dict(activation=a, norm=n, residual=r, skip=s)
    for a, n, r, s in itertools.product(ACTIVATIONS, NORMS, (False, True), (False, True))
]


def variant_id(v: dict) -> str:
    return f"{v['activation']}-{v['norm']}" + ("-res" if v["residual"] else "") + ("-skip" if v["skip"] else "")


def random_words(n: int, seed: int = 0, min_len: int = 1, max_len: int = 12, alphabet=string.ascii_lowercase):
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(min_len, max_len))) for _ in range(n)]


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


@pytest.fixture
def lecture_words():
    if not os.path.exists(LECTURE_NAMES):
        pytest.skip(f"the lecture's names file is absent ({LECTURE_NAMES})")
    return load_names(LECTURE_NAMES)


@pytest.fixture
def bundled_words():
    return load_names(BUNDLED_NAMES)


# configurations whose widths differ (n_inner, n_skip, n_head, the first layer's residual input)
SEPARATE_WIDTHS = {
    "res-none": dict(residual=True, residual_input="none"),
    "res-identity": dict(residual=True, residual_input="identity", n_embd=6),
    "res-inner": dict(residual=True, n_inner=4, activation="gated"),
    "skip-widths": dict(skip=True, n_skip=9, n_head=3),
    "all-widths": dict(residual=True, skip=True, n_inner=3, n_skip=5, n_head=8, activation="glu", norm="layer"),
}


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
