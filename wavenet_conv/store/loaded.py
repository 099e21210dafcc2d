"""A run loaded to score or sample with: ``load_model(RUN)`` -> ``LoadedRun``, the one object a
command, a Ray worker or a Python caller holds for a trained model: the model, its vocabulary, the
checkpoint's metadata, the run's percentile table, and its ``Scorer`` (built once, on first use).

The checkpoint file format is ``checkpoint.py``'s; the percentile table of a run saved without one is
``reference.py``'s (made from the run's names file when it is there unchanged: one scoring pass of its
dev split, the first time ``reference`` is asked for).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..data import UNKNOWN_CHOICES, Vocab
from ..device import resolve_device
from ..errors import CheckpointError
from ..inference.percentiles import ReferenceTable
from ..inference.scoring import Scorer
from ..paths import run_path
from .checkpoint import KINDS, Checkpoint, in_word_hashes, resolve
from .reference import reference_of
from ..validate import one_of


@dataclass
class LoadedRun:
    """What ``load_model`` returns: the model in eval mode, its vocabulary, the checkpoint's metadata
    (the file's dict but the weights and optimizer state), its file, and the ``Checkpoint`` less its
    weights (``state_dict`` {}, ``optimizer`` and ``swa`` None): its ``finished``, ``step``, ``train_config``...
    ``reference``: its percentile table (``inference.percentiles``), or None, ``no_reference`` saying why.
    ``scorer()``: its ``Scorer``."""

    model: torch.nn.Module
    vocab: Vocab
    meta: dict
    path: Path
    checkpoint: Checkpoint
    _reference: tuple | None = field(default=None, init=False, repr=False)  # (table or None, why), once asked

    @property
    def reference(self) -> ReferenceTable | None:
        """The run's ``ReferenceTable``: its checkpoint's; for a run saved without one (before 1.0, or
        stopped early), made the first time it is asked for from the run's names file if that is there
        unchanged, kept in memory (``reference.reference_of``); None otherwise (``no_reference`` says why)."""
        return self.reference_state()[0]

    @property
    def no_reference(self) -> str | None:
        """Why ``reference`` is None, e.g. "its names file data/x.txt is missing"; None when there is one."""
        return self.reference_state()[1]

    def reference_state(self) -> tuple:
        """(``reference``, ``no_reference``), worked out on the first call (``reference.reference_of``)."""
        if self._reference is None:
            self._reference = reference_of(self.checkpoint, self.path, self.model)
        return self._reference

    def scorer(self, method: str = "auto", vocab: Vocab | None = None) -> Scorer:
        """The run's ``Scorer``: its model, its vocabulary (or ``vocab``, e.g. ``vocab.with_case_folded()``),
        its percentile table where it has one, ``method`` as ``Scorer.of`` takes it; on the caller's
        threads (``dataclasses.replace(scorer, threads=N)`` for a count of its own)."""
        return Scorer.of(self.model, vocab or self.vocab, method, self.reference)

    def reading(self, lowercase: bool = False, unknown: str = "score") -> Vocab:
        """The run's vocabulary as a scoring job reads text with it: case folded on top (``lowercase``,
        for a run not trained so); with ``unknown`` "error", a character outside it refused (a name with
        one is not scored) even where the run has an unknown token to score it as."""
        one_of("LoadedRun.reading", "unknown", unknown, UNKNOWN_CHOICES)
        vocab = self.vocab.with_case_folded() if lowercase else self.vocab
        return vocab.refusing_unknown() if unknown == "error" else vocab

    def __iter__(self):  # model, vocab, meta = load_model(...)
        return iter((self.model, self.vocab, self.meta))

    def in_training_set(self, word: str) -> bool | None:
        """Whether ``word`` was a training name (None if the checkpoint does not record them)."""
        hashes = self.checkpoint.train_hashes
        return None if hashes is None else in_word_hashes(word, hashes)


LoadedModel = LoadedRun  # its name before 1.1


def load_model(path_or_run: str | os.PathLike | None = None, device: str | torch.device = "cpu",
               form: str | None = None) -> LoadedRun:
    """Load a trained model from a run folder or checkpoint file; None or "bundled": the bundled model
    (``paths.bundled_model()``, the ``small`` recipe trained on data/world.tsv).

    ``device``: where to put it ("cpu", "cuda", or "auto": cuda when available).
    ``form``: "conv" or "tree" to get that form of a tree/conv model (same weights), None as trained.

    >>> model, vocab, meta = load_model("runs/my-run")          # doctest: +SKIP
    """
    path = resolve(run_path(path_or_run))
    ckpt = Checkpoint.load(path)
    model = ckpt.model(str(path))
    if form is not None and form != ckpt.kind:
        if form not in ("conv", "tree") or ckpt.kind == "flat":
            raise CheckpointError(f"{path}: cannot convert a {ckpt.kind} model to form {form!r}")
        model = KINDS[form][0].from_model(model)
    light = replace(ckpt, state_dict={}, optimizer=None, swa=None)  # the model holds the weights
    return LoadedRun(model.to(resolve_device(device)), ckpt.vocab, ckpt.meta(), path, light)
