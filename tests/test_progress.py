"""loss.png is drawn without touching matplotlib's global state (a notebook's inline backend)."""

import pytest
import torch

from wavenet_conv.progress import plot_losses


def test_the_loss_plot_leaves_the_backend_alone(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # stands in for a notebook's inline backend
    try:
        assert plot_losses(torch.rand(400) + 1, 2, 1.5, tmp_path / "loss.png")
        assert matplotlib.get_backend() == "svg" and (tmp_path / "loss.png").stat().st_size > 1000
    finally:
        matplotlib.use(before)
