"""Training the conv form trains the lecture's model: same loss, same gradients, in eval mode."""

import pytest
import torch
import torch.nn.functional as F

from helpers import VARIANTS, VOCAB, make_pair, random_words, variant_id
from wavenet_conv import ModelConfig, contexts, sequences


@pytest.mark.parametrize("depth", [1, 3, 4])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_gradients_match(variant, depth):
    cfg = ModelConfig(n_embd=5, n_hidden=6, n_layers=depth, **variant)
    tree, conv = make_pair(cfg, torch.float64, seed=depth)
    words = random_words(5, seed=depth, max_len=2**depth + 4)
    batch = sequences(words, VOCAB)
    X, Y = contexts(words, VOCAB, cfg.block_size)

    tree_loss = F.cross_entropy(tree(X), Y, reduction="sum")
    conv_loss = F.cross_entropy(conv(batch.x).flatten(0, 1), batch.y.flatten(), reduction="sum")  # padding ignored
    assert abs(tree_loss.item() - conv_loss.item()) <= 1e-10 * abs(tree_loss.item())
    tree_loss.backward()
    conv_loss.backward()
    tp, cp = dict(tree.named_parameters()), dict(conv.named_parameters())
    assert tp.keys() == cp.keys()
    for name in tp:
        g1, g2 = tp[name].grad, cp[name].grad
        scale = g1.abs().max().item()
        assert scale > 0, f"{name}: zero gradient, the check would be vacuous"
        assert (g1 - g2).abs().max().item() <= 1e-8 * scale, name
