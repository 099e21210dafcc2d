"""Fine-tuning: a new run that starts from a trained model (``train(init=RUN)``).

The run takes RUN's model -- its shape, weights and BatchNorm statistics -- and its text settings
(normalization; the unknown-character token), and trains it on a new names file. The vocabulary is
RUN's, extended with the characters of the new file that RUN has not seen (``extended_vocab``). A new
character's rows start as the unknown token's, where RUN has one, and share its probability
(``extended_model``): before the first step, the extended model gives every name RUN could score the
same probability, and a name with a new character the one RUN gave it as the unknown token.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..data import Vocab
from ..errors import ConfigError
from ..models.config import ModelConfig, TrainConfig
from ..models.conv import ConvModel
from ..models.tree import TreeModel
from ..paths import run_path
from ..store.checkpoint import Checkpoint, resolve
from .distill import record


def load_init(init) -> tuple[Checkpoint, dict]:
    """The checkpoint a run starts from (a run folder, a checkpoint file, or "bundled": the model the
    package carries) and its record {"path", "sha256"}."""
    path = resolve(run_path(init))
    ckpt = Checkpoint.load(path)
    if ckpt.kind not in ("conv", "tree"):
        raise ConfigError(f"{init}: a {ckpt.kind} model cannot start a run: train starts from a conv or tree run")
    return ckpt, record(path)


def init_config(tc: TrainConfig, model_config: ModelConfig | None, ckpt: Checkpoint, init) -> TrainConfig:
    """``tc`` with the text settings of the run it starts from: its normalization (a different one
    given is a ``ConfigError``) and an unknown token where it has one. ``model_config``, where given,
    must be its model's (the vocabulary aside): a field that differs is a ``ConfigError`` naming it."""
    if model_config is not None:
        theirs, ours = ckpt.model_config.to_dict(), model_config.to_dict()
        for name in theirs:
            if name != "vocab_size" and theirs[name] != ours[name]:
                raise ConfigError(f"ModelConfig.{name} is {theirs[name]!r} in the run this one starts from ({init}), "
                                  f"not {ours[name]!r}: a fine-tuned model keeps its shape")
    how = ckpt.vocab.normalize
    if tc.normalize not in ("none", how):
        raise ConfigError(f"TrainConfig.normalize is {how!r} in the run this one starts from ({init}), not "
                          f"{tc.normalize!r}: a fine-tuned model reads text as it learned to")
    return replace(tc, normalize=how, unknown=tc.unknown or ckpt.vocab.unknown)


def extended_vocab(theirs: Vocab, learned: Vocab) -> Vocab:
    """``theirs`` with the characters of ``learned`` (the new file's) that it lacks, and an unknown
    token where either has one."""
    return Vocab([*theirs.chars, *learned.chars], theirs.normalize, theirs.unknown or learned.unknown)


@torch.no_grad()
def extended_model(ckpt: Checkpoint, vocab: Vocab, form: str) -> torch.nn.Module:
    """The checkpoint's model over ``vocab`` (``extended_vocab`` of its own), in ``form`` ("conv": a
    tree run's model as a ConvModel). Each token's rows -- its embedding, its output weights -- are
    those of the same character in the old vocabulary; a new character's are the unknown token's (a
    fresh init's without one), and the tokens sharing one old token's rows split its probability (its
    output bias less log of their count)."""
    old, old_vocab = ckpt.model(), ckpt.vocab
    if form == "conv" and isinstance(old, TreeModel):
        old = ConvModel.from_tree(old)
    elif form == "tree" and not isinstance(old, TreeModel):
        raise ConfigError("form 'tree' trains a TreeModel: the run it starts from is a conv run (use form 'conv')")
    if vocab == old_vocab:
        return old
    model = type(old)(ModelConfig.from_dict({**old.config.to_dict(), "vocab_size": len(vocab)}))
    source = [old_id(token, vocab, old_vocab) for token in range(len(vocab))]  # each token's old row (None: none)
    shares = [source.count(s) for s in source]
    new_state = model.state_dict()
    for name, tensor in old.state_dict().items():
        if tensor.shape == new_state[name].shape:
            new_state[name] = tensor
            continue
        rows = new_state[name].clone()  # (V, ...): a fresh init's, where a token has no old row
        for token, (s, share) in enumerate(zip(source, shares)):
            if s is not None:
                rows[token] = tensor[s] - (math.log(share) if tensor.dim() == 1 else 0.0)
        new_state[name] = rows
    model.load_state_dict(new_state)
    return model


def old_id(token: int, vocab: Vocab, old_vocab: Vocab) -> int | None:
    """The id in ``old_vocab`` of token ``token`` of ``vocab``: the start/end token's, its character's,
    else the old unknown token's (None without one)."""
    if token == 0:
        return 0
    if token == vocab.unknown_id:
        return old_vocab.unknown_id
    return old_vocab.stoi.get(vocab.itos[token], old_vocab.unknown_id)
