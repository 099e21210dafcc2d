"""The lecture's flat MLP baseline: the first rows of its results table, before the hierarchy."""

from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import BatchNorm, check_contexts, lecture_init_
from .config import FlatConfig


class FlatModel(nn.Module):
    """Embedding -> Flatten -> Linear -> BatchNorm -> Tanh -> Linear: the first rows of the lecture's
    table (12,097 parameters with a 3-character context).

    Args:
        config: the ``FlatConfig``.
    Shape:
        input: (B, block_size) token ids, oldest first; output: (B, V) logits.
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
