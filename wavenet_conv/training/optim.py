"""The optimizer and everything that moves it by the step: the learning-rate schedule, weight
averaging, and the RNG state that a checkpoint keeps.

The schedule and the averaging steps are pure functions of (config, step), so a resumed run follows
the same course as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..models.config import MAX_STEPS, REPORTS, TrainConfig


def sized(tc: TrainConfig, per_epoch: int) -> TrainConfig:
    """``tc`` with its length in steps: ``epochs`` passes over ``per_epoch`` examples (the training
    names, or the tree's contexts), ``batch_size`` a step, the warmup at most an eighth of the steps;
    ``epochs`` None then (the run records its steps). ``tc`` as it is without ``epochs``."""
    if tc.epochs is None:
        return tc
    steps = min(MAX_STEPS, max(1, math.ceil(tc.epochs * per_epoch / tc.batch_size)))
    return replace(tc, steps=steps, warmup=min(tc.warmup, steps // 8), epochs=None)


def eval_interval(tc: TrainConfig) -> int:
    """Steps between val-loss reports: ``eval_every``, or with ``keep_best`` and none set, ``REPORTS``
    in the run; 0: none."""
    return tc.eval_every or (max(1, tc.steps // REPORTS) if tc.keep_best else 0)


def lr_at(tc: TrainConfig, step: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): a pure function, so resume is exact."""
    if tc.schedule == "step":
        return tc.lr * (tc.lr_decay if step >= int(tc.decay_at * tc.steps) else 1.0)
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    t = min(1.0, (step - tc.warmup) / max(1, tc.steps - tc.warmup))
    if tc.schedule == "linear":
        return tc.lr * (1 - (1 - tc.lr_decay) * t)
    return tc.lr * (tc.lr_decay + (1 - tc.lr_decay) * 0.5 * (1 + math.cos(math.pi * t)))


def averaging(tc: TrainConfig, step: int) -> bool:
    """Whether the weights after step ``step`` (1-based) join the average (``TrainConfig.swa``): every
    ``swa_every`` steps of the last ``swa`` of the run."""
    return bool(tc.swa) and step > tc.steps - round(tc.swa * tc.steps) and step % tc.swa_every == 0


@torch.no_grad()
def average_weights(average: list[torch.Tensor] | None, count: int, model: torch.nn.Module):
    """Fold the model's weights into a running average of them (stochastic weight averaging):
    ``(average, count)`` -> the new ``(average, count)``; ``average`` None starts one."""
    weights = [p.detach() for p in model.parameters()]
    if average is None:
        return [w.clone() for w in weights], 1
    count += 1
    for avg, w in zip(average, weights):
        avg.lerp_(w, 1 / count)
    return average, count


def make_optimizer(model, tc: TrainConfig) -> torch.optim.Optimizer:
    """SGD, or AdamW with weight decay on the weights and embeddings (2-D), not on biases or norms."""
    if tc.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=tc.lr)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float64) for p in decay + rest)
    return torch.optim.AdamW(groups, lr=tc.lr, betas=(0.9, tc.beta2), fused=fused)  # fused: one kernel a step


def rng_state(device: torch.device) -> dict:
    """torch's global RNG state (and the GPU's), for the checkpoint."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
