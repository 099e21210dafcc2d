"""Scoring for GPUs: names bucketed by length into a few fixed (B, T) shapes, each shape one CUDA graph.

The fast path (``scoring._score_fast``) groups names by their exact length and runs the folded model
on each group: no padding, the least arithmetic, and the best a CPU core can do. On a GPU the same
loop is tens of thousands of small kernels for a large list (32 per length group and chunk), each
launched from Python: the GPU waits on the launches. Here names are put in buckets by length instead,
right-padded to a few fixed widths T (8, 16, 32, 64), and cut into blocks of a few fixed row counts
B, so that a whole list is a handful of (B, T) shapes, each recorded once as a CUDA graph and then
replayed, one launch a block:

* **Buckets.** A name of n characters takes n + 1 positions (the start token, then its characters;
  n + 1 targets, the end token included) and goes to the narrowest width T >= n + 1. Padding is
  exact: every position sees only the positions before it, so positions past a name's end change
  nothing before it; their targets are ``IGNORE`` and their loss 0. The lecture's names (2-16
  positions) fill the widths 8 and 16 at 1.29 positions per target.
* **Blocks.** A bucket's rows are cut into blocks of ``max(BLOCK_POSITIONS) // T`` rows, and what is
  left into one block of the smallest size in ``BLOCK_POSITIONS`` that holds it (rows past the
  names: all '.', targets ``IGNORE``). Names longer than the widest bucket run in blocks of their own
  width (a power of two), not captured.
* **Block runners** (``runners.py``). ``folded``: the folded model (``folded.py``: BatchNorm folded into the weights, layers
  0 and 1 a lookup in the table of token pairs, one GEMM and a shifted add per layer above): 36,864
  multiply-adds a position at the lecture's size. ``forward``: ``ConvModel.forward``, the Conv1d
  form: 75,136. Either eager, replayed as a CUDA graph (``graphs``), or ``torch.compile``d (on a GPU
  in mode "reduce-overhead": compiled kernels in CUDA graphs).
* **Precision** (opt-in; ``SCORING_PRECISIONS``): ``float32`` is the model's own dtype with IEEE float32
  matmuls and convolutions (TF32 off, cuDNN's included); ``tf32`` lets the matmuls (and convolutions)
  round their inputs to TF32 (10 bits of mantissa) on GPUs that have it (elsewhere it is float32);
  ``bfloat16`` computes in bfloat16 (the folded runner: the folded model cast to bfloat16 after
  folding in the model's dtype; the forward runner: autocast), accumulating in float32, and sums the
  losses in float64. The error bound of each against float64 is in ``ERROR_BOUNDS`` (tested): a name's
  nats within 1e-5 (float32), 5e-3 (tf32), 3e-2 (bfloat16) relative; a list's mean within 1e-6,
  2e-4, 1e-3.
* **Batch invariance** (what holds here): a name keeps its bits wherever it lands in blocks of one
  (B, T) shape, in any order of the list; in another list its bucket may be cut into blocks of another
  size, where its score may move within the bound above. (The CPU's fast path is invariant to the bit:
  ``folded.gemm``.)

``choose_scoring_path(device)`` is the one place that picks how ``score_names`` scores on a device;
``scorer_for(model, path)`` keeps the scorer (and its CUDA graphs) of a model between calls, rebuilt
when the model's parameters or buffers change.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.blocks import WaveNetCore
from ..data import IGNORE
from .runners import FoldedRunner, ForwardRunner, GraphedShape, matmul_precision
from ..errors import ArgumentError

WIDTHS = (8, 16, 32, 64)  # the buckets' T: a name of n characters takes the narrowest T >= n + 1
BLOCK_POSITIONS = (1 << 11, 1 << 13, 1 << 15, 1 << 17)  # B * T of the block shapes, smallest to largest
RUNNERS = ("folded", "forward")  # how a block is computed: ``runners.FoldedRunner``, ``runners.ForwardRunner``
SCORING_PRECISIONS = ("float32", "tf32", "bfloat16")  # the bucketed scorer's (training's: TRAINING_PRECISIONS)
# the error of each precision against float64: (the largest relative error of a name's nats, the
# relative error of the mean nats a target over a list), as tests/test_bucketed.py holds them.
# Measured at the lecture's size on the bundled dev split on a CPU: float32 3e-7 and 1e-8 (trained
# and random weights); bfloat16 3e-3 and 3e-5 (trained), 1.1e-2 and 9e-5 (random weights and
# statistics, the output bias the names' unigram log-frequencies: short names of a few nats each).
# tf32 rounds only the matmuls' inputs, to 10 bits of mantissa against bfloat16's 7 (and layers 0-1
# are a float32 lookup): its bounds are bfloat16's over 6, to be measured on a GPU (device_check.py).
ERROR_BOUNDS = {"float32": (1e-5, 1e-6), "tf32": (5e-3, 2e-4), "bfloat16": (3e-2, 1e-3)}


# ----------------------------------------------------------------------------------------------
# the choice


@dataclass(frozen=True)
class ScoringPath:
    """How ``score_names`` scores: ``method`` "fast" (names grouped by exact length, the folded model,
    eager) or "bucketed" (this module), with the bucketed path's block ``runner``, whether its blocks are
    replayed as CUDA ``graphs`` or ``compile``d, and its ``precision``; ``why``: the reason, in words."""

    method: str
    runner: str = "folded"
    graphs: bool = False
    compile: bool = False
    precision: str = "float32"
    why: str = ""


def choose_scoring_path(device, precision: str = "float32") -> ScoringPath:
    """The scoring path for a ConvModel on ``device`` (``score_names(method="auto")``).

    cpu, float32: the fast path. Measured on one CPU core (benchmarks/PERFORMANCE.md): it does the
        least work (36,864 multiply-adds a target, no padding), and launches cost nothing there.
    a GPU (cuda): bucketed, the folded runner, each block shape a CUDA graph. Chosen by the cost model
        (PERFORMANCE.md, "On a GPU"), not yet by measurement: the fast path's launches (32 a length
        group and chunk of 8,192 positions: 28,000 for a million names, 140 ms at 5 us each) cost
        more than the 30% of padding that the buckets add (a million names: 32 ms predicted on an
        H200); the folded runner does half the multiply-adds and a third of the bytes of the Conv1d
        form, and a graph replays a block's 16 kernels without Python.
        ``benchmarks/device_check.py`` times every contender; where it measures another one faster,
        that one belongs here.
    tf32, bfloat16: bucketed on any device (the one path that has them).
    """
    device = torch.device(device)
    if precision not in SCORING_PRECISIONS:
        raise ArgumentError("choose_scoring_path", "precision", f"must be one of {SCORING_PRECISIONS}, got {precision!r}")
    if device.type == "cpu" and precision == "float32":
        return ScoringPath("fast", why="cpu: the least work, and launches cost nothing (measured)")
    return bucketed_path(device, precision)


def bucketed_path(device, precision: str = "float32") -> ScoringPath:
    """The bucketed path on ``device``: the folded runner, CUDA graphs where the device has them."""
    graphs = torch.device(device).type == "cuda"
    return ScoringPath("bucketed", "folded", graphs=graphs, precision=precision,
                       why="bucketed, folded, " + ("CUDA graphs (cost model; see device_check)" if graphs else "eager"))


# ----------------------------------------------------------------------------------------------
# buckets and blocks: numbers on the host


def width_of(n_positions: int, widths=WIDTHS) -> int:
    """The bucket width for a name of ``n_positions`` (characters + 1): the narrowest of ``widths``
    that holds it, or past the widest the next power of two."""
    for w in widths:
        if n_positions <= w:
            return w
    return 1 << (n_positions - 1).bit_length()


def buckets(lengths: np.ndarray, widths=WIDTHS) -> list[tuple[int, np.ndarray]]:
    """Names by bucket: [(T, index of its names (n_T,), in input order)], narrowest first.
    ``lengths``: (N,) characters per name (>= 1)."""
    need = lengths + 1  # positions: the start token, then the characters
    edges = np.searchsorted(np.asarray(widths), need)  # (N,) index of the narrowest width >= need
    out = [(w, np.flatnonzero(edges == i)) for i, w in enumerate(widths)]
    over = np.flatnonzero(edges == len(widths))  # past the widest: each to the next power of two
    if len(over):
        wide = np.array([width_of(int(n), widths) for n in need[over]])
        out += [(int(w), over[wide == w]) for w in np.unique(wide)]
    return [(w, idx) for w, idx in out if len(idx)]


def block_rows(n: int, T: int, block_positions=BLOCK_POSITIONS) -> list[int]:
    """The rows of each block that ``n`` names of width T fill: full blocks of the largest shape,
    then one block of the smallest shape that holds the rest (at least one row each)."""
    sizes = sorted({max(1, p // T) for p in block_positions})
    full, rest = divmod(n, sizes[-1])
    return [sizes[-1]] * full + ([next(s for s in sizes if s >= rest)] if rest else [])


# ----------------------------------------------------------------------------------------------
# padded blocks: tensors on the device


def padded_names(tokens: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, T: int, rows: int):
    """Names -> right-padded inputs and targets, on the tokens' device.

    tokens: (sum of lengths,) every name's characters back to back; starts, lengths: (n,) long, where
    each name starts in ``tokens`` and its characters, n <= rows, each length < T. Returns x, y
    (rows, T) long: x[i] = [0, c1..cn, 0 ...], y[i] = [c1..cn, 0, IGNORE ...]; rows past n: x all 0,
    y all IGNORE."""
    t = torch.arange(T, device=tokens.device)  # (T,)
    n = lengths[:, None]  # (n, 1)
    chars = tokens[(starts[:, None] + t).clamp(max=len(tokens) - 1)].long()  # (n, T): c_{t+1} where t < n
    y = torch.where(t < n, chars, torch.where(t == n, 0, IGNORE))  # (n, T)
    y = F.pad(y, (0, 0, 0, rows - len(y)), value=IGNORE)  # (rows, T)
    x = F.pad(y[:, :-1].clamp(min=0), (1, 0))  # (rows, T): '.', then the targets shifted right
    return x, y


# ----------------------------------------------------------------------------------------------
# the scorer


class BucketedScorer:
    """Scores names, given as tokens, in bucketed fixed-shape blocks (see the module docstring).

    model: a ConvModel or TreeModel in eval mode (the same function: either is folded, or run as its
        Conv1d form). runner: how a block is computed, "folded" or "forward" (``RUNNERS``).
        precision: one of ``SCORING_PRECISIONS``.
    graphs: replay each block shape as a CUDA graph (needs a CUDA device). compile: ``torch.compile``
        the runner's block (on CUDA in mode "reduce-overhead"; not with ``graphs``).
    widths, block_positions: the buckets' widths and the blocks' sizes in positions.

    The scorer holds the model's weights as they were when it was made (folded, or the model itself
    for the forward runner): make a new one after changing them (``scorer_for`` does).
    """

    def __init__(self, model: WaveNetCore, runner: str = "folded", precision: str = "float32", graphs: bool = False,
                 compile: bool = False, widths=WIDTHS, block_positions=BLOCK_POSITIONS):
        if runner not in RUNNERS:
            raise ArgumentError("BucketedScorer", "runner", f"must be one of {RUNNERS}, got {runner!r}")
        if precision not in SCORING_PRECISIONS:
            raise ArgumentError("BucketedScorer", "precision", f"must be one of {SCORING_PRECISIONS}, got {precision!r}")
        if model.training:
            raise ValueError("BucketedScorer scores in eval mode (BatchNorm's running statistics): call model.eval()")
        self.device = next(model.parameters()).device
        if graphs and (compile or self.device.type != "cuda"):
            raise ValueError("graphs=True needs a CUDA model and no compile (compile records its own graphs)")
        self.precision, self.graphs = precision, graphs
        self.widths, self.block_positions = tuple(sorted(widths)), tuple(sorted(block_positions))
        with torch.no_grad():
            self.runner = (FoldedRunner if runner == "folded" else ForwardRunner)(model, precision)
        self.work = self.runner.workspace()  # for eager blocks
        self.graph_work = None  # for the CUDA graphs: sized for the largest block before the first capture
        self.shapes = {}  # (B, T) -> GraphedShape, or the compiled block
        self.compiled = None
        if compile:  # static shapes: one compilation a block shape (dynamic ones send inductor's sympy into minutes)
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self.compiled = torch.compile(lambda x, y: self.runner.losses(x, y), fullgraph=True, dynamic=False, mode=mode)

    def block(self, x: torch.Tensor, y: torch.Tensor, fixed: bool):
        """One (B, T) block's losses, on the path this scorer runs (``fixed``: one of the bucket
        shapes, which ``graphs`` records; an oversized block runs eagerly)."""
        if self.compiled is not None and fixed:
            return self.compiled(x, y)
        if not (self.graphs and fixed):
            return self.runner.losses(x, y, self.work)
        shape = self.shapes.get(x.shape)
        if shape is None:
            try:
                shape = self.shapes[x.shape] = GraphedShape(self.runner, *x.shape, self.device, self.graph_workspace())
            except RuntimeError as e:  # scores stay right, eagerly; said once
                warnings.warn(f"BucketedScorer: recording a CUDA graph failed ({str(e)[:200]}); scoring eagerly from now on")
                self.graphs = False
                return self.runner.losses(x, y, self.work)
        return shape(x, y)

    def graph_workspace(self):
        """The workspace the graphs share (they replay one at a time), sized for the largest block
        before any capture, so that no graph's buffers ever move."""
        if self.graph_work is None and self.work is not None:
            self.graph_work = self.runner.workspace()
            rows, cols = max(self.block_positions), max(2 * l.c_act for l in self.runner.folded.layers)
            for l in (0, 1):
                self.graph_work.get(l, rows, cols)
        return self.graph_work

    @torch.inference_mode()
    def __call__(self, tokens: torch.Tensor, lengths, per_char: bool = False):
        """tokens (sum of lengths,) every name's characters back to back (token ids, no start or end
        tokens); lengths (N,) characters per name, each >= 1 (a tensor or array, on the host).
        Returns (per-name NLL (N,) float64, every target's NLL (sum of lengths + N,) float64 with
        ``per_char`` else None), on the model's device, in input order. Nothing is read back from
        the device: the host arrays go over first, asynchronously, then the blocks are queued."""
        lengths = np.asarray(lengths, dtype=np.int64)
        N, device = len(lengths), self.device
        nll = torch.zeros(N, dtype=torch.float64, device=device)
        # per target: name i's n + 1 targets start at starts[i] + i; one more slot takes the padding's
        char_nll = torch.zeros(int(lengths.sum()) + N + 1, dtype=torch.float64, device=device) if per_char else None
        if N == 0:
            return nll, None if char_nll is None else char_nll[:-1]
        groups = buckets(lengths, self.widths)
        starts = np.cumsum(lengths) - lengths  # (N,) where each name starts in ``tokens``
        small = self.vocab_size() <= 256
        tokens = to_device(np.asarray(tokens, dtype=np.uint8 if small else np.int64), device)
        host = to_device(np.concatenate([starts, lengths, *(idx for _, idx in groups)]), device)  # (2N + N,)
        starts, lengths, order = host[:N], host[N : 2 * N], host[2 * N :]
        with matmul_precision(self.precision):
            for T, idx in groups:
                idx, order = order[: len(idx)], order[len(idx) :]
                self.score_bucket(T, idx, (tokens, starts, lengths), (nll, char_nll))
        return nll, None if char_nll is None else char_nll[:-1]

    def vocab_size(self) -> int:
        runner = self.runner
        return runner.folded.wte.shape[0] if isinstance(runner, FoldedRunner) else runner.model.config.vocab_size

    def score_bucket(self, T: int, idx: torch.Tensor, names: tuple, out: tuple) -> None:
        """The names ``idx`` (n,) of width T, block by block, into ``out`` (nll, and char_nll or None);
        ``names``: (tokens, starts, lengths), as ``__call__`` lays them; every tensor on the device."""
        (tokens, starts, lengths), (nll, char_nll) = names, out
        rows = block_rows(len(idx), T, self.block_positions)
        x, y = padded_names(tokens, starts[idx], lengths[idx], T, sum(rows))  # (sum of rows, T) each
        if char_nll is not None:  # where each position's loss goes: the padding's into the last slot
            first = starts[idx] + idx  # (n,)
            dest = F.pad(first[:, None] + torch.arange(T, device=self.device), (0, 0, 0, len(x) - len(idx)))
            dest = torch.where(y != IGNORE, dest, len(char_nll) - 1)  # (sum of rows, T)
        r0 = 0
        for B in rows:
            n = min(B, len(idx) - r0)  # the names in this block
            row_nll, loss = self.block(x[r0 : r0 + B], y[r0 : r0 + B], T in self.widths)  # (B,), (B, T)
            nll.index_copy_(0, idx[r0 : r0 + n], row_nll[:n])
            if char_nll is not None:
                char_nll.index_copy_(0, dest[r0 : r0 + B].reshape(-1), loss.reshape(-1).double())
            r0 += B


def to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on ``device``; to a GPU through pinned memory and asynchronously (the host does not
    wait for the device to finish its queue)."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


# ----------------------------------------------------------------------------------------------
# one scorer per model, kept between calls


_SCORERS = weakref.WeakKeyDictionary()  # model -> {path: (its state when the scorer was made, scorer)}


def model_state(model: nn.Module) -> torch.Tensor:
    """Every parameter and buffer of ``model``, flat, in one tensor (one kernel)."""
    return torch.cat([t.detach().reshape(-1) for t in (*model.parameters(), *model.buffers())])


def scorer_for(model: WaveNetCore, path: ScoringPath) -> BucketedScorer:
    """The ``BucketedScorer`` of ``model`` on ``path``, kept between calls (its folded weights and CUDA
    graphs) while the model's parameters and buffers stay equal to what it was made from (one
    comparison on the device a call); otherwise made anew. ``model`` in eval mode."""
    with torch.inference_mode():
        state = model_state(model)
    kept = _SCORERS.setdefault(model, {})
    if path in kept:
        saved, scorer = kept[path]
        if saved.shape == state.shape and saved.dtype == state.dtype and saved.device == state.device and torch.equal(saved, state):
            return scorer
    scorer = BucketedScorer(model, path.runner, path.precision, path.graphs, path.compile)
    kept[path] = (state, scorer)
    return scorer
