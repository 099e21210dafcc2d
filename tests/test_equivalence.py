"""The conv form equals the tree form, position by position, for every variant and depth."""

import pytest
import torch

from helpers import SEPARATE_WIDTHS, VARIANTS, VOCAB, devices, make_pair, random_words, variant_id
from wavenet_conv import ConvModel, ModelConfig, TreeModel, contexts, sequences

TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def names_for(depth: int):
    """Unequal lengths, including names longer than the receptive field 2**depth."""
    words = random_words(6, seed=depth, max_len=10)
    return words + ["a", "zz", random_words(1, seed=99, min_len=2**depth + 3, max_len=2**depth + 9)[0]]


def conv_vs_tree(tree, conv, words):
    """Max |conv logits - tree logits| over every real position of a padded batch of names."""
    dev = next(tree.parameters()).device
    batch = sequences(words, VOCAB).to(dev)
    X, _ = contexts(words, VOCAB, tree.block_size)
    ref = tree(X.to(dev))  # (N, V): one row per target, in name order
    out = conv(batch.x)  # (B, T, V)
    got = out[batch.mask]  # (N, V): the same order (row-major over names, then positions)
    assert got.shape == ref.shape
    return (got - ref).abs().max().item()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_conv_equals_tree_every_variant(variant, depth, dtype):
    cfg = ModelConfig(n_embd=5, n_hidden=6, n_layers=depth, **variant)
    tree, conv = make_pair(cfg, dtype, seed=depth)
    assert conv_vs_tree(tree, conv, names_for(depth)) <= TOL[dtype]


@pytest.mark.parametrize("n_embd,n_hidden", [(24, 128), (10, 68), (3, 3), (16, 7)])
@pytest.mark.parametrize("depth", [1, 3, 6])
def test_lecture_model_widths(n_embd, n_hidden, depth):
    cfg = ModelConfig(n_embd=n_embd, n_hidden=n_hidden, n_layers=depth)
    tree, conv = make_pair(cfg, torch.float64, seed=n_hidden)
    assert conv_vs_tree(tree, conv, names_for(depth)) <= 1e-10


@pytest.mark.parametrize("extra", SEPARATE_WIDTHS.values(), ids=SEPARATE_WIDTHS.keys())
@pytest.mark.parametrize("depth", [1, 4])
def test_separate_widths(extra, depth):
    cfg = ModelConfig(**{"n_embd": 5, "n_hidden": 6, "n_layers": depth, **extra})
    tree, conv = make_pair(cfg, torch.float64, seed=depth)
    assert conv_vs_tree(tree, conv, names_for(depth)) <= 1e-10


@pytest.mark.parametrize("device", devices())
def test_device_and_float32_defaults(device):
    """Models built in the default dtype, on each available device."""
    cfg = ModelConfig(n_layers=3, activation="gated", residual=True, skip=True)
    tree, conv = make_pair(cfg, torch.float32, seed=3, device=device)
    assert conv_vs_tree(tree, conv, names_for(3)) <= 1e-4


def test_state_dicts_round_trip():
    cfg = ModelConfig(n_layers=2, activation="glu", residual=True, skip=True)
    tree, _ = make_pair(cfg, torch.float64)
    conv = ConvModel(cfg).double()
    conv.load_state_dict(tree.state_dict())
    back = TreeModel(cfg).double()
    back.load_state_dict(conv.state_dict())
    for (k1, v1), (k2, v2) in zip(tree.state_dict().items(), back.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert TreeModel.from_conv(conv).state_dict().keys() == tree.state_dict().keys()
    conv2 = ConvModel.from_tree(tree)
    assert not conv2.training and next(conv2.parameters()).dtype == torch.float64


def test_right_padding_does_not_leak():
    """A name scored alone equals the same name scored in a padded batch."""
    cfg = ModelConfig(n_embd=5, n_hidden=6, n_layers=3)
    _, conv = make_pair(cfg)
    words = ["ab", "abcdefghijkl"]
    b = sequences(words, VOCAB)
    alone = conv(sequences(["ab"], VOCAB).x)[0]
    assert (conv(b.x)[0, :3] - alone).abs().max() <= 1e-12


def test_conv_weight_is_a_real_conv1d():
    """Block.conv_weight() with F.conv1d (dilation d, '.'-token left padding) gives the tree's first layer."""
    import torch.nn.functional as F

    cfg = ModelConfig(n_embd=5, n_hidden=6, n_layers=2, norm="none")
    tree, conv = make_pair(cfg)
    x = sequences(["hello", "ab"], VOCAB).x
    pad = 2**cfg.n_layers - 1
    h = conv.wte(F.pad(x, (pad, 0))).transpose(1, 2)  # (B, E, T+pad)
    for l, block in enumerate(conv.blocks):
        h = torch.tanh(F.conv1d(h, block.conv_weight(), block.mix.bias, dilation=2**l))
    logits = conv.lm_head(h.transpose(1, 2))  # (B, T, V): pad consumed exactly
    assert logits.shape[1] == x.shape[1]
    assert (logits - conv(x)).abs().max() <= 1e-12


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("depth", [1, 3, 5])
def test_causality_and_receptive_field(variant, depth):
    """Output t depends on tokens t-2**L+1 .. t, not on t-2**L, and never on later tokens.

    Widths are generous so that the skip head's ReLUs cannot hide a real dependence by chance."""
    cfg = ModelConfig(n_embd=8, n_hidden=24, n_layers=depth, **variant)
    _, conv = make_pair(cfg)
    R = 2**depth
    T = R + 6
    x = torch.randint(1, 27, (1, T), generator=torch.Generator().manual_seed(depth))
    x[0, 0] = 0
    base = conv(x)[0]  # (T, V)
    for s in range(1, T):
        x2 = x.clone()
        x2[0, s] = x[0, s] % 26 + 1  # change token s
        diff = (conv(x2)[0] - base).abs().amax(-1)  # (T,)
        assert diff[:s].max() == 0, "a later token changed an earlier output"
        assert (diff[s : min(s + R, T)] > 0).all(), "output within the receptive field did not change"
        if s + R < T:
            assert diff[s + R :].max() == 0, "output beyond the receptive field changed"


def test_tree_parameter_count_is_the_lecture():
    assert TreeModel(ModelConfig()).num_params() == 76579
    assert TreeModel(ModelConfig(n_embd=10, n_hidden=68)).num_params() == 22397
    counts = ConvModel(ModelConfig()).param_counts()
    assert counts["total"] == 76579 and counts["embedding"] == 648 and counts["head"] == 3483


def packed_names(words):
    """The names packed end to end for ``ConvModel.packed``: (x, pos) (N,), and the padded batch."""
    batch = sequences(words, VOCAB)
    positions = torch.arange(batch.x.shape[1]).expand_as(batch.x)
    return batch.x[batch.mask], positions[batch.mask], batch


@pytest.mark.parametrize("depth", [1, 3, 5])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_packed_names_equal_the_conv_forward(variant, depth):
    """The training layout (names packed end to end, no padding) is the same function as forward, in
    eval mode and in training mode (batch statistics over the same real positions), gradients too."""
    cfg = ModelConfig(n_embd=5, n_hidden=6, n_layers=depth, **variant)
    _, conv = make_pair(cfg, torch.float64, seed=depth)
    x, pos, batch = packed_names(names_for(depth))
    assert (conv.packed(x, pos) - conv(batch.x)[batch.mask]).abs().max().item() <= 1e-10
    twin = ConvModel.from_tree(conv).train()
    conv.train()
    a, b = conv.packed(x, pos), twin(batch.x, batch.mask)[batch.mask]
    assert (a - b).abs().max().item() <= 1e-10
    (a.logsumexp(-1).sum()).backward()
    (b.logsumexp(-1).sum()).backward()
    scale = max(p.grad.abs().max().item() for p in twin.parameters())
    assert scale > 0 and all((p.grad - q.grad).abs().max().item() <= 1e-10 * scale
                             for p, q in zip(conv.parameters(), twin.parameters()))
    for u, v in zip(conv.buffers(), twin.buffers()):  # the same running statistics
        assert (u - v).abs().max().item() <= 1e-12



def test_compare_forms_measures_the_conv_it_builds(monkeypatch):
    """``check``'s float64 comparison: a conv twin that is off by 1 in one logit shows as 1, and its loss
    as different from the tree's."""
    from wavenet_conv.inference import compare

    tree, _ = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=2), torch.float64, seed=3)
    words = random_words(40, seed=2)
    same = compare.compare_forms(tree, words, VOCAB)
    assert same["max_abs_diff"] <= 1e-12 and same["conv_loss"] == pytest.approx(same["tree_loss"], abs=1e-12)
    original = ConvModel.from_tree

    def off_by_one(model):
        conv = original(model)
        with torch.no_grad():
            conv.lm_head.bias[1] += 1
        return conv

    monkeypatch.setattr(ConvModel, "from_tree", off_by_one)
    off = compare.compare_forms(tree, words, VOCAB)
    assert off["max_abs_diff"] == pytest.approx(1, abs=1e-9) and off["conv_loss"] != off["tree_loss"]
    assert off["tree_loss"] == same["tree_loss"] and off["targets"] == same["targets"] == sum(len(w) + 1 for w in words)
