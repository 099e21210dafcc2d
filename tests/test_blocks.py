"""The activation formulas, checked against the formulas themselves: the tree and the conv share them
(and the folded fast path re-implements them), so comparing the forms cannot catch a mistake here."""

import math

import pytest
import torch

from helpers import devices
from wavenet_conv.models.blocks import activate
from wavenet_conv.models.config import ACTIVATIONS
from wavenet_conv.inference.folded import sigmoid_tanh_


def sigmoid(x):
    return 1 / (1 + torch.exp(-x))


def tanh(x):
    return (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x))


@pytest.fixture
def a():
    """(4, 5, 12) pre-activations over a wide range, float64."""
    return 3 * torch.randn(4, 5, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_the_formulas_themselves():
    assert tanh(torch.tensor(0.5, dtype=torch.float64)).item() == pytest.approx(math.tanh(0.5), abs=1e-15)
    assert sigmoid(torch.tensor(0.5, dtype=torch.float64)).item() == pytest.approx(1 / (1 + math.exp(-0.5)), abs=1e-15)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activate_is_its_formula(a, activation):
    f, g = a[..., :6], a[..., 6:]  # the gated ones split the channels: the first half, then the second
    expected = {
        "tanh": tanh(a),  # the lecture's
        "gated": tanh(f) * sigmoid(g),  # WaveNet's eq. 2
        "glu": f * sigmoid(g),  # the gated linear unit
    }[activation]
    got = activate(a, activation)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-12


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("doubled", [False, True])
def test_the_fast_paths_tanh_is_tanh(a, doubled, device):
    """tanh(x) = 2 sigmoid(2x) - 1, computed in place (from 2x already, when ``doubled``); off a CPU,
    tanh_ itself (undoubled)."""
    x = (2 * a if doubled else a).clone().to(device)
    assert (sigmoid_tanh_(x, doubled).cpu() - tanh(a)).abs().max() <= 1e-12
