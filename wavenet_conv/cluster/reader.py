"""What a Ray job reads (``job.score_files`` runs the job): text files (a file, a folder, a glob or a
URI; each read by the local command's reader, a block of lines at a time, every line numbered),
CSV, TSV and JSONL tables (local or mounted paths, each read by the local command's ``tables.Table``,
a block of rows at a time) or Parquet (Ray Data's reader: a column of names and a key column), and
the checks of each before any work."""

from __future__ import annotations

import glob
import os
from itertools import islice
from typing import Iterator

from .scorer import SCORE_COLUMNS
from ..data import Vocab, line_name, name_problem, read_lines
from ..errors import ArgumentError, DataError
from ..tables import Refused, Table, cell_name, table_format

IO_CPUS = 0.5  # each read or write task: two of them fit in the one CPU kept beside the actors


def file_kind(path: str) -> str:
    """How a job reads ``path``, by its suffix: "parquet", a table's format ("csv", "tsv", "jsonl"), or "text"."""
    return table_format(path) or "text"


def list_inputs(spec: str) -> tuple[str, list[tuple[str, str]]]:
    """(the files' kind, ``file_kind``'s, [(the path as shown, the path or URI to open)]) of the files
    of ``spec``: a file, a folder (its files, hidden ones and ``_*`` left out), a glob (local) or a URI."""
    import pyarrow.fs as pafs

    if not spec:
        raise DataError("the input is an empty path: give a file, folder, glob or URI")
    if glob.has_magic(spec) and "://" not in spec:
        shown = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
    else:
        fs, root = pafs.FileSystem.from_uri(spec if "://" in spec else os.path.abspath(spec))
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            raise DataError(f"{spec}: no such file or folder")
        if info.type == pafs.FileType.File:
            shown = [spec]
        else:
            shown = sorted(os.path.join(spec, inside) for inside in visible_files(fs, root))
    if not shown:
        raise DataError(f"{spec}: no files in it")
    kinds = sorted({file_kind(p) for p in shown})
    if len(kinds) > 1:
        raise DataError(f"{spec}: holds files of more than one kind ({', '.join(kinds)}, by suffix): give one kind")
    files = [(p, p if "://" in p else os.path.abspath(p)) for p in shown]
    if kinds[0] not in ("text", "parquet") and any("://" in uri and not uri.startswith("file://") for _, uri in files):
        raise DataError(f"{spec}: a {kinds[0].upper()} table is read on Ray from a local or mounted path, not a URI: "
                        "mount it, or give Parquet")
    return kinds[0], files


def visible_files(fs, root: str) -> list[str]:
    """The files under the folder ``root`` of ``fs``, relative to it, but hidden ones and ``_*`` ones
    (``_SUCCESS``, ``.crc`` files) at any depth."""
    import pyarrow.fs as pafs

    found = []
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        inside = os.path.relpath(info.path, root)
        if info.type == pafs.FileType.File and not any(p.startswith((".", "_")) for p in inside.split(os.sep)):
            found.append(inside)
    return found


def text_blocks(batch, vocab: dict, rows: int) -> Iterator:
    """A read task: the lines of each file of ``batch`` (columns path, uri) as pyarrow tables of
    (path, line, name, error), ``rows`` lines at a time, with the local command's reader.
    vocab: the scorer's vocabulary (``Vocab.to_dict``, its normalization too), for the reason of a
    line that was not UTF-8 (see ``lines_table``)."""
    import pyarrow.fs as pafs

    vocab = Vocab.from_dict(vocab)
    for shown, uri in zip(batch["path"].to_pylist(), batch["uri"].to_pylist()):
        fs, path = pafs.FileSystem.from_uri(uri)
        with fs.open_input_stream(path) as f:
            lines, first = read_lines(f), 1
            while block := list(islice(lines, rows)):
                yield lines_table(shown, first, block, vocab)
                first += len(block)


def utf8(line: str) -> bool:
    """Whether ``line`` holds no byte that was not UTF-8 (which ``read_lines`` keeps as a surrogate)."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def lines_table(path: str, first: int, lines: list[str], vocab: Vocab):
    """(path, line, name, error) of ``lines`` numbered from ``first``, each name its line's ``line_name``
    (a blank line's is "", which the writer counts and drops); see ``names_table``."""
    import pyarrow as pa

    return names_table({"path": pa.array([path] * len(lines), pa.string()),
                        "line": pa.array(range(first, first + len(lines)), pa.int64())},
                       [line_name(line) for line in lines], [None] * len(lines), vocab)


def names_table(keys: dict, names: list[str], errors: list[str | None], vocab: Vocab):
    """The pyarrow table of the columns ``keys``, then ``name`` and ``error``. Arrow holds UTF-8 only, so
    a name that was not UTF-8 (a lone surrogate from ``read_lines`` or ``tables``) gets its reason in
    ``error`` here (the local command's: the same vocabulary and normalization) and U+FFFD for each bad
    byte in ``name``; the scorer keeps that error."""
    import pyarrow as pa

    try:
        arrow = pa.array(names, pa.string())
    except UnicodeEncodeError:  # some name was not UTF-8
        names = list(names)
        for i, name in enumerate(names):
            if not utf8(name):
                errors[i] = errors[i] or name_problem(vocab.normalized([name])[0], vocab)
                names[i] = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        arrow = pa.array(names, pa.string())
    return pa.table({**keys, "name": arrow, "error": pa.array(errors, pa.string())})


def table_blocks(batch, column: str | None, id_column: str | None, vocab: dict, rows: int) -> Iterator:
    """A read task: the rows of each table file of ``batch`` (columns path, uri) as pyarrow tables of
    its keys (``id_column``, as text; else path and row), name and error, ``rows`` rows at a time, with
    the local command's reader (``tables.Table``): a blank or null cell's name is "" (counted, dropped),
    a cell that is not a string has its reason in error."""
    import pyarrow as pa

    vocab = Vocab.from_dict(vocab)
    for shown, uri in zip(batch["path"].to_pylist(), batch["uri"].to_pylist()):
        cells = Table.open(uri.removeprefix("file://"), column, id_column).rows()
        while block := list(islice(cells, rows)):
            names = [cell_name(value) for _, _, value in block]
            errors = [n.reason if isinstance(n, Refused) else None for n in names]
            if id_column is None:
                keys = {"path": pa.array([shown] * len(block), pa.string()),
                        "row": pa.array([row for row, _, _ in block], pa.int64())}
            else:
                keys = {id_column: pa.array([None if key is None else str(key) for _, key, _ in block], pa.string())}
            yield names_table(keys, ["" if isinstance(n, Refused) else n for n in names], errors, vocab)


def read_input(ray, inputs: tuple[str, list[tuple[str, str]]], keys: list[str], column: str, vocab: Vocab,
               rows: int):
    """The input (``list_inputs``' (kind, files)) as a Dataset with a ``name`` column and its ``keys``:
    text files and tables a read task per file (every line or row, numbered; empty ones too, for the
    writer to count), in blocks of ``rows`` from each file's first; or Parquet's columns."""
    kind, files = inputs
    if kind != "parquet":
        items = [{"path": shown, "uri": uri} for shown, uri in files]
        task, kwargs = (text_blocks, {}) if kind == "text" else \
            (table_blocks, {"column": column, "id_column": None if keys == ["path", "row"] else keys[0]})
        return ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            task, fn_kwargs=dict(vocab=vocab.to_dict(), rows=rows, **kwargs), batch_size=1,
            batch_format="pyarrow", num_cpus=IO_CPUS)
    ds = ray.data.read_parquet([uri for _, uri in files], num_cpus=IO_CPUS)
    ds = ds.select_columns(list(dict.fromkeys(keys + [column])))
    return ds.rename_columns({column: "name"}) if column != "name" else ds


def table_keys(files: list[tuple[str, str]], id_column: str | None, column: str | None) -> list[str]:
    """The key columns of a CSV, TSV or JSONL input (``id_column``, else path and row), after opening
    every file's header (``tables.Table.open``: the columns are there): ``score_files``' arguments."""
    for _, uri in files:
        Table.open(uri.removeprefix("file://"), column, id_column)
    if id_column is None:
        return ["path", "row"]
    check_id_column(id_column, column)
    return [id_column]


def check_id_column(id_column: str, column: str | None) -> None:
    if id_column in ("name", *SCORE_COLUMNS) and id_column != column:
        raise ArgumentError("score_files", "id_column", f"{id_column!r}: the output has a column {id_column!r} of its "
                            f"own (name, {', '.join(SCORE_COLUMNS)}): rename the id column")


def parquet_keys(files: list[tuple[str, str]], id_column: str | None, column: str) -> list[str]:
    """The key columns of a Parquet input (``id_column``, unless it is the column of names), after
    checking both columns in the first file's schema: ``score_files``' arguments."""
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    if id_column is None:
        raise ArgumentError("score_files", "id_column", "must name a column for Parquet input: the one that joins "
                            "the scores back to the input's rows (the column of names itself where names are unique)")
    fs, path = pafs.FileSystem.from_uri(files[0][1])
    schema = pq.read_schema(path, filesystem=fs)
    there = ", ".join(schema.names)[:200]
    for argument, col in (("id_column", id_column), ("column", column)):
        if col not in schema.names:
            raise ArgumentError("score_files", argument, f"{col!r}: no such column in {files[0][0]}; its columns: {there}")
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise ArgumentError("score_files", "column", f"{column!r}: the column holds {kind} in {files[0][0]}, "
                            "not strings")
    check_id_column(id_column, column)
    return [] if id_column == column else [id_column]
