"""Model configuration: plain data, validated at construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional

ACTIVATIONS = ("tanh", "gated", "glu")
NORMS = ("batch", "layer", "none")
RESIDUAL_INPUTS = ("project", "none", "identity")


@dataclass
class ModelConfig:
    """One configuration for both forms of the model (tree and conv); the defaults are the lecture's.

    vocab_size: tokens, ``.`` included.
    n_embd: embedding width E.
    n_hidden: width H of each layer's output (the residual stream when ``residual``).
    n_layers: depth L; the receptive field (the tree's context) is 2**L tokens.
    activation: "tanh" (the lecture's), "gated" (tanh(W_f x) * sigmoid(W_g x), WaveNet eq. 2) or
        "glu" ((W_a x) * sigmoid(W_b x)).
    norm: "batch" (the lecture's channels-last BatchNorm), "layer" or "none" (the pair mix then has
        a bias). Applied to the pre-activation, as the lecture's Linear -> BatchNorm -> Tanh.
    residual: each layer outputs ``newer + R z`` (R a 1x1 projection) instead of ``z``.
    residual_input: what the first layer's residual adds, since its input is the embedding:
        "project" (a learned 1x1 projection E -> H of the newer child), "none" (no residual on the
        first layer) or "identity" (needs n_embd == n_hidden). With ``skip`` the last layer has no
        residual: its output feeds nothing but the skip sum.
    skip: each layer's ``z`` goes through its own 1x1 projection to ``n_skip`` channels; the sum
        feeds ReLU -> 1x1 -> ReLU -> 1x1 (WaveNet fig. 4) instead of the lecture's output Linear.
    n_inner: width of ``z`` (WaveNet's gate/dilation channels); only with ``residual``, where R maps
        it back to H. Default: n_hidden.
    n_skip: skip channels (default n_hidden). n_head: the head's hidden width (default n_skip).
    """

    vocab_size: int = 27
    n_embd: int = 24
    n_hidden: int = 128
    n_layers: int = 3
    activation: str = "tanh"
    norm: str = "batch"
    residual: bool = False
    residual_input: str = "project"
    skip: bool = False
    n_inner: Optional[int] = None
    n_skip: Optional[int] = None
    n_head: Optional[int] = None

    def __post_init__(self):
        for name in ("vocab_size", "n_embd", "n_hidden", "n_layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {v!r}")
        if self.vocab_size < 2:
            raise ValueError(f"ModelConfig.vocab_size must be >= 2 (the '.' token and a character), got {self.vocab_size}")
        for name in ("n_inner", "n_skip", "n_head"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"ModelConfig.{name} must be a positive integer or None, got {v!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"ModelConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.norm not in NORMS:
            raise ValueError(f"ModelConfig.norm must be one of {NORMS}, got {self.norm!r}")
        if self.residual_input not in RESIDUAL_INPUTS:
            raise ValueError(f"ModelConfig.residual_input must be one of {RESIDUAL_INPUTS}, got {self.residual_input!r}")
        if not self.residual and self.n_inner not in (None, self.n_hidden):
            raise ValueError(
                f"ModelConfig.n_inner={self.n_inner} differs from n_hidden={self.n_hidden}, but without "
                "residual=True there is no projection from z back to n_hidden"
            )
        if self.residual and self.residual_input == "identity" and self.n_embd != self.n_hidden:
            raise ValueError(
                f"ModelConfig: residual_input='identity' adds the embedding (n_embd={self.n_embd}) to a "
                f"layer output of n_hidden={self.n_hidden} channels: use residual_input='project' or 'none', "
                "or make the widths equal"
            )
        if not self.skip and (self.n_skip is not None or self.n_head is not None):
            raise ValueError("ModelConfig: n_skip and n_head are only used with skip=True")

    @property
    def block_size(self) -> int:
        """Receptive field: the tree's context length, 2**n_layers."""
        return 2 ** self.n_layers

    @property
    def inner(self) -> int:
        return self.n_inner or self.n_hidden

    @property
    def skip_channels(self) -> int:
        return self.n_skip or self.n_hidden

    @property
    def head_channels(self) -> int:
        return self.n_head or self.skip_channels

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown field(s) {unknown}")
        return cls(**d)
