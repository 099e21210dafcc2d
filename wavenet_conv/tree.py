"""The lecture's hierarchical model: the tree form, the reference.

Embedding, then per layer FlattenConsecutive(2) -> Linear -> BatchNorm -> Tanh over the context, then
the output Linear. Here each "FlattenConsecutive(2) -> Linear -> ..." is a ``Block`` applied to the
(older, newer) halves of every group, which is the same arithmetic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from .blocks import BatchNorm, WaveNetCore, check_tokens, lecture_init_


def check_contexts(model: nn.Module, idx: torch.Tensor, block_size: int, vocab_size: int) -> torch.Tensor:
    check_tokens(idx, vocab_size, f"{type(model).__name__} input")
    if idx.dim() == 1:
        idx = idx[None]
    if idx.dim() != 2 or idx.shape[1] != block_size:
        raise ValueError(
            f"{type(model).__name__} takes contexts of shape (B, {block_size}), got {tuple(idx.shape)}"
        )
    return idx


class TreeModel(WaveNetCore):
    """The lecture's model on fixed contexts.

    Input: (B, 2**L) token ids, oldest first (a single context (2**L,) is taken as B = 1).
    Output: (B, V) logits for the token that follows each context.
    """

    @classmethod
    def from_conv(cls, conv: WaveNetCore) -> "TreeModel":
        """A TreeModel with the conv's parameters, buffers, device, dtype and train/eval mode."""
        return cls.from_model(conv)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        idx = check_contexts(self, idx, self.block_size, self.config.vocab_size)
        h = self.wte(idx)  # (B, 2^L, E)
        skips = None
        for block in self.blocks:
            B, T, C = h.shape
            pairs = h.reshape(B, T // 2, 2, C)  # FlattenConsecutive(2): groups of (older, newer)
            h, s = block(pairs[:, :, 0], pairs[:, :, 1])  # (B, T/2, H)
            if s is not None:  # a layer's skip input is its newest node
                skips = s[:, -1] if skips is None else skips + s[:, -1]  # (B, S)
        return self.head(h[:, 0], skips)  # (B, V)


@dataclass
class FlatConfig:
    """The lecture's flat MLP baseline: the whole context flattened into one hidden layer."""

    vocab_size: int = 27
    n_embd: int = 10
    n_hidden: int = 200
    block_size: int = 3

    def __post_init__(self):
        for name, v in asdict(self).items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"FlatConfig.{name} must be a positive integer, got {v!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class FlatModel(nn.Module):
    """Embedding -> Flatten -> Linear -> BatchNorm -> Tanh -> Linear: (B, block_size) -> (B, V).

    The first rows of the lecture's table (12,097 parameters with a 3-character context).
    """

    def __init__(self, config: FlatConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.fc = lecture_init_(nn.Linear(config.block_size * config.n_embd, config.n_hidden, bias=False))
        self.norm = BatchNorm(config.n_hidden)
        self.lm_head = lecture_init_(nn.Linear(config.n_hidden, config.vocab_size), scale=0.1)

    @property
    def block_size(self) -> int:
        return self.config.block_size

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        idx = check_contexts(self, idx, self.block_size, self.config.vocab_size)
        h = self.wte(idx).flatten(1)  # (B, block_size * E)
        return self.lm_head(torch.tanh(self.norm(self.fc(h))))  # (B, V)
