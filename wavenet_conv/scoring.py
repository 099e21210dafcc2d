"""Score whole names: per-name negative log-likelihood, the split loss, bits per character.

``score_names(model, names, vocab)`` takes a ``ConvModel``, a ``TreeModel`` or a ``FlatModel``.

The fast path (``method="fast"``, the default for a ``ConvModel``) is exact and does the least work:
the folded model (``folded.py``: BatchNorm folded into the weights, one GEMM and a shifted add per
layer, start-state padding, so each layer computes exactly the n + 1 positions of a name of n
characters), on names grouped by exact length, so that a group is a dense (G, n + 1) block with no
right padding, cut into chunks of at most ``chunk_positions`` positions (cache-sized GEMMs); in
``torch.inference_mode``, with no Python loop over names or positions; results in input order.

``method="contexts"`` runs the model's own forward on the lecture's contexts (one per target): the
reference, and the lecture's way. ``method="forward"`` runs ``ConvModel.forward`` on right-padded
sequences.

Mode: scoring is always done in eval mode (BatchNorm running statistics, never batch statistics).
A model in training mode is switched to eval for the call and switched back afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import WaveNetCore
from .data import IGNORE, DataError, Vocab, check_name, check_vocab, contexts, sequences
from .folded import eval_mode, fold
from .tree import FlatModel, TreeModel

METHODS = ("auto", "fast", "contexts", "forward")


@dataclass
class ScoreResult:
    """Scores of a list of names, in input order.

    nll: (N,) float64 CPU tensor, total negative log-likelihood of each name in nats (its characters
        and the end token). n_targets: (N,) long CPU tensor, characters + 1 per name.
    mean_loss: nats per target over all names (on the lecture's dev split: the lecture's "val" loss).
    bits_per_char: ``mean_loss / ln 2``, bits per target (the end token counts as a character).
    """

    nll: torch.Tensor
    n_targets: torch.Tensor
    mean_loss: float
    bits_per_char: float

    @classmethod
    def from_nll(cls, nll: torch.Tensor, n_targets: torch.Tensor) -> "ScoreResult":
        nll = nll.detach().to("cpu", torch.float64)
        n_targets = n_targets.detach().to("cpu", torch.long)
        mean = float(nll.sum() / n_targets.sum())
        return cls(nll, n_targets, mean, mean / math.log(2))


def _device_dtype(model: nn.Module):
    p = next(model.parameters())
    return p.device, p.dtype


# ----------------------------------------------------------------------------------------------
# encoding: names -> one flat tensor of token ids and the lengths, validated, vectorized


def encode_names(names, vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    """Names -> (tokens (sum of lengths,) long, lengths (N,) long), without start/end tokens.

    Raises ``DataError`` naming the index and the name for an empty name, '.', whitespace, or a
    character outside ``vocab``; ``DataError`` for an empty list; ``TypeError`` for a non-string.
    """
    if isinstance(names, str):
        raise TypeError("names must be a list of strings, got a single str")
    names = list(names)
    if not names:
        raise DataError("no names to score: the list is empty")
    for i, w in enumerate(names):
        if not isinstance(w, str):
            raise TypeError(f"names[{i}] is a {type(w).__name__}, not a str: {w!r}")
    lengths = np.fromiter((len(w) for w in names), dtype=np.int64, count=len(names))
    # every character as a code point, mapped through a sorted table of the vocabulary's characters
    cps = np.frombuffer("".join(names).encode("utf-32-le"), dtype=np.uint32)
    table = np.array(sorted(ord(c) for c in vocab.chars), dtype=np.uint32)
    ids = np.array([vocab.stoi[chr(c)] for c in table], dtype=np.int64)
    pos = np.searchsorted(table, cps).clip(max=len(table) - 1)
    ok = table[pos] == cps
    if not ok.all() or not lengths.all():
        for i, w in enumerate(names):  # slow path, only to report the first bad name
            check_name(w, vocab, f"names[{i}]")
    return torch.from_numpy(ids[pos]), torch.from_numpy(lengths)


# ----------------------------------------------------------------------------------------------
# the fast path: whole names grouped by length, through the folded model


def _length_groups(lengths: torch.Tensor, chunk_positions: int):
    """Yield (index of the names (G,), n) for names of exactly n characters, at most
    ``chunk_positions`` positions per group."""
    order = torch.argsort(lengths, stable=True)
    counts = torch.bincount(lengths)
    start = 0
    for n, c in enumerate(counts.tolist()):
        if c == 0:
            continue
        per = max(1, chunk_positions // (n + 1))
        for s in range(start, start + c, per):
            yield order[s : min(s + per, start + c)], n
        start += c


@torch.inference_mode()
def _score_fast(model: WaveNetCore, tokens: torch.Tensor, lengths: torch.Tensor, chunk_positions: int) -> torch.Tensor:
    """Per-name NLL (N,) float64 on the model's device, by whole names."""
    device, _ = _device_dtype(model)
    folded = fold(model)
    offsets = torch.cumsum(lengths, 0) - lengths  # (N,) where each name starts in ``tokens``
    tokens, lengths, offsets = tokens.to(device), lengths.to(device), offsets.to(device)
    nll = torch.empty(len(lengths), dtype=torch.float64, device=device)
    work = folded.workspace()
    for idx, n in _length_groups(lengths.cpu(), chunk_positions):
        idx = idx.to(device)
        chars = tokens[offsets[idx, None] + torch.arange(n, device=device)]  # (G, n)
        zero = torch.zeros(len(idx), 1, dtype=torch.long, device=device)
        x = torch.cat([zero, chars], 1)  # (G, n+1)
        y = torch.cat([chars, zero], 1)  # (G, n+1)
        logits = folded.logits(x, work)  # (G*(n+1), V_pad)
        loss = F.cross_entropy(logits, y.reshape(-1), reduction="none")  # (G*(n+1),)
        nll[idx] = loss.view(len(idx), n + 1).sum(1, dtype=torch.float64)
    return nll


# ----------------------------------------------------------------------------------------------
# reference paths: the model's own forward


@torch.inference_mode()
def _score_contexts(model: nn.Module, names, vocab: Vocab, lengths: torch.Tensor, batch: int) -> torch.Tensor:
    """The lecture's way: one context per target, the model's forward, summed per name."""
    device, _ = _device_dtype(model)
    X, Y = contexts(names, vocab, model.block_size)
    X, Y = X.to(device), Y.to(device)
    losses = torch.cat([
        F.cross_entropy(model(X[i : i + batch]), Y[i : i + batch], reduction="none")
        for i in range(0, len(X), batch)
    ])  # (N_targets,)
    name_of = torch.repeat_interleave(torch.arange(len(lengths), device=device), (lengths + 1).to(device))
    return torch.zeros(len(lengths), dtype=torch.float64, device=device).index_add_(0, name_of, losses.double())


@torch.inference_mode()
def _score_forward(model: WaveNetCore, names, vocab: Vocab, batch: int) -> torch.Tensor:
    """``ConvModel.forward`` on right-padded batches of names."""
    device, _ = _device_dtype(model)
    out = []
    for i in range(0, len(names), batch):
        b = sequences(names[i : i + batch], vocab).to(device)
        logits = model(b.x)  # (B, T, V)
        loss = F.cross_entropy(logits.transpose(1, 2), b.y, reduction="none", ignore_index=IGNORE)  # (B, T)
        out.append(loss.sum(1, dtype=torch.float64))
    return torch.cat(out)


def score_names(
    model: nn.Module,
    names,
    vocab: Vocab,
    method: str = "auto",
    chunk_positions: int = 8192,
    batch: int = 8192,
) -> ScoreResult:
    """Score ``names`` (a list of str) under ``model``; see ``ScoreResult`` for the result.

    method: "auto" (fast for a ConvModel, "contexts" for a TreeModel or FlatModel), "fast" (any
        TreeModel or ConvModel: the same parameters, the same function), "contexts" (the model's
        forward on the lecture's contexts) or "forward" (ConvModel.forward on padded sequences).
    chunk_positions: the fast path's positions per GEMM. batch: contexts/names per forward call.

    Scored in eval mode; the model's train/eval mode is restored afterwards. Deterministic. Raises
    ``DataError`` naming the index and the name for an empty name or a character outside ``vocab``.
    """
    if not isinstance(model, (WaveNetCore, FlatModel)):
        raise TypeError(f"score_names: expected a ConvModel, TreeModel or FlatModel, got {type(model).__name__}")
    if method not in METHODS:
        raise ValueError(f"score_names: method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        method = "contexts" if isinstance(model, (TreeModel, FlatModel)) else "fast"
    if method in ("fast", "forward") and not isinstance(model, WaveNetCore):
        raise ValueError(f"score_names: method={method!r} needs a ConvModel or TreeModel, got {type(model).__name__}")
    if method == "forward" and isinstance(model, TreeModel):
        raise ValueError("score_names: method='forward' needs a ConvModel (a TreeModel takes contexts)")
    check_vocab(vocab, model.config.vocab_size)
    names = list(names) if not isinstance(names, str) else names
    tokens, lengths = encode_names(names, vocab)
    with eval_mode(model):
        if method == "fast":
            nll = _score_fast(model, tokens, lengths, chunk_positions)
        elif method == "contexts":
            nll = _score_contexts(model, names, vocab, lengths, batch)
        else:
            nll = _score_forward(model, names, vocab, batch)
    return ScoreResult.from_nll(nll, lengths + 1)
