"""The two forms of one model side by side on real data: their logits compared position by position
(``compare_forms``, the equivalence; float64 for a tight bound) and their speed (``race_forms``, in
float32, as they are used, with the fast path beside them). The command line's ``check`` runs both.
"""

from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F

from ..models.conv import ConvModel
from ..data import Vocab, contexts, sequences
from ..device import device_clock
from .scoring import score_names
from ..models.tree import TreeModel


@torch.no_grad()
def compare_forms(tree: TreeModel, words: list[str], vocab: Vocab) -> dict:
    """Score ``words`` with ``tree`` on the lecture's contexts and with its ConvModel twin on whole
    names. Returns both mean losses (nats per target) and the largest |logit difference| over every
    position. ``tree`` must be in eval mode."""
    if tree.training:
        raise RuntimeError("compare_forms needs eval mode: call tree.eval()")
    conv = ConvModel.from_tree(tree)
    dev = next(tree.parameters()).device
    X, Y = contexts(words, vocab, tree.block_size)
    X, Y, batch = X.to(dev), Y.to(dev), sequences(words, vocab).to(dev)
    tree_logits = tree(X)  # (N, V)
    conv_logits = conv(batch.x)[batch.mask]  # (N, V), same order
    return {
        "targets": int(Y.numel()),
        "tree_loss": F.cross_entropy(tree_logits, Y).item(),
        "conv_loss": F.cross_entropy(conv_logits, Y).item(),
        "max_abs_diff": (tree_logits - conv_logits).abs().max().item(),
    }


@torch.no_grad()
def race_forms(tree: TreeModel, words: list[str], vocab: Vocab, repeats: int = 5) -> dict[str, float]:
    """Seconds (the median of ``repeats``) to score ``words`` in three ways, on the tree's device and
    dtype: "tree" (the lecture's way: its forward on one context per target), "conv" (the Conv1d
    form's forward on whole names, right-padded) and "fast" (``score_names``' folded path)."""
    conv = ConvModel.from_tree(tree)
    dev = next(tree.parameters()).device
    X, batch = contexts(words, vocab, tree.block_size)[0].to(dev), sequences(words, vocab).to(dev)
    contenders = {"tree": lambda: tree(X), "conv": lambda: conv(batch.x),
                  "fast": lambda: score_names(conv, words, vocab)}
    times = {}
    for name, fn in contenders.items():
        fn()  # warm-up
        runs = []
        for _ in range(repeats):
            t0 = device_clock(dev)
            fn()
            runs.append(device_clock(dev) - t0)
        times[name] = statistics.median(runs)
    return times
