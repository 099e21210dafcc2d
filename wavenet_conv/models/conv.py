"""The same model as a stack of kernel-2 dilated causal Conv1d layers over whole names.

Layer l is a Conv1d with kernel 2 and dilation d = 2**l on channels-first activations (B, C, T):

    a[t] = W_old h[t - d] + W_new h[t] (+ bias)      # F.conv1d(h, W, dilation=d), W = (C_act, C_in, 2)

whose weight is the tree's pair-mix Linear weight [W_old | W_new] seen as (C_act, C_in, 2), one set of
parameters for both forms. Then the block's norm, activation, residual and skip (1x1 convolutions),
as in the tree. Output t sees tokens t - 2**L + 1 .. t: exactly the tree's context ending at t.

Causal padding is the tree's '.' padding, not zeros. Every sequence starts with '.', so position 0 of
every layer's input already holds the state of an all-'.' history (the '.' embedding at layer 0, and
the block applied to that state and itself above). Left-padding each layer's input with d copies of
its position 0 (replicate padding) makes every look-back before the start read that state: the
tree's padding, exactly, in eval mode. In training mode BatchNorm takes its statistics over the real
positions (``mask``) only, and the padding copies position 0 at each layer, so padding needs no
position of its own.

The forward is one graph: no host syncs and no data-dependent Python (token ids and the start token
are checked with device-side asserts), so it runs under ``torch.compile(fullgraph=True)``,
``torch.export`` and on the ``meta`` device.

``ConvModel.packed`` computes the same function on names packed end to end, with no padding at all,
for training: a batch of names of unequal lengths pads to its longest name (about 1.7 positions per
target for the lecture's names), and packing computes each real position once. There the dilation is
a gather of each position's look-back, which stops at its name's start (the replicate padding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .blocks import Block, WaveNetCore, check_tokens
from ..errors import ArgumentError


def causal_conv(block: Block, h: torch.Tensor) -> torch.Tensor:
    """The block's pair mix at every position, as a dilated causal Conv1d with replicate padding:
    h (B, C_in, T) -> pre-activation (B, C_act, T); look-backs before t = 0 read h[:, :, 0]."""
    d = block.dilation
    padded = F.pad(h, (d, 0), mode="replicate")  # (B, C_in, d + T)
    return F.conv1d(padded, block.conv_weight(), block.mix.bias, dilation=d)  # (B, C_act, T)


class ConvModel(WaveNetCore):
    """The lecture's model (or a WaveNet variant) as dilated causal convolutions: layer l a kernel-2
    Conv1d with dilation 2**l over the whole sequence, on the same parameters as ``TreeModel``.

    Args:
        config: the ``ModelConfig``.
    Shape:
        idx: (B, T) token ids, each sequence ``[0, c1, ..., cn]`` (right-padding with any token is
        allowed), T >= 1; a single sequence (T,) is a batch of one.
        mask: (B, T) bool, the real positions: in training mode BatchNorm takes its statistics over
        them only (default: every position); in eval mode it is not needed.
        output: (B, T, V) logits; position t predicts token t + 1.
    """

    @classmethod
    def from_tree(cls, tree: WaveNetCore) -> "ConvModel":
        """A ConvModel with the tree's parameters, buffers, device, dtype and train/eval mode."""
        return cls.from_model(tree)

    def forward(self, idx: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        idx, mask = self.check_input(idx, mask)
        h = self.wte(idx).transpose(1, 2)  # (B, E, T) channels first
        mask = mask if self.training else None  # only BatchNorm's training statistics read it
        skips = None
        for block in self.blocks:
            a = causal_conv(block, h)  # (B, C_act, T)
            h, s = block.after_mix(a, h, mask, dim=1)  # (B, H, T), (B, S, T) or None
            if s is not None:
                skips = s if skips is None else skips + s
        # the output layer reads each position's channels: channels last again
        return self.head(h.transpose(1, 2), None if skips is None else skips.transpose(1, 2))  # (B, T, V)

    def packed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The same model on names packed end to end, for training.

        x: (N,) token ids, the names back to back, each ``[0, c1, ..., cn]``; pos: (N,) long, each
        position's index in its name (0 at its start). Returns (N, V) logits: row p predicts the
        token after x[p] in its name. In training mode BatchNorm takes its statistics over all N
        positions, every one real: the statistics of ``forward(x, mask)`` on the same names.

        Layer l's look-back from position p is p - min(2**l, pos[p]): before the name's start it reads
        the name's position 0, as ``forward``'s replicate padding does. The pair mix is one matmul
        for both halves, ``[old | new] = h @ [W_old; W_new]^T``, and the older half is gathered;
        layer 0's is a row lookup in ``wte @ [W_old; W_new]^T`` (V rows).
        """
        if x.dim() != 1 or pos.shape != x.shape:
            raise ArgumentError(f"{type(self).__name__}.packed", "x and pos", f"must both have shape (N,), got "
                                f"{tuple(x.shape)} and {tuple(pos.shape)}")
        check_tokens(x, self.config.vocab_size, f"{type(self).__name__}.packed input")
        torch._assert_async(((pos != 0) | (x == 0)).all(), f"{type(self).__name__}.packed: every name must start "
                            "with the start token 0 ('.') at pos 0")
        rows = torch.arange(x.shape[0], device=x.device)  # (N,)
        h = self.wte(x) if self.blocks[0].residual else None  # (N, E): layer 0's residual carries it
        skips = None
        for l, block in enumerate(self.blocks):
            back = rows - torch.clamp(pos, max=block.dilation)  # (N,) the look-back, at most to the name's start
            if l == 0:  # the input is an embedding: [old | new] of a token is a row of (V, 2*C_act)
                P = F.embedding(x, F.linear(self.wte.weight, block.pair_weight()))  # (N, 2*C_act)
            else:
                P = F.linear(h, block.pair_weight())  # (N, 2*C_act)
            old, new = P.chunk(2, dim=1)  # (N, C_act) each
            a = new + old.index_select(0, back)  # (N, C_act)
            if block.mix.bias is not None:
                a = a + block.mix.bias
            h, s = block.after_mix(a, h)  # (N, H), (N, S) or None
            if s is not None:
                skips = s if skips is None else skips + s
        return self.head(h, skips)  # (N, V)

    def check_input(self, idx: torch.Tensor, mask: torch.Tensor | None):
        """Shapes and dtypes here; the token range and the start token as device-side asserts."""
        what = f"{type(self).__name__} input"
        check_tokens(idx, self.config.vocab_size, what)
        if idx.dim() == 1:
            idx = idx[None]
            mask = None if mask is None else mask.reshape(1, -1)
        if idx.dim() != 2 or idx.shape[1] < 1:
            raise ArgumentError(type(self).__name__, "input", f"must be sequences of shape (B, T) with T >= 1, got "
                                f"{tuple(idx.shape)}")
        if mask is not None and (mask.shape != idx.shape or mask.dtype != torch.bool):
            raise ArgumentError(type(self).__name__, "mask", f"must be a bool tensor of shape {tuple(idx.shape)}, "
                                f"got {mask.dtype} {tuple(mask.shape)}")
        torch._assert_async((idx[:, 0] == 0).all(), f"{what}: every sequence must start with the start token 0 "
                            "('.'): feed x = [0, c1, ..., cn]")
        return idx, mask
