"""Training: the recipes lower the loss, write a run folder, resume exactly, and stop cleanly."""

import copy
import inspect
import io
import json
import re
import math
import sys
import time
from dataclasses import replace

import pytest
import torch

from wavenet_conv import (ArgumentError, ConfigError, ConvModel, DataError, FlatConfig, FlatModel, ModelConfig, TrainingDiverged,
                          TreeModel, lecture_split, load_names, score_names)
from wavenet_conv import sample_names
from wavenet_conv.store.checkpoint import Checkpoint
from wavenet_conv.store.loaded import load_model
from wavenet_conv.training.minibatches import NameBatches, add_input_noise, recalibrate_batchnorm
from wavenet_conv.models.config import TrainConfig, recipe, recipe_teachers
from wavenet_conv.training.optim import averaging, lr_at, make_optimizer, sized
from wavenet_conv.training.progress import Progress
from wavenet_conv.training.train import saved_config, train
from wavenet_conv.data import MIN_NAMES

import wavenet_conv.training.progress as progress_module
from helpers import (BUNDLED_NAMES, SMALL, VOCAB, cuda_only, ends_with, interrupt_at, quick, same_weights,
                     threads_set_to, train_module)


def test_default_recipe_lowers_loss_and_writes_a_run_folder(small_names, tmp_path):
    r = train(SMALL, quick(), data=small_names, out=tmp_path / "run", log=None)
    m = r.metrics
    assert m["val_loss"] < math.log(27) - 0.6 and m["train_loss"] < math.log(27) - 0.6
    assert m["steps"] == 300 and m["params"] == r.model.num_params()
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("train_loss", "val_loss", "test_loss", "params", "steps", "train_seconds", "eval_seconds"):
        assert saved[key] == m[key]
    assert saved["data"]["sha256"] and saved["data"]["path"].endswith("small.txt")
    assert (tmp_path / "run" / "loss.png").stat().st_size > 0
    model, vocab, meta = load_model(tmp_path / "run")
    assert not model.training and meta["step"] == 300 and meta["metrics"]["val_loss"] == m["val_loss"]
    assert meta["losses"].shape == (300,) and torch.isfinite(meta["losses"]).all()
    x = torch.tensor([[0, 5, 13, 13, 1]])
    assert torch.equal(model(x), r.model.eval()(x))


def test_split_losses_are_score_names(small_names):
    r = train(SMALL, quick(steps=50), data=small_names, log=None)
    _, val, test = lecture_split(load_names(small_names))
    assert r.metrics["val_loss"] == pytest.approx(score_names(r.model, val, r.vocab).mean_loss, abs=1e-6)
    assert r.metrics["test_loss"] == pytest.approx(score_names(r.model, test, r.vocab).mean_loss, abs=1e-6)


def test_lecture_recipe_is_sgd_on_contexts_with_the_step_decay():
    tc = recipe("lecture")
    assert (tc.form, tc.optimizer, tc.steps, tc.batch_size, tc.lr) == ("tree", "sgd", 200_000, 32, 0.1)
    assert lr_at(tc, 149_999) == 0.1 and lr_at(tc, 150_000) == pytest.approx(0.01)


def test_lecture_recipe_lowers_loss(small_names):
    r = train(SMALL, quick("lecture", steps=400), data=small_names, log=None)
    assert type(r.model) is TreeModel
    assert r.metrics["val_loss"] < math.log(27) - 0.5


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedules_warm_up_and_decay(schedule):
    tc = TrainConfig(steps=1000, warmup=100, lr=1e-2, lr_decay=0.1, schedule=schedule)
    lrs = [lr_at(tc, s) for s in range(1001)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[99] == pytest.approx(1e-2) and lrs[100] == pytest.approx(1e-2)
    assert all(a >= b for a, b in zip(lrs[99:], lrs[100:])) and lrs[-1] == pytest.approx(1e-3)
    middle = lr_at(tc, 550)  # half-way through the decay: linear 1e-2 - 0.5 * 9e-3; cosine the same, by symmetry
    assert middle == pytest.approx(5.5e-3)
    quarter = lr_at(tc, 325)
    assert quarter == pytest.approx(1e-2 - 0.25 * 9e-3 if schedule == "linear" else 1e-3 + 9e-3 * (1 + math.cos(math.pi / 4)) / 2)


def test_weights_are_averaged_over_the_last_part_of_the_run():
    tc = TrainConfig(steps=100, swa=0.25, swa_every=10)
    assert [s for s in range(1, 101) if averaging(tc, s)] == [80, 90, 100]
    assert not any(averaging(TrainConfig(steps=100), s) for s in range(1, 101))


def test_name_batches_are_an_epoch_shuffle():
    words = [w * (1 + i % 5) for i, w in enumerate("abcdefghij" * 3)]
    batches = NameBatches(words, VOCAB, batch_size=10, seed=0, device="cpu")
    firsts = torch.cat([x[pos == 1] for x, _, pos in (batches(s) for s in range(3))])  # one epoch
    assert sorted(firsts.tolist()) == sorted(VOCAB.encode("abcdefghij") * 3)
    x, y, pos = batches(4)
    assert x.shape == y.shape == pos.shape and x.dim() == 1 and (x[pos == 0] == 0).all()
    assert torch.equal(NameBatches(words, VOCAB, 10, 0, "cpu")(4)[0], x)  # a function of (seed, step)
    epochs = [torch.cat([batches.names_at(e * 3 + k) for k in range(3)]) for e in range(4)]
    assert all(sorted(e.tolist()) == list(range(30)) for e in epochs)  # each epoch every name once
    assert len({tuple(e.tolist()) for e in epochs}) == 4  # in a new order each epoch


def test_name_batches_keep_every_target():
    """Names packed end to end: each keeps all its targets, the end token included (len(name) + 1),
    its tokens [0, c1..cn] at positions 0..n, and nothing else is in the batch (no padding)."""
    words = load_names(BUNDLED_NAMES)[:200]
    batches = NameBatches(words, VOCAB, batch_size=16, seed=3, device="cpu")
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        ix = torch.randperm(len(words), generator=g)[:16]
        x, y, pos = batches.take(ix)
        starts = (pos == 0).nonzero().squeeze(1).tolist() + [len(x)]
        assert len(x) == sum(len(words[i]) + 1 for i in ix)
        for i, a, b in zip(ix.tolist(), starts, starts[1:]):
            assert VOCAB.decode(y[a:b]) == words[i] + "." and VOCAB.decode(x[a + 1 : b]) == words[i]
            assert pos[a:b].tolist() == list(range(b - a))
    x, y, pos = batches(0)  # the shuffled batches are made the same way
    assert len(y) == sum(len(words[i]) + 1 for i in batches.perm[:16])


@pytest.mark.parametrize("kind", ["conv", "flat"])
def test_weight_decay_is_on_weights_only(kind):
    model = ConvModel(ModelConfig(n_embd=4, n_hidden=8, activation="gated", residual=True, skip=True)) if kind == "conv" \
        else FlatModel(FlatConfig(n_embd=4, n_hidden=8))
    opt = make_optimizer(model, recipe("default", weight_decay=0.5))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    weights = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))}
    assert names == weights  # every Linear and Embedding weight; no bias, no norm's weight or bias
    assert all(g["weight_decay"] in (0.0, 0.5) for g in opt.param_groups)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_input_noise_replaces_characters_only_and_is_a_function_of_seed_and_step():
    x = torch.tensor([[0, 5, 6, 7, 0, 0]] * 400)
    a = add_input_noise(x, 0.3, 27, seed=1, step=5)
    assert torch.equal(a, add_input_noise(x, 0.3, 27, seed=1, step=5))
    assert not torch.equal(a, add_input_noise(x, 0.3, 27, seed=1, step=6))
    assert (a[x == 0] == 0).all() and (a[x != 0] > 0).all()
    assert 0.24 < (a != x).float().sum() / (x != 0).sum() < 0.34  # 0.3 * 25/26 land on another character


def test_batchnorm_recalibration_uses_clean_training_batches():
    words = load_names(BUNDLED_NAMES)[:300]
    model = ConvModel(SMALL)
    batches = NameBatches(words, VOCAB, batch_size=16, seed=0, device="cpu")
    ref = copy.deepcopy(model)
    recalibrate_batchnorm(model, batches)  # 300 names: one chunk, so the batch statistics themselves
    for m in ref.modules():
        if hasattr(m, "running_mean"):
            m.momentum = 1.0
    x, _, pos = batches.take(torch.arange(300))
    ref.train().packed(x, pos)
    for (name, a), b in zip(model.named_buffers(), ref.buffers()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert all(m.momentum == 0.1 for m in model.modules() if hasattr(m, "momentum"))


def test_flat_model_trains_on_contexts(small_names):
    make = lambda V: FlatModel(FlatConfig(vocab_size=V, n_embd=4, n_hidden=32, block_size=3))  # noqa: E731
    r = train(config=quick("lecture", steps=300), data=small_names, make_model=make, log=None)
    assert type(r.model) is FlatModel
    assert r.metrics["val_loss"] < math.log(27) - 0.5


@pytest.mark.parametrize("name", [pytest.param("default", marks=pytest.mark.slow), "lecture"])
def test_resume_ends_where_an_uninterrupted_run_ends(small_names, tmp_path, name):
    tc = quick(name, steps=250, input_noise=0.1)
    full = train(SMALL, tc, data=small_names, out=tmp_path / "full", log=None)
    stopped = train(SMALL, tc, data=small_names, out=tmp_path / "cut", stop_at=120, log=None)
    assert stopped.metrics["stopped_at"] == 120 and load_model(tmp_path / "cut").meta["step"] == 120
    torch.manual_seed(12345)  # whatever happened to the global RNG in between
    resumed = train(resume=tmp_path / "cut", log=None)
    assert same_weights(full.model, resumed.model)  # bit for bit
    assert resumed.metrics["val_loss"] == full.metrics["val_loss"]
    losses_full = Checkpoint.load(tmp_path / "full").losses
    assert torch.equal(losses_full, Checkpoint.load(tmp_path / "cut").losses)


def test_resume_refuses_a_changed_data_file(small_names, tmp_path):
    data = tmp_path / "names.txt"
    data.write_text(small_names.read_text())
    train(SMALL, quick(steps=20), data=data, out=tmp_path / "run", stop_at=10, log=None)
    data.write_text(small_names.read_text() + "zzz\n")
    with pytest.raises(ValueError, match="differs"):
        train(resume=tmp_path / "run", log=None)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pt"]  # no lock left


@pytest.mark.parametrize("change", [dict(seed=6), dict(lr=1e-3), dict(recipe="lecture", form="tree")],  # steps: going on
                         ids=lambda c: next(iter(c)))
def test_resume_refuses_to_change_what_the_run_computes(stopped_run, change):
    tc = saved_config(stopped_run)
    with pytest.raises(ConfigError, match=rf"TrainConfig\.{next(iter(change))} is .* in the run being resumed"):
        train(config=TrainConfig.from_dict({**tc.to_dict(), **change}), resume=stopped_run, log=None)
    with pytest.raises(ArgumentError, match="train: model_config must be None .* with resume: a resumed run keeps its model"):
        train(ModelConfig(n_embd=9), resume=stopped_run, log=None)


def test_resume_applies_how_the_run_is_carried_out(stopped_run):
    tc = saved_config(stopped_run)
    assert tc.seed == 5
    r = train(config=TrainConfig.from_dict({**tc.to_dict(), "eval_every": 15, "checkpoint_every": 25, "eval_test": False}),
              resume=stopped_run, log=None, stop_at=50)
    meta = load_model(stopped_run).meta
    assert meta["step"] == 50 and meta["train_config"]["checkpoint_every"] == 25
    r = train(resume=stopped_run, log=None)  # the run's settings now: checkpoint_every 25, eval_every 15
    assert [s for s, _ in r.metrics["val_curve"]] == [45, 60, 75]
    assert r.metrics["test_loss"] is None and r.config.seed == 5


def test_resume_refuses_to_change_compile_which_changes_the_weights(stopped_run):
    tc = saved_config(stopped_run)
    with pytest.raises(ConfigError, match=r"TrainConfig\.compile is False in the run being resumed, not True"):
        train(config=replace(tc, compile=True), resume=stopped_run, log=None)


def test_resuming_a_finished_run_writes_nothing(finished_run, tmp_path):
    """Its checkpoint stays the same bytes (a student distilled from it checks its sha256); with a
    changed report (eval_test) the end is done again and saved."""
    before = (finished_run / "checkpoint.pt").read_bytes()
    metrics = json.loads((finished_run / "metrics.json").read_text())
    lines = []
    r = train(resume=finished_run, log=lines.append)
    assert (finished_run / "checkpoint.pt").read_bytes() == before and r.metrics == Checkpoint.load(finished_run).metrics
    assert r.metrics["val_loss"] == metrics["val_loss"] and lines[-1].endswith("nothing to do")
    assert same_weights(r.model, load_model(finished_run).model)
    tc = saved_config(finished_run)
    again = train(config=replace(tc, eval_test=True), resume=finished_run, log=None)
    assert again.metrics["test_loss"] is not None and again.metrics["val_loss"] == metrics["val_loss"]
    assert Checkpoint.load(finished_run).metrics["test_loss"] == again.metrics["test_loss"]


def test_a_checkpoint_copied_into_another_runs_folder_does_not_overwrite_that_run(finished_run, stopped_run, tmp_path):
    """Resuming ``victim/snapshot.pt`` would have written ``victim/checkpoint.pt``, the other run's."""
    snapshot = finished_run / "snapshot.pt"
    snapshot.write_bytes((stopped_run / "checkpoint.pt").read_bytes())
    before = (finished_run / "checkpoint.pt").read_bytes()
    for out in (None, finished_run):
        with pytest.raises(ArgumentError, match=r"train: resume .*snapshot\.pt is not its folder's own checkpoint\.pt: "
                                                r"resume it into a new run folder \(out=\.\.\.\)"):
            train(resume=snapshot, out=out, log=None)
    assert (finished_run / "checkpoint.pt").read_bytes() == before
    r = train(resume=snapshot, out=tmp_path / "resumed", log=None, stop_at=40)
    assert r.run_dir == tmp_path / "resumed" and Checkpoint.load(tmp_path / "resumed").step == 40


def test_the_last_step_is_saved_before_the_ends_evaluation(stopped_run, monkeypatch):
    """A Ctrl-C while the splits are evaluated at the end loses no step: resume only finishes."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(train_module, "split_loss", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train(resume=stopped_run, log=None)
    ckpt = Checkpoint.load(stopped_run)
    assert ckpt.step == 80 and ckpt.metrics is None and not ckpt.finished
    r = train(resume=stopped_run, log=None)
    assert r.metrics["steps"] == 80 and Checkpoint.load(stopped_run).metrics["val_loss"] == r.metrics["val_loss"]


def test_train_seconds_are_the_steps_alone(small_names, tmp_path, monkeypatch):
    """Evaluations and checkpoint writes are timed apart from the training steps."""
    def slow(f):
        return lambda *a, **k: (time.sleep(0.3), f(*a, **k))[1]

    monkeypatch.setattr(train_module, "split_loss", slow(train_module.split_loss))
    monkeypatch.setattr(Checkpoint, "save", slow(Checkpoint.save))
    r = train(SMALL, quick(steps=30, eval_every=10, checkpoint_every=10), data=small_names, out=tmp_path / "run", log=None)
    m = r.metrics  # 2 val losses along the way and 3 at the end; 2 checkpoints along the way and one at the end
    assert m["eval_seconds"] >= 5 * 0.3 and m["train_seconds"] < 0.3
    assert m["ms_per_step"] == pytest.approx(1000 * m["train_seconds"] / 30, abs=0.2)  # train_seconds is rounded


def test_a_step_reads_nothing_back_from_the_device(small_names, monkeypatch):
    """The per-step losses stay on the device; the progress line reads their mean now and then."""
    reads, item = [], torch.Tensor.item

    def counted_item(t):  # reads by the library's own code (the optimizer's host-side step counts are not)
        if "wavenet_conv" in sys._getframe(1).f_code.co_filename:
            reads.append(1)
        return item(t)

    monkeypatch.setattr(torch.Tensor, "item", counted_item)
    monkeypatch.setattr(train_module, "finish", lambda run, log: run)  # count the steps only
    run = train(SMALL, quick(steps=200, checkpoint_every=0), data=small_names, log=None, progress=True)
    assert run.step == 200 and len(reads) <= 200 // 10


def test_progress_shows_the_mean_loss_since_the_last_line():
    stream = io.StringIO()
    bar = Progress(100, enabled=True, stream=stream, every=10)
    losses = torch.arange(100, dtype=torch.float32)
    bar.update(5, losses)
    assert stream.getvalue() == ""  # fewer than 10 steps since the last read
    bar.update(10, losses)
    assert "step  10/100  loss 4.5000" in stream.getvalue()


@pytest.mark.parametrize("ending", ["returns", "raises"])
@pytest.mark.parametrize("threads,inside", [("default", 1), (3, 3), (None, 2)], ids=["default", "3", "None"])
def test_train_runs_on_its_threads_and_puts_the_callers_back(threads, inside, ending, small_names, monkeypatch):
    """One thread by default, whatever the caller's (a resume is bit-exact on a fixed count); N; None:
    the caller's. The caller's count (2 here) comes back however the run ends."""
    assert inspect.signature(train).parameters["threads"].default == 1
    seen, real = [], train_module.train_steps

    def steps(run, *args):
        seen.append(torch.get_num_threads())
        if ending == "raises":
            raise RuntimeError("a bug mid-run")
        return real(run, *args)

    monkeypatch.setattr(train_module, "train_steps", steps)
    kwargs = {} if threads == "default" else {"threads": threads}
    with threads_set_to(2):
        with ends_with(RuntimeError if ending == "raises" else None):
            train(SMALL, quick(steps=10), data=small_names, stop_at=5, log=None, progress=False, **kwargs)
        assert torch.get_num_threads() == 2
    assert seen == [inside]


def test_compile_wraps_the_forward_of_the_training_steps(small_names, monkeypatch):
    calls = []

    def fake_compile(model, **kw):
        def forward(*a):
            calls.append(len(a))
            return model(*a)
        calls.append(kw)
        return forward

    monkeypatch.setattr(torch, "compile", fake_compile)
    r = train(SMALL, quick(steps=5, compile=True), data=small_names, log=None)
    assert calls[0] == {"dynamic": True} and calls[1:] == [2] * 5  # (x, mask), every step
    assert type(r.model) is ConvModel  # the model itself is saved and scored, not the wrapper


def test_ctrl_c_finishes_the_step_saves_and_resumes_exactly(small_names, tmp_path, monkeypatch):
    tc = quick(steps=150, checkpoint_every=50)
    full = train(SMALL, tc, data=small_names, out=tmp_path / "full", log=None)
    interrupt_at(monkeypatch, 70)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        train(SMALL, tc, data=small_names, out=tmp_path / "cut", log=lines.append)
    assert Checkpoint.load(tmp_path / "cut").step == 71  # the step in flight finished, then saved
    assert "interrupted at step 71; checkpoint saved" in lines[-1]
    monkeypatch.undo()
    resumed = train(resume=tmp_path / "cut", log=None)
    assert same_weights(full.model, resumed.model)


def test_a_second_ctrl_c_writes_nothing(small_names, tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 70, times=2)  # the second one lands mid-step
    lines = []
    with pytest.raises(KeyboardInterrupt):
        train(SMALL, quick(steps=150, checkpoint_every=50), data=small_names, out=tmp_path / "cut", log=lines.append)
    ckpt = Checkpoint.load(tmp_path / "cut")
    assert ckpt.step == 50 and len(ckpt.losses) == 50  # the last good checkpoint stays
    assert "not saved; the checkpoint of step 50 stays" in lines[-1]


def test_train_config_validates():
    with pytest.raises(ConfigError, match="form"):
        TrainConfig(form="lstm")
    with pytest.raises(ConfigError, match=r"TrainConfig\.steps must be an integer from 1 to 100,000,000, got 0"):
        TrainConfig(steps=0)
    with pytest.raises(ConfigError, match="recipe"):
        recipe("fast")
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['dropout'\]"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "dropout": 0.1})
    with pytest.raises(ConfigError, match="unknown field"):
        recipe("default", dropout=0.1)


def test_conv_form_needs_a_conv_model(small_names):
    with pytest.raises(ConfigError, match="ConvModel"):
        train(config=quick(steps=5), data=small_names, make_model=lambda V: TreeModel(ModelConfig(vocab_size=V)), log=None)


@pytest.mark.parametrize("field,value,message", [
    ("lr", math.inf, "a finite number"), ("lr", math.nan, "a finite number"), ("lr", 0.0, "> 0"),
    ("weight_decay", math.nan, "a finite number"), ("weight_decay", -1, ">= 0"), ("lr_decay", math.inf, "a finite number"),
    ("lr_decay", 2.0, r"in \[0, 1\]"), ("decay_at", -0.5, r"in \[0, 1\]"), ("beta2", math.nan, "a finite number"),
    ("beta2", 1.0, r"in \[0, 1\)"), ("input_noise", -math.inf, "a finite number"), ("seed", -1, r"\[0, 2\*\*32\)"),
    ("seed", 99999999999999999999999, r"\[0, 2\*\*32\)"),
])
def test_train_config_refuses_non_finite_and_out_of_range_numbers(field, value, message):
    with pytest.raises(ConfigError, match=rf"TrainConfig\.{field} must be .*{message}"):
        TrainConfig(**{field: value})


def inject_loss(monkeypatch, index: int, value: float = math.nan):
    """The loss of step ``index + 1`` (0-based ``index``) becomes ``value``, and its gradients with it."""
    real, calls = train_module.batch_loss, []

    def batch_loss(*a):
        loss = real(*a)
        calls.append(1)
        return loss * value if len(calls) == index + 1 else loss

    monkeypatch.setattr(train_module, "batch_loss", batch_loss)
    return calls


def test_a_non_finite_loss_stops_training_and_the_last_good_checkpoint_stays(small_names, tmp_path, monkeypatch):
    inject_loss(monkeypatch, 36)  # the loss of step 37
    with pytest.raises(TrainingDiverged, match=r"the loss of step 37 is nan, the first non-finite one.*"
                                               r"the checkpoint of step 20 stays") as e:
        train(SMALL, quick(steps=100, checkpoint_every=20), data=small_names, out=tmp_path / "run", log=None,
              progress=False)
    assert (e.value.step, e.value.saved_step) == (37, 20)
    ckpt = Checkpoint.load(tmp_path / "run")  # found at the checkpoint of step 40, which is not written
    assert ckpt.step == 20 and all(torch.isfinite(t).all() for t in ckpt.state_dict.values())
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pt"]  # no metrics, no lock


def test_the_progress_reads_find_a_non_finite_loss_early(small_names, monkeypatch):
    """No checkpoints, no folder: the progress report (its first read, at step 10) stops the run; with
    no progress, the end does."""
    for progress, found_at in ((True, 10), (False, 200)):
        calls = inject_loss(monkeypatch, 2, math.inf)
        with pytest.raises(TrainingDiverged, match="the loss of step 3 is inf"):
            train(SMALL, quick(steps=200, checkpoint_every=0), data=small_names, log=None, progress=progress)
        assert len(calls) == found_at
        monkeypatch.undo()


def test_a_diverging_learning_rate_is_stopped(small_names, tmp_path):
    with pytest.raises(TrainingDiverged, match="is TrainConfig.lr 1e\\+06 too high"):
        train(SMALL, quick(steps=100, lr=1e6, checkpoint_every=0), data=small_names, out=tmp_path / "run", log=None)
    assert not (tmp_path / "run").exists()  # nothing saved: the claimed folder goes again


@pytest.mark.parametrize("n", [1, 3, 5])
def test_a_file_too_small_for_the_split_is_refused_before_training(n, small_names, tmp_path):
    data = tmp_path / "few.txt"
    data.write_text("\n".join(small_names.read_text().split()[:n]) + "\n")
    part = "train" if n == 1 else "val"
    with pytest.raises(DataError, match=rf"{n} name\(s\) are too few .* its {part} split would be empty "
                                        rf"\(at least {MIN_NAMES} names"):
        train(SMALL, quick(), data=data, out=tmp_path / "run", log=None)
    assert not (tmp_path / "run").exists()


def test_min_names_is_where_every_split_has_a_name():
    for n in range(1, 300):
        assert all(lecture_split(range(n))[:2]) == (n >= MIN_NAMES), n


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_line_a_few_seconds_apart_in_a_log_and_one_redrawn_line_on_a_terminal(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(progress_module.time, "time", lambda: clock[0])
    losses = torch.ones(100)
    log, terminal = io.StringIO(), Terminal()
    bars = [Progress(100, stream=log), Progress(100, stream=terminal)]
    for step, t in ((10, 1000.5), (20, 1001.0), (30, 1004.0), (40, 1006.0)):
        clock[0] = t
        for bar in bars:
            bar.update(step, losses)
    for bar in bars:
        bar.close()
    assert [line.split()[1] for line in log.getvalue().splitlines()] == ["10/100", "40/100"]  # 5 s apart
    assert "\r" not in log.getvalue() and "steps/s" in log.getvalue() and "left" in log.getvalue()
    assert terminal.getvalue().count("\r") == 4 and terminal.getvalue().endswith("\n")
    quiet = io.StringIO()
    Progress(100, enabled=False, stream=quiet).update(100, losses)
    assert quiet.getvalue() == ""


def test_non_finite_weights_under_a_finite_loss_are_never_saved(small_names, tmp_path, monkeypatch):
    """A BatchNorm's running variance (used in eval mode only) turned NaN in step 25: the training loss
    stays finite, the checkpoint of step 40 finds it, and the one of step 20 stays."""
    real, calls = train_module.batch_loss, []

    def batch_loss(forward, *a):
        calls.append(1)
        if len(calls) == 25:  # forward: the model's packed method
            next(m for m in forward.__self__.modules() if hasattr(m, "running_var")).running_var[0] = math.nan
        return real(forward, *a)

    monkeypatch.setattr(train_module, "batch_loss", batch_loss)
    with pytest.raises(TrainingDiverged, match="became non-finite after step 20, by step 40 .*; the checkpoint of step 20 stays"):
        train(SMALL, quick(steps=100, checkpoint_every=20), data=small_names, out=tmp_path / "run", log=None)
    assert Checkpoint.load(tmp_path / "run").step == 20


def test_weight_averaging_ends_with_the_average_and_resumes_exactly(small_names, tmp_path):
    """swa: the model at the end is the mean of the weights after steps 30 and 40 (the last half,
    every 10 steps), BatchNorm's statistics recomputed for it; the average is part of the checkpoint,
    so a run resumed inside the window ends bit for bit where an uninterrupted one ends."""
    config = quick(steps=40, swa=0.5, swa_every=10, checkpoint_every=0, eval_test=False)
    averaged = train(SMALL, config, data=small_names, log=None).model
    raw = train(SMALL, replace(config, swa=0.0), data=small_names, log=None).model  # the same steps
    at_30 = train(SMALL, config, data=small_names, out=tmp_path / "cut", stop_at=30, log=None).model
    for name, p in averaged.named_parameters():
        mean = (dict(raw.named_parameters())[name] + dict(at_30.named_parameters())[name]) / 2
        assert (p - mean).abs().max() <= 1e-6, name
    bn, raw_bn = averaged.blocks[0].norm, raw.blocks[0].norm
    assert (bn.running_mean - raw_bn.running_mean).abs().max() > 1e-4  # recomputed for the average
    resumed = train(resume=tmp_path / "cut", log=None).model
    assert same_weights(resumed, averaged)


def test_a_bfloat16_step_computes_the_same_loss_within_its_precision():
    torch.manual_seed(0)
    model = ConvModel(SMALL).train()
    words = load_names(BUNDLED_NAMES)[:64]
    x, y, pos = NameBatches(words, VOCAB, 64, 0, "cpu")(0)
    seen = []
    model.lm_head.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    full = train_module.batch_loss(model.packed, x, y, pos)
    half = train_module.batch_loss(copy.deepcopy(model).packed, x, y, pos, torch.bfloat16)
    assert seen == [torch.float32, torch.bfloat16] and half.dtype == torch.float32  # the matmuls, the loss
    assert abs(half.item() - full.item()) < 0.02 * full.item()  # bfloat16 matmuls: about 3 significant digits


def test_a_run_saved_in_an_older_format_resumes_as_it_ran(small_names, tmp_path):
    """A checkpoint of wavenet_conv 0.1/0.2 has no precision or swa (those runs were float32 without
    weight averaging, and a resume keeps them so, not today's defaults), names its training hashes
    ``train_words``, and has none of the later keys (BatchNorm's settings, teachers, the average): it
    loads, resumes, and ends where an uninterrupted run ends."""
    tc = quick(steps=20, precision="float32", swa=0.0)
    full = train(SMALL, tc, data=small_names, log=None)
    train(SMALL, tc, data=small_names, out=tmp_path / "run", stop_at=10, log=None)
    path = tmp_path / "run" / "checkpoint.pt"
    old = torch.load(path, weights_only=True)  # the file as the older version wrote it
    for key in ("batchnorm", "teachers", "swa", "swa_count"):
        del old[key]
    for field in ("precision", "swa", "swa_every"):
        del old["train_config"][field]
    old["train_words"] = old.pop("train_hashes")
    torch.save(old, path)
    config = saved_config(tmp_path / "run")
    assert config.precision == "float32" and config.swa == 0.0 and config.swa_every == 10
    resumed = train(resume=tmp_path / "run", log=None)
    assert resumed.config.precision == "float32" and same_weights(resumed.model, full.model)
    assert "train_words" not in torch.load(path, weights_only=True)  # saved again in today's format


@cuda_only
def test_training_scoring_and_sampling_on_cuda(small_names, tmp_path):
    """The device-agnostic paths on a GPU: a short run, then scoring and sampling its model there."""
    result = train(SMALL, quick(steps=30, device="cuda", checkpoint_every=10), data=small_names,
                   out=tmp_path / "run", progress=False, log=None)
    assert next(result.model.parameters()).device.type == "cuda"
    assert math.isfinite(result.metrics["val_loss"]) and result.metrics["val_loss"] < 3.3
    model, vocab, _ = load_model(tmp_path / "run", device="cuda")
    words = load_names(small_names)[:50]
    on_gpu = score_names(model, words, vocab)
    on_cpu = score_names(model.cpu(), words, vocab)
    assert torch.allclose(on_gpu.nll, on_cpu.nll, atol=1e-3)
    assert len(sample_names(model.cuda(), 5, vocab, generator=torch.Generator("cuda").manual_seed(0))) == 5


def test_train_with_log_none_is_silent(small_names, capfd):
    """``log=None`` is silence: no report and no progress line, on either stream."""
    from helpers import quick

    train(ModelConfig(n_embd=4, n_hidden=8), quick(steps=30, checkpoint_every=0), small_names, log=None)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


@pytest.mark.parametrize("precision", ["auto", "float32"])
def test_metrics_name_the_precision_that_ran(precision, small_names, tmp_path):
    """metrics.json and the closing line name the resolved precision (not "auto"), device and threads."""
    from helpers import quick
    from wavenet_conv.device import resolve_precision

    lines = []
    train(ModelConfig(n_embd=4, n_hidden=8), quick(steps=20, checkpoint_every=0, precision=precision, device="cpu"),
          small_names, out=tmp_path / "r", log=lines.append, progress=False)
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    ran = str(resolve_precision(precision, torch.device("cpu"))).removeprefix("torch.")
    assert metrics["precision"] == ran != "auto" and metrics["train_config"]["precision"] == precision
    assert lines[-1].endswith(f"; cpu, {ran}, 1 thread)") and metrics["torch_threads"] == 1


@pytest.mark.parametrize("names,groups", [(1000, ["every length"]), (8000, ["up to 5", "6", "7 and up"])])
def test_a_run_says_what_its_percentile_table_is_made_of(names, groups, tmp_path):
    """Above the closing line, and in metrics.json: the dev names and the length groups they make (a
    group needs 200 names: 100 dev names make one table for every length)."""
    from helpers import quick
    from wavenet_conv.data import load_names

    path = tmp_path / "names.txt"
    path.write_text("\n".join(load_names(BUNDLED_NAMES)[:names]) + "\n")
    lines = []
    train(ModelConfig(n_embd=4, n_hidden=8), quick(steps=5, checkpoint_every=0), path, out=tmp_path / "r",
          log=lines.append, progress=False)
    said = ("one table for every length (two length groups need 400 names)" if len(groups) == 1
            else f"{len(groups)} length groups ({', '.join(groups)})")
    assert lines[-2] == f"percentiles: {names // 10:,} dev names, {said}"
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["percentiles"] == {"names": names // 10,
                                                                                       "length_groups": groups}


@pytest.mark.parametrize("n_dev,keep_best,notes", [(100, False, 1), (399, False, 1), (400, False, 0), (3247, False, 0),
                                                  (5, True, 2), (100, True, 2), (399, True, 2), (400, True, 0)])
def test_small_data_is_said_before_training(n_dev, keep_best, notes):
    from wavenet_conv.training.train import SMALL_DEV, small_data_notes

    said = small_data_notes(n_dev, keep_best)
    assert len(said) == notes and all(n.startswith("note: ") for n in said) and SMALL_DEV == 400
    assert not said or f"from {n_dev:,} dev names" in said[0]
    if keep_best and said:
        assert f"lowest val loss of {n_dev:,} dev names" in said[1] and "by chance" in said[1]
        assert {5: "more than 0.126", 100: "about 0.056", 399: "about 0.04"}[n_dev] in said[1]  # the spread at n_dev or below


def test_the_command_line_says_small_data_on_stderr(small_names, tmp_path, monkeypatch, capsys):
    from helpers import SMALL_ARGS, run_main

    code, out, err = run_main(["train", "--data", small_names, "--out", tmp_path / "r", "--steps", 10, "--samples", 0,
                               *SMALL_ARGS], monkeypatch, capsys)
    assert code == 0, err
    assert "wavenet-conv train: note: percentiles from 100 dev names" in err and "note:" not in out
    assert "note: keep_best picks the weights of the lowest val loss of 100 dev names" in err  # the default recipe keeps the best


def test_a_finished_run_goes_on_bit_for_bit_where_its_schedule_allows(small_names, tmp_path):
    """A constant learning rate after warmup (lr_decay 1): 40 steps, then on to 60, is the run of 60
    steps from the start, bit for bit, with no note."""
    from helpers import quick, same_weights

    mc, tc = ModelConfig(n_embd=4, n_hidden=8), quick(steps=40, checkpoint_every=0, lr_decay=1.0, warmup=5)
    train(mc, tc, small_names, out=tmp_path / "a", log=None)
    lines = []
    went_on = train(config=replace(tc, steps=60), resume=tmp_path / "a", log=lines.append, progress=False)
    fresh = train(mc, replace(tc, steps=60), small_names, out=tmp_path / "b", log=None)
    assert went_on.metrics["steps"] == 60 and same_weights(went_on.model, fresh.model)
    assert not [line for line in lines if line.startswith("note: going on")]


def test_a_run_that_goes_on_under_a_decayed_schedule_says_why_it_is_not_exact(small_names, tmp_path):
    from helpers import quick

    mc, tc = ModelConfig(n_embd=4, n_hidden=8), quick(steps=40, checkpoint_every=0, warmup=5)  # linear decay to 0
    train(mc, tc, small_names, out=tmp_path / "a", log=None)
    lines = []
    result = train(config=replace(tc, steps=60), resume=tmp_path / "a", log=lines.append, progress=False)
    assert result.metrics["steps"] == 60 and json.loads((tmp_path / "a" / "metrics.json").read_text())["steps"] == 60
    note = next(line for line in lines if line.startswith("note: going on"))
    assert "going on from step 40 to 60" in note and "decayed to 0" in note and "not bit for bit" in note


@pytest.mark.parametrize("change,problem", [
    (dict(steps=30), "is at step 40, so it goes on to 40 steps or more, not 30"),
    (dict(steps=60, swa=0.25), "averaged (swa)"),
])
def test_a_run_that_cannot_go_on_says_why(change, problem, small_names, tmp_path):
    from helpers import quick
    from wavenet_conv.errors import ConfigError

    mc, tc = ModelConfig(n_embd=4, n_hidden=8), quick(steps=40, checkpoint_every=0, swa=change.get("swa", 0.0))
    train(mc, tc, small_names, out=tmp_path / "a", log=None)
    with pytest.raises(ConfigError, match=re.escape(problem)):
        train(config=replace(tc, steps=change["steps"]), resume=tmp_path / "a", log=None)


@pytest.fixture
def few_names(small_names, tmp_path):
    """300 names: a model 64 wide overfits them within 150 steps."""
    path = tmp_path / "few.txt"
    path.write_text("\n".join(small_names.read_text().split()[:300]) + "\n")
    return path


KEEP_MODEL = ModelConfig(n_embd=8, n_hidden=64)


def keep_best_config(**kw):
    from helpers import quick

    # no decay and no weight decay on 300 names: the val loss falls, then rises (the best report at step 90 here)
    return quick(**{"steps": 150, "checkpoint_every": 0, "eval_every": 15, "keep_best": True, "lr": 0.03, "lr_decay": 1.0,
                    "warmup": 5, "eval_test": False, "weight_decay": 0.0, **kw})


def test_keep_best_keeps_the_weights_of_the_lowest_val_loss(few_names, tmp_path):
    """The run's weights and numbers are those of its lowest val loss among the reports and the end;
    metrics.json says which step it kept, and the checkpoint holds those weights."""
    from wavenet_conv import score_names
    from wavenet_conv.data import lecture_split, load_names

    result = train(KEEP_MODEL, keep_best_config(), few_names, out=tmp_path / "r", log=None)
    m, curve = result.metrics, dict(result.metrics["val_curve"])
    last = train(KEEP_MODEL, keep_best_config(keep_best=False), few_names, log=None).metrics
    assert curve == dict(last["val_curve"]) and m["kept_step"] < 150 and last["kept_step"] == 150
    assert m["val_loss"] == curve[m["kept_step"]] == min(curve.values()) < last["val_loss"]
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["kept_step"] == m["kept_step"]
    dev = lecture_split(load_names(few_names))[1]
    assert score_names(load_model(tmp_path / "r").model, dev, result.vocab).mean_loss == m["val_loss"]


@pytest.mark.parametrize("stop", [45, 100])  # before the best report, and after it
def test_keep_best_resumes_bit_for_bit(stop, few_names, tmp_path):
    """Stopped and resumed, a keep_best run ends where an uninterrupted one does, its kept weights included."""
    from helpers import same_weights

    whole = train(KEEP_MODEL, keep_best_config(), few_names, out=tmp_path / "a", log=None)
    train(KEEP_MODEL, keep_best_config(), few_names, out=tmp_path / "b", stop_at=stop, log=None)
    resumed = train(config=keep_best_config(), resume=tmp_path / "b", log=None)
    assert resumed.metrics["kept_step"] == whole.metrics["kept_step"] and same_weights(resumed.model, whole.model)
    assert resumed.metrics["val_loss"] == whole.metrics["val_loss"]


def test_keep_best_without_eval_every_reports_twenty_times(few_names):
    from wavenet_conv.models.config import REPORTS

    m = train(KEEP_MODEL, keep_best_config(eval_every=0, steps=100), few_names, log=None).metrics
    assert [step for step, _ in m["val_curve"]] == list(range(5, 100, 5)) and len(m["val_curve"]) == REPORTS - 1
    assert m["val_loss"] <= min(v for _, v in m["val_curve"])  # the 20th is the end's


def test_a_finished_keep_best_run_goes_on_from_its_last_step_bit_for_bit(few_names, tmp_path):
    """It kept an earlier report's weights, yet goes on from its last step's (the checkpoint's
    last_state): 150 steps, then on to 180, is the run of 180 from the start."""
    first = train(KEEP_MODEL, keep_best_config(), few_names, out=tmp_path / "a", log=None)
    assert first.metrics["kept_step"] < 150 and Checkpoint.load(tmp_path / "a").last_state is not None
    went_on = train(config=keep_best_config(steps=180), resume=tmp_path / "a", log=None)
    fresh = train(KEEP_MODEL, keep_best_config(steps=180), few_names, out=tmp_path / "b", log=None)
    assert went_on.metrics["kept_step"] == fresh.metrics["kept_step"] and same_weights(went_on.model, fresh.model)
    a, b = Checkpoint.load(tmp_path / "a"), Checkpoint.load(tmp_path / "b")  # the steps after 150 too
    assert torch.equal(a.losses, b.losses) and a.last_state.keys() == b.last_state.keys()
    assert all(torch.equal(a.last_state[k], b.last_state[k]) for k in a.last_state)


@pytest.mark.parametrize("name,form_examples", [("default", lambda w: len(w)), ("lecture", lambda w: sum(len(x) + 1 for x in w))])
def test_epochs_set_the_steps_from_the_names_file(name, form_examples, small_names):
    """epochs x the training split's examples (names; the tree's contexts) / batch_size steps, the
    warmup at most an eighth of them; the run records its steps, and metrics its epochs."""
    from wavenet_conv.data import lecture_split, load_names

    tc = recipe(name, epochs=0.5 if name == "default" else 0.3, batch_size=32, warmup=200, checkpoint_every=0,
                eval_test=False, keep_best=False)
    m = train(SMALL, tc, small_names, log=None).metrics
    steps = math.ceil(tc.epochs * form_examples(lecture_split(load_names(small_names))[0]) / 32)
    assert m["steps"] == m["train_config"]["steps"] == steps and m["train_config"]["epochs"] is None
    assert m["train_config"]["warmup"] == steps // 8 and m["epochs"] == pytest.approx(tc.epochs, rel=0.1)


def test_a_run_in_epochs_resumes_bit_for_bit_and_goes_on_in_epochs(small_names, tmp_path):
    tc = recipe("default", epochs=2, batch_size=32, checkpoint_every=0, eval_test=False, lr_decay=1.0, warmup=5)
    whole = train(SMALL, tc, small_names, log=None)
    train(SMALL, tc, small_names, out=tmp_path / "a", stop_at=20, log=None)
    resumed = train(SMALL, tc, resume=tmp_path / "a", log=None)  # the recipe's config again, in epochs
    assert same_weights(resumed.model, whole.model) and resumed.metrics["steps"] == whole.metrics["steps"] == 50
    longer = train(config=replace(tc, epochs=4), resume=tmp_path / "a", log=None)
    assert longer.metrics["steps"] == 100 and longer.metrics["epochs"] == pytest.approx(4, rel=0.01)


@pytest.mark.parametrize("name,steps,teacher_steps", [
    ("default", 3204, None), ("finetune", 1602, None), ("small", 6007, 4005), ("best", 4005, 2503), ("wide", 4005, None),
    ("gpu", 401, None), ("lecture", 200_000, None)])
def test_recipes_but_the_lecture_s_are_sized_by_the_file(name, steps, teacher_steps):
    """Every recipe but the lecture's in epochs: on the lecture's 25,626 training names about the steps
    measured before (small 6,000, wide and best 4,000, best's teachers 2,500, gpu 400); a file of 2,000
    training names gets as many passes in fewer steps. Steps given replace a recipe's epochs (train
    --steps, the student's), and its teachers' (recipe_teachers(steps=...))."""
    tc, teachers = recipe(name), recipe_teachers(name)
    assert sized(tc, 25_626).steps == steps and (tc.epochs is None) == (name == "lecture")
    assert [sized(t, 25_626).steps for _, t in teachers] == ([teacher_steps] * 2 if teacher_steps else [])
    if tc.epochs is not None:
        assert sized(tc, 2_000).steps == math.ceil(tc.epochs * 2_000 / tc.batch_size)
    assert recipe(name, steps=10).steps == 10 and recipe(name, steps=10).epochs is None
    assert all(t.steps == 10 and t.epochs is None for _, t in recipe_teachers(name, steps=10))


def test_steps_and_epochs_are_one_length():
    assert recipe("default", steps=100).epochs is None  # steps given: the recipe's epochs go
    with pytest.raises(ConfigError, match=r"TrainConfig.steps \(100\) and TrainConfig.epochs \(2\) both set"):
        recipe("default", steps=100, epochs=2)
    with pytest.raises(ConfigError, match="epochs must be a finite number > 0"):
        recipe("default", epochs=0)
