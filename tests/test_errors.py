"""Bad model input and impossible configurations: clear errors, never a deep torch error or NaN."""

import copy
import json
import re

import numpy as np
import pytest
import torch

from helpers import VOCAB, make_pair
from wavenet_conv import (ArgumentError, Scorer, ConfigError, ConvModel, InputError, ModelConfig, TrainConfig, TreeModel,
                          sample_names, score_names, sequences)


@pytest.fixture(scope="module")
def pair():
    return make_pair(ModelConfig(n_embd=4, n_hidden=5, n_layers=3))


@pytest.mark.parametrize(
    "bad,exc,pattern",
    [
        (torch.zeros(2, 8), TypeError, "integer tensor"),
        ([[0] * 8], TypeError, "torch.Tensor"),
        (torch.zeros(2, 7, dtype=torch.long), ValueError, r"shape \(B, 8\), got \(2, 7\)"),
        # the range is a device-side assert (no host sync): at once on the CPU
        (torch.full((1, 8), 27), RuntimeError, r"TreeModel input: a token id is outside the vocabulary \[0, 27\)"),
        (torch.full((1, 8), -1), RuntimeError, r"outside the vocabulary"),
    ],
    ids=["float", "list", "length", "too-big", "negative"],
)
def test_tree_input_errors(pair, bad, exc, pattern):
    with pytest.raises(exc, match=pattern):
        pair[0](bad)


@pytest.mark.parametrize(
    "bad,exc,pattern",
    [
        (torch.tensor([[0, 1, 2], [1, 2, 0]]), RuntimeError, r"every sequence must start with the start token 0"),
        (torch.tensor([[0, 1, 30]]), RuntimeError, r"ConvModel input: a token id is outside the vocabulary \[0, 27\)"),
        (torch.tensor([[0.0, 1.0]]), TypeError, "integer tensor"),
        (torch.zeros(1, 0, dtype=torch.long), ValueError, r"T >= 1"),
        (torch.zeros(1, 2, 3, dtype=torch.long), ValueError, r"shape \(B, T\)"),
    ],
    ids=["no-start", "too-big", "float", "empty", "3d"],
)
def test_conv_input_errors(pair, bad, exc, pattern):
    with pytest.raises(exc, match=pattern):
        pair[1](bad)


def test_single_sequences_and_contexts_are_batches_of_one(pair):
    tree, conv = pair
    assert tree(torch.zeros(8, dtype=torch.long)).shape == (1, 27)
    assert conv(torch.tensor([0, 5, 6])).shape == (1, 3, 27)


@pytest.mark.parametrize("cls", [TreeModel, ConvModel])
def test_training_mode_single_example_says_eval(cls):
    """The lecture's NaN: BatchNorm in training mode on one example. Here: a clear error."""
    model = cls(ModelConfig(n_layers=1)).train()
    x = torch.zeros(1, 2, dtype=torch.long) if cls is TreeModel else torch.zeros(1, 1, dtype=torch.long)
    with pytest.raises(RuntimeError, match=r"call model\.eval\(\)"):
        model(x)
    model.eval()
    assert torch.isfinite(model(x)).all()


def test_conv_training_uses_real_positions_only():
    """BatchNorm statistics in training come from real positions: right-padding changes nothing."""
    torch.manual_seed(0)
    conv = ConvModel(ModelConfig(n_embd=4, n_hidden=5, n_layers=2)).double().train()
    twin, unmasked = copy.deepcopy(conv), copy.deepcopy(conv)
    a = sequences(["abc", "de"], VOCAB)
    b = sequences(["abc", "de"], VOCAB, pad_to=9)
    out_a, out_b = conv(a.x, a.mask), twin(b.x, b.mask)
    assert (out_a[a.mask] - out_b[b.mask]).abs().max() <= 1e-12
    for l in range(2):
        m1, m2 = conv.blocks[l].norm.running_mean, twin.blocks[l].norm.running_mean
        v1, v2 = conv.blocks[l].norm.running_var, twin.blocks[l].norm.running_var
        assert (m1 - m2).abs().max() <= 1e-12 and (v1 - v2).abs().max() <= 1e-12
    unmasked(b.x)  # counting the padding as data does change the statistics
    assert (unmasked.blocks[0].norm.running_mean - conv.blocks[0].norm.running_mean).abs().max() > 1e-3


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(n_layers=0), r"n_layers must be an integer from 1 to 16, got 0"),
        (dict(n_layers=17), r"n_layers must be an integer from 1 to 16, got 17"),
        (dict(activation="relu"), r"activation must be one of .*'relu'"),
        (dict(norm="group"), r"norm must be one of"),
        (dict(residual=True, residual_input="identity"), r"residual_input='identity'.*n_embd=24.*n_hidden=128"),
        (dict(n_inner=64), r"n_inner \(64\) differs from ModelConfig.n_hidden \(128\).*residual=True"),
        (dict(n_skip=16), r"only used with skip=True"),
        (dict(n_hidden=2.5), r"n_hidden must be an integer, got 2.5"),
        (dict(residual_input="sideways"), r"residual_input must be one of"),
    ],
)
def test_impossible_configs_fail_at_construction(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        ModelConfig(**kwargs)


BAD_TYPES = [
    (ModelConfig, "residual", "no", "must be True or False"), (ModelConfig, "skip", "false", "must be True or False"),
    (ModelConfig, "skip", 1, "must be True or False"), (ModelConfig, "n_embd", 2.0, "must be an integer"),
    (ModelConfig, "n_hidden", True, "must be an integer"), (ModelConfig, "n_layers", "3", "must be an integer"),
    (ModelConfig, "vocab_size", 27.0, "must be an integer"), (ModelConfig, "activation", 1, "must be a str, one of"),
    (ModelConfig, "norm", None, "must be a str, one of"), (ModelConfig, "residual_input", b"none", "must be a str"),
    (ModelConfig, "n_inner", 2.5, "must be an integer or None"), (ModelConfig, "n_head", "8", "must be an integer or None"),
    (TrainConfig, "steps", 1.5, "must be an integer"), (TrainConfig, "batch_size", True, "must be an integer"),
    (TrainConfig, "lr", "0.1", "must be a finite number"), (TrainConfig, "weight_decay", None, "must be a finite number"),
    (TrainConfig, "compile", "yes", "must be True or False"), (TrainConfig, "eval_test", 0, "must be True or False"),
    (TrainConfig, "form", None, "must be a str, one of"), (TrainConfig, "device", 0, "must be a str"),
    (TrainConfig, "recipe", "fast", "must be one of"), (TrainConfig, "seed", 4.0, "must be an integer"),
]


@pytest.mark.parametrize("cls,name,value,message", BAD_TYPES, ids=[f"{c.__name__}.{n}={v!r}" for c, n, v, _ in BAD_TYPES])
def test_every_config_field_is_type_checked(cls, name, value, message):
    with pytest.raises(ConfigError, match=rf"^{cls.__name__}\.{name} {message}.*, got {re.escape(repr(value))}$"):
        cls(**{name: value})


def test_numpy_numbers_are_taken_as_python_numbers():
    mc = ModelConfig(n_embd=np.int64(4), n_layers=np.int32(2))
    tc = TrainConfig(lr=np.float32(0.5), steps=np.int64(7), weight_decay=1)
    assert (mc.n_embd, mc.n_layers, tc.lr, tc.steps, tc.weight_decay) == (4, 2, 0.5, 7, 1.0)
    assert [type(v) for v in (mc.n_embd, tc.lr, tc.steps, tc.weight_decay)] == [int, float, int, float]
    assert json.loads(json.dumps(tc.to_dict())) == tc.to_dict()  # plain types: a checkpoint stores them


def test_config_round_trip():
    cfg = ModelConfig(activation="gated", residual=True, skip=True, n_skip=32)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown field"):
        ModelConfig.from_dict({**cfg.to_dict(), "dropout": 0.1})


def test_training_mode_one_real_position_says_eval():
    """A mask with fewer than 2 real positions cannot give BatchNorm a variance: a clear error (a
    device-side assert, so no host sync in the forward), not NaN."""
    model = ConvModel(ModelConfig(n_layers=2)).train()
    x = torch.zeros(2, 3, dtype=torch.long)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    mask[0, 0] = True
    with pytest.raises(RuntimeError, match=r"at least 2 real positions: call model\.eval\(\)"):
        model(x, mask)
    mask[1, 0] = True
    assert torch.isfinite(model(x, mask)).all()


@pytest.mark.parametrize("call,who,argument,value", [
    (lambda m: sample_names(m, 3, VOCAB, max_len=0), "sample_names", "max_len", "0"),
    (lambda m: sample_names(m, -1, VOCAB), "sample_names", "n", "-1"),
    (lambda m: sample_names(m, 3, VOCAB, prefix="a b"), "sample_names", "prefix", "' '"),
    (lambda m: score_names(m, ["anna"], VOCAB, method="fastest"), "score_names", "method", "'fastest'"),
    (lambda m: Scorer.of(m, VOCAB, threads=0, who="score_names"), "score_names", "threads", "0"),
], ids=["max_len", "n", "prefix", "method", "threads"])
def test_an_argument_error_names_the_function_and_the_argument(pair, call, who, argument, value):
    """``ArgumentError``: who (the function), argument (its parameter) and problem (with the value),
    worded ``who: argument problem``; an ``InputError``, so the command line reports it in one line
    (with its own option for the argument: test_cli)."""
    with pytest.raises(ArgumentError) as e:
        call(pair[1])
    assert (e.value.who, e.value.argument) == (who, argument) and value in e.value.problem
    assert str(e.value) == f"{who}: {argument} {e.value.problem}" and isinstance(e.value, InputError)
