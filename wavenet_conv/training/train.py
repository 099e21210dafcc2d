"""Training: ``train()`` and everything it calls, read top-down in this file.

``train()`` claims the run folder and sets up a ``Run`` -- everything a run carries from step to step
-- at step 0 (``new_run``: the data and teachers checked, the folder claimed, then the model, the
optimizer and the batches) or from its checkpoint (``resume_run``), then::

    train_steps(run, ...)     # the loop: lr, batch, loss, backward, optimizer step, now and then a checkpoint
    finish(run, ...)          # the averaged weights, split losses, the percentile table, metrics.json, loss.png,
                              # the last checkpoint

A checkpoint is a ``Run`` saved (``save``, through ``store.checkpoint.Checkpoint``).

Six recipes (``config.RECIPES``). ``lecture`` is the lecture's own: ``torch.manual_seed(seed)``
before the model's init, the tree form, minibatches of 32 contexts drawn with ``torch.randint``, plain
SGD, lr 0.1 then 0.01 after 75% of 200,000 steps. ``default``, ``gpu`` (larger batches), ``wide``,
``small`` and ``best`` train the conv form on whole names packed end to end (``minibatches.NameBatches``, an epoch-wise shuffle),
the loss the mean over every real position, with AdamW, a linear warmup and a linear decay
(``optim.lr_at``); ``wide``, ``small`` and ``best`` also average the weights over the last quarter
(``TrainConfig.swa``). ``small`` and ``best`` are distilled (``distill``): their loss mixes in the
averaged distributions of two ``wide`` teachers, which ``teachers.train_recipe`` trains first;
``train`` takes finished teachers (``teachers=[runs]``).

Resume is exact: the batches, the learning rate and the averaging are functions of the step, and the
lecture recipe's ``torch.randint`` stream is restored from the saved RNG state, so a resumed run ends
with the same weights as an uninterrupted one. A checkpoint is only ever written between two steps.

Inside a step nothing is read back from the device: each step's loss stays there (``Run.losses``)
and the progress line reads their mean at most every few steps. Where the losses are read anyway --
a progress report, an evaluation, a checkpoint, the end -- they are checked (``verify_finite``): a
non-finite loss or weight stops the run with ``TrainingDiverged``, and nothing non-finite is saved.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..data import Vocab, check_split, lecture_split, split_sizes
from ..device import device_clock, resolve_device, resolve_precision, torch_threads
from ..errors import ArgumentError, CheckpointError, ConfigError, TrainingDiverged, install_hint
from ..inference.percentiles import MIN_GROUP, reference_table
from ..inference.scoring import Scorer, score_names
from ..models.config import ModelConfig, TrainConfig, recipe
from ..models.conv import ConvModel
from ..models.tree import TreeModel
from ..store.checkpoint import CHECKPOINT_NAME, Checkpoint, model_kind, resolve, word_hashes
from ..store.runfolder import RunFolder
from ..validate import paths
from ..version import __version__
from .distill import check_distill, check_unchanged, distill_loss, load_teachers, soft_targets
from .finetune import extended_model, extended_vocab, init_config, load_init
from .minibatches import ContextBatches, NameBatches, add_input_noise, add_unknown, recalibrate_batchnorm
from .optim import average_weights, averaging, eval_interval, lr_at, make_optimizer, rng_state, set_rng_state, sized
from .source import read_data
from .progress import DeferredInterrupt, Progress, plot_losses

# what a resumed run may do differently: where it runs and what it reports (a device of another kind
# changes the weights' last bits; TrainConfig.compile would too, so it stays as the run began)
CHANGEABLE_ON_RESUME = ("device", "checkpoint_every", "eval_every", "eval_test", "loss_block")


@dataclass
class TrainResult:
    """What ``train`` returns: the trained model (training mode), its vocabulary, the run's metrics,
    its folder (None without one), the training names and the ``TrainConfig``."""

    model: torch.nn.Module
    vocab: Vocab
    metrics: dict
    run_dir: Path | None
    train_words: list[str]
    config: TrainConfig


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
    data: dict  # the names file: {"path", "sha256", "n_words"} (``source.read_data``; "column" too for a table)
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
    notes: list = field(default_factory=list)  # what the run says before its steps ("note: ..." lines)
    best: dict | None = None  # {"step", "val", "state_dict"}: the lowest val loss's weights (config.keep_best)
    init: dict | None = None  # {"path", "sha256"}: the run it was fine-tuned from (``finetune``), or None


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
    force: bool = False,
    threads=1,
    teachers=None,
    init=None,
) -> TrainResult:
    """Train a model on a names file with the lecture's split and return it with its metrics.

    model_config: the model (default: the lecture's, ModelConfig()); its vocab_size is the data's.
    config: how to train (default: ``recipe("default")``; ``recipe("finetune")`` with ``init``).
    data: names file (default: the bundled data/names.txt); it needs at least ``data.MIN_NAMES`` names.
    out: run folder for checkpoint.pt, metrics.json, loss.png (None: write nothing), new or empty
        (``RunFolderError`` otherwise), locked (``train.lock``) for the call: a second training on it
        refuses at once (``runfolder``). A ``RunFolder`` is used as it is and left to its caller.
    resume: a run folder or checkpoint to continue; the run continues into ``out`` (default: the
        same folder; a checkpoint file there must be its ``checkpoint.pt``) with its own model, data
        file and ``TrainConfig``, and ends where an uninterrupted run ends (a finished one, settings
        unchanged, is returned as it is). A ``config`` may change only ``CHANGEABLE_ON_RESUME`` (a
        ``ConfigError`` names any other field that differs); a ``model_config`` must be the run's.
    make_model: a function of the vocabulary size returning the model to train (e.g. a FlatModel, which
        takes contexts: form "tree"), called right after ``torch.manual_seed(config.seed)``.
    stop_at: stop after this step as if interrupted (a checkpoint is written; ``metrics["stopped_at"]``).
    progress: report progress on stderr (redrawn on a terminal, else a line every few seconds).
    log: called with each line of the run's report (``print`` by default); ``None``, with ``progress`` None: silence.
    force: train into an ``out`` that holds a run or other files; the earlier run's files go first.
    threads: torch CPU threads for the call: 1, N, "auto" (the free CPUs) or None (torch's). The
        weights' last bits depend on it: a resume is bit for bit at the same count.
    teachers: finished runs on the same data file to distill from, with ``config.distill`` > 0 (see
        ``distill``); the checkpoint records them (path, sha256) for a resume, which refuses a changed one.
    init: a run folder, checkpoint or "bundled" to fine-tune (``finetune.py``): its model, weights and
        text settings, its vocabulary extended with the data's; ``model_config`` None or its model's.

    Every check is done before the model is built. A non-finite loss raises ``TrainingDiverged`` (the
    last good checkpoint stays). A first Ctrl-C saves after the step in flight and raises
    ``KeyboardInterrupt``; a second one raises at once and writes nothing.
    """
    progress, log = (log is not None if progress is None else bool(progress)), log or (lambda *a, **k: None)
    check_arguments(data, out, resume, make_model, teachers, init)
    with torch_threads(threads, "train"):
        folder = run_folder(out, resume, force)
        try:
            if resume is not None:
                run = resume_run(resume, config, model_config, data, folder)
                log(f"resuming {resume} at step {run.step}/{run.config.steps}")
            else:
                tc = config or recipe("default" if init is None else "finetune")
                run = new_run(model_config, tc, data, folder, Start(make_model, tuple(teachers or ()), init))
            return train_run(run, stop_at, progress, log)
        finally:
            if folder is not None and folder is not out:  # a RunFolder passed in stays its caller's
                folder.release()


def check_arguments(data, out, resume, make_model, teachers, init) -> None:
    """No path given as "" (``Path("")`` is the current folder); a resumed run keeps its model and its
    teachers (its checkpoint's): neither may be given, nor a run to start from."""
    paths("train", data=data, out=out, resume=resume, init=init)
    if init is not None and make_model is not None:
        raise ArgumentError("train", "make_model", "cannot be given with init=RUN: the model is the run's")
    if resume is None:
        return
    if init is not None:
        raise ArgumentError("train", "init", "cannot be given with resume=RUN: a resumed run keeps what it started from")
    if make_model is not None:
        raise ArgumentError("train", "make_model", "cannot be given with resume=RUN: a resumed run keeps its model "
                            "(the checkpoint's)")
    if teachers:
        raise ArgumentError("train", "teachers", "cannot be given with resume=RUN: a resumed run keeps the teachers it "
                            "started with (its checkpoint's)")


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
            raise ArgumentError("train", "resume", f"{resume} is not its folder's own {CHECKPOINT_NAME}: resume it "
                                "into a new run folder (out=...)")
        return RunFolder(own, own_run=True)
    return RunFolder(out, force=force)


# ----------------------------------------------------------------------------- a new run


@dataclass
class Start:
    """What a new run starts from besides its configs (``train``'s arguments of those names)."""

    make_model: Callable | None = None
    teachers: tuple = ()
    init: object = None  # a run folder, checkpoint or "bundled" to fine-tune (``finetune.py``)


def new_run(model_config: ModelConfig | None, tc: TrainConfig, data, folder: RunFolder | None, start: Start) -> Run:
    """Set up a fresh run: the data, the run it starts from and the teachers checked, the run folder
    claimed, then ``torch.manual_seed(tc.seed)`` and the model, as the lecture (or the fine-tuned run's,
    over the vocabulary extended with the data's); then the teachers' distributions."""
    init, init_record = load_init(start.init) if start.init is not None else (None, None)
    if init is not None:
        tc = init_config(tc, model_config, init, start.init)
    words, vocab, data_info = read_data(data, text=(tc.normalize, tc.unknown, tc.rare_chars), column=tc.column)
    check_split(words, data_info)
    tc, vocab = length_of(tc, words), vocab if init is None else extended_vocab(init.vocab, vocab)
    models, records = [], []
    if tc.distill or start.teachers:  # distillation (distill.py): teachers and the student's config agree, then loaded
        check_distill(tc, start.teachers)
        models, records = load_teachers(start.teachers, vocab, data_info)
    if folder is not None:
        for r in records + [init_record] * (init is not None):  # force=True would remove it, and then a resume
            if Path(r["path"]) == (folder.path / CHECKPOINT_NAME).resolve():
                raise ConfigError(f"{r['path']} is the run in {folder.path}, which this run would replace: "
                                  "train into another folder")
        folder.claim()
    torch.manual_seed(tc.seed)  # the model's init and the lecture recipe's randint stream follow it
    if init is not None:
        model = extended_model(init, vocab, tc.form)
    elif start.make_model is not None:
        model = start.make_model(len(vocab))
    else:  # the vocabulary size is the data's
        mc = ModelConfig.from_dict({**(model_config or ModelConfig()).to_dict(), "vocab_size": len(vocab)})
        model = (ConvModel if tc.form == "conv" else TreeModel)(mc)
    run = teach(build_run(tc, model, vocab, words, data_info, folder and folder.path), models, records)
    run.init = init_record
    return run


def length_of(tc: TrainConfig, words) -> TrainConfig:
    """``tc`` with its steps, where it gives its length in epochs of the training split of ``words``
    (its size alone for the conv form: the file is split once, by ``build_run``)."""
    if tc.epochs is None:
        return tc
    examples = split_sizes(len(words))[0] if tc.form == "conv" else per_epoch(lecture_split(words)[0], tc.form)
    return sized(tc, examples)


def per_epoch(train_words, form: str) -> int:
    """An epoch's examples: the training names (conv), or their contexts (tree: one a target)."""
    return len(train_words) if form == "conv" else sum(len(w) + 1 for w in train_words)


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


def training_forward(model, tc: TrainConfig):
    """What a training step runs: the tree's forward on contexts, or the conv form on packed names;
    ``torch.compile``d (dynamic shapes) with ``tc.compile``."""
    forward = model.packed if tc.form == "conv" else model
    return torch.compile(forward, dynamic=True) if tc.compile else forward


def teach(run: Run, models: list, records: list[dict]) -> Run:
    """The teachers' averaged distributions at every training position, for the batches to gather."""
    if models:
        run.batches.soft = soft_targets(models, run.vocab, run.batches, run.config.temperature)
        run.teachers = records
    return run


# ----------------------------------------------------------------------------- a resumed run


def resume_run(path, tc: TrainConfig | None, model_config: ModelConfig | None, data, folder: RunFolder) -> Run:
    """Set up a run from its checkpoint: its configs, data file and teachers checked, the run folder
    claimed, then its weights, optimizer, RNG and losses."""
    ckpt = Checkpoint.load(path)
    ckpt.check_resumable(path)
    if model_config is not None and {**model_config.to_dict(), "vocab_size": ckpt.model_config.vocab_size} \
            != ckpt.model_config.to_dict():
        raise ArgumentError("train", "model_config", "must be None (or the run's own) with resume: a resumed run "
                            "keeps its model")
    column = ckpt.train_config.column  # a resumed run keeps it (resumed_config)
    words, vocab, data_info = read_data(data or ckpt.data["path"], ckpt.vocab, started=ckpt.data, column=column)
    tc = resumed_config(ckpt.train_config, tc if tc is None else length_of(tc, words))
    notes = going_on(ckpt, tc)
    models = load_teachers(check_unchanged(ckpt.teachers, path), vocab, data_info)[0] if ckpt.teachers else []
    folder.claim()
    torch.manual_seed(tc.seed)
    run = teach(build_run(tc, ckpt.model(str(path)), vocab, words, data_info, folder.path), models, ckpt.teachers)
    restore(run, ckpt, path)
    run.saved_step = run.step if folder.own_run else None  # the checkpoint in run_dir
    if folder.own_run and ckpt.finished and ckpt.train_config == tc:
        run.done = ckpt.metrics
    elif ckpt.last_state is not None:  # going on from the last step, not from the weights it kept
        run.model.load_state_dict(ckpt.last_state)
    run.notes = notes
    return run


def resumed_config(saved: TrainConfig, given: TrainConfig | None) -> TrainConfig:
    """``given`` (None: ``saved``), refused where it differs from ``saved`` outside ``CHANGEABLE_ON_RESUME``
    and ``steps`` (a run may go on to another length: ``going_on`` says how)."""
    if given is None:
        return saved
    for f in fields(TrainConfig):
        old, new = getattr(saved, f.name), getattr(given, f.name)
        if f.name not in CHANGEABLE_ON_RESUME and old != new and f.name != "steps":
            changeable = ", ".join("TrainConfig." + n for n in CHANGEABLE_ON_RESUME)
            raise ConfigError(f"TrainConfig.{f.name} is {old!r} in the run being resumed, not {new!r}: a resumed "
                              f"run keeps its settings (only {changeable} can change, and TrainConfig.steps to go on)")
    return given


def going_on(ckpt: Checkpoint, tc: TrainConfig) -> list[str]:
    """A run at ``ckpt.step`` of its ``steps`` resumed to ``tc.steps``: a ``ConfigError`` where it cannot go
    on (fewer steps than it has done; a finished run whose last step's weights are gone: averaged or
    recalibrated), else the notes that say why it is not bit for bit the run that ``tc.steps`` trains
    from the start: the learning rates, the steps whose weights are averaged, or the val reports (which
    keep_best chooses from) of the steps done differ under the new length. None where it is that run."""
    saved, step, finished = ckpt.train_config, ckpt.step, ckpt.finished
    if tc.steps == saved.steps:
        return []
    if tc.steps < step:
        raise ConfigError(f"TrainConfig.steps: the run being resumed is at step {step:,}, so it goes on to {step:,} "
                          f"steps or more, not {tc.steps:,}")
    if finished and (saved.swa or saved.input_noise):
        how = "averaged (swa)" if saved.swa else "and BatchNorm recalibrated (input_noise)"
        raise ConfigError(f"TrainConfig.steps: the run being resumed finished at step {step:,} with its weights {how}: "
                          "they are not its last step's, so it cannot go on; train a new run of that length")
    if finished and saved.keep_best and ckpt.last_state is None and ckpt.metrics.get("kept_step", step) != step:
        raise ConfigError(f"TrainConfig.steps: the run being resumed finished at step {step:,} keeping the weights of "
                          f"step {ckpt.metrics['kept_step']:,} without its last step's (a checkpoint from before they "
                          "were kept), so it cannot go on; train a new run of that length")
    head = f"note: going on from step {step:,} to {tc.steps:,}:"
    tail = f"not bit for bit the run of {tc.steps:,} steps from the start"
    if any(lr_at(saved, s) != lr_at(tc, s) for s in range(step)):
        decayed = f", decayed to {saved.lr_decay * saved.lr:g}" if finished else ""
        return [f"{head} the steps done followed the learning rates of {saved.steps:,} steps ({saved.schedule} "
                f"schedule{decayed}), the rest follow those of {tc.steps:,}: {tail}"]
    if any(averaging(saved, s) != averaging(tc, s) for s in range(1, step + 1)):
        return [f"{head} the weights averaged so far are those of the last {saved.swa:g} of {saved.steps:,} steps: {tail}"]
    if eval_interval(saved) != eval_interval(tc) and saved.keep_best:
        return [f"{head} the val reports so far, which keep_best chooses from, came every {eval_interval(saved):,} "
                f"steps, the rest every {eval_interval(tc):,}: {tail}"]
    return []


def saved_config(path_or_run) -> TrainConfig:
    """The ``TrainConfig`` a checkpoint (or run folder) was trained with (``CheckpointError`` when it
    holds no run to resume)."""
    ckpt = Checkpoint.load(path_or_run)
    ckpt.check_resumable(path_or_run)
    return ckpt.train_config


def restore(run: Run, ckpt: Checkpoint, path) -> None:
    """The state of step ``ckpt.step`` into a run built at step 0: steps, losses, times, the average,
    the optimizer and the RNG (``CheckpointError`` where they do not fit)."""
    run.step = run.verified = ckpt.step  # a checkpoint holds nothing non-finite
    run.losses[: run.step] = ckpt.losses.to(run.device)
    run.train_seconds, run.eval_seconds, run.val_curve = ckpt.train_seconds, ckpt.eval_seconds, list(ckpt.val_curve)
    run.init = ckpt.init
    if ckpt.swa is not None:
        run.swa, run.swa_count = [t.to(run.device) for t in ckpt.swa], ckpt.swa_count
    if ckpt.best is not None:
        run.best = {**ckpt.best, "state_dict": on(ckpt.best["state_dict"], run.device)}
    try:
        run.optimizer.load_state_dict(ckpt.optimizer)
        set_rng_state(ckpt.rng, run.device)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # torch's errors for a state that does not fit
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise CheckpointError(f"{path}: its optimizer or RNG state does not fit the run: {reason}") from None


# ----------------------------------------------------------------------------- the steps


def train_run(run: Run, stop_at: int | None, progress: bool, log) -> TrainResult:
    """``train`` once the run is set up: the steps, then ``finish`` (or a checkpoint when stopped early)."""
    log(describe(run))
    for note in run.notes + small_data_notes(len(run.splits[1]), run.config.keep_best):
        log(note)
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
        saved = f"checkpoint saved: go on with resume={run.run_dir}" if run.run_dir else "nothing saved (no run folder)"
        log(f"interrupted at step {run.step}; {saved}")
        raise KeyboardInterrupt
    if run.step < run.config.steps or run.saved_step != run.step:  # stopped early on purpose, or at the end:
        save(run)  # the last step is on disk before the end's evaluation, which a Ctrl-C may cut short
    if run.step < run.config.steps:
        metrics = {"stopped_at": run.step, "train_seconds": run.train_seconds}
        return TrainResult(run.model, run.vocab, metrics, run.run_dir, run.splits[0], run.config)
    return finish(run, log)


SMALL_DEV = 400  # dev names below which percentiles are weak (experiments/results/small_reference.md)
# the standard deviation of a val loss of n dev names over draws of them (experiments/results/val_spread.md)
VAL_SPREAD = ((20, 0.126), (50, 0.080), (100, 0.056), (200, 0.040), (400, 0.027))


def small_data_notes(n_dev: int, keep_best: bool = False) -> list[str]:
    """What a dev split of ``n_dev`` names makes weak, said before training (lines starting "note: "):
    its percentiles, and with ``keep_best`` the choice of the weights kept."""
    if n_dev >= SMALL_DEV:
        return []
    notes = [f"note: percentiles from {n_dev:,} dev names (10% of the names file) are rough: with fewer than "
             f"{SMALL_DEV:,} the share of ordinary names at or above the 90th ranges past 7-13% (at 100 dev names, "
             f"7.7-16.5% in 90% of draws: experiments/results/small_reference.md), and one table serves every name length (a length "
             f"group needs {MIN_GROUP}), so short names land at the top more often"]
    if keep_best:
        n, spread = max(((n, s) for n, s in VAL_SPREAD if n <= n_dev), default=VAL_SPREAD[0])
        moves = f"{'about' if n <= n_dev else 'more than'} {spread} nats per target"
        notes.append(f"note: keep_best picks the weights of the lowest val loss of {n_dev:,} dev names: a val loss of "
                     f"{n_dev:,} names moves by {moves} between draws of them (experiments/results/val_spread.md): "
                     "reports closer than that are told apart by chance, the step kept partly too")
    return notes


def epochs(run: Run) -> float:
    """The passes over the training split that the run's steps make."""
    return run.config.steps * run.config.batch_size / per_epoch(run.splits[0], run.config.form)


def describe(run: Run) -> str:
    """The run's first line: the model, the recipe, the data and the device."""
    tc, n_params = run.config, sum(p.numel() for p in run.model.parameters())
    return (f"{model_kind(run.model)} model, {n_params:,} parameters; recipe {tc.recipe}: {tc.steps:,} steps of "
            f"{tc.batch_size} {'names' if tc.form == 'conv' else 'contexts'} ({epochs(run):.3g} epochs), {tc.optimizer} "
            f"lr {tc.lr:g}{', keeping the best' if tc.keep_best else ''}; "
            f"{run.data['path']} ({len(run.splits[0]):,} train names); device {run.device}"
            + ("; compiled" if tc.compile else "") + (f"; fine-tuning {run.init['path']}" if run.init else ""))


def train_steps(run: Run, end: int, interrupt: DeferredInterrupt, bar: Progress, log) -> None:
    """Optimizer steps until step ``end`` or a first Ctrl-C (always at a step boundary), with the
    periodic val loss and checkpoints. ``run.train_seconds`` counts the steps alone."""
    tc, opt = run.config, run.optimizer
    t0 = device_clock(run.device)
    while run.step < end and not interrupt.hit:
        for group in opt.param_groups:
            group["lr"] = lr_at(tc, run.step)
        x, y, pos = run.batches(run.step)  # packed names (N,) x3, or contexts (B, 2**L), targets (B,), None
        if tc.unknown and tc.unknown_rate:
            x, y, pos = add_unknown((x, y, pos), tc.unknown_rate, run.vocab.unknown_id, tc.seed, run.step)
        if tc.input_noise:
            x = add_input_noise(x, tc.input_noise, len(run.vocab), tc.seed, run.step)
        soft = run.batches.soft_at(run.step) if tc.distill else None  # the teachers' distributions (N, V)
        loss = batch_loss(run.forward, x, y, pos, run.dtype, None if soft is None else (soft, tc))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.losses[run.step] = loss.detach()  # stays on the device
        run.step += 1
        if averaging(tc, run.step):
            run.swa, run.swa_count = average_weights(run.swa, run.swa_count, run.model)
        shown = bar.update(run.step, run.losses)  # now and then, the mean loss since the last report
        if shown is not None and not math.isfinite(shown):
            verify_finite(run)
        evaluate = due(eval_interval(tc), run.step, tc.steps)
        checkpoint = due(tc.checkpoint_every, run.step, end)
        if evaluate or checkpoint:
            run.train_seconds += device_clock(run.device) - t0
            bar.close()
            if evaluate:
                verify_finite(run)
                evaluate_val(run, log)
            if checkpoint:
                save(run)
            t0 = device_clock(run.device)
    run.train_seconds += device_clock(run.device) - t0


def batch_loss(forward, x, y, pos, dtype: torch.dtype = torch.float32, teach: tuple | None = None):
    """Mean cross-entropy over the batch's targets: contexts (B, 2**L) with ``pos`` None (the tree
    form's forward), or names packed end to end (``ConvModel.packed``). ``dtype``: the matmuls' (a
    bfloat16 autocast: weights, statistics and the loss stay float32). ``teach``: (soft, tc), the
    teachers' distributions (N, V) at the targets, mixed in as the ``TrainConfig`` says
    (``distill.distill_loss``); None: no teachers."""
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
        logits = forward(x) if pos is None else forward(x, pos)  # (B, V) or (N, V)
    return F.cross_entropy(logits.float(), y) if teach is None else distill_loss(logits.float(), y, *teach)


def due(every: int, step: int, before: int) -> bool:
    """Whether a periodic event (every ``every`` steps, 0: never) falls after ``step``, short of ``before``."""
    return bool(every) and step % every == 0 and step < before


def evaluate_val(run: Run, log) -> None:
    t0 = device_clock(run.device)
    run.val_curve.append((run.step, split_loss(run.model, run.splits[1], run.vocab)))
    val = run.val_curve[-1][1]
    if run.config.keep_best and (run.best is None or val < run.best["val"]):
        run.best = {"step": run.step, "val": val, "state_dict": on(run.model.state_dict(), run.device)}
    run.eval_seconds += device_clock(run.device) - t0
    log(f"step {run.step}: val {val:.4f}")


def on(state: dict, device) -> dict:
    """A copy of a state dict on ``device``."""
    return {k: v.detach().to(device, copy=True) for k, v in state.items()}


def split_losses(run: Run) -> dict:
    """The run's model's train, val and test losses (test None without ``eval_test``), in eval mode."""
    model, vocab, (train_words, val_words, test_words) = run.model, run.vocab, run.splits
    return dict(train_loss=split_loss(model, train_words, vocab), val_loss=split_loss(model, val_words, vocab),
                test_loss=split_loss(model, test_words, vocab) if run.config.eval_test else None)


def split_loss(model, words, vocab: Vocab) -> float:
    """Mean cross-entropy (nats per target) over every example of ``words``, in eval mode."""
    return score_names(model, words, vocab).mean_loss


# ----------------------------------------------------------------------------- checks and checkpoints


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


def save(run: Run, metrics: dict | None = None, reference=None, last_state: dict | None = None) -> None:
    """Write the run's checkpoint (atomically; nothing when the run has no folder), once the losses and
    the state are checked finite (``TrainingDiverged`` otherwise); at the end, with its ``metrics``, its
    percentile table ``reference`` (a ``ReferenceTable``) and its last step's weights where the model
    holds others (``last_state``). A failed write (a full disk) raises
    ``OSError`` saying which checkpoint stays."""
    verify_finite(run)
    if run.run_dir is None:
        return
    ckpt = Checkpoint.of_model(
        run.model, run.vocab, optimizer=run.optimizer.state_dict(), train_config=run.config, step=run.step,
        rng=rng_state(run.device), losses=run.losses[: run.step].to("cpu", copy=True), train_seconds=run.train_seconds,
        eval_seconds=run.eval_seconds, val_curve=run.val_curve, train_hashes=run.train_hashes, data=run.data,
        swa=None if run.swa is None else [t.to("cpu", copy=True) for t in run.swa], swa_count=run.swa_count,
        best=None if run.best is None else {**run.best, "state_dict": on(run.best["state_dict"], "cpu")},
        teachers=run.teachers, metrics=metrics, reference=None if reference is None else reference.to_dict(),
        last_state=last_state, init=run.init,
    )
    path = run.run_dir / CHECKPOINT_NAME
    try:
        ckpt.save(path)
    except OSError as e:
        raise OSError(e.errno, f"{path}: could not save the checkpoint of step {run.step} "
                               f"({e.strerror or e}); {kept(run)}") from e
    run.saved_step = run.step


def kept(run: Run) -> str:
    """What a run that stops now leaves on disk."""
    return "no checkpoint was saved" if run.saved_step is None else f"the checkpoint of step {run.saved_step} stays"


# ----------------------------------------------------------------------------- the end


def finish(run: Run, log) -> TrainResult:
    """The end of a run: the averaged weights (and BatchNorm's statistics for them), split losses in
    eval mode, the last checkpoint with the percentile table of the dev split (``percentiles.py``: names
    the model did not train on), metrics.json and loss.png; for a finished run resumed as it ended, its
    own metrics, and nothing is written."""
    tc, model = run.config, run.model
    if run.done is not None:
        log(f"the run is finished: train {run.done['train_loss']:.4f}  val {run.done['val_loss']:.4f}; nothing to do")
        return TrainResult(model.eval(), run.vocab, run.done, run.run_dir, run.splits[0], tc)
    verify_finite(run)
    if run.swa is not None:
        with torch.no_grad():
            for p, avg in zip(model.parameters(), run.swa):
                p.copy_(avg)
    if tc.input_noise or run.swa is not None:
        recalibrate_batchnorm(model, run.batches)
    model.eval()
    t0 = device_clock(run.device)
    train_words, val_words, test_words = run.splits
    losses, kept_step, last = split_losses(run), run.step, None
    if run.best is not None and run.best["val"] < losses["val_loss"]:  # a report's weights beat the end's
        last = on(model.state_dict(), "cpu")  # the checkpoint keeps them: the run can go on from its last step
        model.load_state_dict(run.best["state_dict"])
        losses, kept_step = split_losses(run), run.best["step"]
    reference = reference_table(Scorer.of(model, run.vocab, threads=1), val_words) if run.run_dir is not None else None
    run.eval_seconds += device_clock(run.device) - t0
    metrics = {**losses, "kept_step": kept_step, **run_metrics(run)}
    if tc.keep_best:
        log(f"kept the weights of step {kept_step:,}, the lowest val loss (keep_best)"
            + (": the last step's" if kept_step == run.step else f"; step {run.step:,}'s stay in the checkpoint, to go on from"
               if run.run_dir is not None else f"; those of step {run.step:,} go"))
    if reference is not None:
        metrics["percentiles"] = {"names": reference.names, "length_groups": reference.group_labels()}
        log(table_line(reference))
    log(f"train {metrics['train_loss']:.4f}  val {metrics['val_loss']:.4f}"
        + (f"  test {metrics['test_loss']:.4f}" if metrics["test_loss"] is not None else "")
        + f"  ({run.train_seconds:.1f} s training, {metrics['ms_per_step']:.2f} ms/step; "
        f"{run.eval_seconds:.1f} s evaluating; {metrics['device']}, {metrics['precision']}, "
        f"{metrics['torch_threads']} thread{'s' if metrics['torch_threads'] != 1 else ''})")
    if run.run_dir is not None:
        save(run, metrics, reference, last)
        (run.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        block = tc.loss_block or max(1, tc.steps // 200)
        if not plot_losses(run.losses.cpu(), block, metrics["val_loss"], run.run_dir / "loss.png"):
            log(f"matplotlib is not installed: skipping loss.png ({install_hint('plot')})")
    return TrainResult(model, run.vocab, metrics, run.run_dir, train_words, tc)


def table_line(reference) -> str:
    """What the run's percentile table is made of: its dev names and their length groups."""
    groups = reference.group_labels()
    return (f"percentiles: {reference.names:,} dev names, " + (f"{len(groups)} length groups ({', '.join(groups)})"
            if len(groups) > 1 else f"one table for every length (two length groups need {2 * MIN_GROUP} names)"))


def precision_name(dtype: torch.dtype) -> str:
    """A matmul precision as ``TrainConfig.precision`` names it: "float32" or "bfloat16"."""
    return str(dtype).removeprefix("torch.")


def run_metrics(run: Run) -> dict:
    """metrics.json beside the split losses: the model, the run's settings, its data and its times."""
    model, tc = run.model, run.config
    return dict(
        params=sum(p.numel() for p in model.parameters()),
        steps=run.step,
        epochs=round(epochs(run), 3),
        train_seconds=round(run.train_seconds, 2),
        ms_per_step=round(1000 * run.train_seconds / max(run.step, 1), 4),
        eval_seconds=round(run.eval_seconds, 2),
        kind=model_kind(model),
        recipe=tc.recipe,
        model_config=model.config.to_dict(),
        train_config=tc.to_dict(),
        data=run.data,
        teachers=run.teachers,
        init=run.init,
        split={name: len(words) for name, words in zip(("train", "val", "test"), run.splits)},
        val_curve=run.val_curve,
        device=str(run.device),
        precision=precision_name(run.dtype),  # what ran: train_config's "auto" resolved on this device
        torch_threads=torch.get_num_threads(),
        library_version=__version__,
        torch_version=str(torch.__version__),
    )
