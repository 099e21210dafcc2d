"""Training: the lecture's recipe and the library's whole-name recipe, with checkpoints and exact resume.

``train()`` is three steps around a ``Run``, the plain state that a checkpoint holds::

    run = new_run(...)  or  resume_run(...)   # data, model, optimizer, batches; step 0 or the checkpoint's
    train_steps(run, ...)                      # the loop: batch, loss, backward, optimizer step
    finish(run, ...)                           # split losses, metrics.json, loss.png, the last checkpoint

Two recipes (``config.recipe``): ``lecture`` is the lecture's own -- ``torch.manual_seed(seed)`` before
the model's init, the tree form, minibatches of 32 contexts drawn with ``torch.randint``, plain SGD,
lr 0.1 then 0.01 after 75% of 200,000 steps. ``default`` trains the conv form on whole names: each
batch is a set of names (an epoch-wise shuffle), the loss is the mean over every real position,
BatchNorm statistics over real positions only; AdamW with linear warmup and cosine decay.

Resume is exact: the name batches are a function of (seed, step), the lecture recipe's
``torch.randint`` stream is restored from the saved RNG state, and the learning rate is a function of
the step, so a resumed run ends with the same weights as an uninterrupted one. A checkpoint is only
ever written between two steps.

Inside a step nothing is read back from the device: each step's loss stays there (``Run.losses``)
and the progress line reads their mean at most every few steps. Where the losses are read anyway --
a progress report, an evaluation, a checkpoint, the end -- they are checked: a non-finite loss (or
weight) stops the run with ``TrainingDiverged``, naming the first non-finite step; the last good
checkpoint stays, and nothing non-finite is ever saved.

Nothing is lost: the run folder is claimed (``runfolder.RunFolder``: a lock, and a refusal to
overwrite another run) and the data checked against the split before the model is built.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .blocks import BatchNorm
from .checkpoint import (CHECKPOINT_NAME, load_checkpoint, model_from_checkpoint, model_kind, resolve,
                         save_checkpoint, word_hashes)
from .config import ModelConfig, TrainConfig, recipe, resolve_device, resolve_precision
from .conv import ConvModel
from .data import START, Vocab, contexts, lecture_split, load_names, sha256_file
from .errors import ConfigError, DataError, TrainingDiverged
from .paths import bundled_names
from .runfolder import RunFolder
from .scoring import score_names
from .tree import TreeModel
from .version import __version__

# what a resumed run may do differently: how it runs and reports, not what it computes
CHANGEABLE_ON_RESUME = ("device", "compile", "checkpoint_every", "eval_every", "eval_test", "loss_block")


def lr_at(tc: TrainConfig, step: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): a pure function, so resume is exact."""
    if tc.schedule == "step":
        return tc.lr * (tc.lr_decay if step >= int(tc.decay_at * tc.steps) else 1.0)
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    t = min(1.0, (step - tc.warmup) / max(1, tc.steps - tc.warmup))
    if tc.schedule == "linear":
        return tc.lr * (1 - (1 - tc.lr_decay) * t)
    return tc.lr * (tc.lr_decay + (1 - tc.lr_decay) * 0.5 * (1 + math.cos(math.pi * t)))


def averaging(tc: TrainConfig, step: int) -> bool:
    """Whether the weights after step ``step`` (1-based) join the average (``TrainConfig.swa``): every
    ``swa_every`` steps of the last ``swa`` of the run."""
    return bool(tc.swa) and step > tc.steps - round(tc.swa * tc.steps) and step % tc.swa_every == 0


# ----------------------------------------------------------------------------- batches


class NameBatches:
    """Batches of whole names packed end to end (no padding), an epoch-wise shuffle that depends only
    on (seed, step). A batch is (x, y, pos), each (N,): the tokens ``[0, c1..cn]`` of its names back to
    back, their targets ``[c1..cn, 0]``, and each position's index in its name (``ConvModel.packed``).

    The names live on the device; their lengths and the batch order stay on the host, so that a
    batch's size is known without reading anything back from the device.
    """

    def __init__(self, words, vocab: Vocab, batch_size: int, seed: int, device):
        chars = torch.tensor([vocab.stoi[ch] for w in words for ch in w + START], dtype=torch.long)  # c1..cn 0, each name
        self.lengths = torch.tensor([len(w) + 1 for w in words], dtype=torch.long)  # (n,) targets per name, on the host
        self.starts = torch.cumsum(self.lengths, 0) - self.lengths  # (n,) where each name starts
        pos = torch.arange(len(chars)) - torch.repeat_interleave(self.starts, self.lengths)  # index in its name
        x = torch.where(pos == 0, 0, chars.roll(1))  # [0, c1..cn] each: the targets shifted, '.' in front
        self.x, self.y, self.pos = (t.to(device) for t in (x, chars, pos))
        self.n, self.batch_size, self.seed = len(words), min(batch_size, len(words)), seed
        self.per_epoch = self.n // self.batch_size
        self.epoch, self.perm = -1, None

    def __call__(self, step: int):
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self.epoch, self.perm = epoch, torch.randperm(self.n, generator=g)
        return self.take(self.perm[k * self.batch_size : (k + 1) * self.batch_size])

    def take(self, ix: torch.Tensor):
        """Names ``ix`` (B,) packed: (x, y, pos), each (N,), N their targets in all."""
        lengths = self.lengths[ix]  # (B,)
        firsts = torch.cumsum(lengths, 0) - lengths  # where each name starts in the batch
        src = torch.arange(int(lengths.sum())) + torch.repeat_interleave(self.starts[ix] - firsts, lengths)  # (N,)
        src = src.to(self.x.device)
        return self.x[src], self.y[src], self.pos[src]

    def in_order(self, size: int = 512):
        """The whole training set once, in order: (x, pos) chunks."""
        for i in range(0, self.n, size):
            x, _, pos = self.take(torch.arange(i, min(i + size, self.n)))
            yield x, pos


class ContextBatches:
    """The lecture's minibatches: ``torch.randint`` over all training contexts (global RNG)."""

    def __init__(self, words, vocab: Vocab, batch_size: int, block_size: int, device):
        self.X, self.Y = (t.to(device) for t in contexts(words, vocab, block_size))  # (N, block), (N,)
        self.batch_size = batch_size

    def __call__(self, step: int):
        ix = torch.randint(0, self.X.shape[0], (self.batch_size,)).to(self.X.device)
        return self.X[ix], self.Y[ix], None

    def in_order(self, size: int = 4096):
        for i in range(0, self.X.shape[0], size):
            yield self.X[i : i + size], None


def add_input_noise(x: torch.Tensor, p: float, vocab_size: int, seed: int, step: int) -> torch.Tensor:
    """Replace each non-'.' token of ``x`` by a uniform random character with probability ``p``; the
    draws depend only on (seed, step), so resume stays exact."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step + 1)
    hit = (torch.rand(x.shape, generator=g) < p).to(x.device) & (x != 0)
    noise = torch.randint(1, vocab_size, x.shape, generator=g).to(x.device)
    return torch.where(hit, noise, x)


@torch.no_grad()
def recalibrate_batchnorm(model, batches) -> None:
    """Recompute every BatchNorm's running statistics on the clean training set: the mean of the
    batch statistics over one ordered pass. Used for averaged weights (``swa``), which no batch has
    seen, and after ``input_noise``, whose noisy batches the running statistics were estimated on."""
    norms = [m for m in model.modules() if isinstance(m, BatchNorm)]
    if not norms:
        return
    momenta = [bn.momentum for bn in norms]
    model.train()
    for k, (x, pos) in enumerate(batches.in_order()):
        for bn in norms:
            bn.momentum = 1.0 / (k + 1)  # a running mean of the batch statistics
        model(x) if pos is None else model.packed(x, pos)
    for bn, m in zip(norms, momenta):
        bn.momentum = m


def batch_loss(forward, x, y, pos, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Mean cross-entropy over the batch's targets: contexts (B, 2**L) with ``pos`` None (the tree
    form's forward), or names packed end to end (``ConvModel.packed``). ``dtype``: the matmuls' (a
    bfloat16 autocast: weights, statistics and the loss stay float32)."""
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
        logits = forward(x) if pos is None else forward(x, pos)  # (B, V) or (N, V)
    return F.cross_entropy(logits.float(), y)


def split_loss(model, words, vocab: Vocab) -> float:
    """Mean cross-entropy (nats) over every example of ``words``, in eval mode (``score_names``)."""
    return score_names(model, words, vocab).mean_loss


def make_optimizer(model, tc: TrainConfig) -> torch.optim.Optimizer:
    """SGD, or AdamW with weight decay on the weights and embeddings (2-D), not on biases or norms."""
    if tc.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=tc.lr)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float64) for p in decay + rest)
    return torch.optim.AdamW(groups, lr=tc.lr, betas=(0.9, tc.beta2), fused=fused)  # fused: one kernel a step


def rng_state(device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device):
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


# ----------------------------------------------------------------------------- progress, plot, Ctrl-C


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
    """Write loss.png; False (and no file) when matplotlib is not installed."""
    try:  # an optional dependency: imported only here
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    y = block_means(losses, block)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot((torch.arange(len(y)) + 0.5) * block, y, label=f"train: log10 loss, mean of {block} steps")
    if val_loss is not None:
        ax.axhline(math.log10(val_loss), color="C1", ls="--", label=f"val loss {val_loss:.4f}")
    ax.set_xlabel("step")
    ax.set_ylabel("log10 loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
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


def device_clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


# ----------------------------------------------------------------------------- the run


@dataclass
class Run:
    """Everything a training run carries from step to step; a checkpoint is this, saved."""

    config: TrainConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    vocab: Vocab
    splits: tuple[list[str], list[str], list[str]]  # the lecture's train, val, test names
    batches: NameBatches | ContextBatches
    device: torch.device
    data: dict  # the names file: {"path", "sha256", "n_words"}
    run_dir: Path | None  # where checkpoint.pt, metrics.json and loss.png go (None: nowhere)
    forward: Callable = None  # the model's forward for the training steps (compiled with config.compile)
    dtype: torch.dtype = torch.float32  # the training steps' matmuls (config.precision)
    train_words: torch.Tensor = None  # hashes of the training names, in every checkpoint
    step: int = 0  # optimizer steps done
    losses: torch.Tensor = None  # (steps,) float32 on the device: the loss of every step done
    train_seconds: float = 0.0  # wall time of the training steps alone, over every session
    eval_seconds: float = 0.0  # wall time of the evaluations (val along the way, the splits at the end)
    val_curve: list = field(default_factory=list)  # [(step, val loss)] along the way
    swa: list | None = None  # the running average of the weights (``TrainConfig.swa``), one tensor a parameter
    swa_count: int = 0  # how many steps' weights it averages
    saved_step: int | None = None  # the step of the checkpoint on disk
    verified: int = 0  # the steps whose losses have been checked finite


@dataclass
class TrainResult:
    model: torch.nn.Module
    vocab: Vocab
    metrics: dict
    run_dir: Path | None
    train_words: list[str]
    config: TrainConfig


def read_data(path, vocab: Vocab | None = None, sha256: str | None = None):
    """The names file (default: the bundled one) -> (words, vocab, {"path", "sha256", "n_words"}).

    ``vocab``: the run's (resume); every name must fit it. ``sha256``: the file the run started on."""
    path = Path(path if path is not None else bundled_names())
    words = load_names(path)
    sha = sha256_file(path)
    if sha256 is not None and sha != sha256:
        raise DataError(f"{path}: the data file differs from the one this run started on (sha256 changed)")
    vocab = vocab or Vocab.from_words(words)
    if not vocab.covers(words):
        load_names(path, vocab)  # raises a DataError naming the line and character
    return words, vocab, {"path": str(path.resolve()), "sha256": sha, "n_words": len(words)}


MIN_NAMES = 6  # the fewest names whose lecture split has a train and a val name (so has every larger count)


def check_split(words, data: dict) -> None:
    """Refuse a names file too small for the lecture's 80/10/10 split: an empty train or val split."""
    for part, names in zip(("train", "val"), lecture_split(words)):
        if not names:
            raise DataError(f"{data['path']}: {len(words)} name(s) are too few for the lecture's 80/10/10 split: "
                            f"its {part} split would be empty (at least {MIN_NAMES} names are needed)")


def training_forward(model, tc: TrainConfig):
    """What a training step runs: the tree's forward on contexts, or the conv form on packed names;
    ``torch.compile``d (dynamic shapes) with ``tc.compile``."""
    forward = model.packed if tc.form == "conv" else model
    return torch.compile(forward, dynamic=True) if tc.compile else forward


def build_run(tc: TrainConfig, model, vocab: Vocab, words, data: dict, out) -> Run:
    """A run at step 0 around ``model``: on the device, in training mode, with its optimizer and batches."""
    device = resolve_device(tc.device)
    if tc.form == "conv" and not isinstance(model, ConvModel):
        raise ConfigError(f"form 'conv' trains a ConvModel on whole names, got a {type(model).__name__}")
    model.to(device).train()
    train_words, val_words, test_words = lecture_split(words)
    if tc.form == "conv":
        batches = NameBatches(train_words, vocab, tc.batch_size, tc.seed, device)
    else:
        batches = ContextBatches(train_words, vocab, tc.batch_size, model.block_size, device)
    run_dir = Path(out) if out is not None else None
    return Run(tc, model, make_optimizer(model, tc), vocab, (train_words, val_words, test_words), batches,
               device, data, run_dir, forward=training_forward(model, tc), dtype=resolve_precision(tc.precision, device),
               train_words=word_hashes(train_words), losses=torch.zeros(tc.steps, device=device))


def new_run(model_config: ModelConfig | None, tc: TrainConfig, data, folder: RunFolder | None, make_model=None) -> Run:
    """Set up a fresh run: the data, the run folder claimed, then ``torch.manual_seed(tc.seed)`` and the
    model, as the lecture."""
    words, vocab, data_info = read_data(data)
    check_split(words, data_info)
    if folder is not None:
        folder.claim()
    torch.manual_seed(tc.seed)  # the model's init and the lecture recipe's randint stream follow it
    if make_model is not None:
        model = make_model(len(vocab))
    else:  # the vocabulary size is the data's
        mc = ModelConfig.from_dict({**(model_config or ModelConfig()).to_dict(), "vocab_size": len(vocab)})
        model = (ConvModel if tc.form == "conv" else TreeModel)(mc)
    return build_run(tc, model, vocab, words, data_info, folder and folder.path)


# what a field added since wavenet_conv 0.1 was for a run saved without it: its value then
EARLIER_RUNS = {"precision": "float32", "swa": 0.0}


def checkpoint_config(ckpt: dict) -> TrainConfig:
    """The ``TrainConfig`` a checkpoint's run was trained with (older checkpoints: ``EARLIER_RUNS``)."""
    return TrainConfig.from_dict({**EARLIER_RUNS, **ckpt["train_config"]})


def saved_config(path_or_run) -> TrainConfig:
    """The ``TrainConfig`` a checkpoint (or run folder) was trained with."""
    return checkpoint_config(load_checkpoint(path_or_run))


def resumed_config(saved: TrainConfig, given: TrainConfig | None) -> TrainConfig:
    """``given`` (None: ``saved``), refused where it differs from ``saved`` outside ``CHANGEABLE_ON_RESUME``."""
    if given is None:
        return saved
    for f in fields(TrainConfig):
        old, new = getattr(saved, f.name), getattr(given, f.name)
        if f.name not in CHANGEABLE_ON_RESUME and old != new:
            raise ConfigError(f"TrainConfig.{f.name} is {old!r} in the run being resumed, not {new!r}: a resumed "
                              f"run keeps its settings (only {', '.join(CHANGEABLE_ON_RESUME)} can change)")
    return given


def resume_run(path, tc: TrainConfig | None, model_config: ModelConfig | None, data, folder: RunFolder) -> Run:
    """Set up a run from its checkpoint: its configs, data file, the run folder claimed, then its
    weights, optimizer, RNG and losses."""
    ckpt = load_checkpoint(path)
    tc = resumed_config(checkpoint_config(ckpt), tc)
    if model_config is not None and model_config.to_dict() != {**ckpt["model_config"], "vocab_size": model_config.vocab_size}:
        raise ConfigError("a resumed run keeps its model: pass no model_config (or the run's own)")
    vocab = Vocab.from_dict(ckpt["vocab"])
    words, vocab, data_info = read_data(data or ckpt["data"]["path"], vocab, ckpt["data"]["sha256"])
    folder.claim()
    torch.manual_seed(tc.seed)
    model, _ = model_from_checkpoint(ckpt, str(path))
    run = build_run(tc, model, vocab, words, data_info, folder.path)
    run.step = run.verified = ckpt["step"]  # a checkpoint holds nothing non-finite
    run.saved_step = run.step if folder.own_run else None  # the checkpoint in run_dir
    run.losses[: run.step] = ckpt["losses"].to(run.device)
    run.train_seconds, run.eval_seconds = ckpt.get("train_seconds", 0.0), ckpt.get("eval_seconds", 0.0)
    run.val_curve = [tuple(v) for v in ckpt.get("val_curve", [])]
    if ckpt.get("swa") is not None:
        run.swa, run.swa_count = [t.to(run.device) for t in ckpt["swa"]], ckpt["swa_count"]
    if ckpt.get("optimizer") is not None:
        run.optimizer.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"], run.device)
    return run


def kept(run: Run) -> str:
    """What a run that stops now leaves on disk."""
    return "no checkpoint was saved" if run.saved_step is None else f"the checkpoint of step {run.saved_step} stays"


def diverged(run: Run):
    """Raise ``TrainingDiverged`` naming the first step whose loss is not finite (or the step after
    which the weights were found non-finite) and the last good checkpoint."""
    bad = (~torch.isfinite(run.losses[: run.step])).nonzero()
    if len(bad):
        step = int(bad[0]) + 1
        what = f"the loss of step {step} is {float(run.losses[step - 1])}, the first non-finite one"
    else:
        step = run.step
        what = f"the model's weights or optimizer state became non-finite after step {run.verified}, by step {step}"
    raise TrainingDiverged(f"training diverged: {what} (is TrainConfig.lr {run.config.lr:g} too high?); "
                           f"{kept(run)}", step, run.saved_step)


def verify_finite(run: Run) -> None:
    """``TrainingDiverged`` unless the losses of the steps since the last check and every value of the
    model's and optimizer's state are finite: one read from the device."""
    state = [*run.model.state_dict().values(),
             *(t for s in run.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor))]
    finite = [torch.isfinite(run.losses[run.verified : run.step]).all()]
    finite += [torch.isfinite(t).all() for t in state if t.is_floating_point()]
    if not bool(torch.stack(finite).all()):
        diverged(run)
    run.verified = run.step


def save(run: Run, metrics: dict | None = None) -> None:
    """Write the run's checkpoint (atomically; nothing when the run has no folder), once the losses and
    the state are checked finite (``TrainingDiverged`` otherwise). A failed write (a full disk) raises
    ``OSError`` saying which checkpoint stays."""
    verify_finite(run)
    if run.run_dir is None:
        return
    ckpt = dict(
        kind=model_kind(run.model), model_config=run.model.config.to_dict(), vocab=run.vocab.to_dict(),
        train_config=run.config.to_dict(), data=run.data, train_words=run.train_words,
        state_dict=run.model.state_dict(), optimizer=run.optimizer.state_dict(), step=run.step,
        rng=rng_state(run.device), losses=run.losses[: run.step].to("cpu", copy=True), train_seconds=run.train_seconds,
        eval_seconds=run.eval_seconds, val_curve=run.val_curve, metrics=metrics,
        swa=None if run.swa is None else [t.to("cpu", copy=True) for t in run.swa], swa_count=run.swa_count,
    )
    path = run.run_dir / CHECKPOINT_NAME
    try:
        save_checkpoint(ckpt, path)
    except OSError as e:
        raise OSError(e.errno, f"{path}: could not save the checkpoint of step {run.step} "
                               f"({e.strerror or e}); {kept(run)}") from e
    run.saved_step = run.step


@torch.no_grad()
def average_weights(run: Run) -> None:
    """Fold the model's weights into the run's running average of them (stochastic weight averaging)."""
    weights = [p.detach() for p in run.model.parameters()]
    if run.swa is None:
        run.swa, run.swa_count = [w.clone() for w in weights], 1
        return
    run.swa_count += 1
    for avg, w in zip(run.swa, weights):
        avg.lerp_(w, 1 / run.swa_count)


def due(every: int, step: int, before: int) -> bool:
    return bool(every) and step % every == 0 and step < before


def evaluate_val(run: Run, log) -> None:
    t0 = device_clock(run.device)
    run.val_curve.append((run.step, split_loss(run.model, run.splits[1], run.vocab)))
    run.eval_seconds += device_clock(run.device) - t0
    log(f"step {run.step}: val {run.val_curve[-1][1]:.4f}")


def train_steps(run: Run, end: int, interrupt: DeferredInterrupt, bar: Progress, log) -> None:
    """Optimizer steps until step ``end`` or a first Ctrl-C (always at a step boundary), with the
    periodic val loss and checkpoints. ``run.train_seconds`` counts the steps alone."""
    tc, opt = run.config, run.optimizer
    t0 = device_clock(run.device)
    while run.step < end and not interrupt.hit:
        for group in opt.param_groups:
            group["lr"] = lr_at(tc, run.step)
        x, y, pos = run.batches(run.step)  # packed names (N,) x3, or contexts (B, 2**L), targets (B,), None
        if tc.input_noise:
            x = add_input_noise(x, tc.input_noise, len(run.vocab), tc.seed, run.step)
        loss = batch_loss(run.forward, x, y, pos, run.dtype)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.losses[run.step] = loss.detach()  # stays on the device
        run.step += 1
        if averaging(tc, run.step):
            average_weights(run)
        shown = bar.update(run.step, run.losses)  # now and then, the mean loss since the last report
        if shown is not None and not math.isfinite(shown):
            verify_finite(run)
        if due(tc.eval_every, run.step, tc.steps) or due(tc.checkpoint_every, run.step, end):
            run.train_seconds += device_clock(run.device) - t0
            bar.close()
            if due(tc.eval_every, run.step, tc.steps):
                verify_finite(run)
                evaluate_val(run, log)
            if due(tc.checkpoint_every, run.step, end):
                save(run)
            t0 = device_clock(run.device)
    run.train_seconds += device_clock(run.device) - t0


def finish(run: Run, log) -> TrainResult:
    """The end of a run: split losses (eval mode), metrics, the last checkpoint, metrics.json, loss.png."""
    tc, model = run.config, run.model
    verify_finite(run)
    if run.swa is not None:  # the averaged weights, then BatchNorm's statistics for them
        with torch.no_grad():
            for p, avg in zip(model.parameters(), run.swa):
                p.copy_(avg)
    if tc.input_noise or run.swa is not None:
        recalibrate_batchnorm(model, run.batches)
    model.eval()
    t0 = device_clock(run.device)
    train_words, val_words, test_words = run.splits
    losses = dict(train_loss=split_loss(model, train_words, run.vocab), val_loss=split_loss(model, val_words, run.vocab),
                  test_loss=split_loss(model, test_words, run.vocab) if tc.eval_test else None)
    run.eval_seconds += device_clock(run.device) - t0
    metrics = dict(
        **losses,
        params=sum(p.numel() for p in model.parameters()),
        steps=run.step,
        train_seconds=round(run.train_seconds, 2),
        ms_per_step=round(1000 * run.train_seconds / max(run.step, 1), 4),
        eval_seconds=round(run.eval_seconds, 2),
        kind=model_kind(model),
        recipe=tc.recipe,
        model_config=model.config.to_dict(),
        train_config=tc.to_dict(),
        data=run.data,
        split={"train": len(train_words), "val": len(val_words), "test": len(test_words)},
        val_curve=run.val_curve,
        device=str(run.device),
        torch_threads=torch.get_num_threads(),
        library_version=__version__,
        torch_version=str(torch.__version__),
    )
    log(f"train {metrics['train_loss']:.4f}  val {metrics['val_loss']:.4f}"
        + (f"  test {metrics['test_loss']:.4f}" if metrics["test_loss"] is not None else "")
        + f"  ({run.train_seconds:.1f} s training, {metrics['ms_per_step']:.2f} ms/step; "
        f"{run.eval_seconds:.1f} s evaluating)")
    if run.run_dir is not None:
        save(run, metrics)
        (run.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        block = tc.loss_block or max(1, tc.steps // 200)
        if not plot_losses(run.losses.cpu(), block, metrics["val_loss"], run.run_dir / "loss.png"):
            log("matplotlib is not installed: skipping loss.png (pip install 'wavenet_conv[plot]')")
    return TrainResult(model, run.vocab, metrics, run.run_dir, train_words, tc)


def describe(run: Run) -> str:
    tc, n_params = run.config, sum(p.numel() for p in run.model.parameters())
    return (f"{model_kind(run.model)} model, {n_params:,} parameters; recipe {tc.recipe}: {tc.steps:,} steps of "
            f"{tc.batch_size} {'names' if tc.form == 'conv' else 'contexts'}, {tc.optimizer} lr {tc.lr:g}; "
            f"{run.data['path']} ({len(run.splits[0]):,} train names); device {run.device}"
            + ("; compiled" if tc.compile else ""))


def run_folder(out, resume, force: bool) -> RunFolder | None:
    """The folder ``train`` writes in, unclaimed: ``out``, or the resumed run's own folder."""
    if resume is None:
        return None if out is None else RunFolder(out, force=force)
    own = resolve(resume).parent
    if out is None or Path(out).resolve() == own.resolve():
        return RunFolder(own, own_run=True)
    return RunFolder(out, force=force)


def train(
    model_config: ModelConfig | None = None,
    config: TrainConfig | None = None,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    make_model=None,
    stop_at: int | None = None,
    progress: bool | None = True,
    log=print,
    force: bool = False,
) -> TrainResult:
    """Train a model on a names file with the lecture's split and return it with its metrics.

    model_config: the model (default: the lecture's, ModelConfig()); its vocab_size is the data's.
    config: how to train (default: ``recipe("default")``); its ``form`` picks ConvModel or TreeModel.
    data: names file (default: the bundled data/names.txt); it needs at least ``MIN_NAMES`` names.
    out: run folder for checkpoint.pt, metrics.json, loss.png (None: write nothing). It must be new or
        empty (``RunFolderError`` otherwise), and is claimed with a lock file, ``train.lock``, for the
        length of the call: a second training on it refuses at once (see ``runfolder``).
    resume: a run folder or checkpoint to continue; the run continues into ``out`` (default: the
        same folder) with its own model, data file and ``TrainConfig``, and ends where an
        uninterrupted run ends. A ``config`` may change only ``CHANGEABLE_ON_RESUME`` (a
        ``ConfigError`` names any other field that differs); a ``model_config`` must be the run's.
    make_model: a function of the vocabulary size returning the model to train instead of one built
        from ``model_config`` (e.g. a FlatModel; it must take contexts when ``config.form == "tree"``);
        called right after ``torch.manual_seed(config.seed)``, where the lecture builds its model.
    stop_at: stop after this step as if interrupted (a checkpoint is written); the result has
        ``metrics["stopped_at"]``.
    progress: report progress on stderr (a ``\\r`` line on a terminal, a line every few seconds
        elsewhere); False: none.
    log: called with each line of the run's report (``print`` by default; ``None`` for silence).
    force: train into an ``out`` that holds a run or other files; the earlier run's files go first.

    Every check -- options, data, run folder -- is done before the model is built. A loss that
    becomes non-finite raises ``TrainingDiverged`` (naming the step; the last good checkpoint stays).
    Ctrl-C: the first finishes the step in flight, saves a checkpoint and raises ``KeyboardInterrupt``;
    a second one raises at once and writes nothing (the last checkpoint stays).
    """
    log = log or (lambda *a, **k: None)
    if resume is not None and make_model is not None:
        raise ConfigError("make_model: a resumed run keeps its model (the checkpoint's)")
    folder = run_folder(out, resume, force)
    try:
        if resume is not None:
            run = resume_run(resume, config, model_config, data, folder)
            log(f"resuming {resume} at step {run.step}/{run.config.steps}")
        else:
            run = new_run(model_config, config or recipe("default"), data, folder, make_model)
        return train_run(run, stop_at, progress is not False, log)
    finally:
        if folder is not None:
            folder.release()


def train_run(run: Run, stop_at: int | None, progress: bool, log) -> TrainResult:
    """``train`` once the run is set up: the steps, then ``finish`` (or a checkpoint when stopped early)."""
    log(describe(run))
    end = run.config.steps if stop_at is None else min(run.config.steps, stop_at)
    bar = Progress(run.config.steps, run.step, enabled=progress)
    with DeferredInterrupt() as interrupt:
        try:
            train_steps(run, end, interrupt, bar, log)
            if interrupt.hit and run.saved_step != run.step:
                save(run)
        except KeyboardInterrupt:  # a second Ctrl-C, mid-step or mid-save: write nothing
            bar.close()
            log(f"interrupted again at step {run.step}: not saved; {kept(run)}")
            raise
        finally:
            bar.close()
    if interrupt.hit:
        saved = f"checkpoint saved: resume with --resume {run.run_dir}" if run.run_dir else "nothing saved (no run folder)"
        log(f"interrupted at step {run.step}; {saved}")
        raise KeyboardInterrupt
    if run.step < run.config.steps:  # stopped early on purpose
        save(run)
        metrics = {"stopped_at": run.step, "train_seconds": run.train_seconds}
        return TrainResult(run.model, run.vocab, metrics, run.run_dir, run.splits[0], run.config)
    return finish(run, log)
