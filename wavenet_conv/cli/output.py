"""What the command line prints: score rows (table, tsv, jsonl), the closing count of a scoring job,
and sampled names."""

from __future__ import annotations

import json
import math

from ..cluster.counts import Counts
from ..inference.streaming import LineScores

FORMATS = ("table", "tsv", "jsonl")  # wavenet-conv score --format


def header(fmt: str, chars: bool, width: int) -> str:
    """The first line of ``score``'s output (none for jsonl)."""
    if fmt == "tsv":
        return "line\tname\tnats\ttargets\tnats_per_target" + ("\tchar_nats" if chars else "") + "\n"
    if fmt == "table":
        return f"{'line':>7}  {'name':<{width}}  {'nats':>8}  {'nats/target':>11}" + (
            "   bits per character ('.' the end)" if chars else "") + "\n"
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


def format_rows(fmt: str, part: LineScores, chars: bool, width: int) -> str:
    """One chunk of ``score`` output: a row per scored name. tsv and jsonl carry each float64 exactly
    (``number``): ``nats`` is the name's ``nll``, ``nats_per_target`` is ``nats / targets`` in float64,
    ``char_nats`` its ``chars(i)``; the table, for people, rounds."""
    r = part.scores
    rows = [(line, name, nats, n, nats / n)  # Python floats: float64, computed once
            for line, name, nats, n in zip(part.lines, part.names, r.nll.tolist(), r.n_targets.tolist())]
    per = [r.chars(i).tolist() for i in range(len(part.names))] if chars else None
    if fmt == "tsv":
        out = [f"{line}\t{name}\t{number(nats)}\t{n}\t{number(ratio)}" for line, name, nats, n, ratio in rows]
        if chars:
            out = [f"{row}\t{','.join(map(number, c))}" for row, c in zip(out, per)]
    elif fmt == "jsonl":
        out = [f'{{"line": {line}, "name": {json.dumps(name)}, "nats": {json_number(nats)}, "targets": {n}, '
               f'"nats_per_target": {json_number(ratio)}' for line, name, nats, n, ratio in rows]
        out = [f'{row}, "char_nats": [{", ".join(map(json_number, c))}]}}' for row, c in zip(out, per)] if chars \
            else [row + "}" for row in out]
    else:
        out = [f"{line:>7}  {name:<{width}}  {nats:8.4f}  {ratio:11.4f}" for line, name, nats, n, ratio in rows]
        if chars:  # bits per character, each under a label: the character, then '.' for the end token
            out = [f"{row}   " + "  ".join(f"{ch} {v / math.log(2):.2f}" for ch, v in zip(name + ".", c))
                   for row, name, c in zip(out, part.names, per)]
    return "".join(row + "\n" for row in out)


def closing_count(source: str, c: Counts) -> str:
    """The last line of a scoring job, on stderr: what was scored and what was skipped."""
    mean = f": {c.nats / c.targets:.4f} nats, {c.nats / c.targets / math.log(2):.4f} bits per target" if c.targets else ""
    return (f"{source}: {c.names:,} names scored ({c.targets:,} targets, end tokens included{mean}); "
            f"{c.empty + c.invalid:,} lines skipped ({c.empty:,} empty, {c.invalid:,} not names)")


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
