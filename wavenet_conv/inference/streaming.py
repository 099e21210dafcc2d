"""Score a stream of lines of any length, a chunk at a time, in flat memory: ``score_lines``.

Each chunk's lines are sorted into names (scored by ``scoring.score_encoded``), blank lines and lines
that are not names (reported with their line number and the reason, or stopping the stream after the
lines before them). ``shard`` keeps the K-th of N interleaved parts of a stream, line numbers kept.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from itertools import islice
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from ..data import Vocab, fold_case, line_name, name_problem
from ..device import check_threads, torch_threads
from ..errors import ArgumentError, DataError
from .folded import eval_mode
from .scoring import ScoreResult, ScoringRequest, check_model_and_method, check_reference, encode_names, score_encoded
from ..validate import integer


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
    threads="auto",
    reference=None,
) -> Iterator[LineScores]:
    """Score a stream of lines, ``chunk`` lines at a time, yielding a ``LineScores`` per chunk: memory
    stays flat however long the stream (a file, ``read_lines(stdin)``, a generator).

    lines: an iterable of str, line 1 first; whitespace at either end of a line (its LF/CRLF too) is
    stripped (``line_name``), and ``LineScores.names`` are the stripped names. Blank lines are skipped
    (counted in ``LineScores.empty``). A line that is not a name (whitespace inside it but a single
    space, '.', a control character, a character outside ``vocab``, bytes that were not UTF-8) is a
    ``DataError`` ``"{source}:{line}: problem"``, raised after the chunk's lines before it have been
    yielded; with ``skip_invalid`` it is reported in ``LineScores.invalid`` and the stream goes on.
    lowercase: fold case before checking (for lists like "Emma"; ``fold_case``). per_char: every target's NLL too.
    shard: (K, N): score only the lines with ``(line - 1) % N == K``, line numbers kept, so that N
        processes (or machines) split one list; the other lines are not even checked.
    method, chunk_positions: as in ``score_names``.
    threads: as in ``score_names``, while a chunk is scored ("auto" is decided once, at the start).
    reference: as in ``score_names``: a ``ReferenceTable``, for ``ScoreResult.percentile``.
    """
    method = check_model_and_method(model, method, vocab, "score_lines")
    check_reference("score_lines", reference)
    chunk = integer("score_lines", "chunk", chunk, 1)
    shard = None if shard is None else check_shard(shard)
    threads = check_threads(threads, "score_lines")  # "auto" decided once, for the whole stream
    with eval_mode(model):
        request = ScoringRequest.prepare(model, vocab, method, per_char=per_char, chunk_positions=chunk_positions,
                                         reference=reference)
        for numbers, block in line_chunks(lines, chunk, shard):
            if lowercase:
                block = [fold_case(line) for line in block]
            part, tokens, lengths, stop = check_chunk(block, numbers, vocab, skip_invalid)
            with torch_threads(threads, "score_lines"):
                part.scores = score_encoded(request, part.names, tokens, lengths)
            yield part
            if stop is not None:
                raise DataError(f"{source}:{stop[0]}: {stop[1]}")


def line_chunks(lines, chunk: int, shard: tuple[int, int] | None):
    """(line numbers, the lines' names (``line_name``)) of up to ``chunk`` lines at a time (of the shard's
    lines only, with ``shard`` (K, N))."""
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
        yield numbers, [line_name(line) for line in block]


def check_chunk(block: list[str], numbers, vocab: Vocab, skip_invalid: bool):
    """A chunk's lines sorted into names to score, blank lines and lines that are not names: returns
    (its ``LineScores`` still without scores, the names' tokens and lengths (``encode_names``), and
    the first invalid (line, problem) without ``skip_invalid``, or None). Without ``skip_invalid`` the
    lines from the first invalid one on are left out: the caller raises after scoring the lines
    before it."""
    tokens, lengths, ok = encode_names(block, vocab)
    empty = lengths.numpy() == 0
    bad = ~ok & ~empty
    stop = None
    invalid = [(numbers[i], name_problem(block[i], vocab)) for i in np.flatnonzero(bad)]
    if invalid and not skip_invalid:
        stop = invalid[0]
        cut = int(np.flatnonzero(bad)[0])
        ok[cut:], empty[cut:], invalid = False, False, []
    keep = np.flatnonzero(ok)
    if len(keep) < len(block):  # the kept names' characters: no second encoding
        tokens, lengths = tokens[torch.from_numpy(np.repeat(ok, lengths.numpy()))], lengths[torch.from_numpy(ok)]
    names = [block[i] for i in keep]
    return LineScores([numbers[i] for i in keep], names, None, invalid, int(empty.sum())), tokens, lengths, stop
