"""What a scoring job scored and skipped, the numbers of its closing line, added up here alone: a
job's parts (a chunk of ``score_lines``, a block a Ray write task wrote) each give a ``Counts`` and
the job's is their sum, ``sum(parts, Counts())``."""

from __future__ import annotations

from dataclasses import astuple, dataclass

from ..inference.streaming import LineScores


@dataclass(frozen=True)
class Counts:
    """names: names scored; targets: their targets (characters + the end tokens); nats: their total
    negative log-likelihood; empty: blank lines (or values) skipped; invalid: lines that are not
    names; rows: rows written (a scored name's, and on Ray also an invalid line's)."""

    names: int = 0
    targets: int = 0
    nats: float = 0.0
    empty: int = 0
    invalid: int = 0
    rows: int = 0

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(*(a + b for a, b in zip(astuple(self), astuple(other))))

    @classmethod
    def of_part(cls, part: LineScores) -> "Counts":
        """A chunk of ``score_lines``: a row per scored name."""
        n = len(part.names)
        return cls(names=n, targets=int(part.scores.n_targets.sum()), nats=float(part.scores.nll.sum()),
                   empty=part.empty, invalid=len(part.invalid), rows=n)
