"""Training batches: whole names packed end to end (the conv form), or the lecture's random contexts
(the tree form); input noise; and BatchNorm's statistics recomputed on the clean training set.

Every batch is a function of (seed, step) (the lecture's ``torch.randint`` stream aside, which resume
restores from the saved RNG state), so a resumed run sees the batches an uninterrupted one sees.
"""

from __future__ import annotations

import torch

from ..models.blocks import BatchNorm
from ..data import Vocab, contexts


class NameBatches:
    """Batches of whole names packed end to end (no padding), an epoch-wise shuffle that depends only
    on (seed, step). A batch is (x, y, pos), each (N,): the tokens ``[0, c1..cn]`` of its names back to
    back, their targets ``[c1..cn, 0]``, and each position's index in its name (``ConvModel.packed``).

    The names live on the device; their lengths and the batch order stay on the host, so that a
    batch's size is known without reading anything back from the device. A distilled run's teachers'
    distributions (``soft``, one row a position, in the same flat order) are gathered for a batch by
    the same positions (``soft_at``).
    """

    def __init__(self, words, vocab: Vocab, batch_size: int, seed: int, device):
        chars = torch.tensor([i for w in words for i in vocab.encode(w) + [0]], dtype=torch.long)  # c1..cn 0, each name
        self.lengths = torch.tensor([len(w) + 1 for w in words], dtype=torch.long)  # (n,) targets per name, on the host
        self.starts = torch.cumsum(self.lengths, 0) - self.lengths  # (n,) where each name starts
        pos = torch.arange(len(chars)) - torch.repeat_interleave(self.starts, self.lengths)  # index in its name
        x = torch.where(pos == 0, 0, chars.roll(1))  # [0, c1..cn] each: the targets shifted, '.' in front
        self.x, self.y, self.pos = (t.to(device) for t in (x, chars, pos))
        self.n, self.batch_size, self.seed = len(words), min(batch_size, len(words)), seed
        self.per_epoch = self.n // self.batch_size
        self.epoch, self.perm = -1, None
        self.soft = None  # (P, V) or None: the teachers' distribution at each of the P positions (distillation)

    def __call__(self, step: int):
        return self.take(self.names_at(step))

    def names_at(self, step: int) -> torch.Tensor:
        """The names (B,) of the batch of ``step``."""
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self.epoch, self.perm = epoch, torch.randperm(self.n, generator=g)
        return self.perm[k * self.batch_size : (k + 1) * self.batch_size]

    def positions(self, ix: torch.Tensor) -> torch.Tensor:
        """The flat positions (N,) of names ``ix`` (B,), name after name, on the device."""
        lengths = self.lengths[ix]  # (B,)
        firsts = torch.cumsum(lengths, 0) - lengths  # where each name starts in the batch
        src = torch.arange(int(lengths.sum())) + torch.repeat_interleave(self.starts[ix] - firsts, lengths)  # (N,)
        return src.to(self.x.device)

    def take(self, ix: torch.Tensor):
        """Names ``ix`` (B,) packed: (x, y, pos), each (N,), N their targets in all."""
        src = self.positions(ix)
        return self.x[src], self.y[src], self.pos[src]

    def soft_at(self, step: int) -> torch.Tensor:
        """The teachers' distributions (N, V) at the positions of the batch of ``step``, as it packs them."""
        return self.soft[self.positions(self.names_at(step))]

    def in_order(self, size: int = 512):
        """The whole training set once, in order: (x, pos) chunks."""
        for i in range(0, self.n, size):
            x, _, pos = self.take(torch.arange(i, min(i + size, self.n)))
            yield x, pos


class ContextBatches:
    """The lecture's minibatches: ``torch.randint`` over all training contexts (global RNG)."""

    def __init__(self, words, vocab: Vocab, batch_size: int, block_size: int, device):
        self.X, self.Y = (t.to(device) for t in contexts(words, vocab, block_size))  # (N, block), (N,)
        self.batch_size = batch_size

    def __call__(self, step: int):
        ix = torch.randint(0, self.X.shape[0], (self.batch_size,)).to(self.X.device)
        return self.X[ix], self.Y[ix], None

    def in_order(self, size: int = 4096):
        for i in range(0, self.X.shape[0], size):
            yield self.X[i : i + size], None


def add_input_noise(x: torch.Tensor, p: float, vocab_size: int, seed: int, step: int) -> torch.Tensor:
    """Replace each non-'.' token of ``x`` by a uniform random character with probability ``p``; the
    draws depend only on (seed, step), so resume stays exact."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step + 1)
    hit = (torch.rand(x.shape, generator=g) < p).to(x.device) & (x != 0)
    noise = torch.randint(1, vocab_size, x.shape, generator=g).to(x.device)
    return torch.where(hit, noise, x)


def add_unknown(batch: tuple, p: float, unknown_id: int, seed: int, step: int) -> tuple:
    """Replace each character of a batch (x, y, pos) by the unknown token with probability ``p``, so
    that the token learns what a character never seen costs, in context and after it. Whole names
    (``pos`` given): a character is replaced as a target and as the next position's input alike;
    contexts (``pos`` None): each context token and target independently. The draws depend only on
    (seed, step), so resume stays exact."""
    x, y, pos = batch
    g = torch.Generator().manual_seed(seed * 1_000_003 + step + 2**31)  # apart from add_input_noise's
    hit_y = (torch.rand(y.shape, generator=g) < p).to(y.device) & (y != 0)
    y = torch.where(hit_y, unknown_id, y)
    if pos is not None:  # x is y shifted right within each name: [0, c1..cn]
        return torch.where(pos == 0, 0, y.roll(1)), y, pos
    hit_x = (torch.rand(x.shape, generator=g) < p).to(x.device) & (x != 0)
    return torch.where(hit_x, unknown_id, x), y, pos


@torch.no_grad()
def recalibrate_batchnorm(model, batches) -> None:
    """Recompute every BatchNorm's running statistics on the clean training set: the mean of the
    batch statistics over one ordered pass. Used for averaged weights (``swa``), which no batch has
    seen, and after ``input_noise``, whose noisy batches the running statistics were estimated on."""
    norms = [m for m in model.modules() if isinstance(m, BatchNorm)]
    if not norms:
        return
    momenta = [bn.momentum for bn in norms]
    model.train()
    for k, (x, pos) in enumerate(batches.in_order()):
        for bn in norms:
            bn.momentum = 1.0 / (k + 1)  # a running mean of the batch statistics
        model(x) if pos is None else model.packed(x, pos)
    for bn, m in zip(norms, momenta):
        bn.momentum = m
