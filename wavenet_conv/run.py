"""The state of a training run, and how it is made, checked and saved.

A ``Run`` is everything a run carries from step to step; a checkpoint is a ``Run`` saved (``save``).
``new_run`` sets one up at step 0, ``resume_run`` from a checkpoint: both check the data and claim the
run folder before the model is built, so every problem shows before the first step. ``verify_finite``
is the one read of the whole state from the device: a non-finite loss or weight stops the run with
``TrainingDiverged``, and nothing non-finite is ever saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch

from .batches import ContextBatches, NameBatches
from .checkpoint import (CHECKPOINT_NAME, load_checkpoint, model_from_checkpoint, model_kind, resolve,
                         save_checkpoint, word_hashes)
from .config import ModelConfig, TrainConfig
from .conv import ConvModel
from .data import Vocab, lecture_split, load_names, sha256_file
from .device import resolve_device, resolve_precision
from .distill import check_distill, check_unchanged, load_teachers, soft_targets
from .errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from .optim import make_optimizer, rng_state, set_rng_state
from .paths import bundled_names
from .runfolder import RunFolder
from .tree import TreeModel

# what a checkpoint needs beyond the model to be resumed (``save`` writes them all)
RESUME_KEYS = ("train_config", "data", "optimizer", "step", "rng", "losses")
# what a resumed run may do differently: where it runs and what it reports (a device of another kind
# changes the weights' last bits; --compile would too, so it stays as the run began)
CHANGEABLE_ON_RESUME = ("device", "checkpoint_every", "eval_every", "eval_test", "loss_block")


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
    train_hashes: torch.Tensor = None  # (n,) int64: hashes of the training names, in every checkpoint
    step: int = 0  # optimizer steps done
    losses: torch.Tensor = None  # (steps,) float32 on the device: the loss of every step done
    train_seconds: float = 0.0  # wall time of the training steps alone, over every session
    eval_seconds: float = 0.0  # wall time of the evaluations (val along the way, the splits at the end)
    val_curve: list = field(default_factory=list)  # [(step, val loss)] along the way
    swa: list | None = None  # the running average of the weights (``TrainConfig.swa``), one tensor a parameter
    swa_count: int = 0  # how many steps' weights it averages
    teachers: list = field(default_factory=list)  # [{"path", "sha256"}]: the checkpoints it is distilled from
    saved_step: int | None = None  # the step of the checkpoint on disk
    verified: int = 0  # the steps whose losses have been checked finite
    done: dict | None = None  # a finished run resumed as it ended: its metrics (nothing left to do or write)


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
               train_hashes=word_hashes(train_words), losses=torch.zeros(tc.steps, device=device))


def new_run(model_config: ModelConfig | None, tc: TrainConfig, data, folder: RunFolder | None, make_model=None,
            teachers=()) -> Run:
    """Set up a fresh run: the data and the teachers checked, the run folder claimed, then
    ``torch.manual_seed(tc.seed)`` and the model, as the lecture; then the teachers' distributions."""
    words, vocab, data_info = read_data(data)
    check_split(words, data_info)
    check_distill(tc, teachers)
    models, records = load_teachers(teachers, vocab, data_info)
    if folder is not None:
        for r in records:  # --force would remove it, and a resume would then find its teacher gone
            if Path(r["path"]) == (folder.path / CHECKPOINT_NAME).resolve():
                raise ConfigError(f"teacher {r['path']} is the run in {folder.path}, which this run would replace: "
                                  "train into another folder")
        folder.claim()
    torch.manual_seed(tc.seed)  # the model's init and the lecture recipe's randint stream follow it
    if make_model is not None:
        model = make_model(len(vocab))
    else:  # the vocabulary size is the data's
        mc = ModelConfig.from_dict({**(model_config or ModelConfig()).to_dict(), "vocab_size": len(vocab)})
        model = (ConvModel if tc.form == "conv" else TreeModel)(mc)
    return teach(build_run(tc, model, vocab, words, data_info, folder and folder.path), models, records)


def teach(run: Run, models: list, records: list[dict]) -> Run:
    """The teachers' averaged distributions at every training position, for the batches to gather."""
    if models:
        run.batches.soft = soft_targets(models, run.batches, run.config.temperature)
        run.teachers = records
    return run


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
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: cannot be resumed, it has no {', '.join(missing)}")
    tc = resumed_config(checkpoint_config(ckpt), tc)
    if model_config is not None and model_config.to_dict() != {**ckpt["model_config"], "vocab_size": model_config.vocab_size}:
        raise ConfigError("a resumed run keeps its model: pass no model_config (or the run's own)")
    vocab = Vocab.from_dict(ckpt["vocab"])
    words, vocab, data_info = read_data(data or ckpt["data"]["path"], vocab, ckpt["data"]["sha256"])
    records = ckpt.get("teachers") or []
    models, _ = load_teachers(check_unchanged(records, path), vocab, data_info)
    folder.claim()
    torch.manual_seed(tc.seed)
    model, _ = model_from_checkpoint(ckpt, str(path))
    run = teach(build_run(tc, model, vocab, words, data_info, folder.path), models, records)
    run.step = run.verified = ckpt["step"]  # a checkpoint holds nothing non-finite
    run.saved_step = run.step if folder.own_run else None  # the checkpoint in run_dir
    if folder.own_run and ckpt.get("metrics") and run.step == tc.steps and ckpt["train_config"] == tc.to_dict():
        run.done = ckpt["metrics"]
    run.losses[: run.step] = ckpt["losses"].to(run.device)
    run.train_seconds, run.eval_seconds = ckpt.get("train_seconds", 0.0), ckpt.get("eval_seconds", 0.0)
    run.val_curve = [tuple(v) for v in ckpt.get("val_curve", [])]
    if ckpt.get("swa") is not None:
        run.swa, run.swa_count = [t.to(run.device) for t in ckpt["swa"]], ckpt["swa_count"]
    try:
        run.optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"], run.device)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # torch's errors for a state that does not fit
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise CheckpointError(f"{path}: its optimizer or RNG state does not fit the run: {reason}") from None
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
        train_config=run.config.to_dict(), data=run.data, train_hashes=run.train_hashes,
        state_dict=run.model.state_dict(), optimizer=run.optimizer.state_dict(), step=run.step,
        rng=rng_state(run.device), losses=run.losses[: run.step].to("cpu", copy=True), train_seconds=run.train_seconds,
        eval_seconds=run.eval_seconds, val_curve=run.val_curve, metrics=metrics,
        swa=None if run.swa is None else [t.to("cpu", copy=True) for t in run.swa], swa_count=run.swa_count,
        teachers=run.teachers,
    )
    path = run.run_dir / CHECKPOINT_NAME
    try:
        save_checkpoint(ckpt, path)
    except OSError as e:
        raise OSError(e.errno, f"{path}: could not save the checkpoint of step {run.step} "
                               f"({e.strerror or e}); {kept(run)}") from e
    run.saved_step = run.step


def run_folder(out, resume, force: bool) -> RunFolder | None:
    """The folder ``train`` writes in, unclaimed: ``out``, or the resumed run's own folder; ``out`` as
    it is when it is a ``RunFolder`` (one a recipe holds for its student)."""
    if isinstance(out, RunFolder):
        return out
    if resume is None:
        return None if out is None else RunFolder(out, force=force)
    checkpoint = resolve(resume)
    own = checkpoint.parent
    if out is None or Path(out).resolve() == own.resolve():
        if checkpoint.name != CHECKPOINT_NAME:  # a copy: its folder's checkpoint.pt may be another run's
            raise ConfigError(f"{resume}: not its folder's own {CHECKPOINT_NAME}: resume it into a new run "
                              "folder (out, --out)")
        return RunFolder(own, own_run=True)
    return RunFolder(out, force=force)
