"""Score whole names: per-name negative log-likelihood, the split loss, bits per character.

``score_names(model, names, vocab)`` takes a ``ConvModel``, a ``TreeModel`` or a ``FlatModel``.

The fast path (``method="fast"``, the default for a ``ConvModel``) is exact and does the minimum
work of SPEC §3:

* eval-mode BatchNorm is folded into the pair-mix weights and a bias (layer norm is kept);
* the pair mix of layer l at every position is ONE GEMM on the layer's input, ``h @ [W_old; W_new]^T``,
  and the dilation is applied to its output: ``a[t] = new[t] + old[t - d]`` (a shifted add of views);
* start-state padding: a position whose look-back falls before the name's start adds the constant
  ``q_l = p_l @ W_old^T`` (p_l: the all-'.' state of layer l), so each layer computes exactly n + 1
  positions for a name of n characters and nothing for padding;
* names are grouped by exact length, so a group is a dense (G, n + 1) block with no right padding;
  groups are cut into chunks of at most ``chunk_positions`` positions (cache-sized GEMMs);
* ``torch.inference_mode``, no Python loop over names or positions, results in input order.

``method="contexts"`` runs the model's own forward on the lecture's contexts (one per target): the
reference, and the lecture's way. ``method="forward"`` runs ``ConvModel.forward`` on right-padded
sequences.

Mode: scoring is always done in eval mode (BatchNorm running statistics, never batch statistics).
A model in training mode is switched to eval for the call and switched back afterwards.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import BatchNorm, LayerNorm, WaveNetCore
from .data import DataError, Vocab, check_name, contexts
from .tree import FlatModel, TreeModel

METHODS = ("auto", "fast", "contexts", "forward")


@dataclass
class ScoreResult:
    """Scores of a list of names, in input order.

    nll: (N,) float64 CPU tensor, total negative log-likelihood of each name in nats (its characters
        and the end token). n_targets: (N,) long CPU tensor, characters + 1 per name.
    mean_loss: nats per target over all names (on the lecture's dev split: the lecture's "val" loss).
    bits_per_char: ``mean_loss / ln 2``, bits per target (the end token counts as a character).
    """

    nll: torch.Tensor
    n_targets: torch.Tensor
    mean_loss: float
    bits_per_char: float

    @classmethod
    def from_nll(cls, nll: torch.Tensor, n_targets: torch.Tensor) -> "ScoreResult":
        nll = nll.detach().to("cpu", torch.float64)
        n_targets = n_targets.detach().to("cpu", torch.long)
        mean = float(nll.sum() / n_targets.sum())
        return cls(nll, n_targets, mean, mean / math.log(2))


@contextmanager
def eval_mode(model: nn.Module):
    """Run the block in eval mode, then restore every submodule's train/eval mode as it was."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def _device_dtype(model: nn.Module):
    p = next(model.parameters())
    return p.device, p.dtype


# ----------------------------------------------------------------------------------------------
# encoding: names -> one flat tensor of token ids and the lengths, validated, vectorized


def check_vocab(model: nn.Module, vocab: Vocab) -> None:
    if not isinstance(vocab, Vocab):
        raise TypeError(f"expected a Vocab, got {type(vocab).__name__}")
    if len(vocab) != model.config.vocab_size:
        raise ValueError(
            f"the vocabulary has {len(vocab)} tokens but the model's vocab_size is {model.config.vocab_size}"
        )


def encode_names(names, vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    """Names -> (tokens (sum of lengths,) long, lengths (N,) long), without start/end tokens.

    Raises ``DataError`` naming the index and the name for an empty name, '.', whitespace, or a
    character outside ``vocab``; ``DataError`` for an empty list; ``TypeError`` for a non-string.
    """
    if isinstance(names, str):
        raise TypeError("names must be a list of strings, got a single str")
    names = list(names)
    if not names:
        raise DataError("no names to score: the list is empty")
    for i, w in enumerate(names):
        if not isinstance(w, str):
            raise TypeError(f"names[{i}] is a {type(w).__name__}, not a str: {w!r}")
    lengths = np.fromiter((len(w) for w in names), dtype=np.int64, count=len(names))
    # every character as a code point, mapped through a sorted table of the vocabulary's characters
    cps = np.frombuffer("".join(names).encode("utf-32-le"), dtype=np.uint32)
    table = np.array(sorted(ord(c) for c in vocab.chars), dtype=np.uint32)
    ids = np.array([vocab.stoi[chr(c)] for c in table], dtype=np.int64)
    pos = np.searchsorted(table, cps).clip(max=len(table) - 1)
    ok = table[pos] == cps
    if not ok.all() or not lengths.all():
        for i, w in enumerate(names):  # slow path, only to report the first bad name
            check_name(w, vocab, f"names[{i}]")
    return torch.from_numpy(ids[pos]), torch.from_numpy(lengths)


# ----------------------------------------------------------------------------------------------
# the folded layers: what the fast path (and cached sampling) multiply by


@dataclass
class FoldedLayer:
    """Layer l with eval BatchNorm folded in: ``a = older @ w_old + newer @ w_new + bias``.

    w: (C_in, 2*C_act) = [w_old | w_new], so one GEMM ``h @ w`` gives both halves for every position.
    bias2: (2*C_act,) = [0 | bias] (zeros without a bias), the GEMM's bias.
    q: (C_act,) = p_l @ w_old, the older half at an all-'.' look-back.
    table: layer 0 only, (V, 2*C_act) = wte @ w + bias2: the embedding and the GEMM as one lookup.
    norm: a LayerNorm still to apply to ``a``, or None.
    doubled: the tanh argument (all of ``a`` for tanh, its first half for gated) is stored times 2,
        folded into w, bias2, q and table, because tanh(x) = 2 sigmoid(2x) - 1 and sigmoid is several
        times faster than tanh on CPU.
    """

    w: torch.Tensor
    bias2: torch.Tensor
    q: torch.Tensor
    table: torch.Tensor | None
    norm: nn.Module | None
    doubled: bool
    block: nn.Module
    dilation: int

    @property
    def c_act(self) -> int:
        return self.q.shape[0]


def fold_layers(model: WaveNetCore) -> list[FoldedLayer]:
    """Each block's pair mix with eval BatchNorm folded into the weights (model in eval mode)."""
    pads = model.pad_states()
    layers = []
    for l, block in enumerate(model.blocks):
        w, bias, norm = block.mix.weight, block.mix.bias, None  # (C_act, 2*C_in)
        if isinstance(block.norm, BatchNorm):
            scale, shift = block.norm.scale_shift()
            w = w * scale[:, None]
            bias = shift if bias is None else bias * scale + shift
        elif isinstance(block.norm, LayerNorm):
            norm = block.norm
        if bias is None:
            bias = torch.zeros_like(w[:, 0])
        doubled = norm is None and block.activation in ("tanh", "gated")
        if doubled:  # rows feeding tanh, times 2
            k = torch.ones_like(bias)  # (C_act,)
            k[: len(k) if block.activation == "tanh" else len(k) // 2] = 2.0
            w, bias = w * k[:, None], bias * k
        c_in = block.c_in
        w_old, w_new = w[:, :c_in], w[:, c_in:]  # (C_act, C_in) each
        w_cat = torch.cat([w_old, w_new], dim=0).t().contiguous()  # (C_in, 2*C_act)
        q = pads[l] @ w_old.t()  # (C_act,)
        bias2 = torch.cat([torch.zeros_like(bias), bias])  # (2*C_act,)
        table = torch.addmm(bias2, model.wte.weight, w_cat) if l == 0 else None  # (V, 2*C_act)
        layers.append(FoldedLayer(w_cat, bias2, q, table, norm, doubled, block, 2**l))
    return layers


@dataclass
class FoldedHead:
    """The output layer padded to a multiple of 16 columns (GEMM-friendly; 27 is slow), the extra
    logits -inf. pre: WaveNet's ReLU -> fc1 -> ReLU before it (skip models) or None."""

    w: torch.Tensor  # (C, V_pad)
    bias: torch.Tensor  # (V_pad,)
    pre: nn.Module | None
    vocab_size: int

    def __call__(self, h: torch.Tensor | None, skips: torch.Tensor | None) -> torch.Tensor:
        """(N, C) -> logits (N, V_pad)."""
        if self.pre is not None:
            h = F.relu(self.pre(F.relu(skips)))
        return torch.addmm(self.bias, h, self.w)


def fold_head(model: WaveNetCore) -> FoldedHead:
    out = model.skip_head.fc2 if model.config.skip else model.lm_head
    V, C = out.weight.shape
    Vp = -(-V // 16) * 16
    w = torch.zeros(C, Vp, dtype=out.weight.dtype, device=out.weight.device)
    w[:, :V] = out.weight.t()
    bias = torch.full((Vp,), float("-inf"), dtype=w.dtype, device=w.device)
    bias[:V] = out.bias
    return FoldedHead(w, bias, model.skip_head.fc1 if model.config.skip else None, V)


def _tanh_(x: torch.Tensor, doubled: bool) -> torch.Tensor:
    """tanh in place, as 2 sigmoid(2x) - 1 (or of x = 2 * the argument when ``doubled``)."""
    return (x if doubled else x.mul_(2)).sigmoid_().mul_(2).sub_(1)


def post_mix(layer: FoldedLayer, a: torch.Tensor, h: torch.Tensor | None, skips: torch.Tensor | None):
    """Everything after the pair mix, on flat rows: ``a`` (N, C_act) pre-activation (used in place),
    ``h`` (N, C_in) the newer child (needed for a residual only). Returns (out (N, H), skips (N, S) or
    None); ``skips`` is accumulated in place."""
    block = layer.block
    if layer.norm is not None:
        a = layer.norm(a)
    if block.activation == "tanh":
        z = _tanh_(a, layer.doubled)  # (N, H)
    else:
        f, g = a.chunk(2, dim=-1)
        f = _tanh_(f, layer.doubled) if block.activation == "gated" else f
        z = f.mul_(g.sigmoid_())  # (N, inner)
    out = z
    if block.residual:
        carry = h if block.res_in is None else h @ block.res_in.weight.t()
        out = torch.addmm(block.res.bias, z, block.res.weight.t()).add_(carry)  # (N, H)
    if block.skip is not None:
        s = torch.addmm(block.skip.bias, z, block.skip.weight.t())  # (N, S)
        skips = s if skips is None else skips.add_(s)
    return out, skips


# ----------------------------------------------------------------------------------------------
# the fast path


def _shift_add(layer: FoldedLayer, P: torch.Tensor, G: int, T: int) -> torch.Tensor:
    """P (G*T, 2*C_act) = [old | new] of every position -> pre-activation a (G*T, C_act), in place in
    P's new half: ``a[t] = new[t] + old[t - d]``, or ``+ q`` where t - d falls before the start."""
    P = P.view(G, T, 2, layer.c_act)
    old, a = P[:, :, 0], P[:, :, 1]  # (G, T, C_act) each
    d = layer.dilation
    if T > d:
        a[:, d:] += old[:, :-d]
    a[:, :d] += layer.q
    return a.reshape(G * T, layer.c_act)  # a strided view of P


class Workspace:
    """Two reusable (rows, cols) buffers that the layers' GEMMs write into in turn (layer l reads a
    view of buffer l-1's output): no fresh allocation, no page faults, per chunk."""

    def __init__(self, like: torch.Tensor):
        self.like, self.bufs = like, [like.new_empty(0), like.new_empty(0)]

    def get(self, l: int, rows: int, cols: int) -> torch.Tensor:
        if self.bufs[l % 2].numel() < rows * cols:
            self.bufs[l % 2] = self.like.new_empty(rows * cols)
        return self.bufs[l % 2][: rows * cols].view(rows, cols)


def fast_logits(model: WaveNetCore, layers: list[FoldedLayer], head: FoldedHead, x: torch.Tensor,
                work: Workspace | None = None) -> torch.Tensor:
    """x (G, T) token ids, each row ``[0, c1..c_{T-1}]``, no padding -> logits (G*T, V_pad); the
    columns past the vocabulary are -inf."""
    G, T = x.shape
    x = x.reshape(-1)  # (G*T,)
    work = work or Workspace(layers[0].q)
    h = model.wte.weight.index_select(0, x) if layers[0].block.residual else None  # (G*T, E), residual only
    skips = None
    for l, layer in enumerate(layers):
        P = work.get(l, G * T, 2 * layer.c_act)  # (G*T, 2*C_act)
        if l == 0:
            torch.index_select(layer.table, 0, x, out=P)  # the embedding and layer 0's GEMM: a lookup
        else:
            torch.addmm(layer.bias2, h, layer.w, out=P)
        a = _shift_add(layer, P, G, T)  # (G*T, C_act)
        h, skips = post_mix(layer, a, h, skips)  # (G*T, H)
    return head(h, skips)  # (G*T, V_pad)


def _length_groups(lengths: torch.Tensor, chunk_positions: int):
    """Yield (index of the names (G,), n) for names of exactly n characters, at most
    ``chunk_positions`` positions per group."""
    order = torch.argsort(lengths, stable=True)
    counts = torch.bincount(lengths)
    start = 0
    for n, c in enumerate(counts.tolist()):
        if c == 0:
            continue
        per = max(1, chunk_positions // (n + 1))
        for s in range(start, start + c, per):
            yield order[s : min(s + per, start + c)], n
        start += c


@torch.inference_mode()
def _score_fast(model: WaveNetCore, tokens: torch.Tensor, lengths: torch.Tensor, chunk_positions: int) -> torch.Tensor:
    """Per-name NLL (N,) float64 on the model's device, by whole names."""
    device, _ = _device_dtype(model)
    layers, head = fold_layers(model), fold_head(model)
    offsets = torch.cumsum(lengths, 0) - lengths  # (N,) where each name starts in ``tokens``
    tokens, lengths, offsets = tokens.to(device), lengths.to(device), offsets.to(device)
    nll = torch.empty(len(lengths), dtype=torch.float64, device=device)
    work = Workspace(layers[0].q)
    for idx, n in _length_groups(lengths.cpu(), chunk_positions):
        idx = idx.to(device)
        chars = tokens[offsets[idx, None] + torch.arange(n, device=device)]  # (G, n)
        zero = torch.zeros(len(idx), 1, dtype=torch.long, device=device)
        x = torch.cat([zero, chars], 1)  # (G, n+1)
        y = torch.cat([chars, zero], 1)  # (G, n+1)
        logits = fast_logits(model, layers, head, x, work)  # (G*(n+1), V_pad)
        loss = F.cross_entropy(logits, y.reshape(-1), reduction="none")  # (G*(n+1),)
        nll[idx] = loss.view(len(idx), n + 1).sum(1, dtype=torch.float64)
    return nll


# ----------------------------------------------------------------------------------------------
# reference paths: the model's own forward


@torch.inference_mode()
def _score_contexts(model: nn.Module, names, vocab: Vocab, lengths: torch.Tensor, batch: int) -> torch.Tensor:
    """The lecture's way: one context per target, the model's forward, summed per name."""
    device, _ = _device_dtype(model)
    X, Y = contexts(names, vocab, model.block_size)
    X, Y = X.to(device), Y.to(device)
    losses = torch.cat([
        F.cross_entropy(model(X[i : i + batch]), Y[i : i + batch], reduction="none")
        for i in range(0, len(X), batch)
    ])  # (N_targets,)
    name_of = torch.repeat_interleave(torch.arange(len(lengths), device=device), (lengths + 1).to(device))
    return torch.zeros(len(lengths), dtype=torch.float64, device=device).index_add_(0, name_of, losses.double())


@torch.inference_mode()
def _score_forward(model: WaveNetCore, names, vocab: Vocab, batch: int) -> torch.Tensor:
    """``ConvModel.forward`` on right-padded batches of names."""
    from .data import IGNORE, sequences

    device, _ = _device_dtype(model)
    out = []
    for i in range(0, len(names), batch):
        b = sequences(names[i : i + batch], vocab).to(device)
        logits = model(b.x)  # (B, T, V)
        loss = F.cross_entropy(logits.transpose(1, 2), b.y, reduction="none", ignore_index=IGNORE)  # (B, T)
        out.append(loss.sum(1, dtype=torch.float64))
    return torch.cat(out)


def score_names(
    model: nn.Module,
    names,
    vocab: Vocab,
    method: str = "auto",
    chunk_positions: int = 8192,
    batch: int = 8192,
) -> ScoreResult:
    """Score ``names`` (a list of str) under ``model``; see ``ScoreResult`` for the result.

    method: "auto" (fast for a ConvModel, "contexts" for a TreeModel or FlatModel), "fast" (any
        TreeModel or ConvModel: the same parameters, the same function), "contexts" (the model's
        forward on the lecture's contexts) or "forward" (ConvModel.forward on padded sequences).
    chunk_positions: the fast path's positions per GEMM. batch: contexts/names per forward call.

    Scored in eval mode; the model's train/eval mode is restored afterwards. Deterministic. Raises
    ``DataError`` naming the index and the name for an empty name or a character outside ``vocab``.
    """
    if not isinstance(model, (WaveNetCore, FlatModel)):
        raise TypeError(f"score_names: expected a ConvModel, TreeModel or FlatModel, got {type(model).__name__}")
    if method not in METHODS:
        raise ValueError(f"score_names: method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        method = "contexts" if isinstance(model, (TreeModel, FlatModel)) else "fast"
    if method in ("fast", "forward") and not isinstance(model, WaveNetCore):
        raise ValueError(f"score_names: method={method!r} needs a ConvModel or TreeModel, got {type(model).__name__}")
    if method == "forward" and isinstance(model, TreeModel):
        raise ValueError("score_names: method='forward' needs a ConvModel (a TreeModel takes contexts)")
    check_vocab(model, vocab)
    names = list(names) if not isinstance(names, str) else names
    tokens, lengths = encode_names(names, vocab)
    with eval_mode(model):
        if method == "fast":
            nll = _score_fast(model, tokens, lengths, chunk_positions)
        elif method == "contexts":
            nll = _score_contexts(model, names, vocab, lengths, batch)
        else:
            nll = _score_forward(model, names, vocab, batch)
    return ScoreResult.from_nll(nll, lengths + 1)
