"""A recipe with teachers: the teachers trained first, each an ordinary run in ``OUT/teacher-k``, then
the student, distilled from them (``distill``), in ``OUT``.

``train_recipe`` checks the data and any teacher folders already there (one that holds another run
is refused, naming it), claims ``OUT`` once for the whole recipe (new or empty, as any run folder;
with ``force`` a teacher already there with the same settings is kept), writes the plan
(``recipe.json``: the student's and each teacher's configs and the data file), then trains each
teacher and the student, which ``train`` gives the claimed folder. A finished teacher is reused and a
stopped one resumed, so that after a Ctrl-C (or a crash) ``resume_recipe(OUT)`` goes on where the
recipe stopped. Each teacher is a run like any other: it scores, samples and resumes alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..data import check_split
from ..errors import CheckpointError, ConfigError, RunFolderError
from ..models.config import TEXT_FIELDS, ModelConfig, TrainConfig
from ..store.checkpoint import CHECKPOINT_NAME, Checkpoint
from ..store.runfolder import LEFTOVER, LOCK_NAME, PLAN_NAME, RunFolder
from ..validate import paths
from .source import read_data
from .train import CHANGEABLE_ON_RESUME, TrainResult, length_of, resumed_config, train

TEACHER_PREFIX = "teacher-"
PLAN_FORMAT = "wavenet_conv.recipe"


@dataclass
class Plan:
    """What a recipe with teachers trains: the student's configs, each teacher's, and the data file."""

    model_config: ModelConfig
    config: TrainConfig
    teachers: list[tuple[ModelConfig, TrainConfig]]
    data: dict  # {"path", "sha256", "n_words"}

    def to_dict(self) -> dict:
        return {"format": PLAN_FORMAT, "model_config": self.model_config.to_dict(), "train_config": self.config.to_dict(),
                "teachers": [{"model_config": m.to_dict(), "train_config": t.to_dict()} for m, t in self.teachers],
                "data": self.data}

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        return cls(ModelConfig.from_dict(d["model_config"]), TrainConfig.from_dict(d["train_config"]),
                   [(ModelConfig.from_dict(t["model_config"]), TrainConfig.from_dict(t["train_config"])) for t in d["teachers"]],
                   d["data"])


def teacher_folder(out, k: int) -> Path:
    return Path(out) / f"{TEACHER_PREFIX}{k}"


def is_recipe_folder(path) -> bool:
    """Whether ``path`` is the folder of a recipe with teachers (it holds a plan)."""
    return (Path(path) / PLAN_NAME).is_file()


def write_plan(plan: Plan, folder: Path) -> None:
    """``recipe.json``, written atomically."""
    tmp = folder / f".{PLAN_NAME}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(plan.to_dict(), indent=2) + "\n")
    os.replace(tmp, folder / PLAN_NAME)


def read_plan(folder) -> Plan:
    path = Path(folder) / PLAN_NAME
    try:
        d = json.loads(path.read_text())
        if d.get("format") != PLAN_FORMAT:
            raise ValueError("not a recipe plan")
        return Plan.from_dict(d)
    except OSError as e:
        raise RunFolderError(f"{folder}: no recipe to resume here ({PLAN_NAME}: {e.strerror})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a readable recipe plan ({e})") from None


def differs(saved: dict, wanted: dict, ignore=()) -> str | None:
    """The first field of a saved config that differs from the wanted one (None: none)."""
    return next((k for k, v in wanted.items() if k not in ignore and saved.get(k) != v), None)


def teacher_state(path: Path, k: int, mc: ModelConfig, tc: TrainConfig, data: dict) -> str:
    """"missing", "stopped" or "finished": what teacher k's folder holds. A folder that holds anything
    else -- another run, other files -- is refused (``RunFolderError`` naming it and what differs)."""
    if not path.exists() or not [p for p in path.iterdir() if p.name != LOCK_NAME and not p.name.startswith(LEFTOVER)]:
        return "missing"
    try:
        ckpt = Checkpoint.load(path)
    except CheckpointError as e:
        raise RunFolderError(f"{path}: holds no usable run for the recipe's teacher {k} ({e}): move it away") from None
    saved_tc = {} if ckpt.train_config is None else ckpt.train_config.to_dict()
    field = "data file" if not ckpt.same_data(data) else (
        differs(ckpt.model_config.to_dict(), mc.to_dict(), ignore=("vocab_size",))
        or differs(saved_tc, tc.to_dict(), ignore=CHANGEABLE_ON_RESUME))
    if field:
        raise RunFolderError(f"{path}: holds another run than the recipe's teacher {k} (its {field} differs): "
                             "move it away, or train into another folder (out=...)")
    return "finished" if ckpt.finished else "stopped"


def check_plan(plan: Plan) -> None:
    if not plan.teachers:
        raise ConfigError("a recipe with teachers needs at least one teacher")
    if not plan.config.distill:
        raise ConfigError("TrainConfig.distill is 0 in a recipe with teachers: the student would not use them")


def train_recipe(model_config: ModelConfig, config: TrainConfig, teachers: list[tuple[ModelConfig, TrainConfig]],
                 out, data=None, force: bool = False, progress: bool | None = None, log=print) -> TrainResult:
    """Train ``teachers`` ((ModelConfig, TrainConfig) pairs, e.g. ``config.recipe_teachers``) into
    ``out/teacher-k``, then the student (``model_config``, ``config``, with ``config.distill`` > 0)
    distilled from them into ``out``; returns the student's ``TrainResult``. ``out`` must be new or
    empty (``force``: see ``train``; teachers already there with the same settings are kept). The other
    arguments are ``train``'s. Runs on the caller's torch threads (``torch.set_num_threads``): each
    teacher and the student ``train(..., threads=None)``. Each teacher takes the student's text settings
    (``config.TEXT_FIELDS``: normalization, unknown token), so that their vocabularies are the student's."""
    progress = log is not None if progress is None else progress  # as train: no log, no progress
    log = log or (lambda *a, **k: None)
    paths("train_recipe", out=out, data=data)
    words, _, data_info = read_data(data, column=config.column)
    check_split(words, data_info)
    text = {f: getattr(config, f) for f in TEXT_FIELDS}
    # each teacher's length in steps, as its run records it: a stopped or finished teacher is then
    # told apart from another run by its settings alone
    plan = Plan(model_config, config, [(m, length_of(replace(t, **text), words)) for m, t in teachers], data_info)
    check_plan(plan)
    return run_plan(plan, RunFolder(out, force=force), progress, log)


def resume_recipe(out, config: TrainConfig | None = None, progress: bool | None = None, log=print) -> TrainResult:
    """Go on with the recipe in ``out`` where it stopped: finished teachers reused, a stopped one resumed,
    the others trained, then the student resumed or trained. ``config``: the student's, changed only in
    ``train.CHANGEABLE_ON_RESUME`` (its device is also the teachers'). On the caller's torch threads."""
    progress = log is not None if progress is None else progress  # as train: no log, no progress
    log = log or (lambda *a, **k: None)
    plan = read_plan(out)
    plan.config = resumed_config(plan.config, config)
    plan.teachers = [(m, replace(t, device=plan.config.device)) for m, t in plan.teachers]
    read_data(plan.data["path"], started=plan.data, column=plan.config.column)
    return run_plan(plan, RunFolder(out, own_run=True), progress, log)


def teacher_states(plan: Plan, out: Path) -> list[str]:
    """What each teacher's folder holds (``teacher_state``)."""
    return [teacher_state(teacher_folder(out, k), k, m, t, plan.data) for k, (m, t) in enumerate(plan.teachers)]


def run_plan(plan: Plan, folder: RunFolder, progress: bool, log) -> TrainResult:
    """Check the teachers' folders, claim the folder, check them again under its lock, write the plan,
    train what is left. (The first check refuses a foreign teacher folder before ``force`` removes
    anything.)"""
    teacher_states(plan, folder.path)
    folder.claim()
    try:
        states = teacher_states(plan, folder.path)
        write_plan(plan, folder.path)
        paths = [train_teacher(plan, folder.path, k, state, progress, log) for k, state in enumerate(states)]
        log(f"student: {folder.path}, distilled from {len(paths)} teacher(s)")
        if (folder.path / CHECKPOINT_NAME).exists():
            return train(config=plan.config, resume=folder.path, out=folder, progress=progress, log=log, threads=None)
        return train(plan.model_config, plan.config, plan.data["path"], out=folder, progress=progress, log=log,
                     threads=None, teachers=paths)
    except KeyboardInterrupt:
        log(f"recipe interrupted: go on with resume_recipe({str(folder.path)!r})")
        raise
    finally:
        folder.release()


def train_teacher(plan: Plan, out: Path, k: int, state: str, progress: bool, log) -> Path:
    """Teacher k of the plan in ``out/teacher-k``: reused when finished, resumed when stopped, else trained."""
    path, (mc, tc) = teacher_folder(out, k), plan.teachers[k]
    if state == "finished":
        log(f"teacher {k + 1} of {len(plan.teachers)}: {path}, finished: reused")
        return path
    log(f"teacher {k + 1} of {len(plan.teachers)}: {path}")
    if state == "stopped":
        train(config=tc, resume=path, progress=progress, log=log, threads=None)
    else:
        train(mc, tc, plan.data["path"], out=path, progress=progress, log=log, threads=None)
    return path
