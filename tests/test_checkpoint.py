"""Checkpoints: atomic writes, round trips, and one-line errors for files that cannot be used."""

import dataclasses
import errno
import os

import pytest
import torch

import wavenet_conv.store.checkpoint as checkpoint_module
from wavenet_conv import ConvModel, FlatConfig, FlatModel, ModelConfig, TrainConfig, TreeModel
from wavenet_conv.training.source import read_data
from wavenet_conv.store.checkpoint import Checkpoint, CheckpointError, word_hashes
from wavenet_conv.store.loaded import load_model

from helpers import VOCAB, randomize_

CONFIG = ModelConfig(n_embd=6, n_hidden=16, n_layers=2, activation="gated", residual=True, skip=True)


def write(tmp_path, model, **extra):
    ckpt = Checkpoint.of_model(model, VOCAB, **{"train_hashes": word_hashes(["anna", "bob"]), **extra})
    return ckpt.save(tmp_path / "run" / "checkpoint.pt")


def rewrite(path, change) -> None:
    """The checkpoint file at ``path`` with its dict changed by ``change`` (as another version would write it)."""
    d = torch.load(path, weights_only=True)
    change(d)
    torch.save(d, path)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = randomize_(ConvModel(CONFIG)).eval()
    return model, write(tmp_path, model)


def test_round_trip_from_folder_or_file_and_in_either_form(saved):
    model, path = saved
    x = torch.tensor([[0, 1, 14, 14, 1], [0, 2, 15, 2, 0]])
    for where in (path, path.parent, str(path)):
        loaded = load_model(where)
        assert type(loaded.model) is ConvModel and not loaded.model.training and loaded.vocab == VOCAB
        assert torch.equal(loaded.model(x), model(x))
    tree = load_model(path, form="tree").model
    assert type(tree) is TreeModel
    assert torch.allclose(tree(torch.tensor([[0, 0, 0, 1]])), model(torch.tensor([[0, 1]]))[:, -1], atol=1e-5)


def test_in_training_set(saved):
    loaded = load_model(saved[1])
    assert loaded.in_training_set("anna") and not loaded.in_training_set("ann")
    model, vocab, meta = loaded  # unpacks like a tuple
    assert meta["library_version"] and "state_dict" not in meta


def test_a_run_of_0_2_still_answers_in_training_set(tmp_path):
    """Runs written by wavenet_conv 0.2 name the training names' hashes ``train_words``: still read."""
    path = write(tmp_path, ConvModel(CONFIG))
    rewrite(path, lambda d: d.__setitem__("train_words", d.pop("train_hashes")))
    loaded = load_model(path)
    assert loaded.in_training_set("bob") and not loaded.in_training_set("bobby")
    assert Checkpoint.load(path).train_hashes is not None and "train_words" not in loaded.meta
    assert load_model(write(tmp_path, ConvModel(CONFIG), train_hashes=None)).in_training_set("bob") is None


def documented_keys() -> list[str]:
    """The keys that checkpoint.py's docstring lists, in its block after "these keys, ...::"."""
    block = checkpoint_module.__doc__.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in block.splitlines()]


@pytest.mark.parametrize("run", ["finished", "stopped"])
def test_a_saved_checkpoint_has_exactly_the_documented_keys(run, trained_run, stopped_run):
    keys = documented_keys()
    assert len(keys) >= 15 and len(set(keys)) == len(keys), keys
    saved = torch.load((trained_run[0] if run == "finished" else stopped_run) / "checkpoint.pt", weights_only=True)
    assert sorted(saved) == sorted(keys), (f"written, not documented: {sorted(set(saved) - set(keys))}; "
                                          f"documented, not written: {sorted(set(keys) - set(saved))}")


def test_flat_model_round_trip(tmp_path):
    flat = FlatModel(FlatConfig(vocab_size=27, n_embd=3, n_hidden=8)).eval()
    path = write(tmp_path, flat)
    x = torch.tensor([[0, 1, 2]])
    assert torch.equal(load_model(path).model(x), flat(x))


def test_writes_are_atomic_and_replace(saved):
    model, path = saved
    write(path.parent.parent, model, step=7)
    assert Checkpoint.load(path).step == 7
    assert sorted(os.listdir(path.parent)) == ["checkpoint.pt"]  # no temporary file left


def crash(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 the first bytes of a zip archive, and no more")
    raise OSError(errno.ENOSPC, "No space left on device")


def refuse(*args):
    raise OSError(errno.EIO, "Input/output error")


@pytest.mark.parametrize("where", ["torch.save", "fsync", "replace"])
def test_a_crash_in_the_middle_of_a_write_keeps_the_previous_checkpoint(where, saved, monkeypatch):
    """The write dies half-way (disk full, an I/O error; the process killed is test_faults'): the
    checkpoint on disk is still the previous one, whole, and no temporary file is left behind."""
    model, path = saved
    write(path.parent.parent, model, step=1)
    if where == "torch.save":
        monkeypatch.setattr(torch, "save", crash)
    else:  # os.fsync or os.replace, as the checkpoint writer calls them
        monkeypatch.setattr(checkpoint_module.os, where, refuse)
    with pytest.raises(OSError, match="No space left" if where == "torch.save" else "Input/output error"):
        write(path.parent.parent, model, step=2)
    monkeypatch.undo()
    assert Checkpoint.load(path).step == 1
    assert sorted(os.listdir(path.parent)) == ["checkpoint.pt"]


def test_truncated_file(saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as e:
        load_model(path)
    assert "\n" not in str(e.value)


def test_garbage_and_empty_files(tmp_path):
    for content in (b"", b"not a checkpoint at all\n", os.urandom(4096)):
        (tmp_path / "c.pt").write_bytes(content)
        with pytest.raises(CheckpointError) as e:
            load_model(tmp_path / "c.pt")
        assert "\n" not in str(e.value)


def test_other_torch_files(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "sd.pt")
    for name in ("list.pt", "sd.pt"):
        with pytest.raises(CheckpointError, match="not a wavenet_conv checkpoint"):
            load_model(tmp_path / name)


def test_incompatible_format_version(saved):
    _, path = saved
    rewrite(path, lambda d: d.__setitem__("format_version", 99))
    with pytest.raises(CheckpointError, match="format 99"):
        load_model(path)


def test_weights_that_do_not_fit_the_config(saved):
    _, path = saved
    rewrite(path, lambda d: d["model_config"].__setitem__("n_hidden", 17))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path)


def test_missing_paths(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        load_model(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no checkpoint.pt"):
        load_model(tmp_path)


# ----------------------------------------------------------------------------- BatchNorm's settings, old files, one owner


def odd_norms(model, eps: float = 0.25, momentum: float = 0.3):
    """``model`` with every BatchNorm's eps and momentum set away from the defaults (a state dict has neither)."""
    for m in model.modules():
        if isinstance(m, checkpoint_module.BatchNorm):
            m.eps, m.momentum = eps, momentum
    return model


def norms(model) -> list[tuple[float, float]]:
    return [(m.eps, m.momentum) for m in model.modules() if isinstance(m, checkpoint_module.BatchNorm)]


@pytest.mark.parametrize("form", [None, "tree"])
def test_batchnorm_eps_and_momentum_are_saved_and_loaded(form, tmp_path):
    """A model whose BatchNorms have another eps and momentum loads with them (either form), and its
    logits are the saved model's; a file written without them loads with the defaults."""
    torch.manual_seed(0)
    model = odd_norms(randomize_(ConvModel(CONFIG))).eval()
    path = write(tmp_path, model)
    loaded = load_model(path, form=form).model
    assert norms(loaded) == norms(model) == [(0.25, 0.3)] * CONFIG.n_layers
    x = torch.tensor([[0, 1, 14, 14, 1]])
    expected = model(x)[:, -1] if form == "tree" else model(x)
    got = loaded(torch.tensor([[0, 0, 0, 1, 14, 14, 1]])[:, -4:]) if form == "tree" else loaded(x)
    assert torch.allclose(got, expected, atol=1e-5) if form == "tree" else torch.equal(got, expected)
    rewrite(path, lambda d: d.pop("batchnorm"))  # a file of wavenet_conv 0.3
    old = load_model(path).model
    assert norms(old) == [(1e-5, 0.1)] * CONFIG.n_layers and not torch.equal(old(x), model(x))


def test_batchnorm_settings_for_a_module_the_model_lacks_are_refused(saved):
    _, path = saved
    rewrite(path, lambda d: d["batchnorm"].__setitem__("blocks.9.norm", [1e-5, 0.1]))
    with pytest.raises(CheckpointError, match=r"'blocks\.9\.norm', which is no BatchNorm of the model"):
        load_model(path)


def test_an_old_file_is_converted_in_one_place(saved):
    """0.2's ``train_words``, a ``train_config`` from before ``precision`` and ``swa``, no ``batchnorm``,
    none of a run's later keys: read as today's ``Checkpoint``, with the values those runs had."""
    _, path = saved
    tc = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("precision", "swa", "swa_every")}
    keep = ("format", "format_version", "library_version", "kind", "model_config", "vocab", "state_dict", "train_hashes")

    def as_0_2(d):
        for k in [k for k in d if k not in keep]:
            del d[k]
        d.update(train_words=d.pop("train_hashes"), train_config=tc, step=3, val_curve=[[1, 2.5]])

    rewrite(path, as_0_2)
    ckpt = Checkpoint.load(path)
    assert (ckpt.train_config.precision, ckpt.train_config.swa, ckpt.train_config.swa_every) == ("float32", 0.0, 10)
    assert ckpt.train_hashes is not None and ckpt.batchnorm == {} and ckpt.teachers == [] and ckpt.swa is None
    assert ckpt.val_curve == [(1, 2.5)] and ckpt.train_seconds == 0.0 and ckpt.metrics is None and not ckpt.finished
    assert ckpt.reference is None  # no percentile table: reference.reference_of makes one from the names file
    assert not hasattr(checkpoint_module, "EARLIER_RUNS")


@pytest.mark.parametrize("state,finished", [("finished", True), ("stopped", False), ("last step, no metrics", False),
                                            ("a model alone", False)])
def test_finished_is_every_step_done_and_the_end_saved(state, finished, trained_run, stopped_run, tmp_path):
    """The one definition of a finished run: its last step and its end (metrics, averaged weights) saved."""
    if state == "a model alone":
        ckpt = Checkpoint.of_model(ConvModel(CONFIG), VOCAB)
    else:
        ckpt = Checkpoint.load(trained_run[0] if state != "stopped" else stopped_run)
    if state == "last step, no metrics":
        ckpt.metrics = None
    assert ckpt.finished is finished


def test_same_data_is_the_same_bytes_wherever_they_lie(trained_run, small_names, tmp_path):
    ckpt = Checkpoint.load(trained_run[0])
    copy = tmp_path / "elsewhere.txt"
    copy.write_bytes(small_names.read_bytes())
    assert ckpt.same_data(read_data(copy)[2])
    copy.write_bytes(small_names.read_bytes() + b"zed\n")
    assert not ckpt.same_data(read_data(copy)[2]) and not Checkpoint.of_model(ConvModel(CONFIG), VOCAB).same_data(
        read_data(small_names)[2])


def test_a_model_alone_cannot_be_resumed(tmp_path):
    path = write(tmp_path, ConvModel(CONFIG))
    with pytest.raises(CheckpointError, match="cannot be resumed, it has no train_config, data, optimizer, step, rng, losses"):
        Checkpoint.load(path).check_resumable(path)


def test_every_field_is_a_documented_key():
    """Adding a field is one edit here and one line of the docstring: ``to_dict`` writes every field."""
    assert sorted(f.name for f in dataclasses.fields(Checkpoint)) == sorted(
        k for k in documented_keys() if k not in ("format", "format_version"))


def test_a_finished_run_keeps_its_percentile_table_and_a_stopped_one_has_none(trained_run, stopped_run):
    """The table is made at the end, from the weights the run ends with: a periodic checkpoint has none."""
    finished = Checkpoint.load(trained_run[0])
    assert set(finished.reference) == {"starts", "values", "names"} and finished.reference["names"] == 100
    assert Checkpoint.load(stopped_run).reference is None
    assert load_model(trained_run[0]).meta["reference"] == finished.reference
