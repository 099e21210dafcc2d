"""The equivalence, on real data: score a split with both forms and compare their logits.

    python -m wavenet_conv.check [--data FILE] [--layers 3] [--dtype float64]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from .config import ModelConfig
from .conv import ConvModel
from .data import Vocab, contexts, lecture_split, load_names, sequences
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
    batch = sequences(words, vocab).to(dev)
    t0 = time.perf_counter()
    tree_logits = tree(X.to(dev))  # (N, V)
    t1 = time.perf_counter()
    conv_logits = conv(batch.x)[batch.mask]  # (N, V), same order
    t2 = time.perf_counter()
    Y = Y.to(dev)
    return {
        "targets": int(Y.numel()),
        "tree_loss": F.cross_entropy(tree_logits, Y).item(),
        "conv_loss": F.cross_entropy(conv_logits, Y).item(),
        "max_abs_diff": (tree_logits - conv_logits).abs().max().item(),
        "tree_seconds": t1 - t0,
        "conv_seconds": t2 - t1,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Score the dev split with the tree and the conv form of one model.")
    ap.add_argument("--data", default=None, help="names file (default: the bundled data/names.txt)")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    from .paths import bundled_names

    path = args.data or bundled_names()
    words = load_names(path)
    vocab = Vocab.from_words(words)
    _, dev, _ = lecture_split(words)
    torch.manual_seed(args.seed)
    cfg = ModelConfig(vocab_size=len(vocab), n_layers=args.layers)
    tree = TreeModel(cfg).to(getattr(torch, args.dtype)).eval()
    r = compare_forms(tree, dev, vocab)
    print(f"{path}: dev split, {len(dev)} names, {r['targets']} targets; model {tree.num_params():,} parameters (freshly initialized), {args.dtype}")
    print(f"tree form (contexts):   loss {r['tree_loss']:.6f}  {r['tree_seconds'] * 1e3:.1f} ms")
    print(f"conv form (whole names): loss {r['conv_loss']:.6f}  {r['conv_seconds'] * 1e3:.1f} ms")
    print(f"largest |logit difference| over all {r['targets']} positions: {r['max_abs_diff']:.3g}")


if __name__ == "__main__":
    main()
