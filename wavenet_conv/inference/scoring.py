"""Score whole names: per-name negative log-likelihood, the split loss, bits per target, and the
surprisal of every character.

``score_names(model, names, vocab)`` scores a list of names (a ``ConvModel``, ``TreeModel`` or
``FlatModel``); ``streaming.score_lines(model, lines, vocab)`` streams any number of lines (a file,
stdin, a generator) through it a chunk at a time.

The fast path (``method="fast"``, the default for a ``ConvModel``) is exact and does the least work:
the folded model (``folded.py``: BatchNorm folded into the weights, one GEMM and a shifted add per
layer, start-state padding, so each layer computes exactly the n + 1 positions of a name of n
characters), on names grouped by exact length, so that a group is a dense (G, n + 1) block with no
right padding, cut into chunks of at most ``chunk_positions`` positions (cache-sized GEMMs); in
``torch.inference_mode``, with no Python loop over names or positions; results in input order.
``group_logits`` is that loop over length groups, shared with distillation's soft targets.

One scorer under every path: a ``Scorer`` is built once (the model, its vocabulary, the method, the
folded model, the percentile table, the threads) and ``Scorer.encoded`` scores names already checked
and encoded (``encode_names``); ``score_names``, ``score_lines``, Ray's ``BatchScorer``, the making of a
percentile table and distillation's soft targets all go through it.

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

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.blocks import WaveNetCore
from .bucketed import bucketed_path, choose_scoring_path, scorer_for
from ..data import IGNORE, Vocab, check_name, contexts, is_text_char, misplaced_spaces, sequences
from ..device import check_threads, torch_threads
from ..errors import ArgumentError, DataError
from ..models.flat import FlatModel
from .folded import FoldedModel, eval_mode, fold, name_sums
from .percentiles import ReferenceTable, percentiles
from ..models.tree import TreeModel
from ..validate import integer, model_of, one_of, string_list, vocab_of

METHODS = ("auto", "fast", "contexts", "forward", "bucketed")


@dataclass
class ScoreResult:
    """Scores of a list of names, in input order.

    nll: (N,) float64 CPU tensor, total negative log-likelihood of each name in nats (its characters
        and the end token). n_targets: (N,) long CPU tensor, characters + 1 per name.
    mean_loss: nats per target over all names (on the lecture's dev split: the lecture's "val" loss).
    bits_per_target: ``mean_loss / ln 2``, bits per target (each name's characters and its end token).
    char_nll: with ``per_char=True``, the NLL in nats of every target, flat, (sum of n_targets,)
        float64 CPU: name i's are ``char_nll[offsets[i]:offsets[i + 1]]``, its characters then the end
        token (``chars(i)``). offsets: (N + 1,) long. Both None without ``per_char``.
    percentile: with a ``reference`` table, (N,) float64 CPU, 0-100: the share of the reference names
        (held-out names of about this length) that are less unusual than this one (a lower nats per
        target), in percent (``percentiles.py``); None without a table.
    """

    nll: torch.Tensor
    n_targets: torch.Tensor
    mean_loss: float
    bits_per_target: float
    char_nll: torch.Tensor | None = None
    offsets: torch.Tensor | None = None
    percentile: torch.Tensor | None = None

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
            raise ArgumentError("ScoreResult.chars", "per_char", "was False when scoring: score with per_char=True")
        return self.char_nll[self.offsets[i] : self.offsets[i + 1]]


def _device_dtype(model: nn.Module):
    p = next(model.parameters())
    return p.device, p.dtype


# ----------------------------------------------------------------------------------------------
# encoding: names -> one flat tensor of token ids and the lengths, validated, vectorized


def encode_names(names: list[str], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Names -> (tokens (sum of lengths,) long, lengths (N,) long, ok (N,) bool), vectorized.

    ``tokens`` holds every name's characters back to back, without start/end tokens; a character
    outside ``vocab`` is its unknown token (``Vocab.unknown_id``), where it has one and the character
    may stand in a name (``data.is_text_char``). ``ok`` is False for a name that cannot be scored:
    empty, with a character that has no token (-1) -- outside a vocabulary without an unknown token, a
    control character, a lone surrogate, whitespace but the space -- or with a space that breaks the
    single-space rule (``data.space_faults``, which ``name_problem`` follows too).
    """
    lengths = np.fromiter(map(len, names), dtype=np.int64, count=len(names))
    # every character as a code point, looked up in a table indexed by code point (one gather; a
    # binary search in the sorted characters took 3x as long): -1 for those outside the vocabulary,
    # the last entry standing for every code point above the vocabulary's
    cps = np.frombuffer("".join(names).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    table = np.full(max(map(ord, vocab.chars), default=0) + 2, -1, dtype=np.int64)
    table[[ord(c) for c in vocab.chars]] = [vocab.stoi[c] for c in vocab.chars]
    ids = table[np.minimum(cps, len(table) - 1)]  # (sum of lengths,)
    outside = ids < 0
    if vocab.unknown_id is not None and outside.any():  # each distinct character outside looked at once
        seen, where = np.unique(cps[outside], return_inverse=True)
        text = np.array([is_text_char(chr(c)) for c in seen.tolist()], dtype=bool)
        ids[outside] = np.where(text[where], vocab.unknown_id, -1)
    ok = lengths > 0
    known = (ids >= 0) & ~misplaced_spaces(cps, lengths)
    if not known.all():
        ok[np.repeat(np.arange(len(names)), lengths)[~known]] = False
    return torch.from_numpy(ids), torch.from_numpy(lengths), ok


# ----------------------------------------------------------------------------------------------
# the fast path: whole names grouped by length, through the folded model


def length_groups(lengths: torch.Tensor, chunk_positions: int):
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


def group_logits(folded: FoldedModel, tokens: torch.Tensor, lengths: torch.Tensor, chunk_positions: int):
    """Whole names through the folded model, a length group at a time (``length_groups``): the loop
    under the fast path (``_score_fast``) and distillation's soft targets. Runs in the caller's grad
    mode (``torch.inference_mode`` or ``no_grad``).

    tokens: (sum of lengths,) every name's characters back to back (no start or end tokens); lengths:
    (N,) long, characters per name. Yields, on the folded model's device, for the G names of n
    characters of a group:
      idx (G,) the names; x (G, n + 1) their inputs ``[0, c1..cn]`` (the targets: ``[c1..cn, 0]``);
      at (G, n + 1) where each position lies among all N names' positions laid flat name after name
      (name i's n + 1 start at ``starts[i] + i``: each earlier name has one more, its start token);
      logits (G * (n + 1), V_pad) in x's row-major order, the head's columns padded (-inf past V).
    """
    device = folded.wte.device
    starts = (torch.cumsum(lengths, 0) - lengths).to(device)  # (N,) where each name starts in ``tokens``
    tokens = tokens.to(device)
    work = folded.workspace()
    for idx, n in length_groups(lengths.cpu(), chunk_positions):
        idx = idx.to(device)
        chars = tokens[starts[idx, None] + torch.arange(n, device=device)]  # (G, n)
        x = torch.cat([torch.zeros(len(idx), 1, dtype=torch.long, device=device), chars], 1)  # (G, n+1)
        at = (starts[idx] + idx)[:, None] + torch.arange(n + 1, device=device)  # (G, n+1)
        yield idx, x, at, folded.logits(x, work)


@torch.inference_mode()
def _score_fast(folded: FoldedModel, tokens: torch.Tensor, lengths: torch.Tensor, chunk_positions: int,
                per_char: bool = False):
    """Per-name NLL (N,) float64 and, with ``per_char``, every target's (sum of lengths + N,), on the
    model's device: whole names through the folded model, grouped by length (``group_logits``)."""
    device = folded.wte.device
    nll = torch.empty(len(lengths), dtype=torch.float64, device=device)
    char_nll = torch.empty(int(lengths.sum()) + len(lengths), dtype=torch.float64, device=device) if per_char else None
    for idx, x, at, logits in group_logits(folded, tokens, lengths, chunk_positions):
        y = F.pad(x[:, 1:], (0, 1))  # (G, n+1): the characters, then the end token 0
        loss = F.cross_entropy(logits, y.reshape(-1), reduction="none").view(x.shape)  # (G, n+1)
        nll[idx] = name_sums(loss)
        if per_char:
            char_nll[at] = loss.double()
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
        nll.append(name_sums(loss))  # padding's 0.0 after the end adds nothing
        per_target.append(loss[b.mask].double())  # row-major: name by name, each in order
    return torch.cat(nll), torch.cat(per_target)


def check_model_and_method(model: nn.Module, method: str, vocab: Vocab, who: str) -> str:
    """The method to use, after checking the model, the method and the vocabulary."""
    model_of(who, model, (WaveNetCore, FlatModel), "ConvModel, TreeModel or FlatModel")
    one_of(who, "method", method, METHODS)
    if method == "auto":
        method = "contexts" if isinstance(model, (TreeModel, FlatModel)) else choose_scoring_path(_device_dtype(model)[0]).method
    if method in ("fast", "forward", "bucketed") and not isinstance(model, WaveNetCore):
        raise ArgumentError(who, "method", f"{method!r} needs a ConvModel or TreeModel, got a {type(model).__name__}")
    if method == "forward" and isinstance(model, TreeModel):
        raise ArgumentError(who, "method", "'forward' needs a ConvModel (a TreeModel takes contexts)")
    vocab_of(who, vocab, model.config.vocab_size)
    return method


def check_reference(who: str, reference) -> None:
    """An ``ArgumentError`` unless ``reference`` is a ``ReferenceTable`` or None."""
    if reference is not None and not isinstance(reference, ReferenceTable):
        raise ArgumentError(who, "reference", f"must be a ReferenceTable (load_model(...).reference) or None, "
                            f"got {type(reference).__name__}")


@dataclass
class Scorer:
    """Scoring, built once and used for every list: the model (scored in eval mode) and its vocabulary,
    the method (checked, never "auto"), its folded form for the fast path, the percentile table, the
    torch threads of a call and the block sizes. ``Scorer.of`` builds one; a loaded run gives its own
    (``store.loaded.LoadedRun.scorer``). ``names`` scores a list; ``encoded`` is the core under every
    path (lists, streams, Ray's batches, percentile tables); ``logit_groups`` is distillation's.

    threads: the torch CPU threads while it scores (a count, decided once), or None: the caller's
    setting (a process that set its threads where it started, as the command line does).
    """

    model: nn.Module
    vocab: Vocab
    method: str
    folded: FoldedModel | None = None
    reference: ReferenceTable | None = None
    threads: int | None = None
    chunk_positions: int = 8192  # the fast path's positions per GEMM
    batch: int = 8192  # contexts (or names) per forward call of the reference methods

    @classmethod
    def of(cls, model: nn.Module, vocab: Vocab, method: str = "auto", reference: ReferenceTable | None = None,
           threads=None, chunk_positions: int = 8192, who: str = "Scorer") -> "Scorer":
        """The scorer of ``model`` (ConvModel, TreeModel or FlatModel) and ``vocab``, checked; ``method`` as
        ``score_names`` takes it; ``threads``: "auto" (the free CPUs, decided now), N, or None. ``who``:
        the function that errors name (a wrapper's own)."""
        method = check_model_and_method(model, method, vocab, who)
        check_reference(who, reference)
        threads = check_threads(threads, who)
        chunk_positions = integer(who, "chunk_positions", chunk_positions, 1)
        with eval_mode(model):
            folded = fold(model) if method == "fast" else None
        return cls(model, vocab, method, folded, reference, threads, chunk_positions)

    def names(self, names, per_char: bool = False) -> ScoreResult:
        """``names`` (a list of str) scored, each normalized as the vocabulary says (``Vocab.normalize``);
        a ``DataError`` naming the index and the name for the first that is not a name (empty, or a
        character outside the vocabulary)."""
        names = self.vocab.normalized(string_list("score_names", "names", names))
        if not names:
            raise DataError("no names to score: the list is empty")
        tokens, lengths, ok = encode_names(names, self.vocab)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            check_name(names[i], self.vocab, f"names[{i}]")  # raises, naming the index and the problem
        return self.encoded(names, tokens, lengths, per_char)

    def encoded(self, names: list[str], tokens: torch.Tensor, lengths: torch.Tensor,
                per_char: bool = False) -> ScoreResult:
        """Valid names, encoded (``encode_names``: tokens (sum of lengths,), lengths (N,)) -> their
        ``ScoreResult``, with percentiles where the scorer has a table."""
        if not names:
            empty = torch.zeros(0)
            result = ScoreResult.from_nll(empty, torch.zeros(0, dtype=torch.long), empty if per_char else None)
        else:
            with eval_mode(self.model), torch_threads(self.threads, "Scorer"):
                nll, char_nll = self.nll(names, tokens, lengths, per_char)
            result = ScoreResult.from_nll(nll, lengths + 1, char_nll if per_char else None)
        result.percentile = percentiles(self.reference, result.nll, result.n_targets)
        return result

    def nll(self, names: list[str], tokens: torch.Tensor, lengths: torch.Tensor, per_char: bool):
        """(per-name nats (N,), every target's nats or None) by the scorer's method, on its device."""
        if self.method == "fast":
            return _score_fast(self.folded, tokens, lengths, self.chunk_positions, per_char)
        if self.method == "bucketed":
            return scorer_for(self.model, bucketed_path(_device_dtype(self.model)[0]))(tokens, lengths, per_char)
        if self.method == "contexts":
            return _score_contexts(self.model, names, self.vocab, lengths, self.batch)
        return _score_forward(self.model, names, self.vocab, self.batch)

    def logit_groups(self, tokens: torch.Tensor, lengths: torch.Tensor):
        """``group_logits`` of the fast path's folded model (method "fast"): distillation's soft targets."""
        if self.folded is None:
            raise ArgumentError("Scorer.logit_groups", "method", f"must be 'fast' for logit groups, got {self.method!r}")
        return group_logits(self.folded, tokens, lengths, self.chunk_positions)


def score_names(
    model: nn.Module,
    names,
    vocab: Vocab,
    method: str = "auto",
    chunk_positions: int = 8192,
    batch: int = 8192,
    per_char: bool = False,
    reference: ReferenceTable | None = None,
) -> ScoreResult:
    """Score ``names`` (a list of str) under ``model``; see ``ScoreResult`` for the result. A thin
    wrapper: ``Scorer.of(model, vocab, method, reference).names(names, per_char)``.

    method: "auto" (for a ConvModel ``choose_scoring_path``'s: fast on a CPU, bucketed on a GPU;
        "contexts" for a TreeModel or FlatModel), "fast" (any TreeModel or ConvModel: the same
        parameters, the same function), "contexts" (the model's forward on the lecture's contexts),
        "forward" (ConvModel.forward on padded sequences) or "bucketed" (any TreeModel or ConvModel:
        fixed (B, T) shapes, CUDA graphs on a GPU; ``bucketed.py``).
    chunk_positions: the fast path's positions per GEMM. batch: contexts/names per forward call.
    per_char: also return every target's NLL (``ScoreResult.char_nll``, ``chars(i)``), from the same
        pass (a flat tensor and offsets: no per-name Python objects).
    reference: a ``ReferenceTable`` (``load_model(...).reference``) for ``ScoreResult.percentile``.

    Runs on the caller's torch threads (``torch.set_num_threads``; a ``Scorer`` can hold a count of
    its own). Scored in eval mode; the model's train/eval mode is restored afterwards. Deterministic.
    Raises ``DataError`` naming the index and the name for an empty name or a character outside ``vocab``.
    """
    scorer = Scorer.of(model, vocab, method, reference, chunk_positions=chunk_positions, who="score_names")
    scorer.batch = integer("score_names", "batch", batch, 1)
    return scorer.names(names, per_char)
