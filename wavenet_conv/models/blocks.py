"""The layers that both forms share: one ``Block`` is one node of the tree and one step of a conv.

A block is a function of an (older, newer) pair of child vectors::

    a   = W_old @ older + W_new @ newer        # the pair mix: the tree's Linear over [older; newer]
    z   = act(norm(a))                         # tanh | tanh(f)*sigmoid(g) | a*sigmoid(b)
    out = newer + R z   if residual  else  z
    s   = S z           if skip

The tree applies it to each FlattenConsecutive(2) group; the conv form applies it to (h[t-d], h[t])
at every position t, which is a kernel-2 Conv1d with dilation d whose weight is the pair mix's weight
seen as (C_act, C_in, 2) (``Block.conv_weight``). Same weights, same function: ``tree.py`` and
``conv.py`` differ only in how they feed the pairs.

Everything after the pair mix (``Block.after_mix``) takes the channel axis as ``dim``: -1 for the
tree's channels-last tensors (..., C), 1 for the conv's channels-first ones (B, C, T), where the 1x1
projections R and S are 1x1 convolutions.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from ..errors import ArgumentError


def channel_shape(x: torch.Tensor, dim: int, size: int) -> list[int]:
    """The shape that broadcasts a per-channel vector (size,) against ``x`` along axis ``dim``."""
    shape = [1] * x.dim()
    shape[dim] = size
    return shape


class BatchNorm(nn.Module):
    """The lecture's BatchNorm over ``num_features`` channels, found on axis ``dim`` of the input.

    Training: the mean and unbiased variance of each channel over every other axis, or over the
    positions where ``mask`` is True, and an EMA update of the running buffers with ``momentum``.
    Eval: the running buffers. ``weight``/``bias`` are the lecture's gamma/beta. No host sync, no
    data-dependent shapes.

    Args:
        num_features: C, the number of channels.
    Shape:
        x: (..., C, ...) with C on axis ``dim`` (-1 for the tree's channels-last tensors, 1 for the
        conv's (B, C, T)); mask: x's shape without the channel axis, e.g. (B, T); output: x's shape.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, dim: int = -1) -> torch.Tensor:
        dim = dim % x.dim()
        if self.training and mask is None:
            return self.fused(x, dim)
        shape = channel_shape(x, dim, self.num_features)
        if self.training:
            mean, var = self.batch_stats(x, mask, dim)  # (shape) each
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().reshape(-1), self.momentum)
                self.running_var.lerp_(var.detach().reshape(-1), self.momentum)
        else:
            mean, var = self.running_mean.view(shape), self.running_var.view(shape)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)

    def fused(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Training mode over every position, as one ``F.batch_norm`` kernel, exactly: F.batch_norm
        normalizes with the biased variance v_b = v (n-1)/n, and
        (x - m) / sqrt(v + eps) = sqrt((n-1)/n) (x - m) / sqrt(v_b + eps (n-1)/n),
        so the weight takes the factor and eps the ratio; its running variance is the unbiased one."""
        n = x.numel() // x.shape[dim]
        if n < 2:
            raise RuntimeError(f"BatchNorm in training mode needs at least 2 values per channel to estimate a "
                               f"variance, got {n}: call model.eval() before scoring or sampling")
        rows = x.movedim(dim, -1).reshape(-1, self.num_features)  # (n, C): F.batch_norm's channels are axis 1
        y = F.batch_norm(rows, self.running_mean, self.running_var, self.weight * ((n - 1) / n) ** 0.5, self.bias,
                         True, self.momentum, self.eps * (n - 1) / n)
        return y.view(x.movedim(dim, -1).shape).movedim(-1, dim)

    @staticmethod
    def batch_stats(x: torch.Tensor, mask: torch.Tensor, dim: int):
        """Per-channel mean and unbiased variance over the positions where ``mask``, every axis but
        ``dim``, in two passes (``torch.var`` computes the same about 10x slower on CPU)."""
        axes = [i for i in range(x.dim()) if i != dim]
        hint = "call model.eval() before scoring or sampling"
        m = mask.unsqueeze(dim).to(x.dtype)  # 1 on the positions that count, broadcast over channels
        n = m.sum()  # a tensor: no host sync
        torch._assert_async(n >= 2, f"BatchNorm in training mode needs at least 2 real positions: {hint}")
        mean = (x * m).sum(axes, keepdim=True) / n
        var = ((x - mean) * m).square().sum(axes, keepdim=True) / (n - 1)
        return mean, var

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval mode as an affine map: ``bn(x) == x * scale + shift``."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over channel axis ``dim``, taking (and ignoring) the batch-statistics ``mask``."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, dim: int = -1) -> torch.Tensor:
        return super().forward(x.movedim(dim, -1)).movedim(-1, dim)


class NoNorm(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, dim: int = -1) -> torch.Tensor:
        return x


def lecture_init_(linear: nn.Linear, scale: float = 1.0) -> nn.Linear:
    """The lecture's init: weight ~ N(0, 1) / sqrt(fan_in) (times ``scale``), bias 0."""
    with torch.no_grad():
        linear.weight.normal_().mul_(scale / math.sqrt(linear.in_features))
        if linear.bias is not None:
            linear.bias.zero_()
    return linear


class SigmoidTanh(torch.autograd.Function):
    """tanh(x) computed as 2 sigmoid(2x) - 1, the same function: on CPU ``torch.sigmoid`` is several
    times faster than ``torch.tanh`` (benchmarks/PERFORMANCE.md). Backward from the output: (1 - y^2) g.

    The forward is out of place: torch 2.11's ``torch.compile`` saves a tensor as it was before the
    in-place ops done on it afterwards in the same forward (here sigmoid(2x) instead of y), which gave
    wrong compiled gradients."""

    @staticmethod
    def forward(ctx, x):
        y = 2 * torch.sigmoid(2 * x) - 1
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """``torch.tanh``, computed through the sigmoid on CPU (``SigmoidTanh``)."""
    return SigmoidTanh.apply(x) if x.device.type == "cpu" else torch.tanh(x)


def activate(a: torch.Tensor, activation: str, dim: int = -1) -> torch.Tensor:
    """Pre-activation with C_act channels on axis ``dim`` -> z with C = C_act channels (tanh), or
    C_act / 2 for the gated ones, whose two halves are f and g."""
    if activation == "tanh":
        return tanh(a)
    f, g = a.chunk(2, dim=dim)
    if activation == "gated":
        return tanh(f) * torch.sigmoid(g)
    return f * torch.sigmoid(g)  # glu


def project(linear: nn.Linear, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``linear`` applied to the channels on axis ``dim`` at every position: a Linear on channels-last
    (..., C_in) -> (..., C_out); a 1x1 convolution on channels-first (B, C_in, T) -> (B, C_out, T)."""
    if dim % x.dim() == x.dim() - 1:
        return linear(x)
    return F.conv1d(x, linear.weight.unsqueeze(-1), linear.bias)  # weight (C_out, C_in, 1)


class Block(nn.Module):
    """One layer, as a function of a pair of child vectors (see the module's docstring).

    ``mix`` is the tree's Linear over the concatenated pair [older; newer] (weight (C_act, 2*C_in)),
    equivalently a Conv1d weight (C_act, C_in, 2): see ``conv_weight``.

    Args:
        config: the ``ModelConfig``; index: the layer's depth l (dilation 2**l in the conv form).
    Shape:
        older, newer: (..., C_in), C_in = n_embd at layer 0, n_hidden above; output: (out (..., H),
        skip (..., n_skip) or None). C_act = inner (tanh) or 2 * inner (gated, glu).
    """

    def __init__(self, config: ModelConfig, index: int):
        super().__init__()
        c = config
        self.index = index
        self.dilation = 2**index  # in the conv form
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
        return f"index={self.index}, dilation={self.dilation}, activation={self.activation!r}, residual={self.residual}"

    def after_mix(self, a: torch.Tensor, newer: torch.Tensor, mask: torch.Tensor | None = None, dim: int = -1):
        """Everything after the pair mix. ``a``: the pre-activation, C_act channels on axis ``dim``;
        ``newer``: the newer child (C_in channels), which the residual carries. Returns (out (H
        channels), skip (n_skip channels) or None), the same layout as ``a``."""
        z = activate(self.norm(a, mask, dim), self.activation, dim)  # inner channels
        out = z
        if self.residual:
            carry = newer if self.res_in is None else project(self.res_in, newer, dim)
            out = carry + project(self.res, z, dim)
        skip = project(self.skip, z, dim) if self.skip is not None else None
        return out, skip

    def forward(self, older: torch.Tensor, newer: torch.Tensor, mask: torch.Tensor | None = None):
        """The tree's node: older, newer (..., C_in) -> (out (..., H), skip (..., n_skip) or None)."""
        a = self.mix(torch.cat([older, newer], dim=-1))  # (..., C_act)
        return self.after_mix(a, newer, mask)

    def pair_weight(self) -> torch.Tensor:
        """``mix.weight`` with its halves stacked, (2*C_act, C_in) = [W_old; W_new]: one matmul of a
        layer's input gives both halves' contributions of every position (``ConvModel.packed``)."""
        w = self.mix.weight  # (C_act, 2*C_in)
        return torch.cat([w[:, : self.c_in], w[:, self.c_in :]], 0)

    def conv_weight(self) -> torch.Tensor:
        """``mix.weight`` as a Conv1d weight (C_act, C_in, 2): ``[..., 0] = W_old``, ``[..., 1] = W_new``."""
        w = self.mix.weight  # (C_act, 2*C_in) = [W_old | W_new]
        return w.view(w.shape[0], 2, self.c_in).transpose(1, 2)


class SkipHead(nn.Module):
    """WaveNet's output stack: sum of skips -> ReLU -> 1x1 -> ReLU -> 1x1 -> logits.

    Shape:
        s: (..., n_skip) -> (..., V).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.fc1 = lecture_init_(nn.Linear(config.skip_channels, config.head_channels))
        self.fc2 = lecture_init_(nn.Linear(config.head_channels, config.vocab_size), scale=0.1)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(F.relu(s))))


def check_tokens(idx, vocab_size: int, what: str) -> torch.Tensor:
    """Check token ids without a host sync: the type and dtype here, the range on the device
    (``torch._assert_async`` raises at once on the CPU and is a device-side assert on a GPU)."""
    if not isinstance(idx, torch.Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor of token ids, got {type(idx).__name__}")
    if idx.dtype == torch.bool or idx.is_floating_point() or idx.is_complex():
        raise TypeError(f"{what}: token ids must be an integer tensor, got dtype {idx.dtype}")
    torch._assert_async(((idx >= 0) & (idx < vocab_size)).all(), f"{what}: a token id is outside the vocabulary [0, {vocab_size})")
    return idx


def check_contexts(model: nn.Module, idx: torch.Tensor, block_size: int, vocab_size: int) -> torch.Tensor:
    """Contexts (B, block_size) of token ids (a single context (block_size,) is a batch of one), checked."""
    check_tokens(idx, vocab_size, f"{type(model).__name__} input")
    if idx.dim() == 1:
        idx = idx[None]
    if idx.dim() != 2 or idx.shape[1] != block_size:
        raise ArgumentError(type(model).__name__, "input", f"must be contexts of shape (B, {block_size}), got "
                            f"{tuple(idx.shape)}")
    return idx


class WaveNetCore(nn.Module):
    """The parameters both forms share: embedding, blocks, output head. Tree and conv subclass it and
    differ only in ``forward``, so their state dicts are the same by construction."""

    def extra_repr(self) -> str:
        c = self.config
        return (f"receptive_field={c.block_size}, activation={c.activation!r}, norm={c.norm!r}, residual={c.residual}, "
                f"skip={c.skip}, params={self.num_params():,}")

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
        """The other form of ``other``: same config, parameters, buffers, BatchNorm eps and momentum (not
        in a state dict: ``from_lecture`` takes the lecture's), device, dtype and mode."""
        if not isinstance(other, WaveNetCore):
            raise TypeError(f"{cls.__name__}: expected a TreeModel or ConvModel, got {type(other).__name__}")
        p = next(other.parameters())
        model = cls(other.config).to(device=p.device, dtype=p.dtype)
        model.load_state_dict(other.state_dict())
        theirs = dict(other.named_modules())
        for name, norm in model.named_modules():
            if isinstance(norm, BatchNorm):
                norm.eps, norm.momentum = theirs[name].eps, theirs[name].momentum
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
