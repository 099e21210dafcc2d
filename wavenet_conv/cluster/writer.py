"""The writer of a job on Ray (Ray is imported here: ``job.score_files`` imports this module only when a
job runs): scored blocks as Parquet files, one per write task, counted as they are written."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.data import Datasink

from .counts import Counts
from .scorer import SCORE_COLUMNS
from ..data import EMPTY_NAME

OUTPUT = ("name", *SCORE_COLUMNS)
ROWS_PER_FILE = 1_000_000  # at least, but in the last file of the job: a write task's rows


def count(table: pa.Table, drop_empty: bool) -> tuple[pa.Table, Counts]:
    """(the rows to write, their counts): rows of empty names (blank, or whitespace only) dropped with
    ``drop_empty`` (text input, whose blank lines the local command skips too), counted either way."""
    empty = pc.fill_null(pc.equal(table["error"], EMPTY_NAME), False)
    n_empty = pc.sum(empty).as_py() or 0
    if drop_empty:
        table = table.filter(pc.invert(empty))
    names = table["error"].null_count  # a scored row has no error
    return table, Counts(names=names, targets=pc.sum(table["targets"]).as_py() or 0,
                         nats=pc.sum(table["nats"]).as_py() or 0.0, empty=n_empty,
                         invalid=len(table) - names - (0 if drop_empty else n_empty), rows=len(table))


class ScoreSink(Datasink):
    """Write scored blocks under the folder or URI ``path`` as ``part-JOB-TASK.parquet``, the key columns
    ``keys`` first, and count them (``counts``, once the write is complete). A retried write task
    writes the same file name again: its rows are never written twice."""

    def __init__(self, path: str, keys: list[str], drop_empty: bool):
        self.path, self.keys, self.drop_empty = path, keys, drop_empty
        self.job = uuid.uuid4().hex[:12]
        self.counts: Counts | None = None

    def write(self, blocks, ctx) -> Counts:
        fs, root = pafs.FileSystem.from_uri(self.path)
        name = f"{root}/part-{self.job}-{ctx.task_idx:06d}.parquet"
        total, writer = Counts(), None
        try:
            for block in blocks:
                table = block if isinstance(block, pa.Table) else pa.Table.from_pandas(block, preserve_index=False)
                table, counts = count(table, self.drop_empty)
                total += counts
                if len(table):
                    table = table.select([c for c in (*self.keys, *OUTPUT) if c in table.column_names])
                    writer = writer or pq.ParquetWriter(name, table.schema, filesystem=fs)
                    writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        return total

    @property
    def min_rows_per_write(self) -> int:
        return ROWS_PER_FILE

    def on_write_complete(self, write_result) -> None:
        self.counts = sum(write_result.write_returns, Counts())
