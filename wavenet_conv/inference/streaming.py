"""Score a stream of lines of any length, a chunk at a time, in flat memory: ``scored_lines(scorer,
lines, Stream(...))``, and ``score_lines``, its wrapper for a model and a vocabulary.

Each chunk's lines are sorted into names (scored by ``Scorer.encoded``), blank lines and lines
that are not names (reported with their line number and the reason, or stopping the stream after the
lines before them). ``shard`` keeps the K-th of N interleaved parts of a stream, line numbers kept.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from itertools import islice
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from ..data import Vocab, line_names, name_problem
from ..errors import ArgumentError, DataError
from ..tables import Refused, cell_name
from .scoring import Scorer, ScoreResult, encode_names
from ..validate import integer


@dataclass
class LineScores:
    """One chunk of ``score_lines``, in input order.

    lines: (n,) the input line number (from 1) of each scored name. names: the names as they came
    (each line stripped), whatever normalization the scorer applied before scoring. scores: their
    ``ScoreResult``. invalid: (line, problem) of each line skipped as not a name (``skip_invalid``).
    empty: blank lines skipped in this chunk. kept: the index within the chunk of each scored name.
    unknown: {index of a name in ``names``: the positions (from 0) of its characters scored as the
    vocabulary's unknown token}, for the names that have any.
    """

    lines: list[int]
    names: list[str]
    scores: ScoreResult
    invalid: list[tuple[int, str]]
    empty: int
    kept: list[int] = field(default_factory=list, repr=False)
    unknown: dict[int, list[int]] = field(default_factory=dict, repr=False)


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), checked (``check_shard``)."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ArgumentError("score_lines", "shard", f"must be K/N (e.g. 0/4), got {text!r}") from None
    return check_shard((k, n))


def check_shard(shard) -> tuple[int, int]:
    """A shard (K, N) with 0 <= K < N: the K-th of N parts of a list."""
    try:
        k, n = (operator.index(v) for v in shard)
    except (TypeError, ValueError):
        raise ArgumentError("score_lines", "shard", f"must be a pair (K, N) of integers, got {shard!r}") from None
    if not 0 <= k < n:
        raise ArgumentError("score_lines", "shard", f"K/N needs 0 <= K < N, got {k}/{n}")
    return k, n


@dataclass(frozen=True)
class Stream:
    """How a stream of lines is read and scored (``scored_lines``): ``chunk`` lines at a time, a line
    that is not a name reported and skipped (``skip_invalid``) or stopping the stream, every target's
    nats too (``per_char``), only the shard (K, N) of the lines (``shard``), and messages naming the
    input as ``source``."""

    chunk: int = 65536
    skip_invalid: bool = False
    per_char: bool = False
    shard: tuple[int, int] | None = None
    source: str = "<input>"
    rows: bool = False  # a table's rows, not a list's lines: messages say "source: row N"

    def where(self, n: int) -> str:
        """How a message names line (or row) ``n`` of the input: ``FILE:LINE`` or ``FILE: row N``."""
        return f"{self.source}: row {n}" if self.rows else f"{self.source}:{n}"

    def __post_init__(self):
        object.__setattr__(self, "chunk", integer("score_lines", "chunk", self.chunk, 1))
        if self.shard is not None:
            object.__setattr__(self, "shard", check_shard(self.shard))


def scored_lines(scorer: Scorer, lines, how: Stream) -> Iterator[LineScores]:
    """Score a stream of lines with ``scorer``, ``how.chunk`` lines at a time, yielding a ``LineScores``
    per chunk (see ``score_lines``): the one loop under the command line, ``score_lines`` and Ray's
    batches. Each name is normalized as the scorer's vocabulary says (``Vocab.normalize``) before it is
    checked and scored; ``LineScores.names`` are the names as they came."""
    for numbers, block, refused in line_chunks(lines, how.chunk, how.shard):
        part, tokens, lengths, stop = check_chunk(block, numbers, refused, scorer.vocab, how.skip_invalid)
        part.scores = scorer.encoded(part.names, tokens, lengths, how.per_char)
        part.names = block if len(part.kept) == len(block) else [block[i] for i in part.kept]
        yield part
        if stop is not None:
            raise DataError(f"{how.where(stop[0])}: {stop[1]}")


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
    reference=None,
) -> Iterator[LineScores]:
    """Score a stream of lines, ``chunk`` lines at a time, yielding a ``LineScores`` per chunk: memory
    stays flat however long the stream (a file, ``read_lines(stdin)``, a generator). A thin wrapper:
    ``scored_lines(Scorer.of(model, vocab, method, reference), lines, Stream(...))``.

    lines: an iterable of str, line 1 first; whitespace at either end of a line (its LF/CRLF too) is
    stripped (``line_name``), and ``LineScores.names`` are the stripped names. Blank lines are skipped
    (counted in ``LineScores.empty``). A line that is not a name (whitespace inside it but a single
    space, a control character, a character outside a ``vocab`` without an unknown token, bytes that
    were not UTF-8) is a
    ``DataError`` ``"{source}:{line}: problem"``, raised after the chunk's lines before it have been
    yielded; with ``skip_invalid`` it is reported in ``LineScores.invalid`` and the stream goes on.
    lowercase: fold case before checking, for a vocabulary that does not already (for lists like
    "Emma"; ``data.normalize``); the names shown are as they came. per_char: every target's NLL too.
    shard: (K, N): score only the lines with ``(line - 1) % N == K``, line numbers kept, so that N
        processes (or machines) split one list; the other lines are not even checked.
    method, chunk_positions, reference: as in ``score_names``; on the caller's torch threads.
    """
    how = Stream(chunk, skip_invalid, per_char, shard, source)
    vocab = vocab.with_case_folded() if lowercase and isinstance(vocab, Vocab) else vocab
    scorer = Scorer.of(model, vocab, method, reference, chunk_positions=chunk_positions, who="score_lines")
    return scored_lines(scorer, lines, how)


def line_chunks(lines, chunk: int, shard: tuple[int, int] | None):
    """(line numbers, the lines' names, {index: reason} of those that are no name) of up to ``chunk``
    lines at a time (of the shard's lines only, with ``shard`` (K, N)). A name is a line stripped
    (``data.line_names``) or a table's cell (``tables.cell_name``: stripped, a missing value blank, any
    other value the reason it is no name, a ``Refused``, its name "")."""
    k, n_shards = shard if shard is not None else (0, 1)
    lines, first = iter(lines), 1  # ``first``: the line number of the next line read
    while True:
        block = list(islice(lines, chunk * n_shards))
        if not block:
            return
        numbers = range(first, first + len(block))
        first += len(block)
        if n_shards > 1:
            start = (k - (numbers.start - 1)) % n_shards
            block, numbers = block[start::n_shards], numbers[start::n_shards]
        try:
            names, refused = line_names(block), {}  # a list's lines, all str
        except TypeError:  # a table's cells
            names = [cell_name(cell) for cell in block]
            refused = {i: name.reason for i, name in enumerate(names) if isinstance(name, Refused)}
            names = [("" if i in refused else name) for i, name in enumerate(names)]
        yield numbers, names, refused


def check_chunk(block: list[str], numbers, refused: dict[int, str], vocab: Vocab, skip_invalid: bool):
    """A chunk's names (``line_chunks``': "" for a cell that ``refused`` gives a reason for) sorted
    into names to score, blank lines and lines that are not names, each normalized as ``vocab`` says:
    returns (its ``LineScores`` still without scores, its ``names`` the normalized ones, ``kept`` their indices in ``block``; the
    names' tokens and lengths (``encode_names``); the first invalid (line, problem) without
    ``skip_invalid``, or None). Without ``skip_invalid`` the lines from the first invalid one on are
    left out: the caller raises after scoring the lines before it."""
    block = vocab.normalized(block)
    tokens, lengths, ok = encode_names(block, vocab)
    empty = lengths.numpy() == 0
    empty[list(refused)] = False
    bad = ~ok & ~empty
    stop = None
    invalid = [(numbers[i], refused.get(i) or name_problem(block[i], vocab)) for i in np.flatnonzero(bad)]
    if invalid and not skip_invalid:
        stop = invalid[0]
        cut = int(np.flatnonzero(bad)[0])
        ok[cut:], empty[cut:], invalid = False, False, []
    keep = np.flatnonzero(ok)
    if len(keep) < len(block):  # the kept names' characters: no second encoding
        tokens, lengths = tokens[torch.from_numpy(np.repeat(ok, lengths.numpy()))], lengths[torch.from_numpy(ok)]
    whole = len(keep) == len(block)  # every line a name: the lists as they are
    names, lines = (block, list(numbers)) if whole else ([block[i] for i in keep], [numbers[i] for i in keep])
    part = LineScores(lines, names, None, invalid, int(empty.sum()), keep.tolist(),
                      unknown_positions(tokens, lengths, vocab.unknown_id))
    return part, tokens, lengths, stop


def unknown_positions(tokens: torch.Tensor, lengths: torch.Tensor, unknown_id: int | None) -> dict[int, list[int]]:
    """{name: the positions of its tokens that are ``unknown_id``} of names encoded back to back
    (``encode_names``' tokens and lengths), for the names that have any."""
    hit = np.flatnonzero(tokens.numpy() == unknown_id) if unknown_id is not None else []
    if not len(hit):
        return {}
    ends = np.cumsum(lengths.numpy())
    name = np.searchsorted(ends, hit, side="right")  # (hits,) the name of each
    out = {}
    for j, at in zip(name.tolist(), (hit - (ends[name] - lengths.numpy()[name])).tolist()):
        out.setdefault(j, []).append(at)
    return out
