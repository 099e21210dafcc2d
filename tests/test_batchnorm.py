"""BatchNorm in training mode takes its statistics over the real positions of a batch of names only:
the conv form's training step, written out by hand with plain tensor operations, gives the same
running statistics and the same logits."""

import pytest
import torch

from conftest import VOCAB, random_words
from wavenet_conv import ConvModel, ModelConfig, sequences
from wavenet_conv.blocks import activate


def by_hand(model: ConvModel, x: torch.Tensor, mask: torch.Tensor):
    """The training-mode forward: (logits (B, T, V), [(batch mean, unbiased batch variance)] per layer).

    Layer l pairs h[t - 2**l] with h[t]; a look-back before the start reads position 0, the state of
    an all-'.' history (every name starts with '.'). Statistics: over the positions where mask is True.
    """
    h = model.wte.weight[x]  # (B, T, E)
    T, stats = x.shape[1], []
    for l, block in enumerate(model.blocks):
        older = h[:, (torch.arange(T) - 2**l).clamp(min=0)]  # (B, T, C)
        a = torch.cat([older, h], -1) @ block.mix.weight.T  # (B, T, C_act)
        real = a[mask]  # (N, C_act): the real positions only
        mean, var = real.mean(0), real.var(0, unbiased=True)
        stats.append((mean, var))
        bn = block.norm
        h = activate((a - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias, block.activation)  # (B, T, H)
    return model.lm_head(h), stats


@pytest.mark.parametrize("activation", ["tanh", "gated"])
def test_running_statistics_come_from_real_positions_only(activation):
    torch.manual_seed(0)
    model = ConvModel(ModelConfig(n_embd=4, n_hidden=6, n_layers=3, activation=activation)).double()
    words = random_words(7, seed=1, min_len=1, max_len=11)
    batch = sequences(words, VOCAB, pad_to=14)
    x = torch.where(batch.mask, batch.x, torch.randint(1, 27, batch.x.shape))  # padding: random characters
    before = [(b.norm.running_mean.clone(), b.norm.running_var.clone()) for b in model.blocks]
    with torch.no_grad():
        ref_logits, stats = by_hand(model, x, batch.mask)
        logits = model.train()(x, batch.mask)
    for block, (mean0, var0), (mean, var) in zip(model.blocks, before, stats):
        m = block.norm.momentum
        assert (block.norm.running_mean - ((1 - m) * mean0 + m * mean)).abs().max() <= 1e-12
        assert (block.norm.running_var - ((1 - m) * var0 + m * var)).abs().max() <= 1e-12
    assert (logits[batch.mask] - ref_logits[batch.mask]).abs().max() <= 1e-10
    padded_stats = by_hand(model, x, torch.ones_like(batch.mask))[1]  # the check is not vacuous:
    assert (padded_stats[0][0] - stats[0][0]).abs().max() > 1e-3  # padding would change the statistics
