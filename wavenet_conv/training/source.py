"""What a run trains on: a names file, one name a line, or a column of a table (``read_data``): its
words, normalized as the run's text settings say, the vocabulary learned from them, and the file's
record (path, sha256, count; the column of a table), which a resumed run must find unchanged."""

from __future__ import annotations

from pathlib import Path

from ..data import Vocab, check_name, load_names, normalize, same_data, sha256_file
from ..errors import ArgumentError, DataError
from ..paths import bundled_names
from ..tables import FORMATS, Refused, Table, cell_name, table_format


def read_data(path, vocab: Vocab | None = None, started: dict | None = None, text: tuple = ("none", False, 0),
              column: str | None = None):
    """A names file or a table (None: the bundled names) for training -> (words, vocab, its record
    {"path", "sha256", "n_words"}, and "column" for a table), the words normalized as the vocabulary says.

    A table (by suffix, ``table_format``) gives the names of its ``column`` (None: its only column),
    blank and null cells skipped; a cell that is no string is a ``DataError`` naming its row. ``vocab``:
    a resumed run's; every name must fit it. Without one, a new run's, learned from the words
    (``Vocab.learned``) as ``text`` -- (normalize, unknown, rare): ``TrainConfig``'s fields of those
    names -- says. ``started``: the record of the file the run started on, which this one must be
    (``same_data``; ``DataError`` otherwise)."""
    path = Path(path if path is not None else bundled_names())
    is_table = table_format(path) is not None
    if not is_table and column is not None:
        raise ArgumentError("train", "column", f"is for a table (a {', '.join(sorted(FORMATS))} file); {path} is a list, "
                            "one name a line")
    table = Table.open(path, column) if is_table else None
    words, where = (load_names(path), None) if table is None else column_words(table)
    record = {"path": str(path.resolve()), "sha256": sha256_file(path), "n_words": len(words)}
    if table is not None:
        record["column"] = table.column
    if started is not None and not same_data(started, record):
        raise DataError(f"{path}: the data file differs from the one this run started on (sha256 changed)")
    how, unknown, rare = text if vocab is None else (vocab.normalize, vocab.unknown, 0)
    words = [normalize(w, how) for w in words] if how != "none" else words
    vocab = vocab or Vocab.learned(words, how, unknown, rare)
    if not vocab.covers(words):
        for i, word in enumerate(words):  # the first that does not fit, by its row or its place among the names
            check_name(word, vocab, f"{path}: row {where[i]:,}" if where else f"{path}: name {i + 1:,}")
    return words, vocab, record


def column_words(table: Table) -> tuple[list[str], list[int]]:
    """A table's names for training, and the row of each: its column's cells stripped, blank and null
    cells skipped; a cell that is not a name (a number, a control character) a ``DataError`` naming its row."""
    words, rows = [], []
    for row, _, value in table.rows():
        name = cell_name(value)
        if isinstance(name, Refused):
            raise DataError(f"{table.path}: row {row}: {name.reason}")
        if name:
            check_name(name, None, f"{table.path}: row {row}")
            words.append(name)
            rows.append(row)
    if not words:
        raise DataError(f"{table.path}: no names in its column {table.column!r}")
    return words, rows
