"""The equivalence, on real data: score a split with both forms and compare their logits.

    wavenet-conv check [--data FILE] [--layers 3] [--dtype float64] [--device auto]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .conv import ConvModel
from .data import Vocab, contexts, sequences
from .train import device_clock
from .tree import TreeModel


@torch.no_grad()
def compare_forms(tree: TreeModel, words: list[str], vocab: Vocab) -> dict:
    """Score ``words`` with ``tree`` on the lecture's contexts and with its ConvModel twin on whole
    names. Returns both mean losses (nats per target), the largest |logit difference| over every
    position, and both times in seconds. ``tree`` must be in eval mode."""
    if tree.training:
        raise RuntimeError("compare_forms needs eval mode: call tree.eval()")
    conv = ConvModel.from_tree(tree)
    dev = next(tree.parameters()).device
    X, Y = contexts(words, vocab, tree.block_size)
    X, batch = X.to(dev), sequences(words, vocab).to(dev)
    t0 = device_clock(dev)
    tree_logits = tree(X)  # (N, V)
    t1 = device_clock(dev)
    conv_logits = conv(batch.x)[batch.mask]  # (N, V), same order
    t2 = device_clock(dev)
    Y = Y.to(dev)
    return {
        "targets": int(Y.numel()),
        "tree_loss": F.cross_entropy(tree_logits, Y).item(),
        "conv_loss": F.cross_entropy(conv_logits, Y).item(),
        "max_abs_diff": (tree_logits - conv_logits).abs().max().item(),
        "tree_seconds": t1 - t0,
        "conv_seconds": t2 - t1,
    }
