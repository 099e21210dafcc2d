"""BatchNorm in training mode takes its statistics over the real positions of a batch of names only:
the conv form's training step, written out by hand with plain tensor operations, gives the same
running statistics and the same logits."""

import pytest
import torch

from helpers import VOCAB, random_words
from wavenet_conv import ConvModel, ModelConfig, sequences
from wavenet_conv.models.blocks import activate


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


@pytest.mark.parametrize("shape,dim", [((40, 6), -1), ((5, 8, 6), -1), ((5, 6, 8), 1)], ids=["rows", "channels-last", "channels-first"])
def test_the_fused_statistics_over_every_position_are_the_lectures(shape, dim):
    """Training mode with no mask runs one F.batch_norm kernel, its weight and eps corrected so that it
    normalizes with the unbiased variance, as the lecture does: the same outputs, gradients and running
    statistics as the two-pass formula (here through a mask that keeps every position)."""
    from wavenet_conv.models.blocks import BatchNorm

    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(shape, generator=g, dtype=torch.float64) + 1).requires_grad_()
    fused, two_pass = BatchNorm(6).double().train(), BatchNorm(6).double().train()
    with torch.no_grad():
        for bn in (fused, two_pass):
            bn.weight.copy_(torch.linspace(0.5, 2, 6))
            bn.bias.copy_(torch.linspace(-1, 1, 6))
    everywhere = torch.ones(x.movedim(dim, -1).shape[:-1], dtype=torch.bool)  # x's shape without the channels
    y1, y2 = fused(x, None, dim), two_pass(x, everywhere, dim)
    assert (y1 - y2).abs().max() <= 1e-12
    g1 = torch.autograd.grad((y1 * y1.detach().cos()).sum(), (x, fused.weight))
    g2 = torch.autograd.grad((y2 * y2.detach().cos()).sum(), (x, two_pass.weight))
    assert all((a - b).abs().max() <= 1e-12 for a, b in zip(g1, g2))
    assert (fused.running_mean - two_pass.running_mean).abs().max() <= 1e-12
    assert (fused.running_var - two_pass.running_var).abs().max() <= 1e-12


def test_num_features_is_the_channel_count():
    """``BatchNorm(C)`` holds C channels in ``num_features`` (``forward``'s ``dim`` is an axis)."""
    from wavenet_conv.models.blocks import BatchNorm

    bn = BatchNorm(6)
    assert bn.num_features == 6 and bn.running_mean.shape == (6,) and "6" in repr(bn)
