"""The lecture's hierarchical model: the tree form, the reference.

Embedding, then per layer FlattenConsecutive(2) -> Linear -> BatchNorm -> Tanh over the context, then
the output Linear. Here each "FlattenConsecutive(2) -> Linear -> ..." is a ``Block`` applied to the
(older, newer) halves of every group, which is the same arithmetic.
"""

from __future__ import annotations

import torch

from .blocks import WaveNetCore, check_contexts


class TreeModel(WaveNetCore):
    """The lecture's model on fixed contexts: FlattenConsecutive(2) -> Block, L times, then the head.

    Args:
        config: the ``ModelConfig`` (the lecture's: ``ModelConfig()``, 76,579 parameters).
    Shape:
        input: (B, 2**L) token ids, oldest first (a single context (2**L,) is a batch of one).
        output: (B, V) logits of the token that follows each context.
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
