"""Import a model built from the lecture's own from-scratch layers.

The lecture's layers (makemore part 5): ``Embedding`` (weight (V, C)), ``FlattenConsecutive(n)``,
``Linear`` (weight (fan_in, fan_out), ``x @ weight + bias``), ``BatchNorm1d`` (gamma, beta,
running_mean, running_var, possibly with leading unit axes), ``Tanh``, ``Sequential(layers)``.
Layers are recognised by class name and attributes, so the notebook's classes need not be importable.
"""

from __future__ import annotations

import torch

from .config import FlatConfig, ModelConfig
from ..errors import ArgumentError
from .flat import FlatModel
from .tree import TreeModel


def bad(problem: str) -> ArgumentError:
    """The error for a model ``from_lecture`` cannot read: ``from_lecture: model {problem}``."""
    return ArgumentError("from_lecture", "model", problem)


def _flatten_layers(obj) -> list:
    if isinstance(obj, (list, tuple)):
        out = []
        for o in obj:
            out.extend(_flatten_layers(o))
        return out
    if hasattr(obj, "layers") and not hasattr(obj, "weight"):
        return _flatten_layers(list(obj.layers))
    return [obj]


def _kind(layer) -> str:
    return type(layer).__name__


def _tensor(layer, attr: str, where: str) -> torch.Tensor:
    t = getattr(layer, attr, None)
    if not isinstance(t, torch.Tensor):
        raise bad(f"at {where}: has no tensor attribute {attr!r}")
    return t.detach()


def _vector(layer, attr: str, dim: int, where: str) -> torch.Tensor:
    t = _tensor(layer, attr, where)
    if t.numel() != dim or (t.dim() > 1 and any(s != 1 for s in t.shape[:-1])):
        raise bad(f"at {where}: {attr} has shape {tuple(t.shape)}, expected ({dim},) (leading unit axes allowed)")
    return t.reshape(dim)


class _Reader:
    """Walks the layer list, checking kinds and shapes, with errors that name the layer."""

    def __init__(self, layers: list):
        self.layers, self.i = layers, 0

    def where(self, i=None) -> str:
        i = self.i if i is None else i
        return f"layer {i} ({_kind(self.layers[i])})" if i < len(self.layers) else "the end of the model"

    def peek(self) -> str | None:
        return _kind(self.layers[self.i]) if self.i < len(self.layers) else None

    def take(self, *kinds: str):
        if self.i >= len(self.layers):
            raise bad(f"ends after layer {self.i - 1}; expected {' or '.join(kinds)}")
        layer = self.layers[self.i]
        if _kind(layer) not in kinds:
            known = ("Embedding", "FlattenConsecutive", "Flatten", "Linear", "BatchNorm1d", "Tanh", "Sequential")
            what = "an unknown layer" if _kind(layer) not in known else "a layer out of place"
            raise bad(f"at {self.where()}: {what}; expected {' or '.join(kinds)} here")
        self.i += 1
        return layer


def _linear(r: _Reader, fan_in: int, bias: bool | None):
    where = r.where()
    lin = r.take("Linear")
    w = _tensor(lin, "weight", where)
    if w.dim() != 2 or w.shape[0] != fan_in:
        raise bad(f"at {where}: weight has shape {tuple(w.shape)}, expected ({fan_in}, fan_out) for this position")
    b = getattr(lin, "bias", None)
    if b is not None:
        b = _vector(lin, "bias", w.shape[1], where)
    if bias is True and b is None:
        raise bad(f"at {where}: the output Linear needs a bias")
    return w, b


def _batchnorm(r: _Reader, dim: int):
    where = r.where()
    bn = r.take("BatchNorm1d")
    gamma, beta = _vector(bn, "gamma", dim, where), _vector(bn, "beta", dim, where)
    mean, var = _vector(bn, "running_mean", dim, where), _vector(bn, "running_var", dim, where)
    eps = float(getattr(bn, "eps", 1e-5))
    momentum = float(getattr(bn, "momentum", 0.1))
    return gamma, beta, mean, var, eps, momentum


def _load_bn(target, lin_bias, params):
    gamma, beta, mean, var, eps, momentum = params
    if lin_bias is not None:  # BN(x + b) with running mean m == BN(x) with running mean m - b (eval)
        mean = mean - lin_bias
    target.weight.copy_(gamma)
    target.bias.copy_(beta)
    target.running_mean.copy_(mean)
    target.running_var.copy_(var)
    target.eps, target.momentum = eps, momentum


@torch.no_grad()
def from_lecture(model_or_layers):
    """Build a ``TreeModel`` (or, for the flat baseline, a ``FlatModel``) from the lecture's layers.

    Accepts the lecture's ``Sequential`` (anything with ``.layers``) or a list of layers. Weights are
    copied (``Linear.weight`` transposed to torch's (out, in)), BatchNorm buffers lose their unit axes,
    dtype and device are kept. The result is in eval mode. An unknown layer or a shape that does not
    fit raises ``ArgumentError`` (a ``ValueError``) naming the layer.
    """
    layers = _flatten_layers(model_or_layers)
    if not layers:
        raise bad("has no layers")
    emb, hidden, flat_n, (w_out, b_out) = _read(_Reader(layers))
    V, E = emb.shape
    width = hidden[-1][0].shape[1]
    if flat_n:
        model = FlatModel(FlatConfig(vocab_size=V, n_embd=E, n_hidden=width, block_size=flat_n))
        fcs, bns = [model.fc], [model.norm]
    else:
        widths = {w.shape[1] for w, _, _ in hidden}
        if len(widths) != 1:
            raise bad(f"has hidden layers of different widths {sorted(widths)}; TreeModel needs one n_hidden")
        model = TreeModel(ModelConfig(vocab_size=V, n_embd=E, n_hidden=width, n_layers=len(hidden)))
        fcs, bns = [b.mix for b in model.blocks], [b.norm for b in model.blocks]
    model = model.to(device=emb.device, dtype=emb.dtype)
    model.wte.weight.copy_(emb)
    for (w, b, bn), fc, norm in zip(hidden, fcs, bns):
        fc.weight.copy_(w.T)
        _load_bn(norm, b, bn)
    model.lm_head.weight.copy_(w_out.T)
    model.lm_head.bias.copy_(b_out)
    return model.eval()


def _read(r: _Reader):
    """Walk the lecture's layers: (embedding (V, E), [(Linear weight (in, out), its bias or None, the
    BatchNorm's parameters)] per hidden layer, the flat context length (None for the tree), the
    output Linear's (weight, bias))."""
    where = r.where()
    emb = _tensor(r.take("Embedding"), "weight", where)
    if emb.dim() != 2:
        raise bad(f"at {where}: weight has shape {tuple(emb.shape)}, expected (vocab_size, n_embd)")
    V, E = emb.shape
    hidden, width, flat_n = [], E, None
    while r.peek() in ("FlattenConsecutive", "Flatten"):
        where = r.where()
        fl = r.take("FlattenConsecutive", "Flatten")
        n = getattr(fl, "n", None)
        if _kind(fl) == "Flatten" or n != 2:
            if hidden:
                raise bad(f"at {where}: the tree form fuses pairs; FlattenConsecutive({n}) after the first layer is not supported")
            flat_n = _flat_length(r, n, E, where)
        w, b = _linear(r, (flat_n or 2) * width, None)
        bn = _batchnorm(r, w.shape[1])
        r.take("Tanh")
        hidden.append((w, b, bn))
        width = w.shape[1]
        if flat_n:
            break
    if not hidden:
        raise bad(f"at {r.where()}: expected FlattenConsecutive after the Embedding")
    w_out, b_out = _linear(r, width, True)
    if w_out.shape[1] != V:
        raise bad(f"at {r.where(r.i - 1)}: output has {w_out.shape[1]} classes but the Embedding has {V} tokens")
    if r.i != len(r.layers):
        raise bad(f"at {r.where()}: unexpected layer after the output Linear")
    return emb, hidden, flat_n, (w_out, b_out)


def _flat_length(r: _Reader, n: int | None, E: int, where: str) -> int:
    """The flat baseline's context length: ``n`` of its FlattenConsecutive(n), or (a Flatten) from the
    width of the Linear that follows it."""
    w = _tensor(r.layers[r.i], "weight", r.where()) if r.peek() == "Linear" else None
    if n is None and w is not None:
        n = w.shape[0] // E
    if not n or w is None or w.shape[0] != n * E:
        raise bad(f"at {where}: cannot work out the flat context length from the next Linear")
    return n
