"""Distillation: the teachers' distributions line up with the packed positions, the loss is what it
says, an undistilled run is today's, a distilled run resumes exactly and refuses changed teachers, and
a recipe with teachers trains them, then its student, and resumes after a Ctrl-C."""

import importlib
import json
import signal

import pytest
import torch
import torch.nn.functional as F

from wavenet_conv import (ArgumentError, CheckpointError, ConfigError, ModelConfig, RunFolderError, lecture_split,
                          load_names, score_names)
from wavenet_conv.training.minibatches import NameBatches, add_unknown
from wavenet_conv.store.checkpoint import Checkpoint
from wavenet_conv.store.loaded import load_model
from wavenet_conv.models.config import RECIPES, recipe, recipe_teachers
from wavenet_conv.models.conv import ConvModel
from wavenet_conv.data import sequences
from wavenet_conv.training.distill import distill_loss, soft_targets
from wavenet_conv.training.optim import lr_at, make_optimizer
from wavenet_conv.store.runfolder import RunFolder
from wavenet_conv.training.train import train

from helpers import run_main

TINY = ModelConfig(n_embd=4, n_hidden=8)
STEPS = 20
EPOCHS = 0.39  # STEPS of small_names' training split, 16 names a step


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    """No loss.png: these runs are a few steps long, and a plot costs more than their training."""
    monkeypatch.setattr(importlib.import_module("wavenet_conv.training.train"), "plot_losses", lambda *a: True)


def quick(**kw):
    return recipe("default", **{"steps": STEPS, "batch_size": 16, "warmup": 5, "precision": "float32",
                                "checkpoint_every": 0, "eval_test": False, **kw})


@pytest.fixture(scope="module")
def teachers(small_names, tmp_path_factory):
    """Two finished tiny runs on the small names file."""
    root = tmp_path_factory.mktemp("teachers")
    for k in range(2):
        train(TINY, quick(seed=k + 1), data=small_names, out=root / f"t{k}", log=None, progress=False)
    return [root / "t0", root / "t1"]


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def padded_probs(model, words, vocab) -> torch.Tensor:
    """Each name's next-character distributions from ``ConvModel.forward`` on padded sequences, name
    after name: the independent reference of ``soft_targets``."""
    b = sequences(words, vocab)
    with torch.no_grad():
        return torch.softmax(model.eval()(b.x), -1)[b.mask]


def test_soft_targets_line_up_with_the_packed_positions(teachers, small_names):
    words = lecture_split(load_names(small_names))[0]
    vocab = load_model(teachers[0]).vocab  # the teachers' (an unknown token included)
    models = [load_model(t).model for t in teachers]
    batches = NameBatches(words, vocab, 16, 0, "cpu")
    soft = soft_targets(models, vocab, batches, temperature=2.0)
    expected = sum(torch.softmax(torch.log(padded_probs(m, words, vocab)) / 2.0, -1) for m in models) / 2
    assert soft.shape == (len(batches.x), len(vocab)) and torch.allclose(soft, expected, atol=1e-6)
    batches.soft = soft
    x, y, pos = batches(3)
    assert torch.equal(batches.soft_at(3), soft[batches.positions(batches.names_at(3))])
    assert len(batches.soft_at(3)) == len(y)


def test_distill_one_is_the_cross_entropy_against_the_teacher(teachers, small_names, tmp_path):
    """The first step's loss, distill=1 at T=1: the student's initial model, in training mode, against
    the teacher's distributions of batch 0, each computed on its own."""
    r = train(TINY, quick(steps=1, distill=1.0), data=small_names, out=tmp_path / "s", log=None, progress=False,
              teachers=teachers[:1])
    loss = float(Checkpoint.load(tmp_path / "s").losses[0])
    words = lecture_split(load_names(small_names))[0]
    batches = NameBatches(words, r.vocab, 16, quick().seed, "cpu")
    names = [words[i] for i in batches.names_at(0)]
    teacher = padded_probs(load_model(teachers[0]).model, names, r.vocab)  # name after name, as packed
    torch.manual_seed(quick().seed)
    student = ConvModel(ModelConfig.from_dict({**TINY.to_dict(), "vocab_size": len(r.vocab)})).train()
    x, _, pos = batches(0)
    with torch.no_grad():
        expected = -(teacher * F.log_softmax(student.packed(x, pos), -1)).sum(1).mean()
    assert loss == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize("a,T", [(0.5, 2.0), (1.0, 0.5), (0.25, 1.0)])
def test_distill_loss_is_the_mix_of_the_two_cross_entropies(a, T):
    """(1 - a) CE(names) + a T^2 CE(logits / T, soft), against a hand-written mean over positions."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, 7, (50,), generator=g)
    soft = torch.softmax(torch.randn(50, 7, generator=g, dtype=torch.float64), 1)
    hard = -torch.log_softmax(logits, 1)[torch.arange(50), y].mean()
    against_soft = -(soft * torch.log_softmax(logits / T, 1)).sum(1).mean()
    got = distill_loss(logits, y, soft, recipe("default", distill=a, temperature=T))
    assert abs(got.item() - ((1 - a) * hard + a * T * T * against_soft).item()) <= 1e-12


@pytest.mark.parametrize("unknown", [True, False])
def test_distill_zero_is_the_plain_loop(small_names, unknown):
    """An undistilled run is today's loop: the mean cross-entropy of packed batches (their characters
    replaced by the unknown token at ``unknown_rate``, for a run with one), AdamW, the schedule."""
    tc = quick(unknown=unknown)
    r = train(TINY, tc, data=small_names, log=None, progress=False)
    words = lecture_split(load_names(small_names))[0]
    torch.manual_seed(tc.seed)
    model = ConvModel(ModelConfig.from_dict({**TINY.to_dict(), "vocab_size": len(r.vocab)})).train()
    opt, batches = make_optimizer(model, tc), NameBatches(words, r.vocab, tc.batch_size, tc.seed, "cpu")
    for step in range(tc.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(tc, step)
        x, y, pos = batches(step)
        if unknown:
            x, y, pos = add_unknown((x, y, pos), tc.unknown_rate, r.vocab.unknown_id, tc.seed, step)
        loss = F.cross_entropy(model.packed(x, pos), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert same_weights(model, r.model)


def test_a_distilled_run_resumes_exactly_and_records_its_teachers(teachers, small_names, tmp_path):
    tc = quick(distill=0.5, temperature=2.0, swa=0.5, swa_every=2)
    full = train(TINY, tc, data=small_names, log=None, progress=False, teachers=teachers)
    train(TINY, tc, data=small_names, out=tmp_path / "s", log=None, progress=False, teachers=teachers, stop_at=7)
    resumed = train(resume=tmp_path / "s", log=None, progress=False)
    assert same_weights(full.model, resumed.model)
    recorded = Checkpoint.load(tmp_path / "s").teachers
    assert [r["path"] for r in recorded] == [str((t / "checkpoint.pt").resolve()) for t in teachers]
    assert all(len(r["sha256"]) == 64 for r in recorded) and resumed.metrics["teachers"] == recorded


def test_a_changed_or_missing_teacher_is_refused_on_resume(teachers, small_names, tmp_path):
    own = [tmp_path / "t0", tmp_path / "t1"]
    for src, dst in zip(teachers, own):
        dst.mkdir()
        (dst / "checkpoint.pt").write_bytes((src / "checkpoint.pt").read_bytes())
    train(TINY, quick(distill=0.5), data=small_names, out=tmp_path / "s", log=None, progress=False, teachers=own, stop_at=5)
    (own[1] / "checkpoint.pt").write_bytes((teachers[0] / "checkpoint.pt").read_bytes())
    with pytest.raises(CheckpointError, match=r"teacher .*t1.* changed since the run started"):
        train(resume=tmp_path / "s", log=None, progress=False)
    (own[1] / "checkpoint.pt").unlink()
    with pytest.raises(CheckpointError, match=r"teacher .*t1.* is gone"):
        train(resume=tmp_path / "s", log=None, progress=False)
    assert Checkpoint.load(tmp_path / "s").step == 5  # nothing was trained


def test_teachers_are_checked_before_any_work(teachers, small_names, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("\n".join(load_names(small_names)[::-1]) + "\n")  # the same names in another order
    caps = tmp_path / "caps.txt"
    caps.write_text("\n".join(w.capitalize() for w in load_names(small_names)) + "\n")
    out = tmp_path / "s"
    cases = [(dict(data=other, teachers=teachers), ArgumentError, "another data file"),
             (dict(data=caps, teachers=teachers), ArgumentError, "vocabulary"),
             (dict(data=small_names, teachers=[tmp_path]), ArgumentError, "not a teacher"),
             (dict(data=small_names), ConfigError, "no teachers")]
    for kw, error, message in cases:
        with pytest.raises(error, match=message):
            train(TINY, quick(distill=0.5), out=out, log=None, progress=False, **kw)
        assert not out.exists()
    with pytest.raises(ConfigError, match="distill is 0"):
        train(TINY, quick(), data=small_names, out=out, log=None, progress=False, teachers=teachers)
    train(TINY, quick(), data=small_names, out=tmp_path / "unfinished", log=None, progress=False, stop_at=3)
    with pytest.raises(ArgumentError, match=r"teachers .*unfinished: is an unfinished run \(step 3 of \d+\): finish it "
                                            r"first \(resume=\.\.\.\)$"):
        train(TINY, quick(distill=0.5), data=small_names, out=out, log=None, progress=False,
              teachers=[tmp_path / "unfinished"])
    assert not out.exists()


def test_a_teacher_cannot_be_the_run_that_force_replaces(teachers, small_names, tmp_path):
    """``--out X --force --teacher X`` would delete the teacher's checkpoint under its own student."""
    run = tmp_path / "t"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes((teachers[0] / "checkpoint.pt").read_bytes())
    before = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match="is the run in .*, which this run would replace: train into another folder"):
        train(TINY, quick(distill=0.5), data=small_names, out=run, force=True, log=None, progress=False,
              teachers=[run, teachers[1]])
    assert (run / "checkpoint.pt").read_bytes() == before and sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]


@pytest.mark.parametrize("fields,message", [
    (dict(distill=1.5), r"TrainConfig.distill must be in \[0, 1\]"),
    (dict(temperature=0.0), "TrainConfig.temperature must be a finite number > 0"),
    (dict(distill=0.5, form="tree"), "TrainConfig.distill needs form 'conv'"),
])
def test_distillation_fields_are_checked(fields, message):
    with pytest.raises(ConfigError, match=message):
        recipe("default", **fields)


def test_the_recipes_teachers():
    best, small = recipe_teachers("best"), recipe_teachers("small", seed=7, device="cpu")
    assert [(m.n_hidden, t.recipe, t.seed) for m, t in best] == [(384, "wide", 43), (384, "wide", 44)]
    assert [(t.seed, t.device) for _, t in small] == [(8, "cpu"), (9, "cpu")] and recipe("small").distill > 0
    assert recipe_teachers("default") == [] and recipe_teachers("wide") == []


@pytest.fixture
def tiny_recipes(monkeypatch):
    """``best`` and ``small`` as recipes with two tiny teachers: a whole recipe in a second. In epochs,
    as the real ones: 0.39 of small_names' 800 training names, 16 a step, is ``STEPS``."""
    monkeypatch.setitem(RECIPES, "wide", dict(model=dict(n_embd=4, n_hidden=8), epochs=EPOCHS, batch_size=16, warmup=5,
                                              precision="float32", checkpoint_every=5))
    for name in ("best", "small"):
        monkeypatch.setitem(RECIPES, name, dict(model=dict(n_embd=4, n_hidden=6), epochs=EPOCHS, batch_size=16, warmup=5,
                                                precision="float32", checkpoint_every=5, distill=0.5, swa=0.5,
                                                swa_every=2, teachers=dict(recipe="wide", count=2)))


def test_the_cli_gives_the_teachers_the_device_and_precision(monkeypatch, capsys, tmp_path):
    seen = {}

    def fake_train_recipe(model_config, config, teachers, *args, **kw):
        seen.update(config=config, teachers=teachers)
        raise KeyboardInterrupt  # stop before any work

    monkeypatch.setattr(importlib.import_module("wavenet_conv.cli.commands"), "train_recipe", fake_train_recipe)
    code, _, _ = run_main(["train", "--recipe", "best", "--out", tmp_path / "r", "--precision", "float32", "--device", "cpu",
                           "--steps", "10", "--seed", "5"], monkeypatch, capsys)
    assert code == 130 and seen["config"].steps == 10
    assert [(t.precision, t.device, t.seed, t.epochs) for _, t in seen["teachers"]] == [("float32", "cpu", 6, 12.5),
                                                                                        ("float32", "cpu", 7, 12.5)]


def interrupt_on_call(monkeypatch, calls: int, also=None):
    """Ctrl-C while the ``calls``-th training batch of the process is fetched (counting every run's);
    ``also()`` is called there too."""
    fetch, seen = NameBatches.__call__, []

    def fetch_and_interrupt(self, step):
        seen.append(step)
        if len(seen) == calls:
            also and also()
            signal.raise_signal(signal.SIGINT)
        return fetch(self, step)

    monkeypatch.setattr(NameBatches, "__call__", fetch_and_interrupt)


def test_the_cli_recipe_trains_its_teachers_then_its_student(tiny_recipes, small_names, tmp_path, monkeypatch, capsys):
    out = tmp_path / "best"
    code, stdout, err = run_main(["train", "--recipe", "best", "--data", small_names, "--out", out, "--quiet",
                                  "--samples", "2"], monkeypatch, capsys)
    assert code == 0, err
    teachers = [out / "teacher-0", out / "teacher-1"]
    for k, t in enumerate(teachers):
        ckpt = Checkpoint.load(t)
        assert ckpt.step == STEPS and ckpt.finished and ckpt.train_config.recipe == "wide" and ckpt.teachers == []
        assert ckpt.train_config.seed == 43 + k
    student = Checkpoint.load(out)
    assert student.train_config.recipe == "best" and student.model_config.n_hidden == 6
    assert [r["path"] for r in student.teachers] == [str((t / "checkpoint.pt").resolve()) for t in teachers]
    plan = json.loads((out / "recipe.json").read_text())
    assert len(plan["teachers"]) == 2 and plan["train_config"]["distill"] == 0.5
    assert f"run folder: {out}" in stdout and not (out / "train.lock").exists()
    # the teachers of one recipe teach another: --teacher, no teachers trained
    code, _, err = run_main(["train", "--recipe", "small", "--data", small_names, "--out", tmp_path / "small", "--quiet",
                             "--samples", "0", "--teacher", teachers[0], "--teacher", teachers[1]], monkeypatch, capsys)
    assert code == 0, err
    assert not (tmp_path / "small" / "teacher-0").exists() and len(Checkpoint.load(tmp_path / "small").teachers) == 2
    # the student scores like any run, and its tree form is the same model
    code, stdout, err = run_main(["score", out, "-", "--format", "tsv"], monkeypatch, capsys, stdin="emma\n")
    assert code == 0 and "emma" in stdout
    (conv, vocab, _), tree = load_model(out), load_model(out, form="tree").model
    val = lecture_split(load_names(small_names))[1]
    assert score_names(tree, val, vocab).mean_loss == pytest.approx(score_names(conv, val, vocab).mean_loss, abs=1e-5)


def test_force_keeps_the_teachers_of_the_same_settings_and_refuses_others(tiny_recipes, small_names, tmp_path, monkeypatch,
                                                                          capsys):
    out, argv = tmp_path / "r", ["train", "--recipe", "best", "--data", small_names, "--quiet", "--samples", "0"]
    assert run_main(argv + ["--out", out], monkeypatch, capsys)[0] == 0
    code, stdout, err = run_main(argv + ["--out", out, "--force"], monkeypatch, capsys)
    assert code == 0 and stdout.count("finished: reused") == 2, err
    code, _, err = run_main(argv + ["--out", out, "--force", "--seed", "5"], monkeypatch, capsys)  # teachers of seed 6, 7
    assert code == 2 and f"{out / 'teacher-0'}: holds another run than the recipe's teacher 0 (its seed differs)" in err
    assert Checkpoint.load(out / "teacher-0").train_config.seed == 43 and not (out / "train.lock").exists()
    assert Checkpoint.load(out).step == STEPS  # refused before --force removed anything


def test_an_interrupted_recipe_resumes_where_it_stopped(tiny_recipes, small_names, tmp_path, monkeypatch, capsys):
    argv = ["train", "--recipe", "best", "--data", small_names, "--quiet", "--samples", "0"]
    code, _, err = run_main(argv + ["--out", tmp_path / "full"], monkeypatch, capsys)
    assert code == 0, err
    out = tmp_path / "run"

    def locked():
        with pytest.raises(RunFolderError, match="another training holds it"):
            RunFolder(out).claim()

    interrupt_on_call(monkeypatch, STEPS + 8, also=locked)  # the batch of teacher 2's step 7: it stops at 8
    code, stdout, _ = run_main(argv + ["--out", out], monkeypatch, capsys)
    assert code == 130 and stdout.splitlines()[-1] == f"recipe interrupted: go on with --resume {out}", stdout
    assert Checkpoint.load(out / "teacher-0").step == STEPS and Checkpoint.load(out / "teacher-1").step == 8
    assert not (out / "checkpoint.pt").exists() and not (out / "train.lock").exists()
    code, _, err = run_main(argv + ["--out", out], monkeypatch, capsys)  # a new run there: refused
    assert code == 2 and "holds a run (its recipe.json)" in err
    for option in (["--out", tmp_path / "elsewhere"], ["--data", small_names]):  # the recipe's own folder and names
        code, _, err = run_main(["train", "--resume", out, *option], monkeypatch, capsys)
        assert code == 2 and f"{option[0]} cannot be given with --resume of a recipe" in err, err
    monkeypatch.undo()  # the resume needs only the plan, recipe.json
    interrupt_on_call(monkeypatch, (STEPS - 8) + 10)  # the rest of teacher 2, then the student's step 9
    code, stdout, _ = run_main(["train", "--resume", out, "--quiet", "--samples", "0"], monkeypatch, capsys)
    assert code == 130 and "teacher-0, finished: reused" in stdout
    assert Checkpoint.load(out).step == 10 and Checkpoint.load(out / "teacher-1").step == STEPS
    monkeypatch.undo()
    code, _, err = run_main(["train", "--resume", out, "--quiet", "--samples", "0"], monkeypatch, capsys)
    assert code == 0, err
    for sub in ("teacher-0", "teacher-1", "."):
        assert same_weights(load_model(out / sub).model, load_model(tmp_path / "full" / sub).model), sub



def test_a_recipes_teachers_take_the_overrides():
    teachers = recipe_teachers("best", steps=100, device="cpu")
    assert [(t.steps, t.device) for _, t in teachers] == [(100, "cpu"), (100, "cpu")]
    assert [t.seed for _, t in teachers] == [recipe("best").seed + 1, recipe("best").seed + 2]


def test_a_recipe_that_would_not_use_its_teachers_is_refused_before_any_work(small_names, tmp_path):
    from wavenet_conv.training.teachers import train_recipe

    pair = (TINY, quick())
    for config, teachers, message in [(quick(distill=0), [pair], "the student would not use them"),
                                      (quick(distill=0.5), [], "needs at least one teacher")]:
        with pytest.raises(ConfigError, match=message):
            train_recipe(TINY, config, teachers, tmp_path / "r", small_names, log=None, progress=False)
        assert not (tmp_path / "r").exists()


def test_a_teacher_folder_trained_on_another_names_file_is_refused(teachers):
    from wavenet_conv.training.teachers import teacher_state

    ckpt = Checkpoint.load(teachers[0])
    mc, tc = ckpt.model_config, recipe("default", **{k: v for k, v in ckpt.train_config.to_dict().items() if k != "recipe"})
    assert teacher_state(teachers[0], 0, mc, tc, ckpt.data) == "finished"
    with pytest.raises(RunFolderError, match="holds another run than the recipe's teacher 0 \\(its data file differs\\)"):
        teacher_state(teachers[0], 0, mc, tc, {**ckpt.data, "sha256": "0" * 64})


def test_a_recipes_teachers_take_the_students_text_settings(small_names, tmp_path):
    """A student that folds case learns from teachers that fold it too: the teachers' vocabulary is
    the student's (a teacher trained as is would have capitals in its vocabulary, and be refused)."""
    from wavenet_conv.training.teachers import train_recipe

    names = tmp_path / "Names.txt"
    names.write_text("".join(n.capitalize() + "\n" for n in small_names.read_text().split()))
    student = quick(distill=0.5, normalize="case", rare_chars=5, unknown_rate=0.01)
    result = train_recipe(TINY, student, [(TINY, quick())], tmp_path / "r", names, log=None, progress=False)
    teacher = Checkpoint.load(tmp_path / "r" / "teacher-0")
    assert teacher.vocab == result.vocab and "E" not in result.vocab.chars
    assert [getattr(teacher.train_config, f) for f in ("normalize", "rare_chars", "unknown_rate")] == ["case", 5, 0.01]
