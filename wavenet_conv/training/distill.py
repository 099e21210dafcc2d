"""Distillation: a student trained on its teachers' averaged next-character distributions.

A teacher is a finished run (a ``ConvModel`` or ``TreeModel``) on the student's own data file, so on
the same vocabulary and the same lecture split: it never saw a val or test name. Before the student's
first step each teacher scores every position of the training names once, with the fast path (the
folded model, names grouped by length), and the distributions, ``softmax(logits / T)`` averaged over
the teachers, are stored flat in ``NameBatches``' position order (``NameBatches.soft``): a batch
gathers its soft targets with the same indices as its tokens. The loss is then::

    (1 - a) CE(logits, targets) + a T**2 CE(logits / T, soft targets)

with ``a = TrainConfig.distill`` and ``T = TrainConfig.temperature`` (``distill_loss``).

The student is an ordinary run; its checkpoint records its teachers (``records``: each checkpoint's
path and sha256), and a resume refuses a teacher that is gone or changed (``check_unchanged``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .minibatches import NameBatches
from ..store.checkpoint import Checkpoint, resolve
from ..models.config import TrainConfig
from ..data import Vocab, sha256_file
from ..errors import ArgumentError, CheckpointError, ConfigError
from ..inference.scoring import Scorer

TEACHING_KINDS = ("conv", "tree")  # the models whose distributions the fast path computes


def check_distill(tc: TrainConfig, teachers) -> None:
    """Teachers with distillation and distillation with teachers (``ConfigError`` naming the field)."""
    if tc.distill and not teachers:
        raise ConfigError(f"TrainConfig.distill is {tc.distill:g} but there are no teachers: give the runs to "
                          "distill from (teachers=RUNS) or set distill=0")
    if teachers and not tc.distill:
        raise ConfigError("teachers were given but TrainConfig.distill is 0: set the teachers' weight in the loss "
                          "(e.g. distill=0.5)")


def record(path) -> dict:
    """What a student's checkpoint keeps of a teacher: its checkpoint's path and sha256."""
    file = resolve(path).resolve()
    return {"path": str(file), "sha256": sha256_file(file)}


def load_teacher(path, vocab: Vocab, data: dict):
    """A teacher's model (eval mode) and record, once it is checked: a finished conv or tree run on the
    data file ``data`` (its sha256), with the data's vocabulary. ``ArgumentError`` naming it otherwise."""
    def refuse(problem: str):
        raise ArgumentError("train", "teachers", f"{path}: {problem}")

    try:
        ckpt = Checkpoint.load(path)
    except CheckpointError as e:
        refuse(f"not a teacher: {e}")
    if ckpt.kind not in TEACHING_KINDS:
        refuse(f"a {ckpt.kind} model cannot teach (a conv or tree run can)")
    if ckpt.vocab != vocab:
        refuse(f"its vocabulary {ckpt.vocab.chars!r} is not the data's {vocab.chars!r}")
    if not ckpt.same_data(data):
        refuse(f"was trained on another data file ({(ckpt.data or {}).get('path')}), not on {data['path']}")
    if not ckpt.finished:
        steps = None if ckpt.train_config is None else ckpt.train_config.steps
        refuse(f"is an unfinished run (step {ckpt.step} of {steps}): finish it first (resume=...)")
    return ckpt.model(str(path)), record(path)


def load_teachers(paths, vocab: Vocab, data: dict) -> tuple[list, list[dict]]:
    """Every teacher checked and loaded: (models, records)."""
    loaded = [load_teacher(p, vocab, data) for p in paths]
    return [m for m, _ in loaded], [r for _, r in loaded]


def check_unchanged(records: list[dict], where) -> list[str]:
    """The paths of a resumed student's teachers, each still there with the sha256 it started with
    (``CheckpointError`` naming the run and the teacher otherwise)."""
    for r in records:
        if not Path(r["path"]).is_file():
            raise CheckpointError(f"{where}: its teacher {r['path']} is gone: a distilled run resumes only with "
                                  "the teachers it started with")
        if sha256_file(r["path"]) != r["sha256"]:
            raise CheckpointError(f"{where}: its teacher {r['path']} changed since the run started (sha256 differs): "
                                  "a distilled run resumes only with the teachers it started with")
    return [r["path"] for r in records]


@torch.no_grad()
def soft_targets(models, vocab: Vocab, batches: NameBatches, temperature: float = 1.0) -> torch.Tensor:
    """(P, V) float32 on the batches' device: the teachers' next-character distributions at ``T``,
    averaged, at each of the P positions of the training names, in ``batches``' flat order: each
    teacher's ``Scorer`` on the fast path (``Scorer.logit_groups``: its loop over length groups), whose
    flat position order (name after name, ``[0, c1..cn]`` each) is ``batches``'."""
    device, V = batches.x.device, models[0].config.vocab_size
    soft = torch.zeros(len(batches.x), V, device=device)
    chars = batches.x[batches.pos != 0]  # (P - names,) the names' characters back to back
    for model in models:
        scorer = Scorer.of(model.to(device=device, dtype=torch.float32), vocab, method="fast")
        for _, _, at, logits in scorer.logit_groups(chars, batches.lengths - 1):
            soft[at.reshape(-1)] += torch.softmax(logits[:, :V] / temperature, 1)  # (G*(n+1), V)
    return soft.div_(len(models))


def distill_loss(logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor, tc: TrainConfig) -> torch.Tensor:
    """``(1 - a) CE(logits, y) + a T**2 CE(logits / T, soft)``: logits (N, V) float32, targets y (N,),
    the teachers' distributions soft (N, V) at T."""
    a, T = tc.distill, tc.temperature
    hard = F.cross_entropy(logits, y)
    return (1 - a) * hard + a * T * T * F.cross_entropy(logits / T if T != 1 else logits, soft)
