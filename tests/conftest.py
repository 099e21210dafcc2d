"""Shared test helpers: vocabularies, random names, models with random non-trivial weights."""

import itertools
import os
import random
import string

import pytest
import torch

from wavenet_conv import ConvModel, ModelConfig, TreeModel, Vocab

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LECTURE_NAMES = os.path.join(ROOT, "..", "shared", "names.txt")
BUNDLED_NAMES = os.path.join(ROOT, "data", "names.txt")
VOCAB = Vocab(string.ascii_lowercase)

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
    from wavenet_conv import load_names

    return load_names(LECTURE_NAMES)


@pytest.fixture
def bundled_words():
    from wavenet_conv import load_names

    return load_names(BUNDLED_NAMES)


# configurations whose widths differ (n_inner, n_skip, n_head, the first layer's residual input)
SEPARATE_WIDTHS = {
    "res-none": dict(residual=True, residual_input="none"),
    "res-identity": dict(residual=True, residual_input="identity", n_embd=6),
    "res-inner": dict(residual=True, n_inner=4, activation="gated"),
    "skip-widths": dict(skip=True, n_skip=9, n_head=3),
    "all-widths": dict(residual=True, skip=True, n_inner=3, n_skip=5, n_head=8, activation="glu", norm="layer"),
}
