"""The folded fast path: the one computation under ``score_names`` and the cached sampler.

In eval mode every layer is an affine pair mix followed by elementwise functions, so the model can be
rearranged for speed without changing what it computes (equal to ``ConvModel.forward`` up to float
rounding: ≤ 1e-10 in float64, tested for every variant):

* **BatchNorm folding.** Eval-mode BatchNorm is ``x * scale + shift`` per channel (running
  statistics), so it folds into the pair mix: ``W' = scale[:, None] * W``, ``b' = scale * b + shift``.
* **One GEMM and a shifted add.** Layer l's pre-activation at position t is
  ``a[t] = W_old h[t - d] + W_new h[t] + b`` with d = 2**l. One GEMM gives both halves for every
  position, ``[old | new] = h @ [W_old; W_new]^T``, and the dilation is a shifted add of two views of
  its output, ``a[t] = new[t] + old[t - d]``: each position's input is multiplied once.
* **Start-state padding.** Every name starts with '.', so a look-back before the start reads the state
  of an all-'.' history, ``p_l`` (``WaveNetCore.pad_states``). Its old half is the constant
  ``q_l = p_l · W_old^T``, added where t < d. A layer computes exactly the n + 1 positions of a name
  of n characters, and nothing for padding.
* **Layer 0 as a lookup.** Its input is an embedding, so embedding + GEMM is one ``index_select``
  from the (V, 2·C_act) table ``wte @ [W_old; W_new]^T + [0 | b]``.
* **Layers 0 and 1 as a lookup.** Layer 0's output at t is a function of the token
  pair (x[t-1], x[t]) alone (at t = 0 the pair is ('.', '.'): the start state), so ``PairTable``
  holds it for all V² pairs, with its skip and layer 1's GEMM of it. A position (or a sampled
  character) then costs one row lookup for layers 0 and 1, and GEMMs from layer 2 on.
* **tanh = 2σ(2x) − 1.** On CPU ``sigmoid`` is several times faster than ``tanh``; the factor 2 inside
  is folded into the weights (``FoldedLayer.doubled``). Elsewhere (a GPU) ``tanh_`` is one pass over
  memory against three: no doubling there.
* **A GEMM-friendly head.** The output layer is padded to a multiple of 16 columns, with -inf logits.

``fold(model)`` gives a ``FoldedModel``, the one computation under both fast paths: ``logits(x)`` scores
whole names, a (G, T) block at a time (``score_names``); ``start``/``step`` run one position for a
batch of rows with a cache of each layer's older halves (the cached sampler, ``sample_names``). Both
share its pieces: the pair-table ``prelude``, each layer's GEMM (``mix``), ``after_mix`` (the folded
twin of ``Block.after_mix``: everything after the pair mix) and the ``head``.

Every tensor here is flat rows, ``(N, C)``, and everything runs in eval mode (``eval_mode``).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.blocks import BatchNorm, LayerNorm, WaveNetCore


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


ROWS = 128  # scoring's GEMM block on a CPU: every GEMM of ``FoldedModel.logits`` has exactly this many rows


def gemm(bias: torch.Tensor | None, x: torch.Tensor, w: torch.Tensor, rows: int | None = None,
         out: torch.Tensor | None = None) -> torch.Tensor:
    """``bias + x @ w``: x (N, K), w (K, M), bias (M,) or None -> (N, M) (written into ``out``).

    With ``rows``, as (rows, K) x (K, M) blocks of one batched GEMM, the last block padded with zero
    rows: every row then goes through a GEMM of one shape, whatever N is. A BLAS picks its kernel, and
    so its order of additions, by the shape (and the thread count) of the call, so a plain GEMM can give
    a row other last bits in another list; a block of fixed shape gives every row the same bits wherever
    it lands and whatever runs beside it (batch invariance)."""
    if rows is None:
        if bias is None:
            return torch.mm(x, w, out=out)
        return torch.addmm(bias, x, w, out=out)
    N, K = x.shape
    M = w.shape[1]
    out = x.new_empty(N, M) if out is None else out
    full = N - N % rows
    if full:
        nb = full // rows
        blocks = x[:full].unflatten(0, (nb, rows))  # (nb, rows, K), a view
        target = out[:full].view(nb, rows, M)
        if bias is None:
            torch.bmm(blocks, w.expand(nb, K, M), out=target)
        else:
            torch.baddbmm(bias, blocks, w.expand(nb, K, M), out=target)
    if full < N:
        last = x.new_zeros(1, rows, K)
        last[0, : N - full] = x[full:]
        prod = torch.bmm(last, w.expand(1, K, M)) if bias is None else torch.baddbmm(bias, last, w.expand(1, K, M))
        out[full:] = prod[0, : N - full]
    return out


@dataclass
class FoldedLayer:
    """Layer l with eval BatchNorm folded in: ``a = older @ w_old + newer @ w_new + bias``.

    w: (C_in, 2*C_act) = [w_old | w_new], so one GEMM ``h @ w`` gives both halves for every position.
    bias2: (2*C_act,) = [0 | bias] (zeros without a bias), the GEMM's bias.
    q: (C_act,) = p_l @ w_old, the older half at an all-'.' look-back.
    table: layer 0 only, (V, 2*C_act) = wte @ w + bias2: the embedding and the GEMM as one lookup.
    norm: a LayerNorm still to apply to ``a``, or None.
    doubled: the tanh argument (all of ``a`` for tanh, its first half for gated) is stored times 2,
        folded into w, bias2, q and table (tanh(x) = 2 sigmoid(2x) - 1).
    block: the layer's ``Block`` (its activation, residual and skip parts). dilation: 2**l.
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
        doubled = norm is None and block.activation in ("tanh", "gated") and w.device.type == "cpu"
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

    def __call__(self, h: torch.Tensor | None, skips: torch.Tensor | None, rows: int | None = None) -> torch.Tensor:
        """(N, C) last layer's output (or (N, S) skip sum) -> logits (N, V_pad); ``rows``: see ``gemm``."""
        if self.pre is not None:
            h = F.relu(gemm(self.pre.bias, F.relu(skips), self.pre.weight.t(), rows))
        return gemm(self.bias, h, self.w, rows)


def fold_head(model: WaveNetCore) -> FoldedHead:
    out = model.skip_head.fc2 if model.config.skip else model.lm_head
    V, C = out.weight.shape
    Vp = -(-V // 16) * 16
    w = torch.zeros(C, Vp, dtype=out.weight.dtype, device=out.weight.device)
    w[:, :V] = out.weight.t()
    bias = torch.full((Vp,), float("-inf"), dtype=w.dtype, device=w.device)
    bias[:V] = out.bias
    return FoldedHead(w, bias, model.skip_head.fc1 if model.config.skip else None, V)


def name_sums(loss: torch.Tensor) -> torch.Tensor:
    """(G, T) per-target losses -> (G,) float64 sums, added left to right in position order (a running
    sum: the same order for every row whatever G is, and for a float64 model too; a reduction may
    reorder its additions by the tensor's shape). Every scoring path sums a name this way."""
    return loss.double().cumsum(1)[:, -1]


@contextmanager
def one_thread():
    """Run the block at one torch thread (the caller's count restored after)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def sigmoid_(x: torch.Tensor) -> torch.Tensor:
    """``x.sigmoid_()``, on a CPU at one thread: torch splits a large elementwise op between threads at
    any element, and the elements at the end of a thread's share take the scalar sigmoid, not the
    vectorized one, whose last bit can differ; at one thread each element of a row takes the path of its
    column, wherever the row lands (batch invariance; the GEMMs keep the caller's threads)."""
    if x.device.type != "cpu" or torch.compiler.is_compiling():  # compiled: inductor's own kernel
        return x.sigmoid_()
    with one_thread():
        return x.sigmoid_()


def sigmoid_tanh_(x: torch.Tensor, doubled: bool) -> torch.Tensor:
    """tanh in place: on a CPU as 2 sigmoid(2x) - 1 (``x`` already holds 2x when ``doubled``), elsewhere
    ``tanh_`` (one pass; a GPU's tanh is as fast as its sigmoid)."""
    if x.device.type != "cpu" and not doubled:
        return x.tanh_()
    return sigmoid_(x if doubled else x.mul_(2)).mul_(2).sub_(1)


def after_mix(layer: FoldedLayer, a: torch.Tensor, h: torch.Tensor | None, skips: torch.Tensor | None,
              rows: int | None = None):
    """Everything after the pair mix (the folded ``Block.after_mix``): ``a`` (N, C_act) the
    pre-activation (overwritten), ``h`` (N, C_in) the newer child (read by a residual only), ``skips``
    (N, S) the skip sum so far or None; ``rows``: the GEMMs' block (``gemm``). Returns (out (N, H),
    skips (N, S) or None, summed in place)."""
    block = layer.block
    if layer.norm is not None:
        a = layer.norm(a)
    if block.activation == "tanh":
        z = sigmoid_tanh_(a, layer.doubled)  # (N, H)
    else:
        f, g = a.chunk(2, dim=-1)
        f = sigmoid_tanh_(f, layer.doubled) if block.activation == "gated" else f
        z = f.mul_(sigmoid_(g))  # (N, inner)
    out = z
    if block.residual:
        carry = h if block.res_in is None else gemm(None, h, block.res_in.weight.t(), rows)
        out = gemm(block.res.bias, z, block.res.weight.t(), rows).add_(carry)  # (N, H)
    if block.skip is not None:
        s = gemm(block.skip.bias, z, block.skip.weight.t(), rows)  # (N, S)
        skips = s if skips is None else skips.add_(s)
    return out, skips


def shifted_add(layer: FoldedLayer, P: torch.Tensor, G: int, T: int) -> torch.Tensor:
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


@dataclass
class PairTable:
    """Layer 0 for every token pair (x[t-1], x[t]), row ``x[t-1] * V + x[t]``: its output h (V², H),
    its skip (V², S) or None, and layer 1's GEMM of h, ``h @ w + bias2`` (V², 2*C_act), or None for
    a one-layer model."""

    h: torch.Tensor
    skips: torch.Tensor | None
    mix1: torch.Tensor | None


PAIR_TABLE_MAX = 1 << 16  # token pairs, at most: a table of V² rows (729 for the lecture's 27 tokens)


class StepCache:
    """The folded model's state between two ``FoldedModel.step`` calls, for a batch of rows: layer l keeps a
    ring of its last d = 2**l older-half contributions ``h_l[t] @ W_old`` (before d steps: the start
    state's ``q_l``), and the previous token (the pair table's x[t-1]).

    ring[l][t % d] = (rows, old): written at time t for time t + d, for the rows then in the batch.
    rows: (B,) the rows still in the batch (``select``), by their index at ``start``.
    """

    def __init__(self, dilations: list[int], batch: int, device: torch.device):
        self.ring = [[None] * d for d in dilations]
        self.rows = torch.arange(batch, device=device)
        self.prev = torch.zeros(batch, dtype=torch.long, device=device)  # x[t-1]: '.' before the start
        self.t = 0

    def lookback(self, l: int, q: torch.Tensor) -> torch.Tensor:
        """Layer l's older half at t - d, (B, C_act) for the rows in the batch, or ``q`` (C_act,)
        where t - d falls before the start."""
        entry = self.ring[l][self.t % len(self.ring[l])]
        if entry is None:
            return q
        rows, old = entry
        return old if len(rows) == len(self.rows) else old.index_select(0, torch.searchsorted(rows, self.rows))

    def remember(self, l: int, old: torch.Tensor) -> None:
        self.ring[l][self.t % len(self.ring[l])] = (self.rows, old)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the rows ``keep`` (B',) of the current batch, in order."""
        self.rows = self.rows.index_select(0, keep)
        self.prev = self.prev.index_select(0, keep)


class FoldedModel:
    """A ``TreeModel`` or ``ConvModel`` (in eval mode) folded for inference: see the module docstring.

    Two ways to run it, on the same pieces (``prelude``, ``mix``, ``after_mix``, ``head``):
    ``logits(x)`` scores whole names, every position at once; ``start(batch)`` then ``step(cache, tok)``
    runs one position at a time for a batch of rows, with a cache (the cached sampler).

    layers: one ``FoldedLayer`` per block. head: the ``FoldedHead``. wte: (V, E) the embedding.
    pairs: the ``PairTable`` (None when the vocabulary has more than 256 tokens).
    """

    @torch.no_grad()
    def __init__(self, model: WaveNetCore):
        self.layers, self.head, self.wte = fold_layers(model), fold_head(model), model.wte.weight
        # scoring's GEMMs in blocks of ROWS rows on a CPU (batch invariance); on a GPU the bucketed
        # path gives every GEMM a fixed shape already, and the sampler's steps (``step``) run plain GEMMs
        self.rows = ROWS if self.wte.device.type == "cpu" else None
        V = self.wte.shape[0]
        self.pairs = self.pair_table() if V * V <= PAIR_TABLE_MAX else None

    def pair_table(self) -> PairTable:
        V = self.wte.shape[0]
        ids = torch.arange(V * V, device=self.wte.device)
        x = torch.stack([ids // V, ids % V], 1)  # (V², 2): every (previous, current) pair
        h, skips = self.run(x, 0, 1)  # (V²*2, H): layer 0 at both positions; position 1 reads the pair
        h, skips = h[1::2].contiguous(), None if skips is None else skips[1::2].contiguous()
        mix1 = torch.addmm(self.layers[1].bias2, h, self.layers[1].w) if len(self.layers) > 1 else None
        return PairTable(h, skips, mix1)

    @property
    def embeds_input(self) -> bool:
        """Whether layer 0 reads the embedding rows themselves (its residual carries them)."""
        return self.layers[0].block.residual

    def workspace(self) -> Workspace:
        return Workspace(self.layers[0].q)

    def prelude(self, prev: torch.Tensor, tok: torch.Tensor, out: torch.Tensor | None = None):
        """What comes before the layers' loop, for rows of (x[t-1], x[t]) pairs ``prev``, ``tok`` (N,):
        returns (first, P, h, skips): the first layer still to run, its GEMM output (N, 2*C_act) or
        None, its input h (N, C) or None (read only by a residual), and the skip sum (N, S) or None.
        With the pair table, layers 0 and 1 are one lookup (``P`` written into ``out``)."""
        p = self.pairs
        if p is None:
            return 0, None, self.wte.index_select(0, tok) if self.embeds_input else None, None
        pair = prev * self.wte.shape[0] + tok  # (N,)
        skips = None if p.skips is None else p.skips.index_select(0, pair)  # (N, S), summed into in place
        if p.mix1 is None:  # one layer: the table holds its output
            return 1, None, p.h.index_select(0, pair), skips
        P = torch.index_select(p.mix1, 0, pair, out=out)  # layer 1's GEMM: a lookup
        h = p.h.index_select(0, pair) if self.layers[1].block.residual else None  # (N, H), its carry
        return 1, P, h, skips

    def mix(self, l: int, h: torch.Tensor | None, tok: torch.Tensor, out: torch.Tensor | None = None,
            rows: int | None = None) -> torch.Tensor:
        """Layer l's GEMM, [old | new] (N, 2*C_act) of each row: a lookup in layer 0's table by the
        token ``tok`` (N,), else ``h @ w + bias2`` of the layer's input h (N, C_in) (``rows``: ``gemm``)."""
        layer = self.layers[l]
        if l == 0:
            return torch.index_select(layer.table, 0, tok, out=out)
        return gemm(layer.bias2, h, layer.w, rows, out=out)

    def logits(self, x: torch.Tensor, work: Workspace | None = None) -> torch.Tensor:
        """x (G, T) token ids, each row ``[0, c1..c_{T-1}]`` with no padding -> logits (G*T, V_pad),
        row-major; the columns past the vocabulary are -inf."""
        G, T = x.shape
        work = work or self.workspace()
        prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)  # (G, T): x[t-1], '.' before the start
        out = work.get(1, G * T, self.pairs.mix1.shape[1]) if self.pairs is not None and self.pairs.mix1 is not None else None
        first, P, h, skips = self.prelude(prev.reshape(-1), x.reshape(-1), out)
        return self.head(*self.run(x, first, len(self.layers), work, (P, h, skips)), rows=self.rows)

    def run(self, x: torch.Tensor, first: int, end: int, work: Workspace | None = None, start: tuple | None = None):
        """Layers ``first`` .. ``end - 1`` at every position of x (G, T): (out (G*T, H), skips or None).
        ``start``: (P, h, skips), layer ``first``'s GEMM output when already computed (or None) and its
        inputs; None: nothing computed yet."""
        P, h, skips = start if start is not None else (None, None, None)
        G, T = x.shape
        x = x.reshape(-1)  # (G*T,)
        work = work or self.workspace()
        if first == 0 and self.embeds_input:
            h = self.wte.index_select(0, x)  # (G*T, E): layer 0's residual carries it
        for l in range(first, end):
            if P is None:
                P = self.mix(l, h, x, work.get(l, G * T, 2 * self.layers[l].c_act), self.rows)  # (G*T, 2*C_act)
            a = shifted_add(self.layers[l], P, G, T)  # (G*T, C_act): the dilation, a shifted add
            h, skips = after_mix(self.layers[l], a, h, skips, self.rows)  # (G*T, H)
            P = None
        return h, skips

    def start(self, batch: int) -> StepCache:
        """The cache of a batch of ``batch`` rows at t = 0, for ``step``."""
        return StepCache([layer.dilation for layer in self.layers], batch, self.wte.device)

    def step(self, cache: StepCache, tok: torch.Tensor) -> torch.Tensor:
        """One position for a batch: ``tok`` (B,) the token at time t (the first is the start token 0)
        -> logits (B, V) for time t + 1. Each character costs the pair-table lookup for layers 0 and 1,
        a (B, H) x (H, 2 C_act) GEMM per layer above, and the head."""
        first, P, h, skips = self.prelude(cache.prev, tok)
        cache.prev = tok
        for l in range(first, len(self.layers)):
            layer = self.layers[l]
            P = self.mix(l, h, tok) if P is None else P  # (B, 2*C_act)
            old, a = P[:, : layer.c_act], P[:, layer.c_act :]
            a = a.add_(cache.lookback(l, layer.q))  # + h_l[t - d] @ W_old
            cache.remember(l, old)  # a view of P: after_mix only touches a
            h, skips = after_mix(layer, a, h, skips)  # (B, H)
            P = None
        cache.t += 1
        return self.head(h, skips)[:, : self.head.vocab_size]  # (B, V)


def fold(model: WaveNetCore) -> FoldedModel:
    """The folded form of ``model`` (eval mode; see ``eval_mode``), made at one thread: its products (the
    start states' GEMVs, the tables) then have the same bits whatever the caller's thread count."""
    with one_thread():
        return FoldedModel(model)
