"""Checkpoints: one ``checkpoint.pt`` per run folder, written atomically, read with clear errors.

A checkpoint is a plain dict (``torch.load(..., weights_only=True)`` reads it); ``run.save`` writes
these keys, each of them (a test holds this list to what is written)::

    format          "wavenet_conv.checkpoint"
    format_version  1
    library_version the wavenet_conv that wrote it
    kind            "conv" | "tree" | "flat"
    model_config    ModelConfig.to_dict() (or FlatConfig's)
    vocab           Vocab.to_dict()
    state_dict      the model's weights and BatchNorm buffers
    optimizer       the optimizer's state dict
    train_config    TrainConfig.to_dict()
    step            optimizer steps done
    rng             torch's global RNG state(s) after ``step``
    losses          (step,) float32 tensor: the training loss of every step
    train_seconds   wall time of the training steps alone
    eval_seconds    wall time of the evaluations
    val_curve       [(step, val loss)] of the periodic evaluations
    train_hashes    (n,) int64 tensor: sorted hashes of the training names (``in_training_set``)
    data            {"path", "sha256", "n_words"}: the names file
    swa             the running average of the weights (``TrainConfig.swa``), or None
    swa_count       how many steps' weights ``swa`` averages
    teachers        [{"path", "sha256"}]: the teachers' checkpoints of a distilled run (``distill``), or []
    metrics         the run's metrics (None until the end)

Runs written by wavenet_conv 0.2 name ``train_hashes`` ``train_words``; both are read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import FlatConfig, ModelConfig
from .device import resolve_device
from .conv import ConvModel
from .data import Vocab
from .errors import CheckpointError
from .flat import FlatModel
from .tree import TreeModel
from .version import __version__

FORMAT = "wavenet_conv.checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
KINDS = {"conv": (ConvModel, ModelConfig), "tree": (TreeModel, ModelConfig), "flat": (FlatModel, FlatConfig)}


def model_kind(model) -> str:
    for kind, (cls, _) in KINDS.items():
        if type(model) is cls:
            return kind
    raise TypeError(f"cannot checkpoint a {type(model).__name__}: expected ConvModel, TreeModel or FlatModel")


def build_model(kind: str, config: dict):
    """A fresh model of ``kind`` ("conv", "tree", "flat") from its config dict."""
    if kind not in KINDS:
        raise CheckpointError(f"unknown model kind {kind!r} (expected one of {sorted(KINDS)})")
    cls, config_cls = KINDS[kind]
    return cls(config_cls.from_dict(config))


def word_hashes(words) -> torch.Tensor:
    """(n,) int64, sorted: 8-byte BLAKE2b hashes of the distinct ``words``."""
    hs = {int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little", signed=True) for w in words}
    return torch.tensor(sorted(hs), dtype=torch.long)


def in_word_hashes(word: str, hashes: torch.Tensor) -> bool:
    h = word_hashes([word])
    i = int(torch.searchsorted(hashes, h))
    return i < len(hashes) and bool(hashes[i] == h[0])


def resolve(path_or_run: str | os.PathLike) -> Path:
    """The checkpoint file of a run folder, or the file itself."""
    if os.fspath(path_or_run) == "":  # Path("") would be the current folder
        raise CheckpointError("an empty path is not a run folder or checkpoint file")
    p = Path(path_or_run)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
        if not p.exists():
            raise CheckpointError(f"{path_or_run}: no {CHECKPOINT_NAME} in this folder (not a run folder?)")
    elif not p.exists():
        raise CheckpointError(f"{path_or_run}: no such checkpoint file or run folder")
    return p


def save_checkpoint(ckpt: dict, path: str | os.PathLike) -> Path:
    """Write ``ckpt`` to ``path`` atomically: a temporary file in the same folder, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__, **ckpt}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path_or_run: str | os.PathLike, map_location="cpu") -> dict:
    """Read and check a checkpoint (the file, or a run folder holding ``checkpoint.pt``)."""
    path = resolve(path_or_run)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many kinds here: zip, pickle, EOF, unicode errors
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated?): {reason}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a wavenet_conv checkpoint")
    version = ckpt.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version!r} written by wavenet_conv {ckpt.get('library_version')}; "
            f"this wavenet_conv {__version__} reads format {FORMAT_VERSION}"
        )
    missing = [k for k in ("kind", "model_config", "vocab", "state_dict") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {missing}")
    return ckpt


def model_from_checkpoint(ckpt: dict, where: str = "checkpoint"):
    """The model (eval mode, on the state dict's device) and vocabulary stored in ``ckpt``."""
    try:
        vocab = Vocab.from_dict(ckpt["vocab"])
        model = build_model(ckpt["kind"], ckpt["model_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: bad model config or vocabulary: {e}") from None
    if getattr(model.config, "vocab_size", None) != len(vocab):
        raise CheckpointError(f"{where}: vocabulary of {len(vocab)} tokens but a model for {model.config.vocab_size}")
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"{where}: weights do not fit the model config: {' '.join(first[:2])[:200]}") from None
    return model.eval(), vocab


@dataclass
class LoadedModel:
    """What ``load_model`` returns: the model in eval mode, its vocabulary and the checkpoint's metadata
    (everything but the weights and optimizer state)."""

    model: torch.nn.Module
    vocab: Vocab
    meta: dict
    path: Path

    def __iter__(self):  # model, vocab, meta = load_model(...)
        return iter((self.model, self.vocab, self.meta))

    def in_training_set(self, word: str) -> bool | None:
        """Whether ``word`` was a training name (None if the checkpoint does not record them)."""
        hashes = self.meta.get("train_hashes", self.meta.get("train_words"))  # the name before 0.3
        return None if hashes is None else in_word_hashes(word, hashes)


def load_model(path_or_run: str | os.PathLike, device: str | torch.device = "cpu", form: str | None = None) -> LoadedModel:
    """Load a trained model from a run folder or checkpoint file.

    ``device``: where to put it ("cpu", "cuda", or "auto": cuda when available).
    ``form``: "conv" or "tree" to get that form of a tree/conv model (same weights), None as trained.

    >>> model, vocab, meta = load_model("runs/my-run")          # doctest: +SKIP
    """
    path = resolve(path_or_run)
    ckpt = load_checkpoint(path)
    model, vocab = model_from_checkpoint(ckpt, str(path))
    if form is not None and form != ckpt["kind"]:
        if form not in ("conv", "tree") or ckpt["kind"] == "flat":
            raise CheckpointError(f"{path}: cannot convert a {ckpt['kind']} model to form {form!r}")
        model = KINDS[form][0].from_model(model)
    meta = {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer")}
    return LoadedModel(model.to(resolve_device(device)), vocab, meta, path)
