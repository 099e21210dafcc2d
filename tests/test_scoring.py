"""score_names: the fast whole-name path equals the model's own forward, for every variant."""

import math

import pytest
import torch
import torch.nn.functional as F

from helpers import BUNDLED_NAMES, LECTURE_NAMES, SEPARATE_WIDTHS, VARIANTS, VOCAB, devices, make_pair, random_words, randomize_, variant_id
from wavenet_conv import (
    ConvModel, DataError, FlatConfig, FlatModel, ModelConfig, ScoreResult, TreeModel, Vocab, contexts,
    lecture_split, load_names, score_names,
)


def names_for(depth: int, n: int = 12):
    """Unequal lengths, repeated lengths, and names longer than the receptive field 2**depth."""
    long = random_words(2, seed=99, min_len=2**depth + 2, max_len=2**depth + 9)
    return random_words(n, seed=depth, max_len=9) + ["a", "zz", "a"] + long


def max_diff(a: ScoreResult, b: ScoreResult) -> float:
    assert torch.equal(a.n_targets, b.n_targets)
    return (a.nll - b.nll).abs().max().item()


@pytest.mark.parametrize("depth", [1, 4])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_fast_equals_tree_and_conv_forward(variant, depth):
    cfg = ModelConfig(n_embd=5, n_hidden=6, n_layers=depth, **variant)
    tree, conv = make_pair(cfg, torch.float64, seed=depth)
    words = names_for(depth)
    ref = score_names(tree, words, VOCAB)  # the tree on the lecture's contexts
    assert max_diff(score_names(conv, words, VOCAB), ref) <= 1e-10
    assert max_diff(score_names(conv, words, VOCAB, method="forward"), ref) <= 1e-10
    assert max_diff(score_names(tree, words, VOCAB, method="fast"), ref) <= 1e-10


@pytest.mark.parametrize("variant", VARIANTS[::5], ids=variant_id)
def test_fast_float32(variant):
    cfg = ModelConfig(n_embd=8, n_hidden=16, n_layers=3, **variant)
    tree, conv = make_pair(cfg, torch.float32, seed=3)
    words = names_for(3)
    got, ref = score_names(conv, words, VOCAB), score_names(tree, words, VOCAB)
    assert abs(got.mean_loss - ref.mean_loss) <= 1e-5 * ref.mean_loss
    assert torch.allclose(got.nll, ref.nll, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("extra", SEPARATE_WIDTHS.values(), ids=SEPARATE_WIDTHS.keys())
def test_fast_separate_widths(extra):
    cfg = ModelConfig(**{"n_embd": 5, "n_hidden": 6, "n_layers": 3, **extra})
    tree, conv = make_pair(cfg, torch.float64, seed=1)
    words = names_for(3)
    assert max_diff(score_names(conv, words, VOCAB), score_names(tree, words, VOCAB)) <= 1e-10


def test_result_fields_and_input_order():
    tree, conv = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=2), torch.float64)
    words = names_for(2)
    r = score_names(conv, words, VOCAB)
    assert r.nll.shape == (len(words),) and r.nll.dtype == torch.float64 and r.nll.device.type == "cpu"
    assert r.n_targets.tolist() == [len(w) + 1 for w in words]
    assert r.mean_loss == pytest.approx(r.nll.sum().item() / r.n_targets.sum().item(), rel=1e-12)
    assert r.bits_per_target == pytest.approx(r.mean_loss / math.log(2), rel=1e-12)
    # each name scored on its own gives the same number, whatever the batch
    for i in (0, 5, len(words) - 1):
        assert score_names(conv, [words[i]], VOCAB).nll[0].item() == pytest.approx(r.nll[i].item(), abs=1e-10)
    perm = torch.randperm(len(words), generator=torch.Generator().manual_seed(0)).tolist()
    shuffled = score_names(conv, [words[i] for i in perm], VOCAB)
    assert torch.allclose(shuffled.nll, r.nll[perm], atol=1e-10, rtol=0)


def test_per_name_nll_is_the_sum_of_log_probs():
    tree, _ = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=2), torch.float64)
    word = "emma"
    X, Y = contexts([word], VOCAB, tree.block_size)
    with torch.no_grad():
        logp = F.log_softmax(tree(X), dim=1)[torch.arange(len(Y)), Y]
    assert score_names(tree, [word], VOCAB, method="fast").nll[0].item() == pytest.approx(-logp.sum().item(), abs=1e-10)


@pytest.mark.parametrize("chunk", [3, 64, 100000])
def test_chunk_size_does_not_change_scores(chunk):
    _, conv = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=3, activation="gated", skip=True), torch.float64)
    words = names_for(3, n=40)
    ref = score_names(conv, words, VOCAB)
    assert max_diff(score_names(conv, words, VOCAB, chunk_positions=chunk, batch=chunk), ref) <= 1e-10
    assert torch.equal(score_names(conv, words, VOCAB).nll, ref.nll)  # deterministic


@pytest.mark.parametrize("path", ["bundled", "lecture"])
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-6), (torch.float32, 1e-5)], ids=["f64", "f32"])
def test_dev_split_loss_equals_tree_split_loss(path, dtype, rtol):
    """The fast path's mean loss on the lecture's dev split is the lecture's "val" loss."""
    file = {"bundled": BUNDLED_NAMES, "lecture": LECTURE_NAMES}[path]
    try:
        words = load_names(file)
    except DataError:
        pytest.skip(f"{file} is absent")
    vocab = Vocab.from_words(words)
    _, dev, _ = lecture_split(words)
    tree, conv = make_pair(ModelConfig(), dtype, seed=7)  # the lecture's 76,579-parameter model
    X, Y = contexts(dev, vocab, tree.block_size)
    with torch.no_grad():
        split_loss = F.cross_entropy(tree(X), Y).item()  # the lecture's way, one pass
    r = score_names(conv, dev, vocab)
    assert r.n_targets.sum().item() == len(Y)
    assert r.mean_loss == pytest.approx(split_loss, rel=rtol)


@pytest.mark.parametrize("model_kind", ["conv", "tree"])
def test_training_mode_is_scored_in_eval_mode_and_restored(model_kind):
    tree, conv = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=3), torch.float64)
    model = conv if model_kind == "conv" else tree
    words = names_for(3)
    ref = score_names(model, words, VOCAB)
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    got = score_names(model, words, VOCAB)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(got.nll, ref.nll)
    model.blocks[0].eval()  # a mixed mode comes back as it was
    before = [m.training for m in model.modules()]
    score_names(model, words, VOCAB)
    assert [m.training for m in model.modules()] == before and not all(before)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in buffers.items())  # running stats untouched


def test_flat_model():
    torch.manual_seed(0)
    flat = randomize_(FlatModel(FlatConfig(n_embd=4, n_hidden=9, block_size=3)).double()).eval()
    words = names_for(2)
    X, Y = contexts(words, VOCAB, 3)
    with torch.no_grad():
        loss = F.cross_entropy(flat(X), Y, reduction="sum").item()
    assert score_names(flat, words, VOCAB).nll.sum().item() == pytest.approx(loss, rel=1e-12)
    with pytest.raises(ValueError, match="fast"):
        score_names(flat, words, VOCAB, method="fast")


@pytest.mark.parametrize("device", devices())
def test_device_and_float32(device):
    tree, conv = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=3, skip=True), torch.float32, device=device)
    words = names_for(3)
    got, ref = score_names(conv, words, VOCAB), score_names(tree, words, VOCAB)
    assert got.nll.device.type == "cpu"
    assert torch.allclose(got.nll, ref.nll, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "words,match",
    [
        ([], "empty"),
        (["ann", "bob", ""], r"names\[2\]: empty name"),
        (["ann", "Bob"], r"names\[1\].*'B' in 'Bob'.*not in the vocabulary"),
        (["ann", "eve", "jo3"], r"names\[2\].*'3' in 'jo3'"),
        (["a.b"], r"names\[0\].*'a\.b'.*not in the vocabulary"),
        (["mary ann"], r"names\[0\]: character 5 ' ' in 'mary ann' is not in the vocabulary"),
    ],
    ids=["empty-list", "empty-name", "upper-case", "digit", "dot", "space"],
)
def test_bad_names(conv, words, match):
    with pytest.raises(DataError, match=match):
        score_names(conv, words, VOCAB)


def test_bad_arguments(conv):
    tree = TreeModel.from_conv(conv)
    with pytest.raises(TypeError, match="str"):
        score_names(conv, ["ann", 3], VOCAB)
    with pytest.raises(TypeError, match="list"):
        score_names(conv, "ann", VOCAB)
    with pytest.raises(ValueError, match="vocab"):
        score_names(conv, ["ann"], Vocab("abc"))
    with pytest.raises(ValueError, match="method"):
        score_names(conv, ["ann"], VOCAB, method="fastest")
    with pytest.raises(ValueError, match="ConvModel"):
        score_names(tree, ["ann"], VOCAB, method="forward")
    with pytest.raises(TypeError, match="ConvModel"):
        score_names(torch.nn.Linear(2, 2), ["ann"], VOCAB)


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("variant", VARIANTS[::4], ids=variant_id)
def test_fast_path_without_the_pair_table(variant, depth, monkeypatch):
    """A vocabulary too large for a table of token pairs takes the layer-by-layer path: the same scores."""
    import wavenet_conv.inference.folded as folded

    cfg = ModelConfig(n_embd=5, n_hidden=6, n_layers=depth, **variant)
    tree, conv = make_pair(cfg, torch.float64, seed=depth)
    words = names_for(depth)
    with_table = score_names(conv, words, VOCAB)
    monkeypatch.setattr(folded, "PAIR_TABLE_MAX", 0)
    assert folded.fold(conv.eval()).pairs is None
    assert max_diff(score_names(conv, words, VOCAB), score_names(tree, words, VOCAB)) <= 1e-10
    assert max_diff(score_names(conv, words, VOCAB), with_table) <= 1e-10


def test_a_names_nats_are_the_float64_sum_of_its_characters():
    """Long names in float32: the per-name sum is taken in float64 (a float32 sum drifts by ~1e-7)."""
    conv = randomize_(ConvModel(ModelConfig(n_embd=6, n_hidden=16, n_layers=3)), seed=4).eval()
    words = random_words(8, seed=3, min_len=300, max_len=300)
    r = score_names(conv, words, VOCAB, method="fast", per_char=True)
    for i in range(len(words)):
        assert r.nll[i].item() == pytest.approx(math.fsum(r.chars(i).tolist()), rel=1e-12, abs=0)


@pytest.mark.parametrize("method", ["fast", "bucketed", "forward", "contexts"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_a_names_nats_are_the_left_to_right_float64_sum_of_its_characters_bit_for_bit(method, dtype):
    """Bit for bit, for a float64 model too: a name's nats are ``((c1 + c2) + c3) + ...`` of its
    targets' nats in float64 (a reduction's pairwise order changes the last bit of most long names)."""
    conv = randomize_(ConvModel(ModelConfig(n_embd=6, n_hidden=16, n_layers=3)), seed=5).to(dtype).eval()
    model = TreeModel.from_conv(conv) if method == "contexts" else conv
    words = random_words(60, seed=8, min_len=20, max_len=200)
    r = score_names(model, words, VOCAB, method=method, per_char=True)
    for i in range(len(words)):
        total = 0.0
        for v in r.chars(i).tolist():
            total += v
        assert r.nll[i].item() == total, (method, i)
