"""Score lists of any size on a Ray cluster: ``score_files`` for files (the job behind the command
line's ``score`` on Ray), and ``score_dataset`` for a Ray Dataset you already hold (``pip install
'wavenet_conv[ray]'``; Ray is imported only here, and only when used).

    ds = ray.data.read_parquet("s3://bucket/users/")                  # any Dataset with a "name" column
    score_dataset(ds, "runs/demo", workers=4).write_parquet("s3://bucket/scores/")
    counts = score_files("runs/demo", "lists/", "s3://bucket/scores/", workers=4)   # what was written

The job reads the input (text files, one name a line, with the local command's reader; or Parquet),
scores it with ``BatchScorer`` on a pool of ``workers`` actors, each holding the model once, and writes
a Parquet dataset, a file per write task, with one row per non-empty input line (per row for Parquet):

    path, line      text input: the file (as listed from the input) and its line number, from 1, as
                    ``score_lines`` numbers lines: the key to join back to the input
    <id column>     Parquet input: the column named by ``id_column``, carried through as the key
    name, nats, targets, nats_per_target, error (and char_nats): as ``BatchScorer`` gives them

Rows come in no particular order: join on the key. A name is its line without whitespace at either
end; blank lines of text input are counted, not written (the local command skips them too); a line
that is not a name is a row with its reason in ``error``. The scorer takes a text file in blocks of
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

Several machines: every worker reads the run folder (a path) and the input and output (paths or URIs)
itself, so they must be at the same path on every node (a shared file system) or in an object store.

Progress: every actor takes ``cpus_per_worker`` CPUs and each read or write task ``IO_CPUS``, so a
local cluster of ``workers * cpus_per_worker + 1`` logical CPUs always has room for a reader and a
writer beside the actors (with no CPU left for them, Ray Data waits forever); ``address`` joins a
cluster that must have as many (checked before any work).
"""

from __future__ import annotations

import os
import re
import socket
import warnings
from typing import Iterator

from .scorer import BatchScorer
from ..store.checkpoint import load_model
from .. import errors
from ..errors import ArgumentError, ConfigError, DataError, InputError, MissingExtraError
from .counts import Counts
from .reader import IO_CPUS, list_inputs, parquet_keys, read_input
from ..validate import integer, positive_number

RAY_HINT = "pip install 'wavenet_conv[ray]'"
WORKER_ERROR = re.compile(r"^wavenet_conv\.errors\.(\w+): (.+)$", re.M)  # a worker's error, in a traceback's text
BATCH = 65536  # lines per call of a scoring actor: score_lines' chunk by default, so the same numbers


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

    scorer: a ``BatchScorer``, or a run folder for ``BatchScorer(run)`` (on CUDA with GPUs). Scored on
    a pool of ``workers`` actors, each with ``cpus_per_worker`` CPUs (torch threads) and
    ``gpus_per_worker`` GPUs, loading the model once; an actor that dies is restarted and its batch
    retried (Ray Data's defaults). chunk: the names an actor scores at a time (``score_lines``').
    Lazy, like any Dataset: nothing runs until it is written or iterated.
    """
    workers, cpus_per_worker, gpus_per_worker, chunk = check_pool(
        "score_dataset", workers, cpus_per_worker, gpus_per_worker, chunk)
    ray = import_ray()
    if not isinstance(scorer, BatchScorer):
        scorer = BatchScorer(scorer, device="cuda" if gpus_per_worker else "cpu")
    ds = ds.map_batches(slices, fn_kwargs=dict(rows=chunk), batch_size=None, batch_format="pyarrow",
                        num_cpus=IO_CPUS)  # an actor takes a block at a time: small blocks keep every actor busy
    return ds.map_batches(type(scorer), fn_constructor_kwargs=scorer.kwargs(), batch_size=chunk,
                          batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers),
                          num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None)


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
                name_column: str | None = None, chunk: int = BATCH) -> Counts:
    """Score the names of ``input`` (a text file, folder, glob or URI of text files, or Parquet) with
    ``scorer`` (a ``BatchScorer`` or a run folder) on Ray, and write them as a Parquet dataset at
    ``output`` (a new or empty folder or URI); returns the ``Counts`` of what was written and skipped.

    address: a cluster to join (None: a local one, started for the job and shut down after; or the
    one this process already initialized). id_column, name_column: Parquet input's key and names
    ("name"). chunk: the lines scored at a time, from each file's first line (``score_lines``').
    Everything that can be checked is checked before the cluster starts; files that Arrow cannot
    read together (a column's type differs, say) are a ``DataError``.
    """
    pool = check_pool("score_files", workers, cpus_per_worker, gpus_per_worker, chunk)
    ray = import_ray()
    import pyarrow as pa

    try:
        return run_job(ray, scorer, input, output, pool, address, id_column, name_column)
    except pa.ArrowException as e:  # files that disagree, e.g. on a column's type
        raise DataError(f"{input}: {str(e).splitlines()[0][:200]}") from None


def run_job(ray, scorer, input: str, output: str, pool: tuple, address: str | None, id_column: str | None,
            name_column: str | None) -> Counts:
    """``score_files`` once its pool's arguments (workers, cpus_per_worker, gpus_per_worker, chunk)
    are checked and Ray is imported."""
    workers, cpus_per_worker, gpus_per_worker, chunk = pool
    if not isinstance(scorer, BatchScorer):
        scorer = BatchScorer(scorer, device="cuda" if gpus_per_worker else "cpu")
    vocab = load_model(scorer.run).vocab  # a run that does not load is an error before any work
    kind, files = list_inputs(input)
    if kind == "text" and (id_column or name_column):
        raise ArgumentError("score_files", "id_column" if id_column else "name_column",
                            "is for Parquet input: text input's key is path and line")
    keys = ["path", "line"] if kind == "text" else parquet_keys(files, id_column, name_column or "name")
    fs, root = check_output(output)
    from .writer import ScoreSink

    started = start_ray(ray, address, workers * cpus_per_worker + 1)
    try:
        check_resources(ray, workers, cpus_per_worker, gpus_per_worker)
        fs.create_dir(root, recursive=True)
        ds = read_input(ray, kind, files, keys, name_column or "name", vocab, scorer.lowercase, chunk)
        ds = score_dataset(ds, type(scorer)(**{**scorer.kwargs(), "column": "name"}), workers, cpus_per_worker,
                           gpus_per_worker, chunk)
        sink = ScoreSink(output if "://" in output else os.path.abspath(output), keys, drop_empty=kind == "text")
        with warnings.catch_warnings():  # Ray counts one input before the blocks are cut: not so, see slices
            warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
            try:
                ds.write_datasink(sink, ray_remote_args={"num_cpus": IO_CPUS})
            except Exception as e:  # a worker's InputError comes back wrapped (RayTaskError, UserCodeException)
                cause = input_error(e)
                if cause is None:
                    raise
                raise cause from None
        return sink.counts
    finally:
        if started:
            ray.shutdown()
