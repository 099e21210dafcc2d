"""The bucketed path (wavenet_conv/bucketed.py): its buckets and block shapes, padding that changes
nothing, every variant equal to the float64 tree at every position, each precision within its
stated bound, the choice of path, the scorer kept between calls; on a GPU, CUDA graphs equal to eager."""

import copy

import numpy as np
import pytest
import torch

from conftest import (BUNDLED_NAMES, SEPARATE_WIDTHS, VARIANTS, VOCAB, cuda_only, devices, make_pair, random_words,
                      variant_id)
from wavenet_conv import DataError, ModelConfig, Vocab, contexts, lecture_split, load_names, score_names, sequences
from wavenet_conv import bucketed, scoring
from wavenet_conv.bucketed import (ERROR_BOUNDS, BucketedScorer, ScoringPath, block_rows, bucketed_path, buckets,
                                   choose_scoring_path, padded_names, scorer_for, width_of)
from wavenet_conv.data import IGNORE
from wavenet_conv.scoring import encode_names, score_lines

SMALL_BLOCKS = (16, 64)  # block shapes of 16 and 64 positions: several blocks and a remainder per bucket


def names_for(depth: int):
    """Unequal and repeated lengths, a single letter, names past the receptive field 2**depth, and
    names past the widest bucket (64 positions: 63 characters) in two overflow widths."""
    return (random_words(30, seed=depth, max_len=20) + ["a", "zz", "a", "q" * 15, "r" * 16]
            + random_words(3, seed=99, min_len=2**depth + 1, max_len=2**depth + 9) + ["x" * 63, "y" * 64, "w" * 130])


def scored(model, words, **kw):
    """(per-name NLL, per-target NLL) of ``words`` through a ``BucketedScorer``, on the host."""
    tokens, lengths, ok = encode_names(words, VOCAB)
    assert ok.all()
    nll, char_nll = BucketedScorer(model, **kw)(tokens, lengths, per_char=True)
    return nll.cpu(), char_nll.cpu()


# ------------------------------------------------------------------------------ buckets and blocks


def test_widths_and_buckets_keep_input_order():
    assert [width_of(n) for n in (1, 8, 9, 16, 17, 64, 65, 129)] == [8, 8, 16, 16, 32, 64, 128, 256]
    lengths = np.array([3, 7, 8, 15, 63, 64, 200, 1, 9])  # characters; each takes lengths + 1 positions
    got = [(T, idx.tolist()) for T, idx in buckets(lengths)]
    assert got == [(8, [0, 1, 7]), (16, [2, 3, 8]), (64, [4]), (128, [5]), (256, [6])]


def test_block_rows_full_blocks_then_the_smallest_that_holds_the_rest():
    sizes = (1 << 11, 1 << 13, 1 << 15, 1 << 17)  # positions; at T = 8: 256, 1024, 4096, 16384 rows
    assert block_rows(1, 8, sizes) == [256]
    assert block_rows(256, 8, sizes) == [256]
    assert block_rows(257, 8, sizes) == [1024]
    assert block_rows(2 * 16384 + 5000, 8, sizes) == [16384, 16384, 16384]
    assert block_rows(2 * 16384 + 4000, 8, sizes) == [16384, 16384, 4096]
    assert block_rows(3, 1 << 20, sizes) == [1, 1, 1]  # a width past every block: a row a block
    for n in (1, 255, 1000, 40000):
        assert sum(block_rows(n, 16, sizes)) >= n


def test_padded_names_layout():
    words = ["ab", "c", "defgh"]  # T = 8 holds names of up to 7 characters
    tokens, lengths, _ = encode_names(words, VOCAB)
    starts = torch.cumsum(lengths, 0) - lengths
    x, y = padded_names(tokens, starts, lengths, T=8, rows=5)
    ref = sequences(words, VOCAB, pad_to=8)  # the library's own right-padded batch
    assert x.shape == y.shape == (5, 8)
    assert torch.equal(y[:3], ref.y) and (y[3:] == IGNORE).all()
    assert torch.equal(x[:3][ref.mask], ref.x[ref.mask]) and (x[3:] == 0).all()
    assert (x[:, 0] == 0).all()


# ------------------------------------------------------------------------------ exactness, float64


@pytest.mark.parametrize("engine", ["folded", "forward"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_bucketed_equals_the_tree_at_every_position(variant, engine):
    """Per-target NLL of every position (float64, random weights and statistics) against the tree on
    the lecture's contexts, with several blocks and remainders per bucket and the overflow widths."""
    tree, conv = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=3, **variant), torch.float64, seed=3)
    words = names_for(3)
    X, Y = contexts(words, VOCAB, tree.block_size)
    with torch.no_grad():
        ref = torch.nn.functional.cross_entropy(tree(X), Y, reduction="none")  # (targets,)
    nll, char_nll = scored(conv, words, engine=engine, block_positions=SMALL_BLOCKS)
    assert char_nll.shape == ref.shape and (char_nll - ref).abs().max().item() <= 1e-10
    per_name = torch.zeros(len(words), dtype=torch.float64).index_add_(
        0, torch.repeat_interleave(torch.arange(len(words)), torch.tensor([len(w) + 1 for w in words])), ref)
    assert (nll - per_name).abs().max().item() <= 1e-10


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("variant", VARIANTS[::5], ids=variant_id)
def test_folded_logits_on_padded_blocks_equal_the_tree(variant, device):
    """The padding is exact: the folded engine's logits of a right-padded block equal the tree's
    logits at every real position (float64)."""
    tree, conv = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=3, **variant), torch.float64, device=device)
    words = random_words(9, seed=1, max_len=15)
    b = sequences(words, VOCAB, pad_to=16).to(device)
    X, _ = contexts(words, VOCAB, tree.block_size)
    engine = bucketed.FoldedEngine(conv, "float32")
    with torch.no_grad():
        logits = engine.folded.logits(b.x).view(*b.x.shape, -1)[..., : conv.config.vocab_size]  # (B, T, V)
        assert (logits[b.mask] - tree(X.to(device))).abs().max().item() <= 1e-10


# ------------------------------------------------------------------------------ precision


@pytest.fixture(scope="module")
def dev_split():
    """The bundled dev split, and the lecture's model (random weights and statistics) in float64."""
    words = load_names(BUNDLED_NAMES)
    _, dev, _ = lecture_split(words)
    _, conv = make_pair(ModelConfig(vocab_size=27), torch.float64, seed=5)
    return dev, Vocab.from_words(words), conv


@pytest.mark.parametrize("engine", ["folded", "forward"])
@pytest.mark.parametrize("precision", ["float32", "tf32", "bfloat16"])
def test_each_precision_within_its_bound_on_cpu(dev_split, precision, engine):
    """float32 and, through bfloat16 matmuls on this CPU (the forward engine by autocast), bfloat16:
    a name's nats and the split's mean within ``ERROR_BOUNDS`` of float64. tf32 is float32 on a CPU."""
    dev, vocab, conv64 = dev_split
    ref = score_names(conv64, dev, vocab)
    conv = copy.deepcopy(conv64).float()
    tokens, lengths, _ = encode_names(dev, vocab)
    nll, _ = BucketedScorer(conv, engine, precision)(tokens, lengths)
    per_name, mean = ERROR_BOUNDS[precision]
    assert ((nll - ref.nll).abs() / ref.nll).max().item() <= per_name
    assert abs(nll.sum().item() / ref.n_targets.sum().item() - ref.mean_loss) <= mean * ref.mean_loss
    if precision == "tf32":
        assert torch.equal(nll, BucketedScorer(conv, engine, "float32")(tokens, lengths)[0])
    if precision == "bfloat16":  # it does round: the bound is not vacuous
        assert (nll - ref.nll).abs().max().item() > 1e-6


def test_precision_and_engine_arguments():
    _, conv = make_pair(ModelConfig(n_embd=4, n_hidden=5, n_layers=2))
    with pytest.raises(ValueError, match="precision"):
        BucketedScorer(conv, precision="float16")
    with pytest.raises(ValueError, match="engine"):
        BucketedScorer(conv, engine="tree")
    with pytest.raises(ValueError, match="CUDA"):
        BucketedScorer(conv, graphs=True) if not torch.cuda.is_available() else BucketedScorer(conv, graphs=True, compile=True)
    with pytest.raises(ValueError, match="eval"):
        BucketedScorer(conv.train())
    with pytest.raises(ValueError, match="ConvModel"):
        BucketedScorer(make_pair(ModelConfig(n_embd=4, n_hidden=5, n_layers=2))[0], engine="forward")


def test_bfloat16_leaves_the_model_as_it_was():
    _, conv = make_pair(ModelConfig(n_embd=4, n_hidden=5, n_layers=2, residual=True, skip=True), torch.float32)
    state = {k: v.clone() for k, v in conv.state_dict().items()}
    BucketedScorer(conv, precision="bfloat16")
    assert all(v.dtype == torch.float32 and torch.equal(v, state[k]) for k, v in conv.state_dict().items())


# ------------------------------------------------------------------------------ the choice, the wiring


def test_choose_scoring_path():
    assert choose_scoring_path("cpu").method == "fast"
    gpu = choose_scoring_path(torch.device("cuda"))  # a device name needs no GPU
    assert (gpu.method, gpu.engine, gpu.graphs, gpu.compile, gpu.precision) == ("bucketed", "folded", True, False, "float32")
    for precision in ("tf32", "bfloat16"):
        path = choose_scoring_path("cpu", precision)
        assert (path.method, path.graphs, path.precision) == ("bucketed", False, precision)
    with pytest.raises(ValueError, match="precision"):
        choose_scoring_path("cpu", "float16")


def test_compiled_engine_equals_eager():
    """torch.compile of the folded engine's block (fullgraph, static shapes; on a GPU with CUDA
    graphs). One block shape, one compilation: names of up to 7 characters, blocks of 32 rows."""
    _, conv = make_pair(ModelConfig(n_embd=8, n_hidden=16, n_layers=3, activation="gated", skip=True), torch.float32)
    words = random_words(40, seed=2, max_len=7)
    eager = scored(conv, words, block_positions=(256,))
    compiled = scored(conv, words, compile=True, block_positions=(256,))
    assert (eager[0] - compiled[0]).abs().max().item() <= 1e-5
    assert (eager[1] - compiled[1]).abs().max().item() <= 1e-5


# ------------------------------------------------------------------------------ on a GPU


@cuda_only
@pytest.mark.parametrize("engine", ["folded", "forward"])
@pytest.mark.parametrize("variant", VARIANTS[::4], ids=variant_id)
def test_cuda_graphs_equal_the_float64_tree(variant, engine):
    """CUDA graphs of float64 blocks: every target's NLL against the tree on the CPU."""
    tree, conv = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=3, **variant), torch.float64, seed=3, device="cuda")
    words = names_for(3)
    ref = score_names(tree.cpu(), words, VOCAB, per_char=True)
    nll, char_nll = scored(conv, words, engine=engine, graphs=True, block_positions=SMALL_BLOCKS)
    assert (char_nll - ref.char_nll).abs().max().item() <= 1e-10
    assert (nll - ref.nll).abs().max().item() <= 1e-10


@cuda_only
@pytest.mark.parametrize("precision", ["float32", "tf32", "bfloat16"])
def test_cuda_precision_within_its_bound(dev_split, precision):
    dev, vocab, conv64 = dev_split
    ref = score_names(conv64, dev, vocab)
    conv = copy.deepcopy(conv64).float().cuda()
    tokens, lengths, _ = encode_names(dev, vocab)
    for graphs in (False, True):
        nll = BucketedScorer(conv, precision=precision, graphs=graphs)(tokens, lengths)[0].cpu()
        per_name, mean = ERROR_BOUNDS[precision]
        assert ((nll - ref.nll).abs() / ref.nll).max().item() <= per_name
        assert abs(nll.sum().item() / ref.n_targets.sum().item() - ref.mean_loss) <= mean * ref.mean_loss
