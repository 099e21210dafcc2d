"""What a training run shows and how it stops: the progress line, the lecture's loss plot, and Ctrl-C
turned into a clean stop between two steps."""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from pathlib import Path

import torch


class Progress:
    """Progress on stderr: step, mean loss since the last report, steps/s, time left. On a terminal, one
    status line rewritten with ``\\r`` at most every 0.2 s; elsewhere (a log file, CI), a plain line
    every ``interval`` seconds (default 5).

    It reads the losses back from the device only when it reports, and at most once every ``every``
    steps; ``update`` returns the mean loss it read (None when it read nothing).
    """

    def __init__(self, total: int, start: int = 0, enabled: bool = True, stream=None, every: int = 10,
                 interval: float | None = None):
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.enabled = enabled
        self.interval = interval if interval is not None else (0.2 if self.terminal else 5.0)
        self.total, self.start, self.every = total, start, every
        self.t0, self.last, self.shown = time.time(), 0.0, start

    def update(self, step: int, losses: torch.Tensor) -> float | None:
        """After step ``step``; ``losses`` (total,) every step's loss so far, on the device."""
        if not self.enabled or (step - self.shown < self.every and step < self.total):
            return None
        now = time.time()
        if now - self.last < self.interval and step < self.total:
            return None
        loss = losses[self.shown : step].mean().item()  # the one read from the device
        self.last, self.shown = now, step
        rate = (step - self.start) / max(now - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else 0.0
        width = len(str(self.total))
        line = (f"step {step:>{width}}/{self.total}  loss {loss:.4f}  {rate:7.1f} steps/s  "
                f"{int(eta) // 60:d}:{int(eta) % 60:02d} left")
        self.stream.write(f"\r{line} " if self.terminal else f"{line}\n")
        self.stream.flush()
        return loss

    def close(self):
        if self.enabled and self.terminal and self.last:
            self.stream.write("\n")
            self.stream.flush()
            self.last = 0.0


def block_means(losses: torch.Tensor, block: int) -> torch.Tensor:
    """log10 of each step's loss, averaged over blocks of ``block`` consecutive steps (the lecture's plot)."""
    n = len(losses) // block * block
    return losses[:n].log10().view(-1, block).mean(1)


def plot_losses(losses: torch.Tensor, block: int, val_loss: float | None, path: Path) -> bool:
    """Write loss.png; False (and no file) when matplotlib is not installed. Drawn on a bare
    ``Figure``: no pyplot and no backend switch, so a notebook's inline figures keep working."""
    try:  # an optional dependency: imported only here
        from matplotlib.figure import Figure
    except ImportError:
        return False
    y = block_means(losses, block)
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    ax.plot((torch.arange(len(y)) + 0.5) * block, y, label=f"train: log10 loss, mean of {block} steps")
    if val_loss is not None:
        ax.axhline(math.log10(val_loss), color="C1", ls="--", label=f"val loss {val_loss:.4f}")
    ax.set_xlabel("step")
    ax.set_ylabel("log10 loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


class DeferredInterrupt:
    """Turns the first Ctrl-C into a flag checked between steps (so the saved state is a whole step);
    a second Ctrl-C raises ``KeyboardInterrupt`` at once, and nothing more is saved."""

    def __init__(self):
        self.hit = False

    def __enter__(self):
        self.active = threading.current_thread() is threading.main_thread()
        if self.active:
            self.old = signal.signal(signal.SIGINT, self.handler)
        return self

    def handler(self, signum, frame):
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc):
        if self.active:
            signal.signal(signal.SIGINT, self.old)
