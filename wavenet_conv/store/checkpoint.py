"""Checkpoints: one ``checkpoint.pt`` per run folder. ``Checkpoint`` is the only code that reads or
writes one: ``Checkpoint.load(path_or_run)`` and ``checkpoint.save(path)`` (atomic). A run loaded to
score or sample with is ``loaded.LoadedRun`` (``load_model``), apart from this file format.

The file is a plain dict (``torch.load(..., weights_only=True)`` reads it); ``Checkpoint.save`` writes
these keys, each of them (a test holds this list to what is written)::

    format          "wavenet_conv.checkpoint"
    format_version  1
    library_version the wavenet_conv that wrote it
    kind            "conv" | "tree" | "flat"
    model_config    ModelConfig.to_dict() (or FlatConfig's)
    vocab           Vocab.to_dict()
    state_dict      the model's weights and BatchNorm buffers
    batchnorm       {module name: [eps, momentum]} of each BatchNorm (not in a state dict)
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
    best            {"step", "val", "state_dict"}: the weights of the lowest val loss so far (``keep_best``), or None
    last_state      a finished run whose kept weights are a report's (``keep_best``): its last step's, to go on from; or None
    teachers        [{"path", "sha256"}]: the teachers' checkpoints of a distilled run (``distill``), or []
    init            {"path", "sha256"}: the checkpoint a fine-tuned run started from (``finetune``), or None
    metrics         the run's metrics (None until the end)
    reference       its percentile table, ``ReferenceTable.to_dict()`` of the dev split (None until the end)

A checkpoint that only holds a model (``Checkpoint.of_model(model, vocab).save(path)``) has None or
empty values for the run's keys; it loads and scores, and cannot be resumed.

Older files are converted in one place, ``upgrade``: wavenet_conv 0.2 named ``train_hashes``
``train_words``; a ``train_config`` from before a field was added gets the value that field had then
(``ADDED_FIELDS``); a file without ``batchnorm`` loads with BatchNorm's defaults; a file from before
percentiles has no ``reference`` (None: ``reference.reference_of`` makes it from the run's names file);
any other key a file lacks takes its default here.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from ..data import Vocab, same_data
from ..errors import CheckpointError
from ..models.blocks import BatchNorm
from ..models.config import FlatConfig, ModelConfig, TrainConfig
from ..models.conv import ConvModel
from ..models.flat import FlatModel
from ..models.tree import TreeModel
from ..version import __version__

FORMAT = "wavenet_conv.checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
KINDS = {"conv": (ConvModel, ModelConfig), "tree": (TreeModel, ModelConfig), "flat": (FlatModel, FlatConfig)}
REQUIRED = ("kind", "model_config", "vocab", "state_dict")  # what every checkpoint holds: a model
RESUME_FIELDS = ("train_config", "data", "optimizer", "step", "rng", "losses")  # and what a resume needs beyond it
# a TrainConfig field added since wavenet_conv 0.1: its value for a run saved before it existed
ADDED_FIELDS = {"precision": "float32", "swa": 0.0, "normalize": "none", "unknown": False}


def model_kind(model) -> str:
    for kind, (cls, _) in KINDS.items():
        if type(model) is cls:
            return kind
    raise TypeError(f"cannot checkpoint a {type(model).__name__}: expected ConvModel, TreeModel or FlatModel")


def word_hashes(words) -> torch.Tensor:
    """(n,) int64, sorted: 8-byte BLAKE2b hashes of the distinct ``words``."""
    hs = {int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little", signed=True) for w in words}
    return torch.tensor(sorted(hs), dtype=torch.long)


def in_word_hashes(word: str, hashes: torch.Tensor) -> bool:
    h = word_hashes([word])
    i = int(torch.searchsorted(hashes, h))
    return i < len(hashes) and bool(hashes[i] == h[0])


def batchnorm_settings(model: torch.nn.Module) -> dict[str, list[float]]:
    """{module name: [eps, momentum]} of each ``BatchNorm`` of ``model``: what a state dict leaves out."""
    return {name: [float(m.eps), float(m.momentum)] for name, m in model.named_modules() if isinstance(m, BatchNorm)}


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


ZIP_MAGIC = b"PK\x03\x04"  # the first bytes of every file torch.save writes (a zip archive)


def is_run_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a run folder (it holds ``checkpoint.pt``) or a checkpoint file (a regular file
    in torch.save's zip format): the command line's test of a lone path. A pipe or device is never
    read, so a list on one is left whole."""
    p = Path(path)
    if p.is_dir():
        return (p / CHECKPOINT_NAME).is_file()
    if not p.is_file():
        return False
    try:
        with open(p, "rb") as f:
            return f.read(len(ZIP_MAGIC)) == ZIP_MAGIC
    except OSError:
        return False


def read_file(path: Path) -> dict:
    """The dict in a checkpoint file, checked to be ours and of this format (``CheckpointError`` otherwise)."""
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds here: zip, pickle, EOF, unicode errors
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated?): {reason}") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a wavenet_conv checkpoint")
    version = d.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r} written by wavenet_conv "
                              f"{d.get('library_version')}; this wavenet_conv {__version__} reads format {FORMAT_VERSION}")
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {missing}")
    return d


def upgrade(d: dict) -> dict:
    """A checkpoint file's dict in today's terms: the one place where older files are converted."""
    d = {k: v for k, v in d.items() if k not in ("format", "format_version")}
    if "train_words" in d:  # wavenet_conv 0.2's name for train_hashes
        d.setdefault("train_hashes", d.pop("train_words"))
    if isinstance(d.get("train_config"), dict):
        d["train_config"] = {**ADDED_FIELDS, **d["train_config"]}
    d["val_curve"] = [tuple(v) for v in d.get("val_curve") or []]
    d["teachers"] = list(d.get("teachers") or [])
    d.setdefault("reference", None)  # saved before percentiles
    known = {f.name for f in fields(Checkpoint)}
    return {k: v for k, v in d.items() if k in known}


@dataclass
class Checkpoint:
    """A ``checkpoint.pt``: a model, its vocabulary and (for a run) everything a resume needs. The
    fields are the keys of the module's docstring, typed; ``to_dict`` is the file's form."""

    kind: str  # "conv" | "tree" | "flat"
    model_config: ModelConfig | FlatConfig
    vocab: Vocab
    state_dict: dict[str, torch.Tensor]
    batchnorm: dict[str, list[float]] = field(default_factory=dict)  # {name: [eps, momentum]}; {}: defaults
    optimizer: dict | None = None
    train_config: TrainConfig | None = None
    step: int | None = None
    rng: dict | None = None  # {"torch": ByteTensor, "cuda": ByteTensor (a GPU run)}
    losses: torch.Tensor | None = None  # (step,) float32
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    train_hashes: torch.Tensor | None = None  # (n,) int64, sorted
    data: dict | None = None  # {"path", "sha256", "n_words"}: the names file (``training.source.read_data``; "column" too for a table)
    swa: list[torch.Tensor] | None = None  # one tensor a parameter
    swa_count: int = 0
    best: dict | None = None  # {"step": int, "val": float, "state_dict": {...}} (TrainConfig.keep_best)
    last_state: dict | None = None  # the last step's state dict where state_dict holds kept weights
    teachers: list[dict] = field(default_factory=list)  # [{"path", "sha256"}]
    init: dict | None = None  # {"path", "sha256"}
    metrics: dict | None = None
    reference: dict | None = None  # ReferenceTable.to_dict() (``inference.percentiles``), or None
    library_version: str = __version__  # the wavenet_conv that wrote it

    @classmethod
    def of_model(cls, model: torch.nn.Module, vocab: Vocab, **run) -> "Checkpoint":
        """The checkpoint of ``model`` (ConvModel, TreeModel or FlatModel): its kind, config, weights and
        BatchNorm settings; ``run``: the other fields, for a training run."""
        return cls(kind=model_kind(model), model_config=model.config, vocab=vocab, state_dict=model.state_dict(),
                   batchnorm=batchnorm_settings(model), **run)

    @classmethod
    def from_dict(cls, d: dict, where: str = "checkpoint") -> "Checkpoint":
        """A checkpoint file's dict (any format ``upgrade`` knows) as a ``Checkpoint``."""
        d = upgrade(d)
        try:
            if d["kind"] not in KINDS:
                raise ValueError(f"unknown model kind {d['kind']!r} (expected one of {sorted(KINDS)})")
            d["model_config"] = KINDS[d["kind"]][1].from_dict(d["model_config"])
            d["vocab"] = Vocab.from_dict(d["vocab"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: bad model config or vocabulary: {e}") from None
        try:
            if d.get("train_config") is not None:
                d["train_config"] = TrainConfig.from_dict(d["train_config"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: bad train config: {e}") from None
        return cls(**d)

    @classmethod
    def load(cls, path_or_run: str | os.PathLike) -> "Checkpoint":
        """Read and check a checkpoint: the file, or a run folder holding ``checkpoint.pt`` (on the CPU)."""
        path = resolve(path_or_run)
        return cls.from_dict(read_file(path), str(path))

    def to_dict(self) -> dict:
        """The file's form: the keys of the module's docstring."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(model_config=self.model_config.to_dict(), vocab=self.vocab.to_dict(),
                 train_config=None if self.train_config is None else self.train_config.to_dict())
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **d}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the checkpoint to ``path`` atomically: a temporary file in the same folder, then
        ``os.replace``; a failed write leaves the file that was there."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save({**self.to_dict(), "library_version": __version__}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @property
    def finished(self) -> bool:
        """Whether the run ended: every step done and its end (the averaged weights, the metrics) saved."""
        return self.train_config is not None and self.step == self.train_config.steps and self.metrics is not None

    def same_data(self, data: dict) -> bool:
        """Whether the run trained on the names file ``data`` (a record of ``training.source.read_data``)."""
        return same_data(self.data, data)

    def check_resumable(self, where) -> None:
        """``CheckpointError`` unless the checkpoint holds a run to resume (not only a model)."""
        missing = [name for name in RESUME_FIELDS if getattr(self, name) is None]
        if missing:
            raise CheckpointError(f"{where}: cannot be resumed, it has no {', '.join(missing)}")

    def model(self, where: str = "checkpoint") -> torch.nn.Module:
        """The model (eval mode, on the CPU): its weights, buffers and BatchNorm settings."""
        model = KINDS[self.kind][0](self.model_config)
        if getattr(self.model_config, "vocab_size", None) != len(self.vocab):
            raise CheckpointError(f"{where}: vocabulary of {len(self.vocab)} tokens but a model for "
                                  f"{self.model_config.vocab_size}")
        try:
            model.load_state_dict(self.state_dict)
        except (RuntimeError, KeyError) as e:
            first = str(e).strip().splitlines()
            raise CheckpointError(f"{where}: weights do not fit the model config: {' '.join(first[:2])[:200]}") from None
        norms = dict(model.named_modules())
        for name, (eps, momentum) in self.batchnorm.items():
            if not isinstance(norms.get(name), BatchNorm):
                raise CheckpointError(f"{where}: BatchNorm settings for {name!r}, which is no BatchNorm of the model")
            norms[name].eps, norms[name].momentum = eps, momentum
        return model.eval()

    def meta(self) -> dict:
        """The file's dict less the weights and the optimizer state (``LoadedRun.meta``)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("state_dict", "optimizer")}
