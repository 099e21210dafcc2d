"""A column of a table, read a row at a time: the one reader of CSV, TSV, JSONL and Parquet for
``score`` and for Ray's read tasks.

    table = Table.open("people.csv", column="first_name", id_column="id")
    for row, key, value in table.rows():      # row: from 1 (the header not counted); key: the id cell
        ...

The format comes from the file's suffix (``FORMATS``); a file of any other suffix is a list, one name
a line (``data.read_lines``), which this module does not read. CSV and TSV are read with the standard
library's ``csv`` (a header row, quoted fields, embedded newlines), UTF-8 with a BOM allowed (a byte
that is not UTF-8 is kept as a lone surrogate, which ``data.name_problem`` reports); JSONL is one JSON
object a line, the column a key; Parquet is read with pyarrow (``pip install pyarrow``), a batch of
rows at a time. A cell is a string, or ``None`` (an empty CSV field, a JSON null or missing key, a
Parquet null: a blank row), or any other value, which ``cell_name`` turns into the reason it is not a
name. Memory stays flat: nothing holds more than a batch of rows.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from typing import Iterator

from .data import line_name, open_input
from .errors import DataError, MissingExtraError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
PARQUET_BATCH = 65536  # rows read at a time from a Parquet file


def table_format(path: str | os.PathLike) -> str | None:
    """The table format of ``path`` by its suffix (case aside), or None for a list (one name a line)."""
    return FORMATS.get(os.path.splitext(os.fspath(path))[1].lower())


@dataclass(frozen=True)
class Refused:
    """A cell that is not a name whatever the vocabulary (a number, a list, a line that is not JSON):
    why, in a few words. It keeps its row's place and count."""

    reason: str


def cell_name(value) -> str | Refused:
    """The name in a cell: a string without whitespace at either end (``data.line_name``), "" for a
    missing value (None, NaN, pandas' NA: a blank row), else why it is not a name (``Refused``)."""
    if isinstance(value, str):
        return line_name(value)
    if isinstance(value, Refused):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)) or type(value).__name__ == "NAType":
        return ""
    return Refused(f"a {type(value).__name__} ({str(value)[:40]}), not a string")


@dataclass
class Table:
    """A column of names (and an optional key column) of one table file."""

    path: str
    kind: str  # one of FORMATS' values
    column: str | None
    id_column: str | None = None

    @classmethod
    def open(cls, path: str | os.PathLike, column: str | None, id_column: str | None = None) -> "Table":
        """The table at ``path`` (its format by suffix), checked before any row is read: the file opens,
        and it has ``column`` (None: its only column) and ``id_column``; a ``DataError`` otherwise."""
        path = os.fspath(path)
        kind = table_format(path)
        if kind is None:
            raise DataError(f"{path}: not a table ({', '.join(sorted(FORMATS))}): a list of names has no columns")
        table = cls(path, kind, column, id_column)
        table.check_columns()
        return table

    @property
    def key(self) -> str:
        """What a row is keyed by in the output: the id column, else "row"."""
        return self.id_column or "row"

    def check_columns(self) -> None:
        names = self.columns()
        if names is None:  # JSONL: any object may hold any key; a missing one is a null
            if self.column is None:
                raise DataError(f"{self.path}: give the key of the names (column=KEY): JSON lines have no header")
            return
        if self.column is None:
            if len(names) != 1:
                raise DataError(f"{self.path}: give the column of names (column=NAME); its columns: "
                                f"{', '.join(names)[:200]}")
            self.column = names[0]
        for col in (self.column, self.id_column):
            if col is not None and col not in names:
                raise DataError(f"{self.path}: no column {col!r}; its columns: {', '.join(names)[:200]}")

    def columns(self) -> list[str] | None:
        """The table's column names (a CSV's header, a Parquet schema), None for JSONL."""
        if self.kind == "jsonl":
            return None
        if self.kind == "parquet":
            return list(parquet_file(self.path).schema_arrow.names)
        with open_text(self.path) as f:
            header = next(csv.reader(f, delimiter=delimiter(self.kind)), None)
        if header is None:
            raise DataError(f"{self.path}: empty: a {self.kind.upper()} table needs a header row")
        return header

    def cells(self) -> "Cells":
        """The column's cells, in order, for ``inference.streaming.scored_lines`` (a cell a line), each
        row's key kept in ``Cells.keys`` as it is read."""
        return Cells(self)

    def rows(self) -> Iterator[tuple[int, object, object]]:
        """(row from 1, key (the id cell, or None), cell) of every row, in order."""
        if self.kind == "parquet":
            yield from parquet_rows(self)
        elif self.kind == "jsonl":
            yield from jsonl_rows(self)
        else:
            yield from csv_rows(self)


class Cells:
    """A table's cells, one a row, and ``keys``: {row: its id cell} of the rows read since the last
    ``clear`` (with an id column; else empty). A stream scored a chunk at a time reads a chunk's rows,
    then yields its scores: their keys are all here then, and ``clear`` keeps memory flat."""

    def __init__(self, table: Table):
        self.table, self.keys = table, {}
        self.name = table.key  # the output's key column: the id column, or "row"

    def __iter__(self):
        keyed = self.table.id_column is not None
        for row, key, value in self.table.rows():
            if keyed:
                self.keys[row] = key
            yield value

    def key_of(self, row: int):
        """The key of ``row`` in the output: its id cell with an id column, else the row number."""
        return self.keys.get(row) if self.table.id_column is not None else row

    def clear(self) -> None:
        self.keys.clear()


def delimiter(kind: str) -> str:
    return "\t" if kind == "tsv" else ","


def open_text(path: str):
    """A table file as text for ``csv`` and JSON: UTF-8 (a BOM dropped), bytes that are not UTF-8 kept
    as lone surrogates, newlines as they are (``csv`` reads a quoted field's own)."""
    return open_input(path, "a table", encoding="utf-8-sig", errors="surrogateescape", newline="")


def csv_rows(table: Table):
    with open_text(table.path) as f:
        reader = csv.reader(f, delimiter=delimiter(table.kind))
        header = next(reader)
        at = header.index(table.column)
        key = None if table.id_column is None else header.index(table.id_column)
        try:
            for row, cells in enumerate(reader, start=1):
                value = cells[at] if at < len(cells) else None  # a short row: the cell is missing
                yield row, (None if key is None or key >= len(cells) else cells[key]), (value if value != "" else None)
        except csv.Error as e:
            raise DataError(f"{table.path}:{reader.line_num}: not {table.kind.upper()}: {e}") from None


def jsonl_rows(table: Table):
    with open_text(table.path) as f:
        row = 0
        for line in f:
            if not line.strip():
                continue  # a blank line between objects is no row
            row += 1
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield row, None, Refused(f"not JSON ({e.msg} at character {e.pos + 1})")
                continue
            if not isinstance(obj, dict):
                yield row, None, Refused(f"a JSON {type(obj).__name__}, not an object")
                continue
            yield row, obj.get(table.id_column) if table.id_column else None, obj.get(table.column)


def parquet_file(path: str):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError("reading Parquet needs pyarrow, which is not installed: pip install pyarrow") from None
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow's ArrowInvalid and kin: not a Parquet file
        raise DataError(f"{path}: not a readable Parquet file: {str(e).splitlines()[0][:160]}") from None


def parquet_rows(table: Table):
    columns = list(dict.fromkeys(c for c in (table.column, table.id_column) if c is not None))
    row = 0
    for batch in parquet_file(table.path).iter_batches(batch_size=PARQUET_BATCH, columns=columns):
        values = batch.column(table.column).to_pylist()
        keys = batch.column(table.id_column).to_pylist() if table.id_column else [None] * len(values)
        for key, value in zip(keys, values):
            row += 1
            yield row, key, value


def is_table(path: str | os.PathLike) -> bool:
    """Whether ``path`` is read as a table (by its suffix); '-' (stdin) is a list."""
    return os.fspath(path) != "-" and table_format(path) is not None


