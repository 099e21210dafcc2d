"""Score whole names: per-name negative log-likelihood, the split loss, bits per character, and the
surprisal of every character.

``score_names(model, names, vocab)`` scores a list of names (a ``ConvModel``, ``TreeModel`` or
``FlatModel``); ``score_lines(model, lines, vocab)`` streams any number of lines (a file, stdin, a
generator) a chunk at a time, in flat memory, reporting or skipping the lines that are not names.

The fast path (``method="fast"``, the default for a ``ConvModel``) is exact and does the least work:
the folded model (``folded.py``: BatchNorm folded into the weights, one GEMM and a shifted add per
layer, start-state padding, so each layer computes exactly the n + 1 positions of a name of n
characters), on names grouped by exact length, so that a group is a dense (G, n + 1) block with no
right padding, cut into chunks of at most ``chunk_positions`` positions (cache-sized GEMMs); in
``torch.inference_mode``, with no Python loop over names or positions; results in input order.

``method="contexts"`` runs the model's own forward on the lecture's contexts (one per target): the
reference, and the lecture's way. ``method="forward"`` runs ``ConvModel.forward`` on right-padded
sequences. ``method="bucketed"`` (``bucketed.py``) runs the folded model on names bucketed by length
into a few fixed (B, T) shapes, each a CUDA graph on a GPU. ``method="auto"`` asks
``bucketed.choose_scoring_path`` for a ConvModel's: the fast path on a CPU, bucketed on a GPU.

Mode: scoring is always done in eval mode (BatchNorm running statistics, never batch statistics).
A model in training mode is switched to eval for the call and switched back afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import islice
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import WaveNetCore
from .bucketed import bucketed_path, choose_scoring_path, scorer_for
from .data import IGNORE, Vocab, check_name, check_vocab, contexts, name_problem, sequences
from .errors import ConfigError, DataError
from .folded import FoldedModel, eval_mode, fold
from .tree import FlatModel, TreeModel

METHODS = ("auto", "fast", "contexts", "forward", "bucketed")


@dataclass
class ScoreResult:
    """Scores of a list of names, in input order.

    nll: (N,) float64 CPU tensor, total negative log-likelihood of each name in nats (its characters
        and the end token). n_targets: (N,) long CPU tensor, characters + 1 per name.
    mean_loss: nats per target over all names (on the lecture's dev split: the lecture's "val" loss).
    bits_per_char: ``mean_loss / ln 2``, bits per target (the end token counts as a character).
    char_nll: with ``per_char=True``, the NLL in nats of every target, flat, (sum of n_targets,)
        float64 CPU: name i's are ``char_nll[offsets[i]:offsets[i + 1]]``, its characters then the end
        token (``chars(i)``). offsets: (N + 1,) long. Both None without ``per_char``.
    """

    nll: torch.Tensor
    n_targets: torch.Tensor
    mean_loss: float
    bits_per_char: float
    char_nll: torch.Tensor | None = None
    offsets: torch.Tensor | None = None

    @classmethod
    def from_nll(cls, nll: torch.Tensor, n_targets: torch.Tensor, char_nll: torch.Tensor | None = None) -> "ScoreResult":
        nll = nll.detach().to("cpu", torch.float64)
        n_targets = n_targets.detach().to("cpu", torch.long)
        mean = float(nll.sum() / n_targets.sum()) if len(nll) else math.nan
        offsets = None
        if char_nll is not None:
            char_nll = char_nll.detach().to("cpu", torch.float64)
            offsets = torch.cat([n_targets.new_zeros(1), torch.cumsum(n_targets, 0)])
        return cls(nll, n_targets, mean, mean / math.log(2), char_nll, offsets)

    def chars(self, i: int) -> torch.Tensor:
        """Name i's per-target NLLs in nats: its characters, then the end token (needs ``per_char``)."""
        if self.char_nll is None:
            raise ValueError("per-character scores were not computed: score with per_char=True")
        return self.char_nll[self.offsets[i] : self.offsets[i + 1]]


def _device_dtype(model: nn.Module):
    p = next(model.parameters())
    return p.device, p.dtype


# ----------------------------------------------------------------------------------------------
# encoding: names -> one flat tensor of token ids and the lengths, validated, vectorized


def encode_names(names: list[str], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Names -> (tokens (sum of lengths,) long, lengths (N,) long, ok (N,) bool), vectorized.

    ``tokens`` holds every name's characters back to back, without start/end tokens. ``ok`` is False
    for a name that cannot be scored: empty, or with a character outside ``vocab`` (which has no '.',
    whitespace or control characters); its tokens are then meaningless (-1 for such a character).
    """
    lengths = np.fromiter(map(len, names), dtype=np.int64, count=len(names))
    # every character as a code point, looked up in a table indexed by code point (one gather; a
    # binary search in the sorted characters took 3x as long): -1 for those outside the vocabulary,
    # the last entry standing for every code point above the vocabulary's
    cps = np.frombuffer("".join(names).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    table = np.full(max(map(ord, vocab.chars)) + 2, -1, dtype=np.int64)
    table[[ord(c) for c in vocab.chars]] = [vocab.stoi[c] for c in vocab.chars]
    ids = table[np.minimum(cps, len(table) - 1)]  # (sum of lengths,)
    ok = lengths > 0
    known = ids >= 0
    if not known.all():
        ok[np.repeat(np.arange(len(names)), lengths)[~known]] = False
    return torch.from_numpy(ids), torch.from_numpy(lengths), ok


def check_names(names, what: str = "names") -> list[str]:
    """``names`` as a list of str, or a ``TypeError`` naming the first item that is not one."""
    if isinstance(names, str):
        raise TypeError(f"{what} must be a list of strings, got a single str")
    names = list(names)
    for i, w in enumerate(names):
        if not isinstance(w, str):
            raise TypeError(f"{what}[{i}] is a {type(w).__name__}, not a str: {w!r}")
    return names


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
def _score_fast(folded: FoldedModel, tokens: torch.Tensor, lengths: torch.Tensor, chunk_positions: int,
                per_char: bool = False):
    """Per-name NLL (N,) float64 and, with ``per_char``, every target's (sum of lengths + 1,), on the
    model's device: whole names through the folded model, grouped by length."""
    device = folded.wte.device
    offsets = torch.cumsum(lengths, 0) - lengths  # (N,) where each name starts in ``tokens``
    tokens, lengths, offsets = tokens.to(device), lengths.to(device), offsets.to(device)
    nll = torch.empty(len(lengths), dtype=torch.float64, device=device)
    char_nll = torch.empty(int(lengths.sum()) + len(lengths), dtype=torch.float64, device=device) if per_char else None
    work = folded.workspace()
    for idx, n in _length_groups(lengths.cpu(), chunk_positions):
        idx = idx.to(device)
        chars = tokens[offsets[idx, None] + torch.arange(n, device=device)]  # (G, n)
        zero = torch.zeros(len(idx), 1, dtype=torch.long, device=device)
        x = torch.cat([zero, chars], 1)  # (G, n+1)
        y = torch.cat([chars, zero], 1)  # (G, n+1)
        logits = folded.logits(x, work)  # (G*(n+1), V_pad)
        loss = F.cross_entropy(logits, y.reshape(-1), reduction="none").view(len(idx), n + 1)  # (G, n+1)
        nll[idx] = loss.sum(1, dtype=torch.float64)
        if per_char:  # name i's targets start at offsets[i] + i (each earlier name has one end token)
            char_nll[(offsets[idx] + idx)[:, None] + torch.arange(n + 1, device=device)] = loss.double()
    return nll, char_nll


# ----------------------------------------------------------------------------------------------
# reference paths: the model's own forward


@torch.inference_mode()
def _score_contexts(model: nn.Module, names, vocab: Vocab, lengths: torch.Tensor, batch: int):
    """The lecture's way: one context per target, the model's forward; (per-name NLL, per-target NLL)."""
    device, _ = _device_dtype(model)
    X, Y = contexts(names, vocab, model.block_size)
    X, Y = X.to(device), Y.to(device)
    losses = torch.cat([
        F.cross_entropy(model(X[i : i + batch]), Y[i : i + batch], reduction="none")
        for i in range(0, len(X), batch)
    ])  # (N_targets,)
    name_of = torch.repeat_interleave(torch.arange(len(lengths), device=device), (lengths + 1).to(device))
    losses = losses.double()
    return torch.zeros(len(lengths), dtype=torch.float64, device=device).index_add_(0, name_of, losses), losses


@torch.inference_mode()
def _score_forward(model: WaveNetCore, names, vocab: Vocab, batch: int):
    """``ConvModel.forward`` on right-padded batches of names; (per-name NLL, per-target NLL)."""
    device, _ = _device_dtype(model)
    nll, per_target = [], []
    for i in range(0, len(names), batch):
        b = sequences(names[i : i + batch], vocab).to(device)
        logits = model(b.x)  # (B, T, V)
        loss = F.cross_entropy(logits.transpose(1, 2), b.y, reduction="none", ignore_index=IGNORE)  # (B, T)
        nll.append(loss.sum(1, dtype=torch.float64))
        per_target.append(loss[b.mask].double())  # row-major: name by name, each in order
    return torch.cat(nll), torch.cat(per_target)


def _check_model_and_method(model: nn.Module, method: str, vocab: Vocab, who: str) -> str:
    """The method to use, after checking the model, the method and the vocabulary."""
    if not isinstance(model, (WaveNetCore, FlatModel)):
        raise TypeError(f"{who}: expected a ConvModel, TreeModel or FlatModel, got {type(model).__name__}")
    if method not in METHODS:
        raise ValueError(f"{who}: method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        method = "contexts" if isinstance(model, (TreeModel, FlatModel)) else choose_scoring_path(_device_dtype(model)[0]).method
    if method in ("fast", "forward", "bucketed") and not isinstance(model, WaveNetCore):
        raise ValueError(f"{who}: method={method!r} needs a ConvModel or TreeModel, got {type(model).__name__}")
    if method == "forward" and isinstance(model, TreeModel):
        raise ValueError(f"{who}: method='forward' needs a ConvModel (a TreeModel takes contexts)")
    check_vocab(vocab, model.config.vocab_size)
    return method


def _score(model, folded, method, names, tokens, lengths, vocab, per_char, chunk_positions, batch) -> ScoreResult:
    """Valid, encoded names -> their ``ScoreResult`` (the model already in eval mode)."""
    if not names:
        return ScoreResult.from_nll(torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0) if per_char else None)
    if method == "fast":
        nll, char_nll = _score_fast(folded, tokens, lengths, chunk_positions, per_char)
    elif method == "bucketed":
        nll, char_nll = scorer_for(model, bucketed_path(_device_dtype(model)[0]))(tokens, lengths, per_char)
    elif method == "contexts":
        nll, char_nll = _score_contexts(model, names, vocab, lengths, batch)
    else:
        nll, char_nll = _score_forward(model, names, vocab, batch)
    return ScoreResult.from_nll(nll, lengths + 1, char_nll if per_char else None)


def score_names(
    model: nn.Module,
    names,
    vocab: Vocab,
    method: str = "auto",
    chunk_positions: int = 8192,
    batch: int = 8192,
    per_char: bool = False,
) -> ScoreResult:
    """Score ``names`` (a list of str) under ``model``; see ``ScoreResult`` for the result.

    method: "auto" (for a ConvModel ``choose_scoring_path``'s: fast on a CPU, bucketed on a GPU;
        "contexts" for a TreeModel or FlatModel), "fast" (any TreeModel or ConvModel: the same
        parameters, the same function), "contexts" (the model's forward on the lecture's contexts),
        "forward" (ConvModel.forward on padded sequences) or "bucketed" (any TreeModel or ConvModel:
        fixed (B, T) shapes, CUDA graphs on a GPU; ``bucketed.py``).
    chunk_positions: the fast path's positions per GEMM. batch: contexts/names per forward call.
    per_char: also return every target's NLL (``ScoreResult.char_nll``, ``chars(i)``), from the same
        pass (a flat tensor and offsets: no per-name Python objects).

    Scored in eval mode; the model's train/eval mode is restored afterwards. Deterministic. Raises
    ``DataError`` naming the index and the name for an empty name or a character outside ``vocab``.
    """
    method = _check_model_and_method(model, method, vocab, "score_names")
    names = check_names(names)
    if not names:
        raise DataError("no names to score: the list is empty")
    tokens, lengths, ok = encode_names(names, vocab)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        check_name(names[i], vocab, f"names[{i}]")  # raises, naming the index and the problem
    with eval_mode(model):
        folded = fold(model) if method == "fast" else None
        return _score(model, folded, method, names, tokens, lengths, vocab, per_char, chunk_positions, batch)


@dataclass
class LineScores:
    """One chunk of ``score_lines``, in input order.

    lines: (n,) the input line number (from 1) of each scored name. names: the names as scored
    (lower-cased with ``lowercase``). scores: their ``ScoreResult``. invalid: (line, problem) of each
    line skipped as not a name (``skip_invalid``). empty: blank lines skipped in this chunk.
    """

    lines: list[int]
    names: list[str]
    scores: ScoreResult
    invalid: list[tuple[int, str]]
    empty: int


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 0 <= K < N, or a ``ConfigError``."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"shard must be K/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= k < n:
        raise ConfigError(f"shard K/N needs 0 <= K < N, got {text!r}")
    return k, n


def score_lines(
    model: nn.Module,
    lines,
    vocab: Vocab,
    chunk: int = 65536,
    skip_invalid: bool = False,
    lowercase: bool = False,
    per_char: bool = False,
    shard: tuple[int, int] | None = None,
    source: str = "<input>",
    method: str = "auto",
    chunk_positions: int = 8192,
) -> Iterator[LineScores]:
    """Score a stream of lines, ``chunk`` lines at a time, yielding a ``LineScores`` per chunk: memory
    stays flat however long the stream (a file, ``read_lines(stdin)``, a generator).

    lines: an iterable of str, line 1 first; a trailing LF/CRLF on a line is dropped. Blank lines are
    skipped (counted in ``LineScores.empty``). A line that is not a name (whitespace, '.', a control
    character, a character outside ``vocab``, bytes that were not UTF-8) is a ``DataError``
    ``"{source}:{line}: problem"``, raised after the chunk's lines before it have been yielded; with
    ``skip_invalid`` it is reported in ``LineScores.invalid`` and the stream goes on.
    lowercase: fold case before checking (for lists like "Emma"). per_char: every target's NLL too.
    shard: (K, N): score only the lines with ``(line - 1) % N == K``, line numbers kept, so that N
        processes (or machines) split one list; the other lines are not even checked.
    method, chunk_positions: as in ``score_names``.
    """
    method = _check_model_and_method(model, method, vocab, "score_lines")
    if chunk < 1:
        raise ValueError(f"score_lines: chunk must be >= 1, got {chunk}")
    k, n_shards = shard if shard is not None else (0, 1)
    lines, first = iter(lines), 1  # ``first``: the line number of the next line read
    with eval_mode(model):
        folded = fold(model) if method == "fast" else None
        while True:
            block = list(islice(lines, chunk * n_shards))
            if not block:
                return
            numbers = range(first, first + len(block))
            first += len(block)
            if n_shards > 1:
                start = (k - (numbers.start - 1)) % n_shards
                block, numbers = block[start::n_shards], numbers[start::n_shards]
            block = [line.rstrip("\r\n") if line.endswith("\n") else line for line in block]
            if lowercase:
                block = [line.lower() for line in block]
            tokens, lengths, ok = encode_names(block, vocab)
            empty = lengths.numpy() == 0
            bad = ~ok & ~empty
            stop = None  # the first invalid line, without skip_invalid
            invalid = [(numbers[i], name_problem(block[i], vocab)) for i in np.flatnonzero(bad)]
            if invalid and not skip_invalid:
                stop = invalid[0]
                cut = int(np.flatnonzero(bad)[0])
                ok[cut:], empty[cut:], invalid = False, False, []
            keep = np.flatnonzero(ok)
            names = [block[i] for i in keep]
            if len(keep) < len(block):  # the kept names' characters: no second encoding
                tokens, lengths = tokens[torch.from_numpy(np.repeat(ok, lengths.numpy()))], lengths[torch.from_numpy(ok)]
            scores = _score(model, folded, method, names, tokens, lengths, vocab, per_char, chunk_positions, 8192)
            yield LineScores([numbers[i] for i in keep], names, scores, invalid, int(empty.sum()))
            if stop is not None:
                raise DataError(f"{source}:{stop[0]}: {stop[1]}")
