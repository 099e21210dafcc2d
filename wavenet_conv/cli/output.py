"""What the command line prints: score rows (table, tsv, jsonl), the closing count of a scoring job,
and sampled names."""

from __future__ import annotations

import heapq
import json
import math
import sys
import time

import numpy as np
import torch

from ..cluster.counts import Counts
from ..inference.streaming import LineScores

FORMATS = ("table", "tsv", "jsonl")  # wavenet-conv score --format


def header(fmt: str, chars: bool, width: int, key: str = "line") -> str:
    """The first line of ``score``'s output (none for jsonl); ``key``: the first column's name, "line"
    for a list, "row" or the id column for a table."""
    if fmt == "tsv":
        return f"{key}\tname\tnats\ttargets\tnats_per_target\tpercentile" + ("\tchar_nats\tunknown" if chars else "") + "\n"
    if fmt == "table":
        return f"{key:>7}  {'name':<{width}}  {'nats':>8}  {'nats/target':>11}  {'percentile':>10}" + (
            "   bits per character ('.' the end, [c] a character never seen)" if chars else "") + "\n"
    return ""


def number(v: float) -> str:
    """A float as the shortest text that parses back to the same float64 (Python's ``repr``): a row's
    numbers are the library's, bit for bit. Non-finite values, which a finite model does not give,
    print as Python writes them (``inf``, ``nan``) in tsv; see ``json_number``."""
    return repr(float(v))


def json_number(v: float) -> str:
    """``number`` where it is valid JSON; ``null`` for a non-finite value (JSON has no inf or NaN, and
    ``null`` is what JSON.stringify and pandas write for them), so that a row stays valid JSON."""
    v = float(v)
    return repr(v) if math.isfinite(v) else "null"


def format_rows(fmt: str, part: LineScores, chars: bool, width: int, keep=None, keyed=None) -> str:
    """One chunk of ``score`` output: a row per scored name (the names at the indices ``keep`` alone,
    when given), keyed by its line number, or by ``keyed``'s key of it (``tables.Cells.key_of``; a
    jsonl key named ``keyed.name``). tsv and jsonl carry each float64 exactly (``number``): ``nats`` is the name's ``nll``,
    ``nats_per_target`` is ``nats / targets`` in float64, ``percentile`` its ``ScoreResult.percentile``
    (blank in tsv, null in jsonl without one), ``char_nats`` its ``chars(i)`` and ``unknown`` the
    positions (from 1) of its characters scored as the unknown token (``LineScores.unknown``; in the
    table such a character is shown as ``[c]``); the table, for people, rounds (a percentile down: ``percent``).
    The columns are built once each, the rows from them: a tsv row costs about 1.7 us, 1.3 of them the
    shortest text of its floats."""
    r = part.scores
    whole = keep is None  # every row, in order; else the rows at ``keep``, in its order
    keep = range(len(part.names)) if whole else keep
    pick = (lambda column: column) if whole else (lambda column: [column[i] for i in keep])  # noqa: E731
    index = None if whole else torch.as_tensor(list(keep), dtype=torch.long)
    column = (lambda t: t.tolist()) if whole else (lambda t: t[index].tolist())  # noqa: E731
    nll, targets = column(r.nll), column(r.n_targets)  # Python floats and ints
    ratio = column(r.nll / r.n_targets)  # float64 division, as Python divides the two: the same bits
    pct = column(r.percentile) if r.percentile is not None else [None] * len(nll)
    names = pick(part.names)
    keys = pick(part.lines) if keyed is None else [keyed.key_of(part.lines[i]) for i in keep]
    per = [r.chars(i).tolist() for i in keep] if chars else None
    unknown = [part.unknown.get(i, ()) for i in keep] if chars else None
    if fmt == "tsv":
        keys = keys if keyed is None else ["" if k is None else k for k in keys]
        pct_text = map(repr, pct) if r.percentile is not None else [""] * len(nll)
        out = [f"{k}\t{name}\t{a!r}\t{n}\t{b!r}\t{p}" for k, name, a, n, b, p in zip(keys, names, nll, targets, ratio, pct_text)]
        if chars:
            out = [f"{row}\t{','.join(map(number, c))}\t{','.join(str(at + 1) for at in u)}"
                   for row, c, u in zip(out, per, unknown)]
    elif fmt == "jsonl":
        field = json.dumps("line" if keyed is None else keyed.name)
        out = [f'{{{field}: {json.dumps(k)}, "name": {json.dumps(name)}, "nats": {json_number(a)}, "targets": {n}, '
               f'"nats_per_target": {json_number(b)}, "percentile": {"null" if p is None else json_number(p)}'
               for k, name, a, n, b, p in zip(keys, names, nll, targets, ratio, pct)]
        out = [f'{row}, "char_nats": [{", ".join(map(json_number, c))}], "unknown": [{", ".join(str(at + 1) for at in u)}]}}'
               for row, c, u in zip(out, per, unknown)] if chars \
            else [row + "}" for row in out]
    else:
        out = [f"{'' if k is None else str(k):>7}  {name:<{width}}  {a:8.4f}  {b:11.4f}  {percent(p):>10}"
               for k, name, a, b, p in zip(keys, names, nll, ratio, pct)]
        if chars:  # bits per character, each under a label: the character, then '.' for the end token
            out = [f"{row}   " + "  ".join(f"{f'[{ch}]' if at in u else ch} {v / math.log(2):.2f}"
                                         for at, (ch, v) in enumerate(zip(name + ".", c)))
                   for row, name, c, u in zip(out, names, per, unknown)]
    return "\n".join(out) + "\n" if out else ""


def percent(p: float | None) -> str:
    """A percentile in the table, rounded down, so that a row reads at or above P exactly when
    ``--min-percentile P`` keeps it (98.99 reads 99.0 nowhere): one decimal below the 99th; above it
    as many as show two digits of what is left to 100 (99.53, 99.977, 99.99940; at most six), so the
    strings at the top, where the tail keeps ranking, read apart. Blank without one."""
    if p is None:
        return ""
    if not math.isfinite(p):  # which a table does not give (a NaN nats ranks past every name: 100)
        return f"{p}"
    digits = 1 if not 99.0 <= p < 100.0 else min(6, max(2, 1 - math.floor(math.log10(100.0 - p))))
    scale = 10 ** digits
    return f"{math.floor(p * scale + 1e-9) / scale:.{digits}f}"  # 1e-9: 100 * k / n a hair under its exact tenth


def closing_count(source: str, c: Counts, min_percentile: float | None = None, unit: str = "line") -> str:
    """The last line of a scoring job, on stderr: what was scored and what was skipped; with
    ``min_percentile``, how many names it kept (``c.rows``: the rows written)."""
    mean = f": {c.nats / c.targets:.4f} nats, {c.nats / c.targets / math.log(2):.4f} bits per target" if c.targets else ""
    kept = "" if min_percentile is None else \
        f"; kept {c.rows:,} of {count(c.names, 'name')} at or above the {ordinal(min_percentile)} percentile"
    return (f"{source}: {count(c.names, 'name')} scored ({count(c.targets, 'target')}, end tokens included{mean}); "
            f"{count(c.empty + c.invalid, unit)} skipped ({c.empty:,} empty, {c.invalid:,} not names){kept}")


def count(n: int, word: str) -> str:
    """``n`` things in words: "1 name", "2 names", "1,000 lines"."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def ordinal(p: float) -> str:
    """A percentile's rank in words: 95 -> "95th", 1 -> "1st", 22 -> "22nd", 99.5 -> "99.5th"."""
    text = f"{p:g}"
    if p != int(p) or int(p) % 100 in (11, 12, 13):
        return text + "th"
    return text + {1: "st", 2: "nd", 3: "rd"}.get(int(p) % 10, "th")


def sample_lines(words, marks, max_len: int) -> str:
    """One sample a line, tagged new or in the training set (``marks``: True, False or None: unknown);
    a sample cut at ``max_len`` (it has ``max_len`` characters: its end was never drawn) ends with '…'
    and says so."""
    out = []
    for w, in_train in zip(words, marks):
        if len(w) == max_len:
            out.append(f"{w}…  (cut at max length {max_len})")
            continue
        tag = "" if in_train is None else ("  (in training set)" if in_train else "  (new)")
        out.append(f"{w}{tag}")
    return "".join(line + "\n" for line in out)


class Top:
    """The ``k`` most unusual rows of a stream, in bounded memory (a heap of ``k``): ranked by percentile,
    then by nats per target (the order the whole list would give them; without percentiles, nats per
    target alone), a tie going to the earlier row. ``add`` takes a part; ``lines`` gives the rows kept,
    most unusual first."""

    def __init__(self, k: int):
        self.k, self.heap, self.seen = k, [], 0

    def add(self, part: LineScores, keep, render) -> None:
        """``part``'s names (those at the indices ``keep``, or all), each a candidate; ``render``: the
        formatted rows of a list of indices (``format_rows``), asked only for the part's own top k."""
        r = part.scores
        idx = np.arange(len(part.names)) if keep is None else np.asarray(keep, dtype=np.int64)
        pct = np.zeros(len(r.nll)) if r.percentile is None else r.percentile.numpy()
        npt = r.nll.numpy() / r.n_targets.numpy()  # as format_rows divides: float64, the same bits
        chosen = idx[np.lexsort((idx, -npt[idx], -pct[idx]))[: self.k]].tolist()  # most unusual first
        for i, line in zip(chosen, render(chosen).splitlines(keepends=True)):
            item = (float(pct[i]), float(npt[i]), -(self.seen + i), line)
            if len(self.heap) < self.k:
                heapq.heappush(self.heap, item)
            elif item > self.heap[0]:
                heapq.heapreplace(self.heap, item)
        self.seen += len(part.names)

    def lines(self) -> str:
        return "".join(item[3] for item in sorted(self.heap, reverse=True))


class Meter:
    """Progress of a scoring job on a terminal's stderr (silent when it is not one): rows so far, rows
    per second, and the share of the input read where its size is known (``done``: a fraction or None)."""

    def __init__(self, stream=None, interval: float = 0.5):
        self.stream = stream or sys.stderr
        self.on = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = self.last = time.perf_counter()
        self.interval, self.rows, self.drawn = interval, 0, False

    def update(self, rows: int, done: float | None = None) -> None:
        self.rows += rows
        now = time.perf_counter()
        if not self.on or now - self.last < self.interval:
            return
        self.last = now
        share = "" if done is None else f", {100 * min(done, 1.0):.0f}%"
        self.stream.write(f"\r{self.rows:,} rows, {self.rows / max(now - self.t0, 1e-9):,.0f} rows/s{share}   ")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
