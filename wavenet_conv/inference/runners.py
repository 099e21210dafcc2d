"""The block runners of ``bucketed.py``: each scores a (B, T) block of right-padded names, by the
folded model (``FoldedRunner``) or by ``ConvModel.forward`` (``ForwardRunner``), at a matmul
precision, eager or replayed as a CUDA graph (``GraphedShape``)."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import replace

import torch
import torch.nn.functional as F

from ..models.blocks import WaveNetCore
from ..models.conv import ConvModel
from ..data import IGNORE
from ..errors import ArgumentError
from .folded import FoldedHead, FoldedModel, PairTable, fold, name_sums


def block_losses(logits: torch.Tensor, y: torch.Tensor):
    """logits (B, T, V), y (B, T) -> (per-row NLL (B,) float64, per-position NLL (B, T), 0 where y is
    IGNORE). The softmax in at least float32."""
    B, T, V = logits.shape
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)).reshape(B * T, V)
    loss = F.cross_entropy(logits, y.reshape(-1), ignore_index=IGNORE, reduction="none").view(B, T)  # (B, T)
    return name_sums(loss), loss


def cast_folded(folded: FoldedModel, dtype: torch.dtype) -> FoldedModel:
    """``folded`` with every tensor it holds cast to ``dtype`` (a new object; the modules it refers to,
    e.g. residual projections, must be cast by the caller)."""
    out = FoldedModel.__new__(FoldedModel)
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    out.layers = [replace(l, w=cast(l.w), bias2=cast(l.bias2), q=cast(l.q), table=cast(l.table)) for l in folded.layers]
    h = folded.head
    out.head = FoldedHead(cast(h.w), cast(h.bias), h.pre, h.vocab_size)
    out.wte = cast(folded.wte)
    p = folded.pairs
    out.pairs = None if p is None else PairTable(cast(p.h), cast(p.skips), cast(p.mix1))
    out.rows = folded.rows
    return out


class FoldedRunner:
    """The folded model on (B, T) blocks of right-padded names. ``bfloat16``: folded in the model's
    dtype, then every tensor (and a copy of the modules it uses) cast to bfloat16."""

    def __init__(self, model: WaveNetCore, precision: str):
        if precision == "bfloat16":
            model = copy.deepcopy(model)
            folded = cast_folded(fold(model), torch.bfloat16)
            model.to(torch.bfloat16)  # the residual, skip and LayerNorm modules the folded layers call
        else:
            folded = fold(model)
        self.folded = folded

    def workspace(self):
        return self.folded.workspace()

    def logits(self, x: torch.Tensor, work=None) -> torch.Tensor:
        """x (B, T) right-padded names -> logits (B, T, V)."""
        B, T = x.shape
        return self.folded.logits(x, work).view(B, T, -1)[..., : self.folded.head.vocab_size]  # (B, T, V)

    def losses(self, x: torch.Tensor, y: torch.Tensor, work=None):
        """x, y (B, T) -> (per-row NLL (B,) float64, per-position NLL (B, T))."""
        return block_losses(self.logits(x, work), y)


class ForwardRunner:
    """``ConvModel.forward`` (the Conv1d form) on (B, T) blocks, on a copy of the model's weights.
    ``bfloat16``: autocast."""

    def __init__(self, model: WaveNetCore, precision: str):
        if not isinstance(model, ConvModel):
            raise ArgumentError("BucketedScorer", "runner", f"'forward' needs a ConvModel, got a {type(model).__name__}")
        self.model = copy.deepcopy(model)
        self.autocast = precision == "bfloat16"

    def workspace(self):
        return None

    def logits(self, x: torch.Tensor, work=None) -> torch.Tensor:
        """x (B, T) right-padded names -> logits (B, T, V)."""
        if not self.autocast:
            return self.model(x)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.model(x)

    def losses(self, x: torch.Tensor, y: torch.Tensor, work=None):
        """x, y (B, T) -> (per-row NLL (B,) float64, per-position NLL (B, T))."""
        return block_losses(self.logits(x), y)


@contextmanager
def matmul_precision(precision: str):
    """TF32 for CUDA matmuls and cuDNN convolutions on for ``tf32``, off otherwise (cuDNN's default is
    on: float32 here means IEEE float32); put back as they were afterwards."""
    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = cuda.allow_tf32, cudnn.allow_tf32
    cuda.allow_tf32 = cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        cuda.allow_tf32, cudnn.allow_tf32 = saved


def capture(fn):
    """``fn()`` recorded as a CUDA graph: (graph, the tensors it returned, which each replay
    rewrites). ``fn`` runs once first on a side stream (lazy initialization: cuBLAS handles,
    workspaces), as torch's CUDA-graph notes do."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


class GraphedShape:
    """One (B, T) block shape as a CUDA graph: static input buffers, the runner's losses on them
    recorded once; each call copies a block in and replays the graph."""

    def __init__(self, runner, B: int, T: int, device, work):
        self.x = torch.zeros(B, T, dtype=torch.long, device=device)
        self.y = torch.full((B, T), IGNORE, dtype=torch.long, device=device)
        self.graph, self.out = capture(lambda: runner.losses(self.x, self.y, work))

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return self.out  # (B,) float64, (B, T): rewritten by the next replay
