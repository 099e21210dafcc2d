"""loss.png is drawn without touching matplotlib's global state (a notebook's inline backend)."""

import pytest
import torch

from wavenet_conv.training.progress import Progress, plot_losses


def test_the_loss_plot_leaves_the_backend_alone(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # stands in for a notebook's inline backend
    try:
        assert plot_losses(torch.rand(400) + 1, 2, 1.5, tmp_path / "loss.png")
        assert matplotlib.get_backend() == "svg" and (tmp_path / "loss.png").stat().st_size > 1000
    finally:
        matplotlib.use(before)



def test_progress_reports_the_mean_loss_since_its_last_report():
    import io

    losses = torch.arange(1, 101, dtype=torch.float32)
    bar = Progress(100, enabled=True, stream=io.StringIO(), every=10, interval=0)
    assert bar.update(10, losses) == pytest.approx(5.5) and bar.update(15, losses) is None  # fewer than 10 steps
    assert bar.update(20, losses) == pytest.approx(15.5)  # steps 11..20
    assert bar.update(100, losses) == pytest.approx(60.5)  # steps 21..100, the last one always reported
