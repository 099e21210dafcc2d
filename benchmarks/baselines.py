"""Shared setup for the benchmarks: the data, the models, and the baselines the fast paths race.

* ``lecture_loss``: the lecture's way, ``F.cross_entropy(tree(Xdev), Ydev)`` in one pass.
* ``FoldedTree``: the tree with eval BatchNorm folded into its Linear weights and the same tanh and
  output kernels as the fast path: the best a tree can do; what is left is the tree's structure.
* ``TextbookConv``: ``nn.Conv1d`` (kernel 2, dilation 2**l) -> ``nn.BatchNorm1d`` -> ``nn.Tanh``,
  channels first, each name left-padded with 2**L - 1 '.' tokens and right-padded to the longest.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from wavenet_conv import ConvModel, ModelConfig, Vocab, lecture_split, load_names
from wavenet_conv.data import IGNORE
from wavenet_conv.inference.folded import fold_head, fold_layers, sigmoid_tanh_

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LECTURE_NAMES = os.path.join(ROOT, "names.txt")  # the lecture's file, where a user downloads it (gitignored)
BUNDLED_NAMES = os.path.join(ROOT, "data", "names.txt")


def devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def names_file() -> str:
    """The lecture's names.txt at the repository's root when it is there (from the makemore
    repository), else the bundled data/names.txt."""
    return LECTURE_NAMES if os.path.exists(LECTURE_NAMES) else BUNDLED_NAMES


@functools.lru_cache(maxsize=1)
def load_split():
    """(train, dev, vocab) of the lecture's split of ``names_file()`` (read once)."""
    words = load_names(names_file())
    train, dev, _ = lecture_split(words)
    return train, dev, Vocab.from_words(words)


def make_model(depth: int, device: str, vocab: Vocab, train_words=None, seed: int = 0) -> ConvModel:
    """The lecture's widths (n_embd 24, n_hidden 128) at ``depth``, random weights and BatchNorm
    statistics, eval mode, float32. With ``train_words``, the output bias is set to the log unigram
    frequencies of the targets, so that samples have names' lengths (an untrained model rarely ends)."""
    torch.manual_seed(seed)
    model = ConvModel(ModelConfig(vocab_size=len(vocab), n_layers=depth))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.5 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
        if train_words is not None:
            counts = torch.ones(len(vocab))
            counts[0] += len(train_words)
            for w in train_words:
                for ch in w:
                    counts[vocab.stoi[ch]] += 1
            model.lm_head.bias.copy_(counts.log())
    return model.to(device).eval()


def lecture_loss(tree: nn.Module, X: torch.Tensor, Y: torch.Tensor) -> float:
    """The lecture's split loss: the whole split through the tree in one pass."""
    with torch.no_grad():
        return F.cross_entropy(tree(X), Y).item()


class FoldedTree:
    """The tree form on contexts (B, 2**L) with eval BatchNorm folded in (lecture variant only)."""

    def __init__(self, model):
        c = model.config
        assert c.activation == "tanh" and not c.residual and not c.skip, "FoldedTree: the lecture's variant only"
        self.wte = model.wte.weight
        self.layers = fold_layers(model)
        self.head = fold_head(model)
        # [w_old | w_new] (C_in, 2*C_act) -> the tree's Linear over the pair [older; newer] (2*C_in, C_act)
        self.weights = [torch.cat([l.w[:, : l.c_act], l.w[:, l.c_act :]], 0).contiguous() for l in self.layers]

    @torch.inference_mode()
    def loss(self, X: torch.Tensor, Y: torch.Tensor) -> float:
        B = X.shape[0]
        h = self.wte[X]  # (B, 2^L, E)
        for layer, w in zip(self.layers, self.weights):
            _, T, C = h.shape
            a = torch.addmm(layer.bias2[layer.c_act :], h.reshape(B * T // 2, 2 * C), w)  # (B*T/2, H)
            h = sigmoid_tanh_(a, layer.doubled).view(B, T // 2, -1)
        logits = self.head(h[:, 0], None)  # (B, V_pad)
        return F.cross_entropy(logits, Y).item()


class TextbookConv(nn.Module):
    """``nn.Conv1d`` -> ``nn.BatchNorm1d`` -> ``nn.Tanh`` per layer, unpadded convolutions over names
    left-padded with 2**L - 1 '.' tokens (lecture variant only), built from a model's parameters."""

    def __init__(self, model):
        super().__init__()
        c = model.config
        assert c.activation == "tanh" and c.norm == "batch" and not c.residual and not c.skip
        self.pad = 2**c.n_layers - 1
        self.wte = nn.Embedding.from_pretrained(model.wte.weight.detach().clone())
        layers = []
        for l, block in enumerate(model.blocks):
            conv = nn.Conv1d(block.c_in, c.n_hidden, kernel_size=2, dilation=2**l, bias=False)
            conv.weight.data.copy_(block.conv_weight())
            bn = nn.BatchNorm1d(c.n_hidden, eps=block.norm.eps)
            bn.load_state_dict({k: v for k, v in block.norm.state_dict().items()}, strict=False)
            layers += [conv, bn, nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.lm_head = nn.Conv1d(c.n_hidden, c.vocab_size, 1)
        self.lm_head.weight.data.copy_(model.lm_head.weight[:, :, None])
        self.lm_head.bias.data.copy_(model.lm_head.bias)
        self.to(model.wte.weight.device).eval()

    def batch(self, words, vocab):
        """x (B, 2**L - 1 + T): '.'-padded inputs; y (B, T): targets, IGNORE on right padding."""
        T = max(len(w) for w in words) + 1
        x = torch.zeros(len(words), self.pad + T, dtype=torch.long)
        y = torch.full((len(words), T), IGNORE, dtype=torch.long)
        for b, w in enumerate(words):
            ids = torch.tensor(vocab.encode(w), dtype=torch.long)
            x[b, self.pad + 1 : self.pad + 1 + len(w)] = ids
            y[b, : len(w)] = ids
            y[b, len(w)] = 0
        dev = self.wte.weight.device
        return x.to(dev), y.to(dev)

    @torch.inference_mode()
    def loss(self, x: torch.Tensor, y: torch.Tensor) -> float:
        h = self.wte(x).transpose(1, 2)  # (B, E, 2^L - 1 + T)
        logits = self.lm_head(self.net(h))  # (B, V, T)
        return F.cross_entropy(logits, y, ignore_index=IGNORE).item()


def work_per_target(depth: int, n_embd: int = 24, n_hidden: int = 128, vocab_size: int = 27) -> tuple[int, int]:
    """Multiply-adds per target (hidden layers and output layer), (tree, conv): the tree computes
    2**(L-1-l) nodes of layer l per target, the conv one position per layer."""
    E, H, L = n_embd, n_hidden, depth
    tree = 2 ** (L - 1) * 2 * E * H + sum(2 ** (L - 1 - l) * 2 * H * H for l in range(1, L))
    conv = 2 * E * H + (L - 1) * 2 * H * H
    head = H * vocab_size
    return tree + head, conv + head


def fast_work_per_target(depth: int, n_hidden: int = 128, vocab_size: int = 27) -> int:
    """Multiply-adds per target of the fast path as it runs: layers 0 and 1 are one lookup in the
    table of token pairs, layers 2.. one GEMM each, and the head is padded to a multiple of 16."""
    H, v_pad = n_hidden, -(-vocab_size // 16) * 16
    return max(depth - 2, 0) * 2 * H * H + H * v_pad


def median_s(benchmark) -> float | None:
    """The benchmark's median in seconds, or None when benchmarks are disabled."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else stats.stats.median


def plain_gemm_nll(conv: ConvModel, names: list[str], vocab: Vocab, chunk_positions: int = 8192) -> torch.Tensor:
    """The fast path as 0.3 ran it (a copy, the baseline of ``bench_invariance.py``): each length
    group's GEMMs on all its rows at once (a kernel chosen by the group's size) and each name's sum by
    ``Tensor.sum``. 1.0 runs the same arithmetic in fixed (ROWS, K) GEMM blocks with a running sum."""
    from wavenet_conv.inference.folded import fold
    from wavenet_conv.inference.scoring import encode_names, group_logits

    folded = fold(conv.eval())
    folded.rows = None  # plain GEMMs: the shape of each call is the group's
    tokens, lengths, _ = encode_names(names, vocab)
    nll = torch.empty(len(lengths), dtype=torch.float64)
    with torch.inference_mode():
        for idx, x, _, logits in group_logits(folded, tokens, lengths, chunk_positions):
            y = F.pad(x[:, 1:], (0, 1))  # (G, n+1)
            loss = F.cross_entropy(logits, y.reshape(-1), reduction="none").view(x.shape)
            nll[idx] = loss.sum(1, dtype=torch.float64)
    return nll
