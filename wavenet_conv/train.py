"""Training: the lecture's recipe and the library's whole-name recipe, with checkpoints and resume.

Two recipes (``recipe(name, **overrides)`` gives a ``TrainConfig``):

* ``lecture``: SPEC section 2 exactly -- ``torch.manual_seed(seed)``, the tree form, minibatches of 32
  contexts drawn with ``torch.randint``, plain SGD, lr 0.1 then 0.01 after 75% of 200,000 steps.
* ``default``: the conv form on whole names -- each batch is a set of names (an epoch-wise shuffle),
  the loss is the mean over every real position, BatchNorm statistics over real positions only;
  AdamW with linear warmup and cosine decay.

The batch layout follows ``form``: "tree" trains on contexts, "conv" on whole names.

Resume is exact: the batch order of the name recipe is a function of (seed, step), the lecture
recipe's ``torch.randint`` stream is restored from the saved RNG state, and the learning rate is a
function of the step, so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from . import __version__
from .blocks import BatchNorm
from .checkpoint import (CHECKPOINT_NAME, load_checkpoint, model_from_checkpoint, model_kind, resolve,
                         save_checkpoint, word_hashes)
from .config import ModelConfig
from .conv import ConvModel
from .data import DataError, Vocab, contexts, lecture_split, load_names, sequences, sha256_file
from .paths import bundled_names
from .scoring import score_names
from .tree import TreeModel

FORMS = ("conv", "tree")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step")


@dataclass
class TrainConfig:
    """How to train. The defaults are the ``default`` recipe; ``recipe("lecture")`` is SPEC section 2.

    form: "conv" (batches of whole names) or "tree" (batches of contexts, the lecture's).
    batch_size: names per batch (conv) or contexts per batch (tree).
    schedule: "cosine" -- linear warmup over ``warmup`` steps, then cosine from ``lr`` down to
        ``lr * lr_decay``; "step" -- ``lr``, then ``lr * lr_decay`` from step ``decay_at * steps``.
    checkpoint_every: write checkpoint.pt every this many steps (0: only at the end and on Ctrl-C).
    eval_every: log the val loss every this many steps (0: only at the end).
    eval_test: compute the test loss at the end (off while tuning on dev).
    input_noise: a regularizer -- each input character (not '.') is replaced by a random character
        with this probability; the targets are unchanged.
    loss_block: steps per point of loss.png (0: steps // 200).
    """

    recipe: str = "default"
    form: str = "conv"
    steps: int = 2000
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 6e-3
    schedule: str = "cosine"
    warmup: int = 200
    decay_at: float = 0.75
    lr_decay: float = 0.05
    weight_decay: float = 0.1
    input_noise: float = 0.0
    beta2: float = 0.99
    seed: int = 42
    device: str = "auto"
    checkpoint_every: int = 500
    eval_every: int = 0
    eval_test: bool = True
    loss_block: int = 0

    def __post_init__(self):
        for name, allowed in (("form", FORMS), ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "checkpoint_every", "eval_every", "loss_block"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.input_noise < 1.0:
            raise ValueError(f"TrainConfig.input_noise must be in [0, 1), got {self.input_noise}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.form == "tree" and self.batch_size < 2:
            raise ValueError("TrainConfig.batch_size: BatchNorm needs at least 2 examples per batch")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


RECIPES = {
    "default": {},
    "lecture": dict(form="tree", steps=200_000, batch_size=32, optimizer="sgd", lr=0.1, schedule="step",
                    warmup=0, decay_at=0.75, lr_decay=0.1, weight_decay=0.0, checkpoint_every=20_000),
}


def recipe(name: str = "default", **overrides) -> TrainConfig:
    """The ``TrainConfig`` of a named recipe, with ``overrides`` (None values are ignored)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r} (expected one of {sorted(RECIPES)})")
    base = TrainConfig(recipe=name, **RECIPES[name])
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def lr_at(tc: TrainConfig, step: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): a pure function, so resume is exact."""
    if tc.schedule == "step":
        return tc.lr * (tc.lr_decay if step >= int(tc.decay_at * tc.steps) else 1.0)
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    t = (step - tc.warmup) / max(1, tc.steps - tc.warmup)
    return tc.lr * (tc.lr_decay + (1 - tc.lr_decay) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available here")
    return dev


# ----------------------------------------------------------------------------- batches


class NameBatches:
    """Batches of whole names, an epoch-wise shuffle that depends only on (seed, step)."""

    def __init__(self, words, vocab: Vocab, batch_size: int, seed: int, device):
        self.data = sequences(words, vocab).to(device)  # x, y, mask: (N, T_max)
        self.n, self.batch_size, self.seed = len(words), min(batch_size, len(words)), seed
        self.per_epoch = self.n // self.batch_size
        self.epoch, self.perm = -1, None

    def __call__(self, step: int):
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self.epoch, self.perm = epoch, torch.randperm(self.n, generator=g).to(self.data.x.device)
        return self.take(self.perm[k * self.batch_size : (k + 1) * self.batch_size])

    def take(self, ix):
        d = self.data
        T = int(d.lengths[ix].max())  # trim the padding common to the whole batch
        return d.x[ix, :T], d.y[ix, :T], d.mask[ix, :T]  # (B, T) each

    def in_order(self, size: int = 512):
        """The whole training set once, in order: (x, mask) chunks."""
        for i in range(0, self.n, size):
            x, _, mask = self.take(torch.arange(i, min(i + size, self.n), device=self.data.x.device))
            yield x, mask


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


@torch.no_grad()
def recalibrate_batchnorm(model, batches) -> None:
    """Recompute every BatchNorm's running statistics on the clean training set: the mean of the
    batch statistics over one ordered pass. Used after ``input_noise``, whose noisy batches the
    running statistics were estimated on."""
    norms = [m for m in model.modules() if isinstance(m, BatchNorm)]
    if not norms:
        return
    momenta = [bn.momentum for bn in norms]
    model.train()
    for k, (x, mask) in enumerate(batches.in_order()):
        for bn in norms:
            bn.momentum = 1.0 / (k + 1)  # a running mean of the batch statistics
        model(x) if mask is None else model(x, mask)
    for bn, m in zip(norms, momenta):
        bn.momentum = m


def add_input_noise(x: torch.Tensor, p: float, vocab_size: int, seed: int, step: int) -> torch.Tensor:
    """Replace each non-'.' token of ``x`` by a uniform random character with probability ``p``; the
    draws depend only on (seed, step), so resume stays exact."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step + 1)
    hit = (torch.rand(x.shape, generator=g) < p).to(x.device) & (x != 0)
    noise = torch.randint(1, vocab_size, x.shape, generator=g).to(x.device)
    return torch.where(hit, noise, x)


def batch_loss(model, x, y, mask) -> torch.Tensor:
    """Mean cross-entropy over the batch's real targets; ``mask`` None means contexts (tree form)."""
    if mask is None:
        return F.cross_entropy(model(x), y)  # (B, V) vs (B,)
    logits = model(x, mask)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))  # padding is -100


def split_loss(model, words, vocab: Vocab) -> float:
    """Mean cross-entropy (nats) over every example of ``words``, in eval mode (``score_names``)."""
    return score_names(model, words, vocab).mean_loss


# ----------------------------------------------------------------------------- progress and plot


class Progress:
    """One status line rewritten with ``\\r``: step, smoothed loss, steps/s, time left."""

    def __init__(self, total: int, start: int = 0, enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.start, self.t0, self.last = total, start, time.time(), 0.0
        self.smooth = None

    def update(self, step: int, loss: float):
        self.smooth = loss if self.smooth is None else 0.98 * self.smooth + 0.02 * loss
        now = time.time()
        if not self.enabled or (now - self.last < 0.2 and step < self.total):
            return
        self.last = now
        rate = (step - self.start) / max(now - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else 0.0
        width = len(str(self.total))
        self.stream.write(f"\rstep {step:>{width}}/{self.total}  loss {self.smooth:.4f}  {rate:7.1f} steps/s  "
                          f"{int(eta) // 60:d}:{int(eta) % 60:02d} left ")
        self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def block_means(losses: torch.Tensor, block: int) -> torch.Tensor:
    """log10 of each step's loss, averaged over blocks of ``block`` consecutive steps (the lecture's plot)."""
    n = len(losses) // block * block
    return losses[:n].log10().view(-1, block).mean(1)


def plot_losses(losses: torch.Tensor, block: int, val_loss: float | None, path: Path) -> bool:
    """Write loss.png; False (and no file) when matplotlib is not installed."""
    try:
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


# ----------------------------------------------------------------------------- Ctrl-C


class DeferredInterrupt:
    """Turns the first Ctrl-C into a flag checked between steps (so the saved state is a whole step);
    a second Ctrl-C interrupts at once."""

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


# ----------------------------------------------------------------------------- train


@dataclass
class TrainResult:
    model: torch.nn.Module
    vocab: Vocab
    metrics: dict
    run_dir: Path | None
    train_words: list[str]


def make_optimizer(model, tc: TrainConfig):
    if tc.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=tc.lr)
    decay = [p for p in model.parameters() if p.dim() >= 2]  # weights and embeddings; not biases or norms
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tc.lr, betas=(0.9, tc.beta2))


def rng_state(device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device):
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def train(
    model_config: ModelConfig | None = None,
    config: TrainConfig | None = None,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    make_model=None,
    stop_at: int | None = None,
    progress: bool | None = None,
    log=print,
) -> TrainResult:
    """Train a model on a names file with the lecture's split and return it with its metrics.

    model_config: the model (default: the lecture's, ModelConfig()); ignored with ``resume``.
    config: how to train (default: ``recipe("default")``); its ``form`` picks ConvModel or TreeModel.
    data: names file (default: the bundled data/names.txt).
    out: run folder for checkpoint.pt, metrics.json, loss.png (None: write nothing).
    resume: a run folder or checkpoint to continue; the run continues into ``out`` (default: the
        same folder) with the checkpoint's configs and data file, and ends where an uninterrupted run
        ends.
    make_model: a function of the vocabulary size returning the model to train instead of one built from ``model_config``
        (e.g. a FlatModel; it must take contexts when ``config.form == "tree"``); called right after
        ``torch.manual_seed(config.seed)``, where the lecture builds its model.
    stop_at: stop after this step as if interrupted (a checkpoint is written); the result has
        ``metrics["stopped_at"]``.
    progress: show the progress line (default: when stderr is a terminal).
    log: called with each line of the run's report (``print`` by default; ``None`` for silence).
    """
    log = log or (lambda *a, **k: None)
    ckpt = None
    if resume is not None:
        ckpt = load_checkpoint(resume)
        out = resolve(resume).parent if out is None else out
        config = TrainConfig.from_dict({**ckpt["train_config"], **({"device": config.device} if config else {})})
        data = ckpt["data"]["path"] if data is None else data
    config = config or recipe("default")
    tc = config
    device = resolve_device(tc.device)
    data_path = Path(data if data is not None else bundled_names())
    words = load_names(data_path)
    sha = sha256_file(data_path)
    if ckpt is not None and ckpt["data"]["sha256"] != sha:
        raise DataError(f"{data_path}: the data file differs from the one this run started on (sha256 changed)")
    vocab = Vocab.from_dict(ckpt["vocab"]) if ckpt is not None else Vocab.from_words(words)
    if not vocab.covers(words):
        load_names(data_path, vocab)  # raises a DataError naming the line and character
    train_words, val_words, test_words = lecture_split(words)

    # model: torch.manual_seed first, so the init and the lecture's randint stream follow SPEC section 2
    torch.manual_seed(tc.seed)
    if ckpt is not None:
        model, _ = model_from_checkpoint(ckpt, str(resume))
    elif make_model is not None:
        model = make_model(len(vocab))
    else:
        mc = model_config or ModelConfig(vocab_size=len(vocab))
        if mc.vocab_size != len(vocab):
            mc = ModelConfig.from_dict({**mc.to_dict(), "vocab_size": len(vocab)})
        model = (ConvModel if tc.form == "conv" else TreeModel)(mc)
    model.to(device).train()
    optimizer = make_optimizer(model, tc)

    if tc.form == "conv":
        if not isinstance(model, ConvModel):
            raise ValueError(f"form 'conv' trains a ConvModel on whole names, got a {type(model).__name__}")
        batches = NameBatches(train_words, vocab, tc.batch_size, tc.seed, device)
    else:
        batches = ContextBatches(train_words, vocab, tc.batch_size, model.block_size, device)

    step, losses, seconds = 0, [], 0.0
    if ckpt is not None:
        step, seconds = ckpt["step"], ckpt.get("train_seconds", 0.0)
        losses = ckpt["losses"].tolist()
        if ckpt.get("optimizer") is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"], device)
        log(f"resuming {resume} at step {step}/{tc.steps}")

    run_dir = Path(out) if out is not None else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(
        kind=model_kind(model),
        model_config=model.config.to_dict(),
        vocab=vocab.to_dict(),
        train_config=tc.to_dict(),
        data={"path": str(data_path.resolve()), "sha256": sha, "n_words": len(words)},
        train_words=word_hashes(train_words),
    )

    def save(metrics=None):
        if run_dir is None:
            return
        save_checkpoint(
            dict(meta, state_dict=model.state_dict(), optimizer=optimizer.state_dict(), step=step,
                 rng=rng_state(device), losses=torch.tensor(losses, dtype=torch.float32),
                 train_seconds=seconds, metrics=metrics),
            run_dir / CHECKPOINT_NAME,
        )

    n_params = sum(p.numel() for p in model.parameters())
    log(f"{meta['kind']} model, {n_params:,} parameters; recipe {tc.recipe}: {tc.steps:,} steps of "
        f"{tc.batch_size} {'names' if tc.form == 'conv' else 'contexts'}, {tc.optimizer} lr {tc.lr:g}; "
        f"{data_path} ({len(train_words):,} train names); device {device}")
    end = tc.steps if stop_at is None else min(tc.steps, stop_at)
    bar = Progress(tc.steps, step, enabled=progress)
    evals = []
    with DeferredInterrupt() as interrupt:
        t0 = time.time()
        try:
            while step < end:
                for g in optimizer.param_groups:
                    g["lr"] = lr_at(tc, step)
                x, y, mask = batches(step)
                if tc.input_noise:
                    x = add_input_noise(x, tc.input_noise, len(vocab), tc.seed, step)
                loss = batch_loss(model, x, y, mask)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                losses.append(loss.item())
                bar.update(step, losses[-1])
                if tc.eval_every and step % tc.eval_every == 0 and step < tc.steps:
                    evals.append((step, split_loss(model, val_words, vocab)))
                    bar.close()
                    log(f"step {step}: val {evals[-1][1]:.4f}")
                if interrupt.hit:
                    raise KeyboardInterrupt
                if tc.checkpoint_every and step % tc.checkpoint_every == 0 and step < end:
                    seconds += time.time() - t0
                    save()
                    t0 = time.time()
        except KeyboardInterrupt:
            seconds += time.time() - t0
            bar.close()
            save()
            if run_dir is not None:
                log(f"interrupted at step {step}; checkpoint saved: resume with --resume {run_dir}")
            raise
        seconds += time.time() - t0
    bar.close()

    if step < tc.steps:  # stopped early on purpose
        save()
        return TrainResult(model, vocab, {"stopped_at": step, "train_seconds": seconds}, run_dir, train_words)

    if tc.input_noise:
        recalibrate_batchnorm(model, batches)
    model.eval()
    metrics = dict(
        train_loss=split_loss(model, train_words, vocab),
        val_loss=split_loss(model, val_words, vocab),
        test_loss=split_loss(model, test_words, vocab) if tc.eval_test else None,
        params=n_params,
        steps=step,
        train_seconds=round(seconds, 2),
        ms_per_step=round(1000 * seconds / max(step, 1), 4),
        kind=meta["kind"],
        recipe=tc.recipe,
        model_config=meta["model_config"],
        train_config=meta["train_config"],
        data=meta["data"],
        split={"train": len(train_words), "val": len(val_words), "test": len(test_words)},
        val_curve=evals,
        device=str(device),
        torch_threads=torch.get_num_threads(),
        library_version=__version__,
        torch_version=str(torch.__version__),
    )
    log(f"train {metrics['train_loss']:.4f}  val {metrics['val_loss']:.4f}"
        + (f"  test {metrics['test_loss']:.4f}" if metrics["test_loss"] is not None else "")
        + f"  ({seconds:.1f} s, {metrics['ms_per_step']:.2f} ms/step)")
    if run_dir is not None:
        save(metrics)
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        block = tc.loss_block or max(1, tc.steps // 200)
        if not plot_losses(torch.tensor(losses), block, metrics["val_loss"], run_dir / "loss.png"):
            log("matplotlib is not installed: skipping loss.png (pip install 'wavenet_conv[plot]')")
    return TrainResult(model, vocab, metrics, run_dir, train_words)
