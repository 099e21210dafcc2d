"""Sample names, a batch at a time, from a ConvModel, a TreeModel or a FlatModel.

Two samplers, the same samples:

* cached ("Fast Wavenet Generation", Paine et al. 2016), on the folded model
  (``FoldedModel.start``/``step``): layer l keeps a ring of its last d = 2**l older-half
  contributions ``h_l[t] @ W_old``; each new character costs one lookup in the table of token pairs
  (the embedding and layers 0 and 1 together) and L - 2 (B, C) x (C, 2 C_act) GEMMs, instead of the
  2**L - 1 pair operations of the window. Rows whose name has ended leave the batch.
* window (``cached=False``): the lecture's sampler; the tree's forward on the last 2**L tokens, every
  step.

Randomness: one ``torch.rand(B, generator=g, dtype=float64)`` per step for all rows (rows that have
ended keep drawing, the draws are ignored), turned into a token by the inverse CDF of the softmax.
So for the same generator state the cached sampler, the window sampler and a TreeModel give the same
names (up to ties of float rounding on a CDF boundary).

Mode: sampling is always done in eval mode (BatchNorm running statistics; a single context in
training mode would give NaN); a model in training mode is switched back afterwards, as in scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.blocks import WaveNetCore
from ..data import Vocab, name_problem

from ..errors import ArgumentError
from ..models.flat import FlatModel
from .folded import eval_mode, fold
from ..models.tree import TreeModel
from ..validate import integer, model_of, positive_number, vocab_of

MAX_LEN = 64  # the longest sample, in characters, unless asked otherwise (the command line's default too)
CACHE_BUDGET = 64 << 20  # bytes of the cached sampler's rings per batch, at most, in ``batch_size``

class CachedStepper:
    """Cached generation on the folded model (``FoldedModel.start``/``step``): ``feed(tok)``
    takes the token at time t, (B,) long, and returns the logits (B, V) for time t + 1; the first
    token fed is the start token 0."""

    def __init__(self, model: WaveNetCore, batch: int):
        self.folded = fold(model)
        self.cache = self.folded.start(batch)

    def feed(self, tok: torch.Tensor) -> torch.Tensor:
        return self.folded.step(self.cache, tok)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the rows ``keep`` (B',) of the current batch, in order."""
        self.cache.select(keep)

class WindowStepper:
    """The lecture's sampler: the model's forward on the last ``block_size`` tokens, every step."""

    def __init__(self, model: nn.Module, batch: int):
        # a ConvModel runs the tree's forward on its own parameters (they are the same; no copy, and
        # no fresh model whose init would consume the global RNG)
        self.forward = model if isinstance(model, (TreeModel, FlatModel)) else partial(TreeModel.forward, model)
        p = next(model.parameters())
        self.context = torch.zeros(batch, model.block_size, dtype=torch.long, device=p.device)  # (B, bs)

    def feed(self, tok: torch.Tensor) -> torch.Tensor:
        self.context = torch.cat([self.context[:, 1:], tok[:, None]], dim=1)  # (B, bs)
        return self.forward(self.context)  # (B, V)

    def select(self, keep: torch.Tensor) -> None:
        self.context = self.context.index_select(0, keep)

def draw(logits: torch.Tensor, u: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """Inverse-CDF sampling: logits (B, V), uniforms u (B,) in [0, 1) -> tokens (B,) long."""
    logits = logits.double()  # (B, V)
    logits = (logits - logits.amax(1, keepdim=True)) / temperature  # <= 0: a tiny temperature overflows to -inf, not inf
    if top_k is not None and top_k < logits.shape[1]:
        kth = torch.topk(logits, top_k, dim=1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    cdf = torch.cumsum(F.softmax(logits, dim=1), dim=1)  # (B, V)
    tok = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)  # (B,)
    return tok.clamp_(max=logits.shape[1] - 1)

@dataclass(frozen=True)
class Draws:
    """How names are drawn: ``sample_names``' arguments of these names."""

    generator: torch.Generator | None = None
    temperature: float = 1.0
    top_k: int | None = None
    prefix: str = ""
    max_len: int = MAX_LEN
    tokens: int | None = None  # draw only ids below this: the vocabulary's, never its unknown token (the last)

def check_args(model, n, vocab, draws: Draws) -> tuple[int, Draws]:
    """``sample_names``' arguments, checked: (n, the draws with Python numbers)."""
    who = "sample_names"
    model_of(who, model, (WaveNetCore, FlatModel), "ConvModel, TreeModel or FlatModel")
    vocab_of(who, vocab, model.config.vocab_size)
    n = integer(who, "n", n, 0)
    generator, temperature, top_k, prefix, max_len = (draws.generator, draws.temperature, draws.top_k, draws.prefix,
                                                      draws.max_len)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{who}: generator must be a torch.Generator or None, got {type(generator).__name__}")
    temperature = positive_number(who, "temperature", temperature)
    top_k = integer(who, "top_k", top_k, 1, optional=True)
    if not isinstance(prefix, str):
        raise TypeError(f"{who}: prefix must be a str, got {type(prefix).__name__}")
    problem = name_problem(prefix, vocab) if prefix else None
    if problem:
        raise ArgumentError(who, "prefix", f"is not the start of a name: {problem}")
    max_len = integer(who, "max_len", max_len, max(1, len(prefix)))
    return n, Draws(generator, temperature, top_k, prefix, max_len, len(vocab) - vocab.unknown)

def _sample(stepper, prefix_ids, n, draws: Draws, device) -> torch.Tensor:
    """Run a stepper: (n, steps) sampled tokens after the prefix, 0 from a row's end token on.

    Every step draws n uniforms (row i always gets the i-th), so the samples do not depend on the
    stepper. Rows that have ended are dropped from the stepper's batch.
    """
    generator, temperature, top_k, max_len = draws.generator, draws.temperature, draws.top_k, draws.max_len
    for tok in [0] + prefix_ids:  # condition on the start token and the prefix
        logits = stepper.feed(torch.full((n,), tok, dtype=torch.long, device=device))  # (n, V)
    rand_device = generator.device if generator is not None else device
    rows = torch.arange(n, device=device)  # the stepper's rows -> sample rows
    columns = []  # a column a step, as long as the longest name drawn (not max_len up front)
    for _ in range(max_len - len(prefix_ids)):
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=rand_device).to(device)  # (n,)
        tok = draw(logits[:, : draws.tokens], u.index_select(0, rows), temperature, top_k)  # (B,)
        columns.append(torch.zeros(n, dtype=torch.long, device=device).index_copy_(0, rows, tok))  # (n,): 0 after the end
        keep = tok.nonzero().squeeze(1)  # the rows that go on
        if len(keep) == 0:
            break
        if len(keep) < len(rows):
            stepper.select(keep)
            rows, tok = rows.index_select(0, keep), tok.index_select(0, keep)
        logits = stepper.feed(tok)
    return torch.stack(columns, 1) if columns else torch.zeros(n, 0, dtype=torch.long, device=device)  # (n, steps)

def sample_names(
    model: nn.Module,
    n: int,
    vocab: Vocab,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    prefix: str = "",
    max_len: int = MAX_LEN,
    cached: bool = True,
) -> list[str]:
    """Sample ``n`` names as a batch; each stops at its own end token, or is cut at ``max_len``
    characters (the prefix included). A name is empty when the end token is drawn first, as in the
    lecture's sampler. A name of exactly ``max_len`` characters is one that was cut: its end token was
    never drawn (``wavenet-conv sample`` prints it with a trailing '…'). Numbers may be numpy's.

    generator: a ``torch.Generator`` (any device) for reproducible samples; None: torch's global RNG.
    temperature: divides the logits. top_k: keep only the k most likely tokens (ties at the k-th
    value are kept). prefix: every name starts with it, and the model is conditioned on it.
    cached: cached generation for a ConvModel/TreeModel (the folded model); False: the lecture's window
    sampler. A FlatModel has no layers to cache: it always uses the window.
    Runs on the caller's torch threads (``torch.set_num_threads``; the command line sets them once).

    Reproducible for the same generator state, ``n`` and arguments; not across batch sizes (``n`` here,
    ``batch`` in ``sample_batches``): each step draws one number per row from the one generator, so a
    name's draws depend on how many rows are drawn beside it, and a step's GEMMs run on the batch's rows
    (scoring's fixed blocks would cost a block of work per step for a batch of one).

    Runs in eval mode and restores the model's mode. Raises ``ArgumentError`` (an ``InputError``)
    naming the argument for a value that cannot be used (a prefix with a character outside ``vocab``,
    '.' or whitespace; a max_len shorter than the prefix; ...), ``TypeError`` for an argument of the
    wrong kind (a generator that is not a ``torch.Generator``).
    """
    n, draws = check_args(model, n, vocab, Draws(generator, temperature, top_k, prefix, max_len))
    if n == 0:
        return []
    device = next(model.parameters()).device
    prefix_ids = vocab.encode(prefix)
    with eval_mode(model), torch.inference_mode():
        if cached and isinstance(model, WaveNetCore):
            stepper = CachedStepper(model, n)
        else:
            stepper = WindowStepper(model, n)
        tokens = _sample(stepper, prefix_ids, n, draws, device).tolist()
    names = []
    for row in tokens:
        end = row.index(0) if 0 in row else len(row)
        names.append(prefix + vocab.decode(row[:end]))
    return names

def sample_batches(
    model: nn.Module,
    n: int,
    vocab: Vocab,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    prefix: str = "",
    max_len: int = MAX_LEN,
    batch: int | None = None,
) -> Iterator[list[str]]:
    """``sample_names`` for any ``n`` in flat memory: lists of at most ``batch`` names (default:
    ``batch_size(model)``, the cached sampler's rings within ``CACHE_BUDGET`` bytes), ``n`` in all.
    Every argument is checked before the first name is drawn."""
    n = check_args(model, n, vocab, Draws(generator, temperature, top_k, prefix, max_len))[0]
    batch = batch_size(model) if batch is None else integer("sample_batches", "batch", batch, 1)
    for start in range(0, n, batch):
        yield sample_names(model, min(batch, n - start), vocab, generator, temperature, top_k, prefix, max_len)

def batch_size(model: nn.Module, budget: int = CACHE_BUDGET, most: int = 10_000) -> int:
    """Names to sample at a time so that the cached sampler's rings stay within ``budget`` bytes: layer
    l keeps 2**l rows of 2*C_act values per name (about 7 KB a name at the lecture's size, 63 KB at
    depth 6). Sampling ``n`` names as ``ceil(n / batch)`` batches keeps memory flat in ``n``."""
    if not isinstance(model, WaveNetCore):
        return most
    per_name = sum(b.dilation * b.mix.weight.shape[0] * 2 for b in model.blocks) * next(model.parameters()).element_size()
    return max(1, min(most, budget // per_name))
