"""Score a batch of names, for anything that maps a function over batches: Ray Data's ``map_batches``,
a loop over pandas chunks, any pool of processes.

    scorer = BatchScorer("runs/demo")                       # picklable; the model loads on first use
    scorer(pd.DataFrame({"name": ["emma", "x1", None]}))    # + nats, targets, nats_per_target, percentile, error

A batch is a pandas DataFrame, a pyarrow Table or a dict of numpy arrays with a column of names; it
comes back of the same kind with the columns added, a row per row, in order:

    nats            float64: the name's negative log-likelihood (its characters and the end token)
    targets         int: characters + 1 (the end token)
    nats_per_target float64: nats / targets (the end token a target too)
    percentile      float64, 0-100: the share of the run's reference names (held-out names of about
                    this length) that are less unusual than this one (``ScoreResult.percentile``);
                    null for a run without a percentile table (``LoadedRun.no_reference``)
    error           str: why the row is not a name, ``score_lines``' reason (the command line's after
                    ``FILE:LINE:``; "empty name" for "", "missing name (null)" for a missing value)
    char_nats       (with ``per_char``) list of float64: the nats of each character, then the end's

A value is scored as a line of a list is: without whitespace at either end ("emma\n" is "emma"; the
``name`` column is left as it came). A row that is not a name keeps its place: its scores are null
(NaN in a float column of pandas or numpy, 0 ``targets`` in numpy, which has no null integers) and
``error`` says why; a scored row has a null ``error``. A batch may come with an ``error`` column of
its own (a reader's, e.g. for a line that was not UTF-8, which Arrow cannot hold as a string): a row
with an error there keeps it and is not scored. The numbers are ``score_lines``' (the same pass, the
same order of operations).

The model loads lazily, once per process and run (a module-level cache), so Ray (or any pool) may
pickle the scorer to every worker for free. Each call runs on the worker's threads, one per CPU that
Ray allotted to it (else one), and puts the process's setting back afterwards.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import replace

import numpy as np

from ..store.loaded import LoadedRun, load_model
from ..data import EMPTY_NAME
from ..errors import DataError
from ..inference.scoring import Scorer
from ..inference.streaming import Stream, scored_lines

NULL = "missing name (null)"  # the error of a missing value (None, NaN, pandas' NA), as EMPTY_NAME is a blank one's
_LOADED: dict[tuple[str | None, str], LoadedRun] = {}  # (run, device) -> the model, once per process
_SCORERS: dict[tuple, Scorer] = {}  # (id of a loaded run, lowercase, unknown, threads) -> its scorer


def allotted_cpus() -> int | None:
    """The CPUs Ray allotted to this worker (rounded, at least 1), or None outside a Ray worker."""
    ray = sys.modules.get("ray")  # never imported here: only where a Ray job already did
    if ray is None or not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        return None  # not in a Ray worker (e.g. the driver)
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    return max(1, round(cpus)) if cpus else None


def is_null(value) -> bool:
    return value is None or value is getattr(sys.modules.get("pandas"), "NA", None) or (
        isinstance(value, float) and math.isnan(value))


class BatchScorer:
    """A callable that adds a run's scores to a batch of names (see the module's docstring).

    run: a run folder or checkpoint, readable where the scorer runs; None: the bundled model (each
    worker's own installed copy). column: the column of names.
    device: "cpu", "cuda" or "auto". lowercase: fold case before checking (``score_lines``'); unknown:
    "score" or "error", a character outside the run's vocabulary (``LoadedRun.reading``).
    per_char: also ``char_nats``. The torch threads of a call: Ray's CPUs for the worker, else 1
    (decided where the process builds its ``Scorer``, once).
    """

    def __init__(self, run: str | os.PathLike | None = None, column: str = "name", device: str = "cpu",
                 lowercase: bool = False, per_char: bool = False, unknown: str = "score"):
        self.run, self.column, self.device = None if run is None else os.fspath(run), column, device
        self.lowercase, self.per_char, self.unknown = lowercase, per_char, unknown

    def kwargs(self) -> dict:
        """The constructor's arguments: ``type(s)(**s.kwargs())`` is the same scorer."""
        return dict(run=self.run, column=self.column, device=self.device, lowercase=self.lowercase,
                    per_char=self.per_char, unknown=self.unknown)

    def load(self) -> LoadedRun:
        """The run's model on ``device``, loaded once per process."""
        key = (None if self.run is None else os.path.abspath(self.run), self.device)
        if key not in _LOADED:
            _LOADED[key] = load_model(self.run, device=self.device)
        return _LOADED[key]

    def scorer(self) -> Scorer:
        """The run's ``Scorer`` in this process, built once: the worker's threads (Ray's CPUs for it, else 1)."""
        loaded, threads = self.load(), allotted_cpus() or 1  # a reused worker process may get other CPUs
        key = (id(loaded), self.lowercase, self.unknown, threads)
        if key not in _SCORERS:
            vocab = loaded.reading(self.lowercase, self.unknown)
            _SCORERS[key] = replace(loaded.scorer(vocab=vocab), threads=threads)
        return _SCORERS[key]

    def __call__(self, batch):
        names = column_values(batch, self.column)
        given = column_values(batch, "error") if "error" in columns(batch) else None
        return with_columns(batch, self.score(names, given))

    def score(self, names: list, given: list | None = None) -> dict[str, np.ndarray]:
        """``names`` (str or null) -> the output columns as numpy arrays, NaN/0/None where not scored.
        given: errors that come with the rows (None where none); those rows are not scored."""
        n = len(names)
        nats, targets, percentile = np.full(n, np.nan), np.zeros(n, dtype=np.int64), np.full(n, np.nan)
        errors = np.array([None if is_null(e) else e for e in given] if given else [None] * n, dtype=object)
        chars = np.full(n, None, dtype=object)
        lines = []  # what score_lines sees: "" (not scored) for a null or a row with an error
        for i, value in enumerate(names):
            if errors[i] is None and is_null(value):
                errors[i] = NULL
            lines.append("" if errors[i] else value)
        for part in scored_lines(self.scorer(), lines, Stream(max(n, 1), skip_invalid=True, per_char=self.per_char)):
            rows = np.asarray(part.lines, dtype=np.int64) - 1  # score_lines numbers lines from 1
            nats[rows], targets[rows] = part.scores.nll.numpy(), part.scores.n_targets.numpy()
            if part.scores.percentile is not None:
                percentile[rows] = part.scores.percentile.numpy()
            for line, problem in part.invalid:
                errors[line - 1] = problem
            for j, row in enumerate(rows if self.per_char else []):
                chars[row] = part.scores.chars(j).numpy()
        errors[(targets == 0) & (errors == None)] = EMPTY_NAME  # noqa: E711 -- elementwise
        out = dict(nats=nats, targets=targets, nats_per_target=nats / np.maximum(targets, 1), percentile=percentile,
                   error=errors)
        return {**out, "char_nats": chars} if self.per_char else out


def columns(batch) -> list[str]:
    return batch.column_names if hasattr(batch, "column_names") else list(batch.keys())


def column_values(batch, column: str) -> list:
    """The values of ``batch[column]`` as a Python list (str or null), or a ``DataError`` naming the
    column and the first value that is neither."""
    if column not in columns(batch):
        raise DataError(f"no column {column!r} in the batch (its columns: {', '.join(map(str, columns(batch)))})"[:300])
    values = batch[column]
    values = values.to_pylist() if hasattr(values, "to_pylist") else list(values)
    for i, v in enumerate(values):
        if not (isinstance(v, str) or is_null(v)):
            raise DataError(f"column {column!r}, row {i + 1}: a {type(v).__name__}, not a str: {v!r}"[:200])
    return values


SCORE_COLUMNS = ("nats", "targets", "nats_per_target", "percentile", "error", "char_nats")  # what a call adds (or replaces)


def with_columns(batch, scores: dict[str, np.ndarray]):
    """``batch`` (a pyarrow Table, pandas DataFrame or dict of numpy arrays) with ``scores`` added,
    nulls where not scored in Arrow and pandas."""
    scored = scores["error"] == None  # noqa: E711 -- elementwise, on an object array
    if hasattr(batch, "append_column"):  # pyarrow.Table
        import pyarrow as pa

        types = dict(nats=pa.float64(), targets=pa.int64(), nats_per_target=pa.float64(), percentile=pa.float64(),
                     error=pa.string(), char_nats=pa.list_(pa.float64()))
        batch = batch.drop_columns([c for c in scores if c in batch.column_names])
        for name, values in scores.items():
            mask = None if name in ("error", "char_nats") else np.isnan(values) if name == "percentile" else ~scored
            values = [None if v is None else v.tolist() for v in values] if name == "char_nats" else values
            batch = batch.append_column(name, pa.array(values, type=types[name], mask=mask))
        return batch
    if hasattr(batch, "assign"):  # pandas.DataFrame
        import pandas as pd

        targets = pd.arrays.IntegerArray(scores["targets"], ~scored)
        return batch.assign(**{**scores, "targets": targets})
    return {**batch, **scores}
