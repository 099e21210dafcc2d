"""The layers that both forms share: one ``Block`` is one node of the tree and one step of a conv.

A block is a function of an (older, newer) pair of child vectors::

    a   = W_old @ older + W_new @ newer        # the tree's Linear over [older; newer]
    z   = act(norm(a))                         # tanh | tanh(f)*sigmoid(g) | a*sigmoid(b)
    out = newer + R z   if residual  else  z
    s   = S z           if skip

The tree applies it to each FlattenConsecutive(2) group; the conv applies it to (h[t-d], h[t]), which
is a kernel-2 causal convolution with dilation d. Same weights, same function: ``tree.py`` and
``conv.py`` differ only in which pairs they feed.

Every tensor here is channels-last, ``(..., C)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig


class BatchNorm(nn.Module):
    """The lecture's channels-last BatchNorm: (..., C) -> (..., C).

    Training: mean and unbiased variance over every axis but the last (or over the positions where
    ``mask`` is True), and an EMA update of the running buffers with ``momentum``. Eval: the running
    buffers. ``weight``/``bias`` are the lecture's gamma/beta.
    """

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.dim, self.eps, self.momentum = dim, eps, momentum
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, momentum={self.momentum}"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.training:
            xs = x.reshape(-1, self.dim) if mask is None else x[mask]  # (N, C)
            if xs.shape[0] < 2:
                raise RuntimeError(
                    "BatchNorm in training mode needs at least 2 values per channel to estimate a "
                    f"variance, got {xs.shape[0]}: call model.eval() before scoring or sampling"
                )
            mean = xs.mean(0)
            var = xs.var(0, unbiased=True)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval mode as an affine map: ``bn(x) == x * scale + shift``."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the channels, taking (and ignoring) the batch-statistics ``mask``."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


class NoNorm(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return x


def lecture_init_(linear: nn.Linear, scale: float = 1.0) -> nn.Linear:
    """The lecture's init: weight ~ N(0, 1) / sqrt(fan_in) (times ``scale``), bias 0."""
    with torch.no_grad():
        linear.weight.normal_().mul_(scale / math.sqrt(linear.in_features))
        if linear.bias is not None:
            linear.bias.zero_()
    return linear


def activate(a: torch.Tensor, activation: str) -> torch.Tensor:
    """(..., C_act) pre-activation -> (..., C) with C = C_act, or C_act / 2 for the gated ones."""
    if activation == "tanh":
        return torch.tanh(a)
    f, g = a.chunk(2, dim=-1)
    if activation == "gated":
        return torch.tanh(f) * torch.sigmoid(g)
    return f * torch.sigmoid(g)  # glu


class Block(nn.Module):
    """One layer, as a function of a pair: (older, newer) each (..., C_in) -> out (..., C_out) and the
    skip contribution (..., n_skip) or None.

    ``mix`` is the tree's Linear over the concatenated pair [older; newer] (weight (C_act, 2*C_in)),
    equivalently a Conv1d weight (C_act, C_in, 2): see ``conv_weight``.
    """

    def __init__(self, config: ModelConfig, index: int):
        super().__init__()
        c = config
        self.index = index
        self.activation = c.activation
        self.c_in = c.n_embd if index == 0 else c.n_hidden
        gated = c.activation in ("gated", "glu")
        c_act = 2 * c.inner if gated else c.inner
        self.mix = lecture_init_(nn.Linear(2 * self.c_in, c_act, bias=c.norm == "none"))
        if c.norm == "batch":
            self.norm = BatchNorm(c_act)
        elif c.norm == "layer":
            self.norm = LayerNorm(c_act)
        else:
            self.norm = NoNorm()
        # residual: out = carry(newer) + res(z). With skip connections the last layer's output is
        # unused (the head reads the skip sum), so it has no residual projection to train.
        last_unused = c.skip and index == c.n_layers - 1
        self.residual = c.residual and not (index == 0 and c.residual_input == "none") and not last_unused
        self.res = lecture_init_(nn.Linear(c.inner, c.n_hidden)) if self.residual else None
        project_in = self.residual and index == 0 and c.residual_input == "project"
        self.res_in = lecture_init_(nn.Linear(self.c_in, c.n_hidden, bias=False)) if project_in else None
        self.skip = lecture_init_(nn.Linear(c.inner, c.skip_channels)) if c.skip else None

    def extra_repr(self) -> str:
        return f"index={self.index}, dilation={2 ** self.index}, activation={self.activation!r}, residual={self.residual}"

    def preact(self, a: torch.Tensor, newer: torch.Tensor, mask: torch.Tensor | None = None):
        """Everything after the pair mix, given the mixed pre-activation ``a`` (..., C_act)."""
        z = activate(self.norm(a, mask), self.activation)  # (..., inner)
        out = z
        if self.residual:
            carry = newer if self.res_in is None else self.res_in(newer)
            out = carry + self.res(z)
        skip = self.skip(z) if self.skip is not None else None
        return out, skip

    def forward(self, older: torch.Tensor, newer: torch.Tensor, mask: torch.Tensor | None = None):
        a = self.mix(torch.cat([older, newer], dim=-1))  # (..., C_act)
        return self.preact(a, newer, mask)

    def conv_weight(self) -> torch.Tensor:
        """``mix.weight`` as a Conv1d weight (C_act, C_in, 2): ``[..., 0] = W_old``, ``[..., 1] = W_new``."""
        w = self.mix.weight  # (C_act, 2*C_in) = [W_old | W_new]
        return w.view(w.shape[0], 2, self.c_in).transpose(1, 2)


class SkipHead(nn.Module):
    """WaveNet's output stack: sum of skips (..., S) -> ReLU -> 1x1 -> ReLU -> 1x1 -> logits (..., V)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.fc1 = lecture_init_(nn.Linear(config.skip_channels, config.head_channels))
        self.fc2 = lecture_init_(nn.Linear(config.head_channels, config.vocab_size), scale=0.1)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(F.relu(s))))


def check_tokens(idx, vocab_size: int, what: str) -> torch.Tensor:
    """Validate a tensor of token ids: integer dtype, every id in [0, vocab_size)."""
    if not isinstance(idx, torch.Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor of token ids, got {type(idx).__name__}")
    if idx.dtype == torch.bool or idx.is_floating_point() or idx.is_complex():
        raise TypeError(f"{what}: token ids must be an integer tensor, got dtype {idx.dtype}")
    if idx.numel():
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            pos = tuple((idx == bad).nonzero()[0].tolist())
            raise ValueError(f"{what}: token id {bad} at index {pos} is outside the vocabulary [0, {vocab_size})")
    return idx


class WaveNetCore(nn.Module):
    """The parameters both forms share: embedding, blocks, output head. Tree and conv subclass it and
    differ only in ``forward``, so their state dicts are the same by construction."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"expected a ModelConfig, got {type(config).__name__}")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # init N(0, 1), as the lecture
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        if config.skip:
            self.skip_head = SkipHead(config)
        else:
            self.lm_head = lecture_init_(nn.Linear(config.n_hidden, config.vocab_size), scale=0.1)

    @classmethod
    def from_model(cls, other: "WaveNetCore"):
        """The other form of ``other``: same config, parameters, buffers, device, dtype and mode."""
        if not isinstance(other, WaveNetCore):
            raise TypeError(f"{cls.__name__}: expected a TreeModel or ConvModel, got {type(other).__name__}")
        p = next(other.parameters())
        model = cls(other.config).to(device=p.device, dtype=p.dtype)
        model.load_state_dict(other.state_dict())
        return model.train(other.training)

    @property
    def block_size(self) -> int:
        return self.config.block_size

    def head(self, h: torch.Tensor | None, skips: torch.Tensor | None) -> torch.Tensor:
        """Logits from the last layer's output (the lecture) or the skip sum (WaveNet)."""
        return self.skip_head(skips) if self.config.skip else self.lm_head(h)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def param_counts(self) -> dict[str, int]:
        """Parameter counts per part: embedding, each layer, head, and total."""
        counts = {"embedding": self.wte.weight.numel()}
        for i, b in enumerate(self.blocks):
            counts[f"layer{i}"] = sum(p.numel() for p in b.parameters())
        head = self.skip_head if self.config.skip else self.lm_head
        counts["head"] = sum(p.numel() for p in head.parameters())
        counts["total"] = self.num_params()
        return counts

    @torch.no_grad()
    def pad_states(self) -> list[torch.Tensor]:
        """Eval mode: ``p[l]`` (C_l,) is layer l's input everywhere in an all-'.' history (p[0] is the
        embedding of '.'); ``p[L]`` is the last layer's output there. Used by start-state padding."""
        if self.training and self.config.norm == "batch":
            raise RuntimeError("pad_states() needs eval mode (BatchNorm running statistics): call model.eval()")
        p = self.wte.weight[:1]  # (1, E)
        states = [p[0]]
        for block in self.blocks:
            p, _ = block(p, p)
            states.append(p[0])
        return states
