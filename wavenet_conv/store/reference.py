"""A stored run's percentile table (``inference.percentiles``): ``reference_of(checkpoint, path, model)``.

A run saved by this release keeps its table in its checkpoint (``Checkpoint.reference``, made from its
dev split at the end of training). A run saved without one (by an earlier release, or stopped before
its end) gets it on first use from its own names file, when that file is still where the run read it
and has the same bytes (its sha256, ``data.same_data``): the dev split is the lecture's split of it,
as the run made it. The table is kept in memory (one scoring pass of the dev split each time a run is
loaded); the checkpoint is not rewritten. Where the names file is missing or has changed,
there is no table: the reason, in a few words, comes instead. Nothing here raises.
"""

from __future__ import annotations

from pathlib import Path

from ..data import lecture_split, load_names, same_data, sha256_file
from ..errors import CheckpointError, DataError
from ..inference.percentiles import ReferenceTable, reference_table
from ..inference.scoring import Scorer
from .checkpoint import Checkpoint


def reference_of(ckpt: Checkpoint, path: Path, model) -> tuple[ReferenceTable | None, str | None]:
    """A loaded run's checkpoint (less its weights), its file and its model -> (its ``ReferenceTable``,
    None), or (None, why there is none: "its names file /data/x.txt is missing"). What
    ``LoadedRun.reference`` and ``no_reference`` give."""
    if ckpt.reference is not None:
        try:
            return ReferenceTable.from_dict(ckpt.reference), None
        except (KeyError, TypeError, ValueError) as e:
            return None, f"its percentile table cannot be read ({str(e)[:120]})"
    dev, why = dev_names(ckpt.data)
    if dev is None:
        return None, why
    return made(path, model, ckpt.vocab, dev), None


def dev_names(data: dict | None) -> tuple[list[str] | None, str | None]:
    """(the dev split of the names file a run's ``data`` record names, None), or (None, why not): no
    record, the file missing or unreadable, or its bytes changed since the run (its sha256)."""
    if not data or not data.get("path"):
        return None, "its checkpoint records no names file (a model saved without its run)"
    path = Path(data["path"])
    try:
        sha = sha256_file(path)
    except FileNotFoundError:
        return None, f"its names file {path} is missing"
    except OSError as e:
        return None, f"its names file {path} cannot be read ({e.strerror or e})"
    if not same_data(data, {"sha256": sha}):
        return None, f"its names file {path} has changed (sha256 {sha[:12]}…, the run's {str(data.get('sha256'))[:12]}…)"
    try:
        words = load_names(path)
    except DataError as e:
        return None, f"its names file {path} cannot be read ({str(e)[:120]})"
    dev = lecture_split(words)[1]
    return (dev, None) if dev else (None, f"its names file {path} has too few names for a dev split")


def made(path: Path, model, vocab, dev: list[str]) -> ReferenceTable:
    """The table of ``dev`` under the checkpoint's model as saved (read again from ``path``: on the CPU,
    one thread, the numbers training gives), kept in memory: the checkpoint is never rewritten (its
    bytes are a run's identity: a student distilled from the run checks its sha256 on resume)."""
    try:
        ckpt = Checkpoint.load(path)
    except CheckpointError:  # gone since it was loaded: the loaded model's
        return reference_table(Scorer.of(model, vocab, threads=1), dev)
    return reference_table(Scorer.of(ckpt.model(str(path)), ckpt.vocab, threads=1), dev)
