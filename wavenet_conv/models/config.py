"""Configuration: what the model is (``ModelConfig``) and how it is trained (``TrainConfig``).

Plain dataclasses, validated when they are made, each field with its one-line help in its metadata
(``opt``). The command line's model and training options are generated from these fields (name, type,
choices and help), so each of them is defined once, here.
"""

from __future__ import annotations

import math
import numbers
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Optional

from ..device import TRAINING_PRECISIONS
from ..data import NORMALIZATIONS
from ..errors import ConfigError

ACTIVATIONS = ("tanh", "gated", "glu")
NORMS = ("batch", "layer", "none")
RESIDUAL_INPUTS = ("project", "none", "identity")
FORMS = ("conv", "tree")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("linear", "cosine", "step")
# the fields whose value is one of a few names
CHOICES = {"activation": ACTIVATIONS, "norm": NORMS, "residual_input": RESIDUAL_INPUTS, "form": FORMS,
           "optimizer": OPTIMIZERS, "schedule": SCHEDULES, "precision": TRAINING_PRECISIONS, "normalize": NORMALIZATIONS}


def opt(default, help: str):
    """A config field: its default and its one line of help (the command line's option help)."""
    return field(default=default, metadata={"help": help})


def field_help(cls) -> dict[str, str]:
    """Each field's help: the options' help texts."""
    return {f.name: f.metadata.get("help", "") for f in fields(cls)}


class Config:
    """What both configs share: dict round trips that reject unknown keys, and field checks."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}")
        return cls(**d)

    def _fail(self, name: str, what: str):
        shown = repr(getattr(self, name))
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ConfigError(f"{type(self).__name__}.{name} {what}, got {shown}")

    def _check_types(self) -> None:
        """Every field of its annotated type: a ``bool`` is True or False (not "no"); an ``int`` any
        integer but a bool (numpy's too, stored as int); a ``float`` any finite real but a bool (stored
        as float); a ``str`` a str, one of its ``CHOICES`` where it has them; ``Optional``: or None."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            kind, v = hints[f.name], getattr(self, f.name)
            optional = type(None) in typing.get_args(kind)
            kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
            if optional and v is None:
                continue
            alt = " or None" if optional else ""
            if kind is bool and not isinstance(v, bool):
                self._fail(f.name, f"must be True or False{alt}")
            if kind is int:
                if not isinstance(v, numbers.Integral) or isinstance(v, bool):
                    self._fail(f.name, f"must be an integer{alt}")
                setattr(self, f.name, int(v))
            if kind is float:
                if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
                    self._fail(f.name, f"must be a finite number{alt}")
                setattr(self, f.name, float(v))
            if kind is str:
                if not isinstance(v, str):
                    self._fail(f.name, f"must be a str{alt}" + (f", one of {CHOICES[f.name]}" if f.name in CHOICES else ""))
                if f.name in CHOICES and v not in CHOICES[f.name]:
                    self._fail(f.name, f"must be one of {CHOICES[f.name]}")

    def _check_range(self, name: str, low: float, high: float, closed: str = "[]") -> None:
        """A number field in [low, high] (``closed`` "[)" leaves out high, "(]" low)."""
        v = getattr(self, name)
        if not (low <= v if closed[0] == "[" else low < v) or not (v <= high if closed[1] == "]" else v < high):
            self._fail(name, f"must be in {closed[0]}{low:g}, {high:g}{closed[1]}")

    def _check_int(self, name: str, low: int, optional: bool = False, high: int | None = None) -> None:
        v = getattr(self, name)  # an int or None by now (_check_types)
        if v is not None and not (low <= v and (high is None or v <= high)):
            allowed = f">= {low}" if high is None else f"from {low} to {high:,}"
            self._fail(name, f"must be an integer {allowed}" + (" or None" if optional else ""))


MAX_LAYERS = 16  # a receptive field of 65,536 characters: far past any name; deeper ones only exhaust memory
MAX_STEPS = 100_000_000  # the run keeps every step's loss (4 bytes each)
MAX_BATCH = 1_000_000  # names (or contexts) a step
REPORTS = 20  # val-loss reports in a keep_best run whose eval_every is 0

@dataclass
class ModelConfig(Config):
    """One model in both forms (tree and conv); the defaults are the lecture's (76,579 parameters)."""

    vocab_size: int = opt(27, "tokens: the start/end token, the characters and an unknown-character token where the run has one (training takes it from the data)")
    n_embd: int = opt(24, "embedding width E")
    n_hidden: int = opt(128, "width H of each layer's output (the residual stream, with residual)")
    n_layers: int = opt(3, "depth L; the receptive field (the tree's context) is 2**L tokens")
    activation: str = opt("tanh", "tanh(a) (the lecture's), gated: tanh(a_f)*sigmoid(a_g) (WaveNet), glu: a_f*sigmoid(a_g)")
    norm: str = opt("batch", "on the pre-activation (Linear -> norm -> tanh): batch (the lecture's), layer, none (a bias)")
    residual: bool = opt(False, "each layer outputs newer + R z (R a learned 1x1 projection) instead of z")
    residual_input: str = opt("project", "first layer's residual: project (1x1, E -> H), none, identity (needs E == H)")
    skip: bool = opt(False, "WaveNet skips: sum of each layer's S z -> ReLU -> 1x1 -> ReLU -> 1x1 -> logits")
    n_inner: Optional[int] = opt(None, "width of z (WaveNet's gate channels), with residual only (default: n_hidden)")
    n_skip: Optional[int] = opt(None, "skip channels, with skip only (default: n_hidden)")
    n_head: Optional[int] = opt(None, "the skip head's hidden width, with skip only (default: n_skip)")

    def __post_init__(self):
        self._check_types()
        self._check_int("vocab_size", 2)  # '.' and at least one character
        for name in ("n_embd", "n_hidden"):
            self._check_int(name, 1)
        self._check_int("n_layers", 1, high=MAX_LAYERS)
        for name in ("n_inner", "n_skip", "n_head"):
            self._check_int(name, 1, optional=True)
        if not self.residual and self.n_inner not in (None, self.n_hidden):
            raise ConfigError(
                f"ModelConfig.n_inner ({self.n_inner}) differs from ModelConfig.n_hidden ({self.n_hidden}), but without "
                "residual=True there is no projection from z back to ModelConfig.n_hidden"
            )
        if self.residual and self.residual_input == "identity" and self.n_embd != self.n_hidden:
            raise ConfigError(
                f"ModelConfig: residual_input='identity' adds the embedding (n_embd={self.n_embd}) to a "
                f"layer output of n_hidden={self.n_hidden} channels: use residual_input='project' or 'none', "
                "or make the widths equal"
            )
        if not self.skip and (self.n_skip is not None or self.n_head is not None):
            raise ConfigError("ModelConfig.n_skip and ModelConfig.n_head are only used with skip=True")

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


@dataclass
class TrainConfig(Config):
    """How to train. The defaults are the ``default`` recipe's but for its length in epochs and its
    keep_best (``recipe("default")``); ``recipe("lecture")`` is the lecture's."""

    recipe: str = opt("default", "the named recipe (RECIPES) these values started from")
    form: str = opt("conv", "conv: batches of whole names (ConvModel); tree: the lecture's contexts (TreeModel)")
    steps: int = opt(1600, "optimizer steps (with epochs, worked out from the names file when the run starts)")
    epochs: Optional[float] = opt(None, "passes over the training split, which set the steps when the run starts: epochs "
                                  "x train names / batch_size, the warmup at most an eighth of them")
    batch_size: int = opt(128, "names (conv) or contexts (tree) per step")
    optimizer: str = opt("adamw", "adamw, or sgd (the lecture's)")
    lr: float = opt(1e-2, "peak learning rate")
    schedule: str = opt("linear", "linear or cosine: warmup, then down to lr*lr_decay; step: lr*lr_decay from decay_at*steps")
    warmup: int = opt(200, "linear warmup steps (linear and cosine schedules)")
    decay_at: float = opt(0.75, "fraction of the steps after which the step schedule decays")
    lr_decay: float = opt(0.0, "the last learning rate as a fraction of lr")
    weight_decay: float = opt(0.1, "AdamW's decay of weights and embeddings (never of biases or norms)")
    swa: float = opt(0.0, "average the weights over this last fraction of the steps (0: off), then BatchNorm's statistics")
    swa_every: int = opt(10, "steps between the weights that the average takes")
    input_noise: float = opt(0.0, "chance that an input character is swapped for a random one (targets kept)")
    normalize: str = opt("none", "how the text is normalized before the vocabulary sees it, at training and on every "
                         "path that scores with the run: none (as is), case (case folded), accents (accents dropped), both")
    unknown: bool = opt(True, "an unknown-character token, learned, that a character never seen in training scores as "
                        "(off: a name with one is refused, as runs saved before 1.1 do)")
    unknown_rate: float = opt(0.002, "chance that a training character is replaced by the unknown token (as target and "
                              "as the next input)")
    rare_chars: int = opt(3, "with an unknown token, characters seen fewer times than this in the names file train as it")
    column: Optional[str] = opt(None, "the column of names (a JSONL key) when the names file is a table: .csv, .tsv, "
                                ".jsonl, .parquet (default: its only column)")
    distill: float = opt(0.0, "weight a of the teachers in the loss: (1 - a) CE(targets) + a CE(teachers' mean distribution)")
    temperature: float = opt(1.0, "distillation temperature T: teachers and student at logits / T, that term scaled by T**2")
    beta2: float = opt(0.99, "AdamW's beta2")
    seed: int = opt(42, "torch.manual_seed before the model's init; also the batch order")
    device: str = opt("auto", "cpu, cuda, or auto: cuda when available")
    precision: str = opt("auto", "the training steps' matmuls: auto is bfloat16 where the hardware has it natively (weights stay float32)")
    compile: bool = opt(False, "torch.compile the model's forward for the training steps (dynamic shapes)")
    checkpoint_every: int = opt(500, "steps between checkpoints (0: only at the end and on Ctrl-C)")
    eval_every: int = opt(0, f"steps between val-loss reports (0: only at the end; with keep_best, {REPORTS} in the run)")
    keep_best: bool = opt(False, "keep the weights with the lowest val loss among the reports and the end; the "
                          "run's numbers are theirs")
    eval_test: bool = opt(True, "the test loss at the end (off while tuning on dev)")
    loss_block: int = opt(0, "steps per point of loss.png (0: steps // 200)")

    def __post_init__(self):
        self._check_types()
        if self.recipe not in RECIPES:
            self._fail("recipe", f"must be one of {tuple(RECIPES)}")
        self._check_int("steps", 1, high=MAX_STEPS)
        self._check_int("batch_size", 1, high=MAX_BATCH)
        self._check_int("swa_every", 1)
        for name in ("warmup", "checkpoint_every", "eval_every", "loss_block"):
            self._check_int(name, 0)
        if not 0 <= self.seed < SEED_LIMIT:
            self._fail("seed", "must be an integer in [0, 2**32)")
        if not self.lr > 0:
            self._fail("lr", "must be a finite number > 0")
        if self.weight_decay < 0:
            self._fail("weight_decay", "must be a finite number >= 0")
        self._check_range("input_noise", 0, 1, "[)")
        self._check_range("unknown_rate", 0, 1, "[)")
        self._check_int("rare_chars", 0)
        if self.epochs is not None and not self.epochs > 0:
            self._fail("epochs", "must be a finite number > 0 or None")
        self._check_range("distill", 0, 1)
        if not self.temperature > 0:
            self._fail("temperature", "must be a finite number > 0")
        if self.distill and self.form != "conv":
            self._fail("distill", "needs form 'conv' (the teachers' distributions are over whole names)")
        self._check_range("decay_at", 0, 1)
        self._check_range("lr_decay", 0, 1)
        self._check_range("swa", 0, 1, "[)")
        self._check_range("beta2", 0, 1, "[)")


# the TrainConfig fields that make a run's words and vocabulary from its names file: a recipe's teachers
# take their student's, so that the student can learn from them (``teachers.train_recipe``)
TEXT_FIELDS = ("normalize", "unknown", "unknown_rate", "rare_chars", "column")

SEED_LIMIT = 2**32  # TrainConfig.seed: seeds of torch's generators, also scaled by 1,000,003 and offset by the step

# Every recipe but the lecture's gives its length in epochs of the training split, so that a file of
# 2,000 strings gets as many passes as the lecture's 32,033 names (its steps then: small 6,007, wide
# and best 4,005, best's teachers 2,503, gpu 401)
RECIPES = {
    # the lecture's model, conv form: 16 epochs of whole names packed without padding, weight decay 0.5
    # (chosen on files of 500 to 30,000 names and usernames: experiments/results/sizing.md), AdamW, a
    # linear decay to 0, the weights of the best val report kept
    "default": dict(epochs=16.0, weight_decay=0.5, keep_best=True),
    # fine-tuning a trained model (train --init RUN, which makes it the default): the default's, gentler
    # and shorter, so that what the model knew is kept (experiments/results/finetune.md)
    "finetune": dict(epochs=8.0, lr=3e-3, keep_best=True),
    # the best found with at most the lecture's 76,579 parameters: its model, 30 epochs, strong weight
    # decay, the weights averaged over the last quarter, trained on the averaged distributions of two
    # ``wide`` teachers (distill 1: the names' own next characters only through them)
    "small": dict(epochs=30.0, lr=6e-3, weight_decay=0.5, swa=0.25, distill=1.0, teachers=dict(recipe="wide", count=2)),
    # the best single model found: 3 tanh layers 384 wide (621,603 parameters), 20 epochs, strong
    # weight decay, weights averaged over the last quarter, distilled from two ``wide`` teachers of
    # 12.5 epochs (0.8 of the loss on their averaged distributions)
    "best": dict(model=dict(n_hidden=384), epochs=20.0, lr=6e-3, weight_decay=0.5, swa=0.25, distill=0.8,
                 teachers=dict(recipe="wide", count=2, epochs=12.5)),
    # the best trained on the names alone (no teachers), and the teachers of small and best: 3 tanh
    # layers 384 wide (621,603 parameters), 20 epochs, strong weight decay, weights averaged
    "wide": dict(model=dict(n_hidden=384), epochs=20.0, lr=6e-3, weight_decay=0.5, swa=0.25),
    # for a GPU, where a step of 128 names is all kernel launches: the lecture's model, 1,024 names a
    # step, 16 epochs (401 steps of the lecture's names), lr 3e-2, weight decay 0.3 (its val: benchmarks/PERFORMANCE.md)
    "gpu": dict(batch_size=1024, epochs=16.0, lr=3e-2, warmup=25, weight_decay=0.3),
    # the lecture's: the tree on 32 random contexts, plain SGD, lr 0.1 then 0.01 for the last quarter
    "lecture": dict(form="tree", steps=200_000, batch_size=32, optimizer="sgd", lr=0.1, schedule="step",
                    warmup=0, decay_at=0.75, lr_decay=0.1, weight_decay=0.0, precision="float32", checkpoint_every=20_000,
                    unknown=False),
}


def check_recipe(name: str) -> None:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r} (expected one of {sorted(RECIPES)})")


def recipe(name: str = "default", **overrides) -> TrainConfig:
    """The ``TrainConfig`` of a named recipe, with ``overrides`` (None values are ignored). A run's
    length is its ``steps`` or its ``epochs``: one given replaces the recipe's other (both: ``ConfigError``)."""
    check_recipe(name)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    check_length(overrides)
    train = {k: v for k, v in RECIPES[name].items() if k not in ("model", "teachers")}
    train = lengthened(train, overrides)
    base = TrainConfig(recipe=name, **train).to_dict()
    return TrainConfig.from_dict({**base, **overrides})


def lengthened(fields: dict, overrides: dict) -> dict:
    """A recipe's ``fields`` less the length that ``overrides`` replaces: their steps replace its
    epochs, their epochs its steps."""
    out = dict(fields)
    for given, replaced in (("steps", "epochs"), ("epochs", "steps")):
        if overrides.get(given) is not None:
            out.pop(replaced, None)
    return out


def check_length(overrides: dict) -> None:
    """A run's length given once: ``steps`` or ``epochs``, not both."""
    if overrides.get("steps") is not None and overrides.get("epochs") is not None:
        raise ConfigError(f"TrainConfig.steps ({overrides['steps']}) and TrainConfig.epochs ({overrides['epochs']}) "
                          "both set the run's length: give one")


def recipe_model(name: str = "default", **overrides) -> ModelConfig:
    """The ``ModelConfig`` of a named recipe (the lecture's model unless the recipe says otherwise),
    with ``overrides`` (None values are ignored)."""
    check_recipe(name)
    model = RECIPES[name].get("model", {})
    return ModelConfig.from_dict({**ModelConfig().to_dict(), **model, **{k: v for k, v in overrides.items() if v is not None}})


def recipe_teachers(name: str = "default", seed: int | None = None, **overrides) -> list[tuple[ModelConfig, TrainConfig]]:
    """The teachers a named recipe trains before its student, as (ModelConfig, TrainConfig) pairs (none
    for a recipe without ``teachers``). A recipe's ``teachers`` is ``dict(recipe=R, count=N, **fields)``:
    teacher k is recipe R with those fields and the seed ``seed + 1 + k`` (``seed``: the student's,
    default the recipe's), with ``overrides`` (e.g. the device)."""
    check_recipe(name)
    spec = dict(RECIPES[name].get("teachers") or {})
    if not spec:
        return []
    base, count = spec.pop("recipe"), spec.pop("count")
    seed = recipe(name).seed if seed is None else seed
    spec = lengthened(spec, overrides)
    return [(recipe_model(base), recipe(base, **{**spec, **overrides, "seed": (seed + 1 + k) % SEED_LIMIT}))
            for k in range(count)]


@dataclass
class FlatConfig(Config):
    """The lecture's flat MLP baseline (``FlatModel``): the whole context flattened into one hidden layer."""

    vocab_size: int = opt(27, "tokens: the start/end token, the characters and an unknown-character token where the run has one")
    n_embd: int = opt(10, "embedding width")
    n_hidden: int = opt(200, "width of the hidden layer")
    block_size: int = opt(3, "context length in tokens")

    def __post_init__(self):
        self._check_types()
        for f in fields(self):
            self._check_int(f.name, 1)
