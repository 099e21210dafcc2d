"""How unusual is a name? Its percentile among held-out names of about its length.

The statistic is a name's nats per target (its nats over its characters and its end token), compared
with the same statistic of reference names the model never trained on (a run's dev split), within the
name's length group: short names are harder to predict per character than long ones, so one table for
all lengths puts too many short names at the top. Chosen by measurement on held-out names
(benchmarks/PERFORMANCE.md, "Percentiles"): per length group, about 10% of a test split land at or above
the 90th percentile in every group; with one table for all lengths, 36% of the names of 2-4 characters.

    table = reference_table(Scorer.of(model, vocab), dev_names)   # at the end of training (the checkpoint keeps it)
    table.percentile(result.nll / result.n_targets, lengths)  # (N,) float64 in [0, 100]

A percentile is the share of the reference names of the group that are less unusual (a lower nats per
target), in percent: 0 for a name as usual as the most usual, 99.5 for one past 99.5% of them. Past the
group's 95th, where a table has few names and the strings users hunt for fall past all of them, the
share comes from a generalized Pareto tail fitted to the group's top 5% (``Tail``): it keeps rising
with the statistic, past the table's largest value too, so two strings of the top tie only where
their scores tie, and a string's rank among groups follows how far past its own group it lies.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from ..errors import ArgumentError

MIN_GROUP = 200  # reference names in a length group, at least (fewer in all: one group)
MAX_VALUES = 2000  # order statistics a group keeps (evenly spaced), so a table stays small for any split
TAIL = 0.05  # the share of a group's values above which its percentile comes from a fitted tail
MIN_EXCESSES = 10  # values a tail is fitted to, at least (a group of fewer than twice as many has none)
SHAPES = (0.2, 0.9)  # the tail's shape, clipped: heavy enough that no string reaches 100.0, its mean finite


@dataclass(frozen=True)
class Tail:
    """A generalized Pareto tail past ``threshold``: the share ``mass`` of a group lies above it, and
    of those, the share ``(1 + shape * y / scale) ** (-1 / shape)`` lies more than ``y`` above it.

    Fitted by probability-weighted moments (Hosking and Wallis, 1987) to the values above the threshold,
    the shape clipped to ``SHAPES``: a fitted shape below 0.2 (a tail with an end, or one so light that
    strings far past the table read 100.0 in float64: at shape 0.1, 150 scales past the threshold) is
    0.2, with the scale that keeps the excesses' mean. A percentile then stays below 100 up to about
    1,000 scales past the threshold (a scale is about 0.2 to 0.5 nats per target)."""

    threshold: float
    mass: float
    scale: float
    shape: float

    @classmethod
    def fit(cls, values: np.ndarray) -> "Tail | None":
        """The tail of one group's sorted values, or None for a group too small to fit one."""
        m = len(values)
        k = max(MIN_EXCESSES, int(round(TAIL * m)))
        if m < 2 * k:
            return None
        threshold = float(values[m - k - 1])
        y = values[m - k:] - threshold  # (k,) ascending excesses, >= 0
        a0 = float(y.mean())
        a1 = float((y * (k - 1 - np.arange(k)) / (k - 1)).mean())  # E[y (1 - F(y))]
        shape = 2.0 - a0 / (a0 - 2.0 * a1) if a0 - 2.0 * a1 > 0 else SHAPES[1]
        shape = float(np.clip(shape, *SHAPES))
        scale = max(a0 * (1.0 - shape), 1e-9 * max(1.0, abs(threshold)))  # all excesses tied: a narrow tail
        return cls(threshold, k / m, scale, shape)

    def percentile(self, stat: np.ndarray) -> np.ndarray:
        """(N,) statistics above ``threshold`` -> (N,) percentiles, below 100 and rising with the statistic."""
        survival = (1.0 + self.shape * (stat - self.threshold) / self.scale) ** (-1.0 / self.shape)
        return 100.0 - 100.0 * self.mass * survival


@dataclass(frozen=True)
class ReferenceTable:
    """Sorted nats per target of reference names, by length group.

    starts: (G,) the first length of each group, ascending; group g holds the names of ``starts[g]`` up
        to ``starts[g + 1] - 1`` characters (the first group also any shorter name, the last any longer).
    values: G float64 arrays, each sorted ascending: the group's statistic (all of it, or MAX_VALUES
        evenly spaced order statistics of it).
    names: how many reference names the table was made from.

    A group's percentile is its share of values below the statistic, up to its ``Tail``'s threshold
    (the largest value below its top 5%); above it, the tail's (``tails``, fitted from ``values``).
    """

    starts: tuple[int, ...]
    values: tuple[np.ndarray, ...]
    names: int

    def group_of(self, lengths) -> np.ndarray:
        """(N,) name lengths -> (N,) the index of each one's group."""
        lengths = np.asarray(lengths, dtype=np.int64)
        return np.clip(np.searchsorted(np.asarray(self.starts), lengths, side="right") - 1, 0, len(self.starts) - 1)

    def percentile(self, nats_per_target, lengths) -> np.ndarray:
        """(N,) nats per target and (N,) lengths (characters) -> (N,) float64 percentiles in [0, 100]."""
        stat = np.asarray(nats_per_target, dtype=np.float64)
        lengths = np.asarray(lengths, dtype=np.int64)
        if stat.shape != lengths.shape or stat.ndim != 1:
            raise ArgumentError("ReferenceTable.percentile", "nats_per_target",
                                f"and lengths must be two (N,) arrays, got {stat.shape} and {lengths.shape}")
        out = np.empty(len(stat), dtype=np.float64)
        groups = self.group_of(lengths)
        for g, ref in enumerate(self.values):
            sel = groups == g
            out[sel] = 100.0 * np.searchsorted(ref, stat[sel], side="left") / len(ref)
            tail = self.tails[g]
            if tail is not None:
                above = sel & (stat > tail.threshold)
                out[above] = tail.percentile(stat[above])
        return out

    def group_labels(self) -> list[str]:
        """Each group's name lengths in words: "up to 4", "5", "6-7", "12 and up"; one group: "every length"."""
        if len(self.starts) == 1:
            return ["every length"]
        ends = [start - 1 for start in self.starts[1:]]
        middle = [str(a) if a == b else f"{a}-{b}" for a, b in zip(self.starts[1:-1], ends[1:])]
        return [f"up to {ends[0]}", *middle, f"{self.starts[-1]} and up"]

    @cached_property
    def tails(self) -> tuple[Tail | None, ...]:
        """Each group's ``Tail`` (None for a group too small to fit one), fitted once from ``values``."""
        return tuple(Tail.fit(v) for v in self.values)

    def to_dict(self) -> dict:
        """Plain Python (lists of ints and floats): what a checkpoint stores."""
        return {"starts": list(self.starts), "values": [v.tolist() for v in self.values], "names": self.names}

    @classmethod
    def from_dict(cls, d: dict) -> ReferenceTable:
        starts, values = tuple(int(s) for s in d["starts"]), tuple(np.asarray(v, dtype=np.float64) for v in d["values"])
        if not starts or len(starts) != len(values) or any(v.ndim != 1 or len(v) == 0 for v in values) \
                or list(starts) != sorted(set(starts)) or any(np.any(np.diff(v) < 0) for v in values) \
                or not all(np.isfinite(v).all() for v in values):  # a NaN passes the sorted check, and ranks nothing
            raise ValueError("a reference table needs ascending group starts, each with a sorted, non-empty list of "
                             "finite values")
        return cls(starts, values, int(d["names"]))


def build_table(stat, lengths, min_group: int = MIN_GROUP, max_values: int = MAX_VALUES) -> ReferenceTable:
    """(N,) nats per target and (N,) lengths of reference names -> their ``ReferenceTable``: lengths in
    ascending order gathered into groups of at least ``min_group`` names (a last, smaller group joins the
    one before it)."""
    stat, lengths = np.asarray(stat, dtype=np.float64), np.asarray(lengths, dtype=np.int64)
    if len(stat) == 0 or stat.shape != lengths.shape:
        raise ArgumentError("build_table", "stat", f"and lengths must be two non-empty (N,) arrays, got {stat.shape} "
                            f"and {lengths.shape}")
    if not np.isfinite(stat).all():
        raise ArgumentError("build_table", "stat", "has a value that is not finite")
    distinct, counts = np.unique(lengths, return_counts=True)
    starts, held = [], min_group  # held: names in the group being filled
    for length, count in zip(distinct.tolist(), counts.tolist()):
        if held >= min_group:
            starts.append(length)
            held = 0
        held += count
    if held < min_group and len(starts) > 1:
        starts.pop()  # the last group is too small: it joins the one before
    table = ReferenceTable(tuple(starts), (), len(stat))
    groups = table.group_of(lengths)
    values = []
    for g in range(len(starts)):
        v = np.sort(stat[groups == g])
        if len(v) > max_values:
            v = v[np.round(np.linspace(0, len(v) - 1, max_values)).astype(np.int64)]
        values.append(v)
    return ReferenceTable(tuple(starts), tuple(values), len(stat))


def reference_table(scorer, names) -> ReferenceTable:
    """The ``ReferenceTable`` of ``names`` (held-out names: a run's dev split) under ``scorer`` (a
    ``scoring.Scorer``, without a table of its own: its percentiles are not asked for)."""
    if not names:
        raise ArgumentError("reference_table", "names", "is empty: a table needs reference names")
    result = scorer.names(list(names))
    return build_table((result.nll / result.n_targets).numpy(), (result.n_targets - 1).numpy())


def percentiles(table: ReferenceTable | None, nll: torch.Tensor, n_targets: torch.Tensor) -> torch.Tensor | None:
    """(N,) nats and (N,) targets of scored names -> (N,) float64 percentiles, or None without a table."""
    if table is None:
        return None
    return torch.from_numpy(table.percentile((nll / n_targets).numpy(), (n_targets - 1).numpy()))
