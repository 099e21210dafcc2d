"""Score lists of any size on a Ray cluster: the job behind ``wavenet-conv score RUN INPUT --engine ray
--output DIR``, and ``score_dataset`` for a Ray Dataset you already hold (``pip install
'wavenet_conv[ray]'``; Ray is imported only here, and only when used).

    ds = ray.data.read_parquet("s3://bucket/users/")                  # any Dataset with a "name" column
    score_dataset(ds, "runs/demo", workers=4).write_parquet("s3://bucket/scores/")

The job reads the input (text files, one name a line, with the local command's reader; or Parquet),
scores it with ``BatchScorer`` on a pool of ``workers`` actors, each holding the model once, and writes
a Parquet dataset, a file per write task, with one row per non-empty input line (per row for Parquet):

    path, line      text input: the file (as listed from INPUT) and its line number, from 1, as the
                    local command numbers lines: the key to join back to the input
    <id column>     Parquet input: the column named by ``id_column``, carried through as the key
    name, nats, targets, nats_per_char, error (and char_nats): as ``BatchScorer`` gives them

Rows come in no particular order: join on the key. A name is its line without whitespace at either
end; blank lines of text input are counted, not written (the local command skips them too); a line
that is not a name is a row with its reason in ``error``. The scorer takes a text file in blocks of
``batch_size`` lines from its first line, as the local command takes ``--chunk`` lines (65,536 both by
default), so at the same thread count (``--threads``: 1 per worker by default) its numbers are the
local command's to the last bit (other blocks or thread counts may change a few float32 sums in their
last bits, ~1e-7).

Faults: a scoring actor that dies (killed, out of memory, its node lost) is restarted and its batches
retried, and so are read and write tasks: Ray Data's own defaults for a pool of actors
(``max_restarts=-1``, ``max_task_retries=-1``) and for tasks (``max_retries=-1``), which Ray 2.60 sets
itself and lets a caller change only through arguments it deprecates. A retried write task writes
the same file name again, so nothing is written twice and nothing is lost (tested by killing a
worker in the middle of a job).

Several machines: every worker reads the run folder (a path) and the input and output (paths or URIs)
itself, so they must be at the same path on every node (a shared file system) or in an object store.

Progress: every actor takes ``cpus_per_worker`` CPUs and each read or write task ``IO_CPUS``, so a
local cluster of ``workers * cpus_per_worker + 1`` logical CPUs always has room for a reader and a
writer beside the actors (with no CPU left for them, Ray Data waits forever); ``--address`` joins a
cluster that must have as many (checked before any work).
"""

from __future__ import annotations

import glob
import logging
import os
import warnings
from itertools import islice
from typing import Iterator

from .batch import BatchScorer
from .checkpoint import load_model
from .data import Vocab, line_name, name_problem, read_lines
from .errors import ConfigError, DataError, MissingExtraError
from .validate import integer, positive_number

RAY_HINT = "pip install 'wavenet_conv[ray]'"
BATCH = 65536  # lines per call of a scoring actor: the local command's --chunk, so the same numbers
IO_CPUS = 0.5  # each read or write task: two of them fit in the one CPU kept beside the actors


def import_ray():
    """``ray`` with Ray Data, or a ``MissingExtraError`` that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingExtraError(f"--engine ray needs Ray Data, which is not installed: {RAY_HINT}") from None
    return ray


def score_dataset(ds, scorer, workers: int = 1, cpus_per_worker: int = 1, gpus_per_worker: float = 0,
                  batch_size: int = BATCH):
    """``ds`` (a Ray Dataset with a column of names) with the scores of its names added, a row per row.

    scorer: a ``BatchScorer``, or a run folder for ``BatchScorer(run)`` (on CUDA with GPUs). Scored on
    a pool of ``workers`` actors, each with ``cpus_per_worker`` CPUs (torch threads) and
    ``gpus_per_worker`` GPUs, loading the model once; an actor that dies is restarted and its batch
    retried (Ray Data's defaults). Lazy, like any Dataset: nothing runs until it is written or iterated.
    """
    workers = integer("score_files", "workers", workers, 1)
    cpus_per_worker = integer("score_files", "cpus_per_worker", cpus_per_worker, 1)
    if gpus_per_worker:
        gpus_per_worker = positive_number("score_files", "gpus_per_worker", gpus_per_worker)
    ray = import_ray()
    if not isinstance(scorer, BatchScorer):
        scorer = BatchScorer(scorer, device="cuda" if gpus_per_worker else "cpu")
    ds = ds.map_batches(slices, fn_kwargs=dict(rows=batch_size), batch_size=None, batch_format="pyarrow",
                        num_cpus=IO_CPUS)  # an actor takes a block at a time: small blocks keep every actor busy
    return ds.map_batches(type(scorer), fn_constructor_kwargs=scorer.kwargs(), batch_size=batch_size,
                          batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers),
                          num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None)


def slices(table, rows: int) -> Iterator:
    """``table`` cut into tables of at most ``rows`` rows (views, no copy)."""
    for start in range(0, len(table), rows):
        yield table.slice(start, rows)


# ----------------------------------------------------------------------------------------------
# the input: text files (a file, a folder, a glob) or Parquet


def list_inputs(spec: str) -> tuple[str, list[tuple[str, str]]]:
    """("text" or "parquet", [(the path as shown, the path or URI to open)]) of the files of ``spec``:
    a file, a folder (its files, hidden ones and ``_*`` left out), a glob (local) or a URI."""
    import pyarrow.fs as pafs

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
    kinds = {p.endswith(".parquet") for p in shown}
    if len(kinds) > 1:
        raise DataError(f"{spec}: holds both Parquet (.parquet) and other files: give one kind")
    files = [(p, p if "://" in p else os.path.abspath(p)) for p in shown]
    return ("parquet" if kinds == {True} else "text"), files


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


def text_blocks(batch, chars: str, lowercase: bool, rows: int) -> Iterator:
    """A read task: the lines of each file of ``batch`` (columns path, uri) as pyarrow tables of
    (path, line, name, error), ``rows`` lines at a time, with the local command's reader.
    chars, lowercase: the run's vocabulary and the scorer's case folding, for the reason of a line
    that was not UTF-8 (see ``lines_table``)."""
    import pyarrow.fs as pafs

    vocab = Vocab(chars)
    for shown, uri in zip(batch["path"].to_pylist(), batch["uri"].to_pylist()):
        fs, path = pafs.FileSystem.from_uri(uri)
        with fs.open_input_stream(path) as f:
            lines, first = read_lines(f), 1
            while block := list(islice(lines, rows)):
                yield lines_table(shown, first, block, vocab, lowercase)
                first += len(block)


def utf8(line: str) -> bool:
    """Whether ``line`` holds no byte that was not UTF-8 (which ``read_lines`` keeps as a surrogate)."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def lines_table(path: str, first: int, lines: list[str], vocab: Vocab, lowercase: bool):
    """(path, line, name, error) of ``lines`` numbered from ``first``, each name its line's ``line_name``
    (a blank line's is "", which the writer counts and drops). Arrow holds UTF-8 only, so a line
    that was not UTF-8 gets its reason in ``error`` here (the local command's: the same vocabulary and
    case folding) and U+FFFD for each bad byte in ``name``; the scorer keeps that error."""
    import pyarrow as pa

    lines, errors = [line_name(line) for line in lines], [None] * len(lines)  # a blank line's name is ""
    try:
        names = pa.array(lines, pa.string())
    except UnicodeEncodeError:  # some line was not UTF-8
        for i, line in enumerate(lines):
            if not utf8(line):
                errors[i] = name_problem(line.lower() if lowercase else line, vocab)
                lines[i] = line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        names = pa.array(lines, pa.string())
    return pa.table({"path": pa.array([path] * len(lines), pa.string()),
                     "line": pa.array(range(first, first + len(lines)), pa.int64()),
                     "name": names, "error": pa.array(errors, pa.string())})


def read_input(ray, kind: str, files: list[tuple[str, str]], keys: list[str], name_column: str, vocab: Vocab,
               lowercase: bool, rows: int):
    """The input as a Dataset with a ``name`` column and its ``keys``: text files a read task per file
    (every line, numbered; empty ones too, for the writer to count), in blocks of ``rows`` lines from
    each file's first, or Parquet's columns."""
    if kind == "text":
        items = [{"path": shown, "uri": uri} for shown, uri in files]
        return ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            text_blocks, fn_kwargs=dict(chars=vocab.chars, lowercase=lowercase, rows=rows), batch_size=1,
            batch_format="pyarrow", num_cpus=IO_CPUS)
    ds = ray.data.read_parquet([uri for _, uri in files], num_cpus=IO_CPUS)
    ds = ds.select_columns(list(dict.fromkeys(keys + [name_column])))
    return ds.rename_columns({name_column: "name"}) if name_column != "name" else ds


def parquet_keys(files: list[tuple[str, str]], id_column: str | None, name_column: str) -> list[str]:
    """The key columns of a Parquet input (``id_column``, unless it is the column of names), after
    checking both columns in the first file's schema."""
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    if id_column is None:
        raise ConfigError("Parquet input needs --id-column COL: the column that joins the scores back to the input's "
                          "rows (the column of names itself where names are unique)")
    fs, path = pafs.FileSystem.from_uri(files[0][1])
    schema = pq.read_schema(path, filesystem=fs)
    there = ", ".join(schema.names)[:200]
    for flag, col in (("--id-column", id_column), ("--name-column", name_column)):
        if col not in schema.names:
            raise DataError(f"{files[0][0]}: no column {col!r} ({flag}); its columns: {there}")
    kind = schema.field(name_column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{files[0][0]}: column {name_column!r} holds {kind}, not strings (--name-column)")
    if id_column == "name" != name_column:
        raise ConfigError("--id-column name: the output's column of names is 'name', and names come from "
                          f"{name_column!r}: rename the id column")
    return [] if id_column == name_column else [id_column]


# ----------------------------------------------------------------------------------------------
# the job


def check_output(output: str):
    """(file system, path) of the folder or URI ``output``, which must be new or empty: the rows of
    two jobs never mix."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(output if "://" in output else os.path.abspath(output))
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        raise DataError(f"--output {output}: is a file, not a folder")
    if info.type == pafs.FileType.Directory and fs.get_file_info(pafs.FileSelector(root)):
        raise DataError(f"--output {output}: not empty: give a new or empty folder")
    return fs, root


def start_ray(ray, address: str | None, cpus: int) -> bool:
    """Join the cluster at ``address``, or start a local one of ``cpus`` logical CPUs (no dashboard);
    nothing when Ray is already initialized in this process. True when this call connected."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level="WARNING")
    else:
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
    return True


def check_resources(ray, workers: int, cpus_per_worker: int, gpus_per_worker: float) -> None:
    """A ``ConfigError`` unless the cluster holds the actors and, beside them, a read and a write task."""
    have = ray.cluster_resources()
    cpus = workers * cpus_per_worker + 2 * IO_CPUS
    if have.get("CPU", 0) < cpus:
        raise ConfigError(f"the Ray cluster has {have.get('CPU', 0):g} CPUs: {workers} workers of {cpus_per_worker} "
                          f"CPU need {cpus:g} (one more for reading and writing, or the job waits forever)")
    if have.get("GPU", 0) < workers * gpus_per_worker:
        raise ConfigError(f"the Ray cluster has {have.get('GPU', 0):g} GPUs: {workers} workers of {gpus_per_worker:g} "
                          f"GPU need {workers * gpus_per_worker:g}")


def score_files(scorer, input: str, output: str, workers: int = 1, cpus_per_worker: int = 1,
                gpus_per_worker: float = 0, address: str | None = None, id_column: str | None = None,
                name_column: str | None = None, batch_size: int = BATCH):
    """Score the names of ``input`` (a text file, folder, glob or URI of text files, or Parquet) with
    ``scorer`` (a ``BatchScorer`` or a run folder) on Ray, and write them as a Parquet dataset at
    ``output`` (a new or empty folder or URI); returns the ``Counts`` of what was written and skipped.

    address: a cluster to join (None: a local one, started for the job and shut down after; or the
    one this process already initialized). id_column, name_column: Parquet input's key and names
    ("name"). Everything that can be checked is checked before the cluster starts.
    """
    workers = integer("score_files", "workers", workers, 1)
    cpus_per_worker = integer("score_files", "cpus_per_worker", cpus_per_worker, 1)
    if gpus_per_worker:
        gpus_per_worker = positive_number("score_files", "gpus_per_worker", gpus_per_worker)
    ray = import_ray()
    if not isinstance(scorer, BatchScorer):
        scorer = BatchScorer(scorer, device="cuda" if gpus_per_worker else "cpu")
    vocab = load_model(scorer.run).vocab  # a run that does not load is an error before any work
    kind, files = list_inputs(input)
    if kind == "text" and (id_column or name_column):
        raise ConfigError("--id-column and --name-column are for Parquet input: text input's key is path and line")
    keys = ["path", "line"] if kind == "text" else parquet_keys(files, id_column, name_column or "name")
    fs, root = check_output(output)
    from .ray_sink import ScoreSink

    started = start_ray(ray, address, workers * cpus_per_worker + 1)
    try:
        check_resources(ray, workers, cpus_per_worker, gpus_per_worker)
        fs.create_dir(root, recursive=True)
        ds = read_input(ray, kind, files, keys, name_column or "name", vocab, scorer.lowercase, batch_size)
        ds = score_dataset(ds, type(scorer)(**{**scorer.kwargs(), "column": "name"}), workers, cpus_per_worker,
                           gpus_per_worker, batch_size)
        sink = ScoreSink(output if "://" in output else os.path.abspath(output), keys, drop_empty=kind == "text")
        with warnings.catch_warnings():  # Ray counts one input before the blocks are cut: not so, see slices
            warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
            ds.write_datasink(sink, ray_remote_args={"num_cpus": IO_CPUS})
        return sink.counts
    finally:
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------------------------------
# wavenet-conv score --engine ray

RAY_OPTIONS = {"output": "--output", "address": "--address", "workers": "--workers",  # each None unless given
               "gpus_per_worker": "--gpus-per-worker", "id_column": "--id-column", "name_column": "--name-column"}


def check_engine_options(args) -> None:
    """A ``ConfigError`` for an option of ``wavenet-conv score`` that the chosen ``--engine`` does not take."""
    if args.engine == "local":
        given = [flag for name, flag in RAY_OPTIONS.items() if getattr(args, name) is not None]
        if given:
            raise ConfigError(f"{given[0]} is for --engine ray")
        return
    if args.output is None:
        raise ConfigError("--engine ray writes a Parquet dataset: give --output DIR")
    if args.file == "-":
        raise ConfigError("--engine ray reads files, not stdin: give INPUT (a file, folder, glob or URI)")
    if args.shard is not None or args.format != "table":
        raise ConfigError(f"{'--shard' if args.shard else '--format'} is for --engine local (Ray splits the work and "
                          "writes Parquet)")
    if args.device == "cuda" and not args.gpus_per_worker:
        raise ConfigError("--engine ray scores on CUDA with --gpus-per-worker X, not --device cuda")


def score_job(args):
    """``wavenet-conv score RUN INPUT --engine ray --output DIR``: the job, then a line on stdout that
    says what was written; returns the ``Counts`` for the closing line."""
    check_engine_options(args)
    import_ray()  # the missing extra, before any work
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # Ray Data's INFO lines: the closing line is ours
    gpus = args.gpus_per_worker or 0
    scorer = BatchScorer(args.run, device="cuda" if gpus else "cpu", lowercase=args.lowercase, per_char=args.chars)
    import pyarrow as pa

    try:
        cpus = args.threads if isinstance(args.threads, int) else 1  # each worker's CPUs: --threads N, or 1
        counts = score_files(scorer, args.file, args.output, workers=args.workers or 1, cpus_per_worker=cpus,
                             gpus_per_worker=gpus, address=args.address, id_column=args.id_column,
                             name_column=args.name_column)
    except pa.ArrowException as e:  # files that disagree, e.g. on a column's type
        raise DataError(f"{args.file}: {str(e).splitlines()[0][:200]}") from None
    if counts.names + counts.invalid == 0:
        raise DataError(f"{args.file}: no names in it")
    print(f"{args.output}: {counts.rows:,} rows written (Parquet; one per non-empty line, keyed by "
          f"{args.id_column or 'path and line'})")
    return counts
