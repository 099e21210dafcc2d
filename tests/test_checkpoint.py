"""Checkpoints: atomic writes, round trips, and one-line errors for files that cannot be used."""

import errno
import os

import pytest
import torch

import wavenet_conv.checkpoint as checkpoint_module
from wavenet_conv import ConvModel, FlatConfig, FlatModel, ModelConfig, TreeModel
from wavenet_conv.checkpoint import (CheckpointError, load_checkpoint, load_model, model_kind, save_checkpoint,
                                     word_hashes)

from helpers import VOCAB, randomize_

CONFIG = ModelConfig(n_embd=6, n_hidden=16, n_layers=2, activation="gated", residual=True, skip=True)


def write(tmp_path, model, hashes="train_hashes", **extra):
    ckpt = dict(kind=model_kind(model), model_config=model.config.to_dict(), vocab=VOCAB.to_dict(),
                state_dict=model.state_dict(), **{hashes: word_hashes(["anna", "bob"])}, **extra)
    return save_checkpoint(ckpt, tmp_path / "run" / "checkpoint.pt")


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
    path = write(tmp_path, ConvModel(CONFIG), hashes="train_words")
    loaded = load_model(path)
    assert loaded.in_training_set("bob") and not loaded.in_training_set("bobby")
    assert load_model(write(tmp_path, ConvModel(CONFIG), hashes="nothing")).in_training_set("bob") is None


def documented_keys() -> list[str]:
    """The keys that checkpoint.py's docstring lists, in its block after "these keys, ...::"."""
    block = checkpoint_module.__doc__.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in block.splitlines()]


@pytest.mark.parametrize("run", ["finished", "stopped"])
def test_a_saved_checkpoint_has_exactly_the_documented_keys(run, trained_run, stopped_run):
    keys = documented_keys()
    assert len(keys) >= 15 and len(set(keys)) == len(keys), keys
    saved = load_checkpoint(trained_run[0] if run == "finished" else stopped_run)
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
    assert load_checkpoint(path)["step"] == 7
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
    assert load_checkpoint(path)["step"] == 1
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
    ckpt = torch.load(path, weights_only=True)
    ckpt["format_version"] = 99
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="format 99"):
        load_model(path)


def test_weights_that_do_not_fit_the_config(saved):
    _, path = saved
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_config"]["n_hidden"] = 17
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path)


def test_missing_paths(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        load_model(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no checkpoint.pt"):
        load_model(tmp_path)
