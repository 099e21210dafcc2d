"""Training: the loop, from ``train()`` down.

``train()`` sets up a ``Run`` (``run.py``: the data checked, the run folder claimed, the model, the
optimizer and the batches; or all of it from a checkpoint), then::

    train_steps(run, ...)     # the loop: lr, batch, loss, backward, optimizer step, now and then a checkpoint
    finish(run, ...)          # the averaged weights, split losses, metrics.json, loss.png, the last checkpoint

Five recipes (``config.RECIPES``). ``lecture`` is the lecture's own: ``torch.manual_seed(seed)``
before the model's init, the tree form, minibatches of 32 contexts drawn with ``torch.randint``, plain
SGD, lr 0.1 then 0.01 after 75% of 200,000 steps. ``default``, ``wide``, ``small`` and ``best`` train
the conv form on whole names packed end to end (``batches.NameBatches``, an epoch-wise shuffle), the
loss the mean over every real position, with AdamW, a linear warmup and a linear decay
(``optim.lr_at``); ``wide``, ``small`` and ``best`` also average the weights over the last quarter
(``TrainConfig.swa``). ``small`` and ``best`` are distilled (``distill``): their loss mixes in the
averaged distributions of two ``wide`` teachers, which the command line trains first
(``teachers.train_recipe``); ``train`` takes finished teachers (``teachers=[runs]``).

Resume is exact: the batches, the learning rate and the averaging are functions of the step, and the
lecture recipe's ``torch.randint`` stream is restored from the saved RNG state, so a resumed run ends
with the same weights as an uninterrupted one. A checkpoint is only ever written between two steps.

Inside a step nothing is read back from the device: each step's loss stays there (``Run.losses``)
and the progress line reads their mean at most every few steps. Where the losses are read anyway --
a progress report, an evaluation, a checkpoint, the end -- they are checked (``run.verify_finite``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .batches import add_input_noise, recalibrate_batchnorm
from .checkpoint import model_kind
from .config import ModelConfig, TrainConfig, recipe
from .data import Vocab
from .device import device_clock, torch_threads
from .distill import distill_loss
from .errors import ArgumentError, ConfigError
from .optim import average_weights, averaging, lr_at
from .progress import DeferredInterrupt, Progress, plot_losses
from .run import Run, kept, new_run, resume_run, run_folder, save, verify_finite
from .scoring import score_names
from .validate import paths
from .version import __version__


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
    threads=1,
    teachers=None,
) -> TrainResult:
    """Train a model on a names file with the lecture's split and return it with its metrics.

    model_config: the model (default: the lecture's, ModelConfig()); its vocab_size is the data's.
    config: how to train (default: ``recipe("default")``); its ``form`` picks ConvModel or TreeModel.
    data: names file (default: the bundled data/names.txt); it needs at least ``run.MIN_NAMES`` names.
    out: run folder for checkpoint.pt, metrics.json, loss.png (None: write nothing). It must be new or
        empty (``RunFolderError`` otherwise), and is claimed with a lock file, ``train.lock``, for the
        length of the call: a second training on it refuses at once (see ``runfolder``). A
        ``RunFolder`` is used as it is (claimed here unless already held) and left to its caller.
    resume: a run folder or checkpoint to continue; the run continues into ``out`` (default: the
        same folder; a checkpoint file there must be its ``checkpoint.pt``) with its own model, data
        file and ``TrainConfig``, and ends where an uninterrupted run ends (a finished one, settings
        unchanged, is returned as it is). A ``config`` may change only ``run.CHANGEABLE_ON_RESUME`` (a
        ``ConfigError`` names any other field that differs); a ``model_config`` must be the run's.
    make_model: a function of the vocabulary size returning the model to train instead of one built
        from ``model_config`` (e.g. a FlatModel; it must take contexts when ``config.form == "tree"``);
        called right after ``torch.manual_seed(config.seed)``, where the lecture builds its model.
    stop_at: stop after this step as if interrupted (a checkpoint is written; ``metrics["stopped_at"]``).
    progress: report progress on stderr (a line redrawn on a terminal, else one every few seconds).
    log: called with each line of the run's report (``print`` by default; ``None`` for silence).
    force: train into an ``out`` that holds a run or other files; the earlier run's files go first.
    threads: torch CPU threads for the call (the caller's restored afterwards): 1, N, "auto" (the free
        CPUs) or None (torch's). The weights depend on the count in their last bits, so a resumed run
        ends bit for bit where an uninterrupted one ends when both run with the same count.
    teachers: finished runs on the same data file to distill from, with ``config.distill`` > 0 (see
        ``distill``); the checkpoint records them (path, sha256) for a resume, which refuses a changed one.

    Every check -- options, data, run folder -- is done before the model is built. A loss that
    becomes non-finite raises ``TrainingDiverged`` (naming the step; the last good checkpoint stays).
    Ctrl-C: the first finishes the step in flight, saves a checkpoint and raises ``KeyboardInterrupt``;
    a second one raises at once and writes nothing (the last checkpoint stays).
    """
    log = log or (lambda *a, **k: None)
    check_arguments(data, out, resume, make_model, teachers)
    with torch_threads(threads, "train"):
        folder = run_folder(out, resume, force)
        try:
            if resume is not None:
                run = resume_run(resume, config, model_config, data, folder)
                log(f"resuming {resume} at step {run.step}/{run.config.steps}")
            else:
                run = new_run(model_config, config or recipe("default"), data, folder, make_model, teachers or ())
            return train_run(run, stop_at, progress is not False, log)
        finally:
            if folder is not None and folder is not out:  # a RunFolder passed in stays its caller's
                folder.release()


def check_arguments(data, out, resume, make_model, teachers) -> None:
    """No path given as "" (``Path("")`` is the current folder); a resumed run keeps its model and its
    teachers (its checkpoint's): neither may be given."""
    paths("train", data=data, out=out, resume=resume)
    if resume is None:
        return
    if make_model is not None:
        raise ConfigError("make_model: a resumed run keeps its model (the checkpoint's)")
    if teachers:
        raise ArgumentError("train", "teachers", "cannot be given with resume: a resumed run keeps the teachers it "
                            "started with (its checkpoint's)")


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
    if run.step < run.config.steps or run.saved_step != run.step:  # stopped early on purpose, or at the end:
        save(run)  # the last step is on disk before the end's evaluation, which a Ctrl-C may cut short
    if run.step < run.config.steps:
        metrics = {"stopped_at": run.step, "train_seconds": run.train_seconds}
        return TrainResult(run.model, run.vocab, metrics, run.run_dir, run.splits[0], run.config)
    return finish(run, log)


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
        soft = run.batches.soft_at(run.step) if tc.distill else None  # the teachers' distributions (N, V)
        loss = batch_loss(run.forward, x, y, pos, run.dtype, soft, tc)
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
        evaluate = due(tc.eval_every, run.step, tc.steps)
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


def batch_loss(forward, x, y, pos, dtype: torch.dtype = torch.float32, soft=None, tc: TrainConfig | None = None):
    """Mean cross-entropy over the batch's targets: contexts (B, 2**L) with ``pos`` None (the tree
    form's forward), or names packed end to end (``ConvModel.packed``). ``dtype``: the matmuls' (a
    bfloat16 autocast: weights, statistics and the loss stay float32). ``soft``: the teachers'
    distributions (N, V) at the targets, mixed in as ``tc`` says (``distill.distill_loss``)."""
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
        logits = forward(x) if pos is None else forward(x, pos)  # (B, V) or (N, V)
    return F.cross_entropy(logits.float(), y) if soft is None else distill_loss(logits.float(), y, soft, tc)


def due(every: int, step: int, before: int) -> bool:
    """Whether a periodic event (every ``every`` steps, 0: never) falls after ``step``, short of ``before``."""
    return bool(every) and step % every == 0 and step < before


def split_loss(model, words, vocab: Vocab) -> float:
    """Mean cross-entropy (nats per target) over every example of ``words``, in eval mode."""
    return score_names(model, words, vocab, threads=None).mean_loss


def evaluate_val(run: Run, log) -> None:
    t0 = device_clock(run.device)
    run.val_curve.append((run.step, split_loss(run.model, run.splits[1], run.vocab)))
    run.eval_seconds += device_clock(run.device) - t0
    log(f"step {run.step}: val {run.val_curve[-1][1]:.4f}")


def finish(run: Run, log) -> TrainResult:
    """The end of a run: the averaged weights (and BatchNorm's statistics for them), split losses in
    eval mode, the last checkpoint, metrics.json and loss.png; for a finished run resumed as it ended,
    its own metrics, and nothing is written."""
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
    losses = dict(train_loss=split_loss(model, train_words, run.vocab), val_loss=split_loss(model, val_words, run.vocab),
                  test_loss=split_loss(model, test_words, run.vocab) if tc.eval_test else None)
    run.eval_seconds += device_clock(run.device) - t0
    metrics = {**losses, **run_metrics(run)}
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


def run_metrics(run: Run) -> dict:
    """metrics.json beside the split losses: the model, the run's settings, its data and its times."""
    model, tc = run.model, run.config
    return dict(
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
        teachers=run.teachers,
        split={name: len(words) for name, words in zip(("train", "val", "test"), run.splits)},
        val_curve=run.val_curve,
        device=str(run.device),
        torch_threads=torch.get_num_threads(),
        library_version=__version__,
        torch_version=str(torch.__version__),
    )


def describe(run: Run) -> str:
    """The run's first line: the model, the recipe, the data and the device."""
    tc, n_params = run.config, sum(p.numel() for p in run.model.parameters())
    return (f"{model_kind(run.model)} model, {n_params:,} parameters; recipe {tc.recipe}: {tc.steps:,} steps of "
            f"{tc.batch_size} {'names' if tc.form == 'conv' else 'contexts'}, {tc.optimizer} lr {tc.lr:g}; "
            f"{run.data['path']} ({len(run.splits[0]):,} train names); device {run.device}"
            + ("; compiled" if tc.compile else ""))
