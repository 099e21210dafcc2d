"""The writer of a job on Ray (Ray is imported here: ``job.score_files`` imports this module only when a
job runs): scored blocks as Parquet files, one per write task, counted as they are written, and the
row that is not a name with the smallest key found (the job's "first" bad line)."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.data import Datasink

from .counts import Counts
from .scorer import NULL, SCORE_COLUMNS
from ..data import EMPTY_NAME

OUTPUT = ("name", *SCORE_COLUMNS)
ROWS_PER_FILE = 1_000_000  # at least, but in the last file of the job: a write task's rows
BLANK = pa.array([EMPTY_NAME, NULL])  # the errors of a blank row: an empty name, a null cell


def blank(table: pa.Table) -> pa.ChunkedArray:
    """Whether each row of ``table`` is blank (its error an empty name's or a null's)."""
    return pc.fill_null(pc.is_in(table["error"].cast(pa.string()), value_set=BLANK), False)  # an all-null column: null type


def count(table: pa.Table, drop_empty: bool) -> tuple[pa.Table, Counts]:
    """(the rows to write, their counts): blank rows (an empty name, whitespace only, or a null cell)
    dropped with ``drop_empty`` (text and CSV-like input, whose blank rows the local command skips too),
    counted either way."""
    empty = blank(table)
    n_empty = pc.sum(empty).as_py() or 0
    if drop_empty:
        table = table.filter(pc.invert(empty))
    names = table["error"].null_count  # a scored row has no error
    return table, Counts(names=names, targets=pc.sum(table["targets"]).as_py() or 0,
                         nats=pc.sum(table["nats"]).as_py() or 0.0, empty=n_empty,
                         invalid=len(table) - names - (0 if drop_empty else n_empty), rows=len(table))


def kept(table: pa.Table, min_percentile: float | None) -> pa.Table:
    """The rows of ``table`` at or above ``min_percentile`` (all of them with None): a row without a
    percentile (a line that is not a name) is not kept."""
    if min_percentile is None:
        return table
    return table.filter(pc.fill_null(pc.greater_equal(table["percentile"], min_percentile), False))


def value_order(value) -> tuple:
    """A key that orders a column's values, null first (and values Python cannot order by their repr)."""
    if value is None:
        return (0,)
    return (1, value) if isinstance(value, (int, float, str, bytes)) else (2, repr(value))


def first_invalid(table: pa.Table, keys: list[str]) -> tuple | None:
    """(order, key values, reason) of the row of ``table`` that is not a name (an error, but not a blank
    row's) with the smallest key (``keys``, or the name where the names are the key), or None."""
    bad = pc.and_(pc.is_valid(table["error"]), pc.invert(blank(table)))
    table = table.filter(bad)
    if not len(table):
        return None
    rows = zip(*(table[c].to_pylist() for c in keys or ["name"]), table["error"].to_pylist())
    first = min(rows, key=lambda row: tuple(map(value_order, row[:-1])))
    return tuple(map(value_order, first[:-1])), first[:-1], first[-1]


def smallest(found) -> tuple | None:
    """Of ``found`` (``first_invalid``'s, None where none), the one of the smallest key, or None."""
    return min((f for f in found if f is not None), default=None, key=lambda f: f[0])


class ScoreSink(Datasink):
    """Write scored blocks under the folder or URI ``path`` as ``part-JOB-TASK.parquet``, the key columns
    ``keys`` first, and count them (``counts``, once the write is complete; ``first_invalid``: the
    ``first_invalid`` of all the rows, or None). With ``min_percentile``, only the rows at or above it
    are written (``kept``; ``counts.rows``). A retried write task writes the same file name again: its
    rows are never written twice."""

    def __init__(self, path: str, keys: list[str], drop_empty: bool, min_percentile: float | None = None):
        self.path, self.keys, self.drop_empty, self.min_percentile = path, keys, drop_empty, min_percentile
        self.job = uuid.uuid4().hex[:12]
        self.counts: Counts | None = None
        self.first_invalid: tuple | None = None

    def write(self, blocks, ctx) -> tuple[Counts, tuple | None]:
        fs, root = pafs.FileSystem.from_uri(self.path)
        name = f"{root}/part-{self.job}-{ctx.task_idx:06d}.parquet"
        total, found, writer = Counts(), [], None
        try:
            for block in blocks:
                table = block if isinstance(block, pa.Table) else pa.Table.from_pandas(block, preserve_index=False)
                table, counts = count(table, self.drop_empty)
                found.append(first_invalid(table, self.keys))
                table = kept(table, self.min_percentile)
                total += replace(counts, rows=len(table))
                if len(table):
                    table = table.select([c for c in (*self.keys, *OUTPUT) if c in table.column_names])
                    writer = writer or pq.ParquetWriter(name, table.schema, filesystem=fs)
                    writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        return total, smallest(found)

    @property
    def min_rows_per_write(self) -> int:
        return ROWS_PER_FILE

    def on_write_complete(self, write_result) -> None:
        self.counts = sum((counts for counts, _ in write_result.write_returns), Counts())
        self.first_invalid = smallest(first for _, first in write_result.write_returns)
