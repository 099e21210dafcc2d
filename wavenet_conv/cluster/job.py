"""Score lists of any size on a Ray cluster: ``score_files`` for files (the job behind the command
line's ``score`` on Ray), and ``score_dataset`` for a Ray Dataset you already hold (``pip install
'ray[data]' aiohttp``; Ray is imported only here, and only when used).

    ds = ray.data.read_parquet("s3://bucket/users/")                  # any Dataset with a "name" column
    score_dataset(ds, "runs/demo", workers=4).write_parquet("s3://bucket/scores/")   # in ds's order
    counts = score_files("runs/demo", "lists/", "s3://bucket/scores/", workers=4)   # what was written

The job reads the input (text files, one name a line, with the local command's reader; or Parquet),
scores it with ``BatchScorer`` on a pool of ``workers`` actors, each holding the model once, and writes
a Parquet dataset, a file per write task, with one row per non-empty input line (per row for Parquet):

    path, line      text input: the file (as listed from the input) and its line number, from 1, as
                    ``score_lines`` numbers lines: the key to join back to the input
    <id column>     Parquet input: the column named by ``id_column``, carried through as the key
    name, nats, targets, nats_per_target, percentile, error (and char_nats): as ``BatchScorer`` gives them

``score_files``' rows come in no particular order (as the workers finish): join on the key
(``score_dataset``'s come in the input's order). A name is its line without whitespace at either
end; blank lines of text input are counted, not written (the local command skips them too); a line
that is not a name is a row with its reason in ``error``, and unless ``skip_invalid`` the job then
raises a ``DataError`` naming the first such line, once every row is written: as ``score_lines``
stops at its first bad line, but "first" is the smallest (path, line) of all the job's bad lines (for
Parquet the smallest key), whatever order the workers took them in. The scorer takes a text file in blocks of
``chunk`` lines from its first line, as ``score_lines`` takes ``chunk`` lines (65,536 both by
default), so at the same thread count (``cpus_per_worker``: 1 by default) its numbers are the local
command's to the last bit (other blocks or thread counts may change a few float32 sums in their last
bits, ~1e-7). ``score_files`` returns the ``Counts`` of what was written and skipped.

Faults: a scoring actor that dies (killed, out of memory, its node lost) is restarted and its batches
retried, and so are read and write tasks: Ray Data's own defaults for a pool of actors
(``max_restarts=-1``, ``max_task_retries=-1``) and for tasks (``max_retries=-1``), which Ray 2.60 sets
itself and lets a caller change only through arguments it deprecates. A retried write task writes
the same file name again, so nothing is written twice and nothing is lost (tested by killing a
worker in the middle of a job).

Several machines: every worker reads the run folder (a path; the bundled model: its own installed
copy) and the input and output (paths or URIs) itself, so they must be at the same path on every node
(a shared file system) or in an object store.

Ray's own noise: where ``score_files`` starts or joins Ray itself, it leaves out two lines of Ray's
that report no failure of the job: Ray's notice that a local cluster uses token authentication
(still on), and the core worker's error line that an actor "has constructor arguments in the object
store and max_restarts > 0" (Ray Data itself puts every actor pool's arguments there,
ray-project/ray#57733, and keeps them for the job: a killed actor still restarts). All else that Ray
writes passes.

Progress: every actor takes ``cpus_per_worker`` CPUs and each read or write task ``IO_CPUS``, so a
local cluster of ``workers * cpus_per_worker + 1`` logical CPUs always has room for a reader and a
writer beside the actors (with no CPU left for them, Ray Data waits forever); ``address`` joins a
cluster that must have as many (checked before any work).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import threading
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterator

from .scorer import BatchScorer
from ..store.loaded import load_model
from .. import errors
from ..errors import ArgumentError, ConfigError, DataError, InputError, MissingExtraError, install_hint
from .counts import Counts
from .reader import IO_CPUS, list_inputs, parquet_keys, read_input, table_keys
from ..validate import integer, positive_number

RAY_HINT = install_hint("ray")
WORKER_ERROR = re.compile(r"^wavenet_conv\.errors\.(\w+): (.+)$", re.M)  # a worker's error, in a traceback's text
BATCH = 65536  # lines per call of a scoring actor: score_lines' chunk by default, so the same numbers
AUTH_NOTICE = "Token authentication is enabled for this Ray cluster"  # Ray's, on starting a local cluster
ACTOR_NOTICE = re.compile(rb"core_worker\.cc:\d+: Actor .* has constructor arguments in the object store and "
                          rb"max_restarts > 0")  # the driver's, for each actor of a pool (see the docstring)


def import_ray():
    """``ray`` with Ray Data, or a ``MissingExtraError`` that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingExtraError(f"scoring on Ray needs Ray Data, which is not installed: {RAY_HINT}") from None
    return ray


def check_pool(who: str, workers, cpus_per_worker, gpus_per_worker, chunk) -> tuple:
    """The actor pool's arguments, checked: (workers, cpus_per_worker, gpus_per_worker, chunk)."""
    return (integer(who, "workers", workers, 1), integer(who, "cpus_per_worker", cpus_per_worker, 1),
            positive_number(who, "gpus_per_worker", gpus_per_worker) if gpus_per_worker else 0,
            integer(who, "chunk", chunk, 1))


def score_dataset(ds, scorer, workers: int = 1, cpus_per_worker: int = 1, gpus_per_worker: float = 0,
                  chunk: int = BATCH):
    """``ds`` (a Ray Dataset with a column of names) with the scores of its names added, a row per row.

    scorer: a ``BatchScorer``, or a run folder for ``BatchScorer(run)`` (on CUDA with GPUs; None: the
    bundled model). Scored on a pool of ``workers`` actors, each with ``cpus_per_worker`` CPUs (torch
    threads) and ``gpus_per_worker`` GPUs, loading the model once; an actor that dies is restarted and
    its batch retried (Ray Data's defaults). chunk: the names an actor scores at a time (``score_lines``').
    Lazy, like any Dataset: nothing runs until it is written or iterated.

    Rows come back in ``ds``'s order, every column of ``ds`` kept: compare with the input row by row
    (``zip``), or carry a key column of your own. The order is Ray Data's ``preserve_order``, set on a
    copy of ``ds``'s ``DataContext`` (the caller's other Datasets keep theirs): the work is the same,
    but a block that is done waits for the ones before it (``score_files``, keyed, does not wait).
    """
    pool = check_pool("score_dataset", workers, cpus_per_worker, gpus_per_worker, chunk)
    ray = import_ray()
    return in_order(score_blocks(ray, ds, scorer, pool))


def score_blocks(ray, ds, scorer, pool: tuple):
    """``score_dataset``'s Dataset in no particular order (as the actors finish), once its pool's
    arguments (workers, cpus_per_worker, gpus_per_worker, chunk) are checked: a job keyed by its rows."""
    workers, cpus_per_worker, gpus_per_worker, chunk = pool
    if not isinstance(scorer, BatchScorer):
        scorer = BatchScorer(scorer, device="cuda" if gpus_per_worker else "cpu")
    ds = ds.map_batches(slices, fn_kwargs=dict(rows=chunk), batch_size=None, batch_format="pyarrow",
                        num_cpus=IO_CPUS)  # an actor takes a block at a time: small blocks keep every actor busy
    return ds.map_batches(type(scorer), fn_constructor_kwargs=scorer.kwargs(), batch_size=chunk,
                          batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers),
                          num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None)


def in_order(ds):
    """``ds`` run in its input's order: ``preserve_order`` on a copy of its ``DataContext`` (Datasets
    made from one another share theirs)."""
    with warnings.catch_warnings():  # copying a DataContext sets its deprecated fields again, warning of each
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.data\.context")
        ds = type(ds).copy(ds, _deep_copy=True)
    ds.context.execution_options.preserve_order = True
    return ds


def slices(table, rows: int) -> Iterator:
    """``table`` cut into tables of at most ``rows`` rows (views, no copy)."""
    for start in range(0, len(table), rows):
        yield table.slice(start, rows)


# ----------------------------------------------------------------------------------------------
# the job


def check_output(output: str):
    """(file system, path) of the folder or URI ``output``, which must be new or empty: the rows of
    two jobs never mix."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(output if "://" in output else os.path.abspath(output))
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        raise ArgumentError("score_files", "output", f"{output}: is a file, not a folder")
    if info.type == pafs.FileType.Directory and fs.get_file_info(pafs.FileSelector(root)):
        raise ArgumentError("score_files", "output", f"{output}: not empty: give a new or empty folder")
    return fs, root


def check_address(address: str) -> None:
    """An ``ArgumentError`` unless ``address`` is "auto" or [ray://]HOST:PORT where something answers
    within 5 s (Ray itself would retry for minutes)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ArgumentError("score_files", "address", f"must be auto, HOST:PORT or ray://HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise ArgumentError("score_files", "address", f"{address}: nothing answers there ({e.strerror or e})") from None


def start_ray(ray, address: str | None, cpus: int) -> bool:
    """Join the cluster at ``address``, or start a local one of ``cpus`` logical CPUs (no dashboard);
    nothing when Ray is already initialized in this process. True when this call connected."""
    if ray.is_initialized():
        return False
    if address:
        check_address(address)
        try:
            ray.init(address=address, logging_level="WARNING")
        except ConnectionError as e:  # "auto" with no cluster running, say
            raise ArgumentError("score_files", "address", f"{address}: {str(e).splitlines()[0][:200]}") from None
    else:
        with dropped_records(logging.getLogger("ray"), AUTH_NOTICE):
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
    return True


@contextmanager
def dropped_records(logger: logging.Logger, text: str):
    """The records whose message holds ``text`` left out by ``logger``'s handlers (which its child
    loggers' records reach too), the rest passed on."""
    handlers = list(logger.handlers)
    drop = lambda record: text not in record.getMessage()  # noqa: E731 -- a filter may be a callable
    for handler in handlers:
        handler.addFilter(drop)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(drop)


@contextmanager
def dropped_lines(pattern: re.Pattern, fd: int = 2):
    """What this process writes to ``fd`` (stderr; Ray's C++ code too) passed on through a pipe, a line at
    a time, but the lines that match ``pattern`` (bytes). Not for a block that starts processes: they
    would hold the pipe."""
    if sys.stderr:
        sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no such file descriptor: nothing to pass on
        yield
        return
    read, write = os.pipe()
    os.dup2(write, fd, inheritable=False)
    os.close(write)

    def pump():
        with open(read, "rb") as lines:
            for line in lines:
                rest = b"" if pattern.search(line) else memoryview(line)
                try:
                    while rest:
                        rest = rest[os.write(saved, rest):]
                except OSError:  # the real stderr is gone: drain the pipe all the same, or its writers block
                    pass

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        if sys.stderr:
            sys.stderr.flush()
        os.dup2(saved, fd)  # the pipe's last writer gone: the pump reads to its end and stops
        thread.join(timeout=10)
        if not thread.is_alive():
            os.close(saved)


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


def input_error(e: BaseException) -> InputError | None:
    """The library's ``InputError`` behind ``e``, a worker's error as Ray raises it again in the driver,
    or None (a bug). It is in ``e``'s chain (``cause``, ``__cause__``, ``__context__``), or, where Ray
    Data kept only the worker's traceback as text, in its last line ``wavenet_conv.errors.KIND: ...``."""
    chain, seen = [], set()
    while e is not None and id(e) not in seen:
        if isinstance(e, InputError):
            return e
        chain.append(e)
        seen.add(id(e))
        e = getattr(e, "cause", None) or e.__cause__ or e.__context__
    for e in chain:
        found = WORKER_ERROR.findall(str(e))
        if found:
            kind, message = found[-1]
            kind = getattr(errors, kind, None)
            if isinstance(kind, type) and issubclass(kind, InputError):
                return as_error(kind, message)
    return None


def as_error(kind: type, message: str) -> InputError:
    """The error of ``kind`` that ``str()``'s to ``message``; an ``ArgumentError`` rebuilt from its
    parts (``who: argument problem``), for the command line to name its option."""
    if kind is not ArgumentError:
        return kind(message)
    parts = re.fullmatch(r"(\w+): (\w+) (.+)", message, re.S)
    return ArgumentError(*parts.groups()) if parts else ConfigError(message)


def score_files(scorer, input: str, output: str, workers: int = 1, cpus_per_worker: int = 1,
                gpus_per_worker: float = 0, address: str | None = None, id_column: str | None = None,
                column: str | None = None, chunk: int = BATCH, skip_invalid: bool = False,
                min_percentile: float | None = None) -> Counts:
    """Score the names of ``input`` (a text file, folder, glob or URI of text files, of CSV, TSV or JSONL
    tables (local or mounted paths), or of Parquet) with
    ``scorer`` (a ``BatchScorer``, a run folder, or None: the bundled model) on Ray, and write them as a Parquet dataset at
    ``output`` (a new or empty folder or URI); returns the ``Counts`` of what was written and skipped.

    address: a cluster to join (None: a local one, started for the job and shut down after; or the
    one this process already initialized). id_column, column: a table's key and names (Parquet's
    column default "name"; a CSV's its only column; rows are keyed by path and row without id_column). chunk: the lines scored at a time, from each file's first line (``score_lines``').
    skip_invalid: False (as ``score_lines``): a line (or Parquet row) that is not a name is a
    ``DataError`` naming the first, the one of the smallest (path, line) or key, raised once every row
    is written; True: its row with its reason is all. Everything that can be checked is checked before
    the cluster starts; files that Arrow cannot read together (a column's type differs, say) are a
    ``DataError``. min_percentile: write only the names at or above this percentile (0-100; the run
    needs its percentiles, ``LoadedRun.reference``): the rows of the lines that are not names are
    then not written either, only counted; ``Counts.rows`` is the names kept.
    """
    pool = check_pool("score_files", workers, cpus_per_worker, gpus_per_worker, chunk)
    ray = import_ray()
    import pyarrow as pa

    try:
        job = Job(input, output, address, id_column, column, min_percentile)
        counts, first, keys = run_job(ray, scorer, job, pool)
    except pa.ArrowException as e:  # files that disagree, e.g. on a column's type
        raise DataError(f"{input}: {str(e).splitlines()[0][:200]}") from None
    if first is not None and not skip_invalid:
        raise invalid_error(first, keys or [column or "name"], input, output, counts, min_percentile is None)
    return counts


def invalid_error(first: tuple, keys: list[str], input: str, output: str, counts: Counts,
                  written: bool = True) -> DataError:
    """The ``DataError`` of a job that wrote ``counts.invalid`` rows that are not names, ``first`` (the
    writer's ``first_invalid``) the one of the smallest key: ``FILE:LINE: reason`` as the local command
    names a line, or for Parquet ``INPUT: KEY_COLUMN VALUE: reason``; ``written``: whether their rows
    were written (not with ``min_percentile``)."""
    _, values, reason = first
    text = keys == ["path", "line"]
    where = f"{values[0]}:{values[1]}" if text else f"{values[0]}: row {values[1]}" if keys == ["path", "row"] \
        else f"{input}: {keys[0]} {values[0]!r}"
    n = counts.invalid
    held = f"{output} holds every row, each bad one with its reason in error" if written else \
        f"{output} holds only the names kept by min_percentile"
    return DataError(f"{where}: {reason} (first of {n:,} bad {'line' if text else 'row'}{'s' * (n != 1)}; {held})")


@dataclass(frozen=True)
class Job:
    """What a ``score_files`` job reads and writes, and where it runs: its arguments of those names."""

    input: str
    output: str
    address: str | None = None
    id_column: str | None = None
    column: str | None = None
    min_percentile: float | None = None


def run_job(ray, scorer, job: Job, pool: tuple) -> tuple[Counts, tuple | None, list[str]]:
    """``score_files`` once its pool's arguments (workers, cpus_per_worker, gpus_per_worker, chunk)
    are checked and Ray is imported: (the counts, the writer's ``first_invalid``, the key columns)."""
    workers, cpus_per_worker, gpus_per_worker, chunk = pool
    input, output, address, id_column, column, min_percentile = (
        job.input, job.output, job.address, job.id_column, job.column, job.min_percentile)
    if not isinstance(scorer, BatchScorer):
        scorer = BatchScorer(scorer, device="cuda" if gpus_per_worker else "cpu")
    loaded = load_model(scorer.run)  # a run that does not load is an error before any work
    vocab = loaded.reading(scorer.lowercase, scorer.unknown)
    check_percentiles(loaded, scorer.run, min_percentile)
    kind, files = list_inputs(input)
    if kind == "text" and (id_column or column):
        raise ArgumentError("score_files", "id_column" if id_column else "column",
                            "is for a table (CSV, TSV, JSONL or Parquet): text input's key is path and line")
    keys = ["path", "line"] if kind == "text" else parquet_keys(files, id_column, column or "name") \
        if kind == "parquet" else table_keys(files, id_column, column)
    fs, root = check_output(output)
    from .writer import ScoreSink

    started = start_ray(ray, address, workers * cpus_per_worker + 1)
    try:
        check_resources(ray, workers, cpus_per_worker, gpus_per_worker)
        fs.create_dir(root, recursive=True)
        ds = read_input(ray, (kind, files), keys, column if kind != "parquet" else column or "name", vocab, chunk)
        ds = score_blocks(ray, ds, type(scorer)(**{**scorer.kwargs(), "column": "name"}), pool)
        sink = ScoreSink(output if "://" in output else os.path.abspath(output), keys, drop_empty=kind != "parquet",
                         min_percentile=min_percentile)
        with dropped_lines(ACTOR_NOTICE) if started else nullcontext():  # Ray's noise, in a session of ours
            write(ds, sink)
        return sink.counts, sink.first_invalid, keys
    finally:
        if started:
            ray.shutdown()


def check_percentiles(loaded, run, min_percentile: float | None) -> None:
    """The run's percentile table made here, before the workers load it (an older run's, written into
    its checkpoint where it can be: ``LoadedRun.reference``); with ``min_percentile`` (0-100), an
    ``ArgumentError`` where there is none."""
    if min_percentile is None:
        loaded.reference  # noqa: B018 -- made (and saved) once, here
        return
    if not (isinstance(min_percentile, (int, float)) and 0 <= min_percentile <= 100):
        raise ArgumentError("score_files", "min_percentile", f"must be a number from 0 to 100, got {min_percentile!r}")
    if loaded.reference is None:
        raise ArgumentError("score_files", "min_percentile", f"needs the run's percentiles, and "
                            f"{run if run is not None else 'the bundled model'} has none: {loaded.no_reference}")


def write(ds, sink) -> None:
    """``ds`` written to ``sink``; a worker's ``InputError`` raised as itself, not in Ray's wrappers."""
    with warnings.catch_warnings():  # Ray counts one input before the blocks are cut: not so, see slices
        warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
        try:
            ds.write_datasink(sink, ray_remote_args={"num_cpus": IO_CPUS})
        except Exception as e:  # a worker's InputError comes back wrapped (RayTaskError, UserCodeException)
            cause = input_error(e)
            if cause is None:
                raise
            raise cause from None
