"""The same model as kernel-2 dilated causal convolutions over whole names.

Layer l applies the shared ``Block`` to (h[t - 2**l], h[t]) at every position t: a Conv1d with kernel
2 and dilation 2**l whose weight is the tree's Linear weight split into [W_old | W_new]. Output t then
sees exactly the tree's context of 2**L tokens ending at t.

Causal padding reproduces the tree's left padding by '.' tokens ("start-state padding"): one extra
position in front of every sequence holds the state of an all-'.' history, and every look-back that
falls before the start reads it. That position is itself computed by the block from its own state, so
it is exact in eval mode and follows the batch statistics in training (which are taken over real
positions only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .blocks import WaveNetCore, check_tokens


def check_sequences(model, idx: torch.Tensor, mask: torch.Tensor | None):
    check_tokens(idx, model.config.vocab_size, f"{type(model).__name__} input")
    if idx.dim() == 1:
        idx = idx[None]
        mask = None if mask is None else mask.reshape(1, -1)
    if idx.dim() != 2 or idx.shape[1] < 1:
        raise ValueError(f"{type(model).__name__} takes sequences of shape (B, T), T >= 1; got {tuple(idx.shape)}")
    if idx.shape[0] and bool((idx[:, 0] != 0).any()):
        b = int((idx[:, 0] != 0).nonzero()[0, 0])
        raise ValueError(
            f"{type(model).__name__} input: sequence {b} starts with token {int(idx[b, 0])}, not the start "
            "token 0 ('.'): feed x = [0, c1, ..., cn]"
        )
    if mask is not None and (mask.shape != idx.shape or mask.dtype != torch.bool):
        raise ValueError(f"mask must be a bool tensor of shape {tuple(idx.shape)}, got {mask.dtype} {tuple(mask.shape)}")
    return idx, mask


class ConvModel(WaveNetCore):
    """The lecture's model (or a WaveNet variant) as dilated causal convolutions.

    Input: (B, T) token ids, each sequence ``[0, c1, ..., cn]`` (right-padding allowed), any T.
    ``mask`` (B, T) bool marks real positions; in training mode BatchNorm statistics are taken over
    them only (default: every position). Output: (B, T, V) logits; position t predicts token t + 1.
    """

    @classmethod
    def from_tree(cls, tree: WaveNetCore) -> "ConvModel":
        """A ConvModel with the tree's parameters, buffers, device, dtype and train/eval mode."""
        return cls.from_model(tree)

    def forward(self, idx: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        idx, mask = check_sequences(self, idx, mask)
        B, T = idx.shape
        h = self.wte(F.pad(idx, (1, 0)))  # (B, T+1, E); position 0: the all-'.' history
        stat_mask = None
        if self.training:
            real = torch.ones_like(idx, dtype=torch.bool) if mask is None else mask
            stat_mask = F.pad(real, (1, 0), value=False)  # (B, T+1)
        skips = None
        pos = torch.arange(T + 1, device=idx.device)
        for l, block in enumerate(self.blocks):
            older = h[:, (pos - 2**l).clamp(min=0)]  # (B, T+1, C): h[t - d], the start state before 0
            h, s = block(older, h, stat_mask)  # (B, T+1, H)
            if s is not None:
                skips = s if skips is None else skips + s  # (B, T+1, S)
        return self.head(h, skips)[:, 1:]  # (B, T, V)
