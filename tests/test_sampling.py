"""sample_names: cached generation equals the window sampler and the tree, draw for draw."""

import numpy as np
import pytest
import torch

import wavenet_conv.inference.sampling as sampling_module
from helpers import VARIANTS, VOCAB, devices, make_pair, random_words, randomize_, variant_id
from wavenet_conv import (ArgumentError, ConvModel, FlatConfig, FlatModel, ModelConfig, TreeModel, Vocab, sample_names,
                          sequences)
from wavenet_conv.inference.sampling import MAX_LEN, CachedStepper, draw, sample_batches


def ending_pair(cfg: ModelConfig, seed: int = 0, end_bias: float = 1.5, dtype=torch.float64, device="cpu"):
    """make_pair, with the end token's logit raised so that names end after a few characters."""
    tree, _ = make_pair(cfg, dtype, seed=seed, device=device)
    out = tree.skip_head.fc2 if cfg.skip else tree.lm_head
    with torch.no_grad():
        out.bias[0] += end_bias
    return tree, ConvModel.from_tree(tree)


def sample(model, seed=0, **kw):
    return sample_names(model, kw.pop("n", 40), VOCAB, generator=torch.Generator().manual_seed(seed), **kw)


def first_draws(names, prefix: str) -> list[int]:
    """The token each name drew right after the prefix (0: it ended there)."""
    return [VOCAB.stoi[w[len(prefix)]] if len(w) > len(prefix) else 0 for w in names]


def expected_first_draws(logits: torch.Tensor, n: int, seed: int) -> list[int]:
    """What the sampler's first draw gives for these logits (V,): row i takes the i-th of the n
    uniforms of the first step (the documented randomness of ``sample_names``)."""
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return draw(logits.expand(n, -1), u).tolist()


@pytest.mark.parametrize("prefix", ["", "qu"])
@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_cached_window_and_tree_give_the_same_names(variant, depth, prefix):
    cfg = ModelConfig(n_embd=5, n_hidden=6, n_layers=depth, **variant)
    tree, conv = ending_pair(cfg, seed=depth)
    ref = sample(conv, prefix=prefix, max_len=20)  # cached
    assert sample(conv, prefix=prefix, max_len=20, cached=False) == ref  # the lecture's window sampler
    assert sample(tree, prefix=prefix, max_len=20, cached=False) == ref
    assert sample(tree, prefix=prefix, max_len=20) == ref
    assert len(set(ref)) > 5 and all(w.startswith(prefix) for w in ref)


@pytest.mark.parametrize("variant", VARIANTS[::4], ids=variant_id)
def test_cached_stepper_equals_conv_forward(variant):
    """Per step, the cached logits are the conv's logits at that position, past the receptive field."""
    cfg = ModelConfig(n_embd=5, n_hidden=6, n_layers=3, **variant)
    _, conv = make_pair(cfg, torch.float64, seed=2)
    words = random_words(5, seed=3, min_len=19, max_len=19)
    x = sequences(words, VOCAB).x  # (5, 20), no padding
    with torch.no_grad():
        ref = conv(x)  # (5, 20, V)
    with torch.inference_mode():
        stepper = CachedStepper(conv, len(words))
        got = torch.stack([stepper.feed(x[:, t]) for t in range(x.shape[1])], 1)  # (5, 20, V)
    assert (got - ref).abs().max().item() <= 1e-10


def test_same_seed_same_names_and_stops():
    tree, conv = ending_pair(ModelConfig(n_embd=8, n_hidden=16, n_layers=3))
    a, b, c = sample(conv, seed=1, n=200), sample(conv, seed=1, n=200), sample(conv, seed=2, n=200)
    assert a == b and a != c
    assert all("." not in w and len(w) <= MAX_LEN for w in a)  # empty if the end token comes first
    assert len({len(w) for w in a}) > 3  # each row stopped at its own end token


def test_max_len_cuts_names_that_do_not_end():
    tree, conv = ending_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=2), end_bias=-1e3)
    names = sample(conv, max_len=7, prefix="ab")
    assert all(len(w) == 7 and w.startswith("ab") for w in names)
    assert sample(conv, max_len=2, prefix="ab") == ["ab"] * 40


def test_draw_is_the_inverse_cdf():
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3]], dtype=torch.float64)
    logits = probs.log().expand(6, 4)
    u = torch.tensor([0.0, 0.0999, 0.1001, 0.6999, 0.7001, 0.999999], dtype=torch.float64)
    assert draw(logits, u).tolist() == [0, 0, 2, 2, 3, 3]  # never the zero-probability token 1
    assert draw(logits, u, top_k=1).tolist() == [2] * 6
    assert draw(logits, u, top_k=2).tolist() == [2, 2, 2, 3, 3, 3]  # 2/3, 1/3


def test_temperature_and_top_k():
    _, conv = ending_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=2))
    greedy = sample(conv, temperature=1e-3, n=30)
    assert len(set(greedy)) == 1  # near-zero temperature: the argmax every step
    assert sample(conv, temperature=1e-320, n=30) == greedy  # logits / T overflow: still the argmax
    with torch.no_grad():
        first = torch.softmax(conv(torch.zeros(1, 1, dtype=torch.long))[0, 0], 0)
    top3 = {VOCAB.itos[i] for i in torch.topk(first, 3).indices.tolist()}
    assert {w[:1] or "." for w in sample(conv, top_k=3, n=200)} <= top3


@pytest.mark.parametrize("model_kind", ["conv", "tree"])
def test_training_mode_samples_in_eval_mode(model_kind):
    tree, conv = ending_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=3))
    model = conv if model_kind == "conv" else tree
    ref = sample(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    assert sample(model) == ref and sample(model, cached=False) == ref  # no NaN, no batch statistics
    assert model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "window"])
@pytest.mark.parametrize("kind", ["conv", "tree"])
def test_the_draw_after_the_prefix_follows_the_models_logits(kind, cached):
    """The prefix is fed to the model: the first draw after it follows ConvModel.forward's logits at
    the prefix's last position, on ``[0, prefix...]``, row for row."""
    _, conv = ending_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=2, activation="gated", skip=True))
    model = conv if kind == "conv" else TreeModel.from_conv(conv)
    prefix, n = "quxz", 300  # longer than the receptive field, 4
    with torch.no_grad():
        logits = conv(torch.tensor([[0] + VOCAB.encode(prefix)]))[0, -1]  # (V,)
    names = sample(model, seed=4, n=n, prefix=prefix, cached=cached)
    assert first_draws(names, prefix) == expected_first_draws(logits, n, seed=4)
    assert len(set(first_draws(names, prefix))) > 5


def test_flat_model_uses_the_window():
    """A FlatModel has no cache: it samples from its last block_size tokens, whatever ``cached`` says."""
    torch.manual_seed(0)
    flat = randomize_(FlatModel(FlatConfig(n_embd=4, n_hidden=9, block_size=3)).double()).eval()
    with torch.no_grad():
        flat.lm_head.bias[0] += 1.5
        logits = flat(torch.tensor([VOCAB.encode("mar")]))[0]  # the window: the prefix's last 3 characters
    names = sample(flat, seed=2, n=300, prefix="omar")
    assert first_draws(names, "omar") == expected_first_draws(logits, 300, seed=2)
    assert sample(flat, cached=False) == sample(flat) and all("." not in w for w in sample(flat))


@pytest.mark.parametrize("device", devices())
def test_device_float32(device):
    tree, conv = ending_pair(ModelConfig(n_embd=8, n_hidden=16, n_layers=3), dtype=torch.float32, device=device)
    names = sample(conv, n=100)
    assert len(names) == 100 and all(set(w) <= set(VOCAB.chars) for w in names)
    if device != "cpu":  # a generator on the model's device works too
        g = torch.Generator(device=device).manual_seed(0)
        assert len(sample_names(conv, 5, VOCAB, generator=g)) == 5


def test_zero_names_and_global_rng():
    _, conv = ending_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=2))
    assert sample_names(conv, 0, VOCAB) == []
    torch.manual_seed(3)
    a = sample_names(conv, 20, VOCAB)
    torch.manual_seed(3)
    assert sample_names(conv, 20, VOCAB, cached=False) == a


BAD_ARGUMENTS = [
    (dict(prefix="aB"), ArgumentError, r"prefix.*'B'.*not in the vocabulary"),
    (dict(prefix="a.b"), ArgumentError, r"prefix.*'\.' in 'a\.b' is not in the vocabulary"),
    (dict(prefix=3), TypeError, "prefix"),
    (dict(n=-1), ValueError, "n must be"),
    (dict(n=2.0), ValueError, "n must be"),
    (dict(temperature=0), ValueError, "temperature"),
    (dict(top_k=0), ValueError, "top_k"),
    (dict(max_len=1, prefix="ab"), ValueError, "max_len"),
    (dict(max_len=0), ValueError, "max_len"),
    (dict(generator=1), TypeError, "generator must be a torch.Generator or None, got int"),
    (dict(temperature=float("nan")), ValueError, "temperature"),
    (dict(temperature=True), ValueError, "temperature"),
    (dict(n=True), ValueError, "n must be"),
    (dict(top_k=np.float32(2)), ValueError, "top_k"),
]
BAD_IDS = ["prefix-char", "prefix-dot", "prefix-type", "n-negative", "n-float", "temperature", "top-k", "max-len-prefix",
           "max-len-0", "generator", "temperature-nan", "temperature-bool", "n-bool", "top-k-float"]


@pytest.mark.parametrize("sampler", ["sample_names", "sample_batches"])
@pytest.mark.parametrize("kw,err,match", BAD_ARGUMENTS, ids=BAD_IDS)
def test_bad_arguments(kw, err, match, sampler):
    """Refused with the argument's name, before anything is drawn: ``sample_batches`` checks every
    argument before its first name (``wavenet-conv sample`` prints nothing, then one error line)."""
    _, conv = ending_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=2))
    args = dict(n=3, prefix="", temperature=1.0, top_k=None, max_len=10, generator=torch.Generator().manual_seed(0))
    args.update(kw)
    n = args.pop("n")
    state = args["generator"].get_state() if isinstance(args["generator"], torch.Generator) else None
    with pytest.raises(err, match=match):
        if sampler == "sample_names":
            sample_names(conv, n, VOCAB, **args)
        else:
            next(sample_batches(conv, n, VOCAB, batch=2, **args))
    assert state is None or torch.equal(args["generator"].get_state(), state)  # nothing drawn


@pytest.mark.parametrize("batch", [0, -2, 1.5, True])
def test_sample_batches_refuses_a_bad_batch(batch):
    _, conv = ending_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=2))
    with pytest.raises(ArgumentError, match=r"sample_batches: batch must be an integer >= 1") as e:
        next(sample_batches(conv, 3, VOCAB, batch=batch))
    assert e.value.argument == "batch"


def test_sample_batches_yields_n_names_as_sample_names_draws_them(monkeypatch):
    """n names in batches of ``batch`` (default ``batch_size(model)``), each batch the names that
    ``sample_names`` draws for it from the same generator."""
    _, conv = ending_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=2))
    batches = list(sample_batches(conv, 10, VOCAB, generator=torch.Generator().manual_seed(3), batch=3, prefix="a"))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    g = torch.Generator().manual_seed(3)
    assert batches == [sample_names(conv, k, VOCAB, generator=g, prefix="a") for k in (3, 3, 3, 1)]
    monkeypatch.setattr(sampling_module, "batch_size", lambda model: 4)
    assert [len(b) for b in sample_batches(conv, 9, VOCAB)] == [4, 4, 1]
    assert list(sample_batches(conv, 0, VOCAB)) == []


def test_numpy_numbers_are_numbers():
    _, conv = ending_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=2))
    kw = dict(temperature=np.float32(0.5), top_k=np.int64(5), max_len=np.int32(12))
    got = sample_names(conv, np.int64(2), VOCAB, generator=torch.Generator().manual_seed(1), **kw)
    assert got == sample_names(conv, 2, VOCAB, generator=torch.Generator().manual_seed(1), temperature=0.5, top_k=5, max_len=12)


def test_a_name_of_max_len_characters_is_one_that_was_cut():
    """The documented way to tell: the end token is drawn after at most max_len characters, so a
    name of exactly max_len characters never ended."""
    _, conv = ending_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=2), end_bias=-30.0)  # never ends
    assert [len(w) for w in sample(conv, n=5, max_len=4)] == [4] * 5
    _, conv = ending_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=2), end_bias=30.0)  # ends at once
    assert sample(conv, n=5, max_len=1) == [""] * 5


def test_bad_model_or_vocab():
    _, conv = ending_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=2))
    with pytest.raises(ValueError, match="vocab"):
        sample_names(conv, 3, Vocab("abc"))
    with pytest.raises(TypeError, match="ConvModel"):
        sample_names(torch.nn.Linear(2, 2), 3, VOCAB)
