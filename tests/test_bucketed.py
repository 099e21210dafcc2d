"""The bucketed path (wavenet_conv/inference/bucketed.py): its buckets and block shapes, padding that changes
nothing, every variant equal to the float64 tree at every position, each precision within its
stated bound, the choice of path, the scorer kept between calls; on a GPU, CUDA graphs equal to eager."""

import copy

import numpy as np
import pytest
import torch

from helpers import (BUNDLED_NAMES, SEPARATE_WIDTHS, VARIANTS, VOCAB, cuda_only, devices, make_pair, random_words,
                      variant_id)
from wavenet_conv import DataError, ModelConfig, Vocab, contexts, lecture_split, load_names, score_names, sequences
from wavenet_conv.inference import bucketed, runners, scoring
from wavenet_conv.inference.bucketed import (ERROR_BOUNDS, BucketedScorer, ScoringPath, block_rows, bucketed_path, buckets,
                                   choose_scoring_path, padded_names, scorer_for, width_of)
from wavenet_conv.data import IGNORE
from wavenet_conv.inference.scoring import encode_names
from wavenet_conv.inference.streaming import score_lines

SMALL_BLOCKS = (16, 64)  # block shapes of 16 and 64 positions: several blocks and a remainder per bucket


def names_for(depth: int):
    """Unequal and repeated lengths, a single letter, names past the receptive field 2**depth, and
    names past the widest bucket (64 positions: 63 characters) in two overflow widths."""
    return (random_words(30, seed=depth, max_len=20) + ["a", "zz", "a", "q" * 15, "r" * 16]
            + random_words(3, seed=99, min_len=2**depth + 1, max_len=2**depth + 9) + ["x" * 63, "y" * 64, "w" * 130])


def scored(model, words, **kw):
    """(per-name NLL, per-target NLL) of ``words`` through a ``BucketedScorer``, on the host; with
    ``graphs``, checked to have recorded them (no fallback to eager)."""
    tokens, lengths, ok = encode_names(words, VOCAB)
    assert ok.all()
    scorer = BucketedScorer(model, **kw)
    nll, char_nll = scorer(tokens, lengths, per_char=True)
    assert scorer.graphs == kw.get("graphs", False) and (bool(scorer.shapes) == scorer.graphs)
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


@pytest.mark.parametrize("runner", ["folded", "forward"])
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_bucketed_equals_the_tree_at_every_position(variant, runner):
    """Per-target NLL of every position (float64, random weights and statistics) against the tree on
    the lecture's contexts, with several blocks and remainders per bucket and the overflow widths."""
    tree, conv = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=3, **variant), torch.float64, seed=3)
    words = names_for(3)
    X, Y = contexts(words, VOCAB, tree.block_size)
    with torch.no_grad():
        ref = torch.nn.functional.cross_entropy(tree(X), Y, reduction="none")  # (targets,)
    nll, char_nll = scored(conv, words, runner=runner, block_positions=SMALL_BLOCKS)
    assert char_nll.shape == ref.shape and (char_nll - ref).abs().max().item() <= 1e-10
    per_name = torch.zeros(len(words), dtype=torch.float64).index_add_(
        0, torch.repeat_interleave(torch.arange(len(words)), torch.tensor([len(w) + 1 for w in words])), ref)
    assert (nll - per_name).abs().max().item() <= 1e-10


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("variant", VARIANTS[::5], ids=variant_id)
def test_folded_logits_on_padded_blocks_equal_the_tree(variant, device):
    """The padding is exact: the folded runner's logits of a right-padded block equal the tree's
    logits at every real position (float64)."""
    tree, conv = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=3, **variant), torch.float64, device=device)
    words = random_words(9, seed=1, max_len=15)
    b = sequences(words, VOCAB, pad_to=16).to(device)
    X, _ = contexts(words, VOCAB, tree.block_size)
    runner = runners.FoldedRunner(conv, "float32")
    with torch.no_grad():
        logits = runner.folded.logits(b.x).view(*b.x.shape, -1)[..., : conv.config.vocab_size]  # (B, T, V)
        assert (logits[b.mask] - tree(X.to(device))).abs().max().item() <= 1e-10


@pytest.mark.parametrize("extra", SEPARATE_WIDTHS.values(), ids=SEPARATE_WIDTHS.keys())
def test_bucketed_separate_widths(extra):
    tree, conv = make_pair(ModelConfig(**{"n_embd": 5, "n_hidden": 6, "n_layers": 3, **extra}), torch.float64, seed=1)
    words = names_for(3)
    ref = score_names(tree, words, VOCAB)
    got = score_names(conv, words, VOCAB, method="bucketed")
    assert (got.nll - ref.nll).abs().max().item() <= 1e-10


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_bucketed_depths_and_a_single_name(depth):
    tree, conv = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=depth, activation="gated", residual=True),
                           torch.float64, seed=depth)
    for words in (names_for(depth), ["a"], ["m" * 70]):
        ref = score_names(tree, words, VOCAB, per_char=True)
        for model in (conv, tree):  # a TreeModel is folded the same way
            got = score_names(model, words, VOCAB, method="bucketed", per_char=True)
            assert (got.nll - ref.nll).abs().max().item() <= 1e-10
            assert (got.char_nll - ref.char_nll).abs().max().item() <= 1e-10
            assert torch.equal(got.n_targets, ref.n_targets) and got.mean_loss == pytest.approx(ref.mean_loss, rel=1e-12)


# ------------------------------------------------------------------------------ precision


@pytest.fixture(scope="module")
def dev_split():
    """The bundled dev split, and the lecture's model (random weights and statistics) in float64."""
    words = load_names(BUNDLED_NAMES)
    _, dev, _ = lecture_split(words)
    _, conv = make_pair(ModelConfig(vocab_size=27), torch.float64, seed=5)
    return dev, Vocab.from_words(words), conv


@pytest.mark.parametrize("runner", ["folded", "forward"])
@pytest.mark.parametrize("precision", ["float32", "tf32", "bfloat16"])
def test_each_precision_within_its_bound_on_cpu(dev_split, precision, runner):
    """float32 and, through bfloat16 matmuls on this CPU (the forward runner by autocast), bfloat16:
    a name's nats and the split's mean within ``ERROR_BOUNDS`` of float64. tf32 is float32 on a CPU."""
    dev, vocab, conv64 = dev_split
    ref = score_names(conv64, dev, vocab)
    conv = copy.deepcopy(conv64).float()
    tokens, lengths, _ = encode_names(dev, vocab)
    nll, _ = BucketedScorer(conv, runner, precision)(tokens, lengths)
    per_name, mean = ERROR_BOUNDS[precision]
    assert ((nll - ref.nll).abs() / ref.nll).max().item() <= per_name
    assert abs(nll.sum().item() / ref.n_targets.sum().item() - ref.mean_loss) <= mean * ref.mean_loss
    if precision == "tf32":
        assert torch.equal(nll, BucketedScorer(conv, runner, "float32")(tokens, lengths)[0])
    if precision == "bfloat16":  # it does round: the bound is not vacuous
        assert (nll - ref.nll).abs().max().item() > 1e-6


def test_precision_and_runner_arguments():
    _, conv = make_pair(ModelConfig(n_embd=4, n_hidden=5, n_layers=2))
    with pytest.raises(ValueError, match="precision"):
        BucketedScorer(conv, precision="float16")
    with pytest.raises(ValueError, match="runner"):
        BucketedScorer(conv, runner="tree")
    with pytest.raises(ValueError, match="CUDA"):
        BucketedScorer(conv, graphs=True) if not torch.cuda.is_available() else BucketedScorer(conv, graphs=True, compile=True)
    with pytest.raises(ValueError, match="eval"):
        BucketedScorer(conv.train())
    with pytest.raises(ValueError, match="ConvModel"):
        BucketedScorer(make_pair(ModelConfig(n_embd=4, n_hidden=5, n_layers=2))[0], runner="forward")


def test_bfloat16_leaves_the_model_as_it_was():
    _, conv = make_pair(ModelConfig(n_embd=4, n_hidden=5, n_layers=2, residual=True, skip=True), torch.float32)
    state = {k: v.clone() for k, v in conv.state_dict().items()}
    BucketedScorer(conv, precision="bfloat16")
    assert all(v.dtype == torch.float32 and torch.equal(v, state[k]) for k, v in conv.state_dict().items())


# ------------------------------------------------------------------------------ the choice, the wiring


def test_choose_scoring_path():
    assert choose_scoring_path("cpu").method == "fast"
    gpu = choose_scoring_path(torch.device("cuda"))  # a device name needs no GPU
    assert (gpu.method, gpu.runner, gpu.graphs, gpu.compile, gpu.precision) == ("bucketed", "folded", True, False, "float32")
    for precision in ("tf32", "bfloat16"):
        path = choose_scoring_path("cpu", precision)
        assert (path.method, path.graphs, path.precision) == ("bucketed", False, precision)
    with pytest.raises(ValueError, match="precision"):
        choose_scoring_path("cpu", "float16")


def test_auto_asks_choose_scoring_path(monkeypatch):
    """score_names and score_lines take a ConvModel's method from choose_scoring_path: told "bucketed",
    they score through the bucketed scorer, with the same scores."""
    tree, conv = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=3), torch.float64)
    words = names_for(3)
    ref = score_names(conv, words, VOCAB)
    calls = []
    real = bucketed.BucketedScorer.__call__
    monkeypatch.setattr(bucketed.BucketedScorer, "__call__", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    assert not calls and score_names(conv, words, VOCAB).nll.equal(ref.nll) and not calls  # cpu: fast
    monkeypatch.setattr(scoring, "choose_scoring_path", lambda device, precision="float32": bucketed_path(device))
    got = score_names(conv, words, VOCAB)
    assert calls and (got.nll - ref.nll).abs().max().item() <= 1e-10
    parts = list(score_lines(conv, ["ann", "", "b0b", "eve"] * 3, VOCAB, chunk=5, skip_invalid=True))
    fast = list(score_lines(conv, ["ann", "", "b0b", "eve"] * 3, VOCAB, chunk=5, skip_invalid=True, method="fast"))
    assert [p.lines for p in parts] == [p.lines for p in fast] and [p.invalid for p in parts] == [p.invalid for p in fast]
    assert all((p.scores.nll - q.scores.nll).abs().max() <= 1e-10 for p, q in zip(parts, fast))
    assert score_names(tree, words, VOCAB).nll.equal(score_names(tree, words, VOCAB, method="contexts").nll)


@pytest.mark.parametrize("words", [[], ["ann", ""], ["ann", "Bob"], ["a.b"]], ids=["empty-list", "empty-name", "upper", "dot"])
def test_bad_input_raises_as_the_fast_path_does(words):
    _, conv = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=2), torch.float64)
    with pytest.raises(DataError) as fast:
        score_names(conv, words, VOCAB, method="fast")
    with pytest.raises(DataError) as got:
        score_names(conv, words, VOCAB, method="bucketed")
    assert str(got.value) == str(fast.value)


def test_no_names_give_empty_scores():
    _, conv = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=2), torch.float64)
    nll, char_nll = BucketedScorer(conv)(torch.zeros(0, dtype=torch.long), np.zeros(0, dtype=np.int64), per_char=True)
    assert nll.shape == (0,) and char_nll.shape == (0,)
    parts = list(score_lines(conv, ["", "B"], VOCAB, skip_invalid=True, method="bucketed"))  # a chunk with no name
    assert len(parts) == 1 and parts[0].scores.nll.shape == (0,) and parts[0].empty == 1


def test_the_scorer_is_kept_until_the_model_changes():
    _, conv = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=3), torch.float64)
    words = names_for(3)
    path = bucketed_path("cpu")
    first = scorer_for(conv, path)
    assert scorer_for(conv, path) is first
    assert scorer_for(conv, ScoringPath("bucketed", precision="bfloat16")) is not first  # one per path
    with torch.no_grad():
        conv.blocks[1].mix.weight.data[0, 0] += 0.5  # through .data: no version counter moves
    assert scorer_for(conv, path) is not first
    assert (score_names(conv, words, VOCAB, method="bucketed").nll
            - score_names(conv, words, VOCAB, method="fast").nll).abs().max().item() <= 1e-10
    with torch.no_grad():
        conv.blocks[0].norm.running_var.mul_(2)  # a buffer
    assert (score_names(conv, words, VOCAB, method="bucketed").nll
            - score_names(conv, words, VOCAB, method="fast").nll).abs().max().item() <= 1e-10


def test_a_graph_that_cannot_be_recorded_falls_back_to_eager_with_a_warning(monkeypatch):
    _, conv = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=3), torch.float64)
    words = names_for(3)
    scorer = BucketedScorer(conv)
    scorer.graphs = True  # as on a GPU, where capturing then fails

    def refuse(*args):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(bucketed, "GraphedShape", refuse)
    tokens, lengths, _ = encode_names(words, VOCAB)
    with pytest.warns(UserWarning, match="scoring eagerly"):
        nll, _ = scorer(tokens, lengths)
    assert not scorer.graphs and not scorer.shapes
    assert (nll - score_names(conv, words, VOCAB, method="fast").nll).abs().max().item() <= 1e-10


def test_compiled_runner_equals_eager():
    """torch.compile of the folded runner's block (fullgraph, static shapes; on a GPU with CUDA
    graphs). One block shape, one compilation: names of up to 7 characters, blocks of 32 rows."""
    _, conv = make_pair(ModelConfig(n_embd=8, n_hidden=16, n_layers=3, activation="gated", skip=True), torch.float32)
    words = random_words(40, seed=2, max_len=7)
    eager = scored(conv, words, block_positions=(256,))
    compiled = scored(conv, words, compile=True, block_positions=(256,))
    assert (eager[0] - compiled[0]).abs().max().item() <= 1e-5
    assert (eager[1] - compiled[1]).abs().max().item() <= 1e-5


# ------------------------------------------------------------------------------ on a GPU


@cuda_only
@pytest.mark.parametrize("runner", ["folded", "forward"])
@pytest.mark.parametrize("variant", VARIANTS[::4], ids=variant_id)
def test_cuda_graphs_equal_the_float64_tree(variant, runner):
    """CUDA graphs of float64 blocks: every target's NLL against the tree on the CPU."""
    tree, conv = make_pair(ModelConfig(n_embd=5, n_hidden=6, n_layers=3, **variant), torch.float64, seed=3, device="cuda")
    words = names_for(3)
    ref = score_names(tree.cpu(), words, VOCAB, per_char=True)
    nll, char_nll = scored(conv, words, runner=runner, graphs=True, block_positions=SMALL_BLOCKS)
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
        scorer = BucketedScorer(conv, precision=precision, graphs=graphs)
        nll = scorer(tokens, lengths)[0].cpu()
        assert scorer.graphs == graphs and bool(scorer.shapes) == graphs  # recorded, not fallen back
        per_name, mean = ERROR_BOUNDS[precision]
        assert ((nll - ref.nll).abs() / ref.nll).max().item() <= per_name
        assert abs(nll.sum().item() / ref.n_targets.sum().item() - ref.mean_loss) <= mean * ref.mean_loss


@cuda_only
def test_score_names_on_cuda_replays_graphs_and_does_not_sync_inside():
    _, conv = make_pair(ModelConfig(), torch.float32, device="cuda")
    words = load_names(BUNDLED_NAMES)[:5000]
    vocab = Vocab.from_words(words)
    first = score_names(conv, words, vocab)
    scorer = scorer_for(conv, choose_scoring_path("cuda"))
    assert scorer.graphs and scorer.shapes  # the shapes were recorded
    assert torch.equal(score_names(conv, words, vocab).nll, first.nll)  # replayed: the same numbers
    tokens, lengths, _ = encode_names(words, vocab)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        scorer(tokens, lengths)  # pinned, asynchronous transfers, then replays: no wait for the device
    finally:
        torch.cuda.set_sync_debug_mode("default")
    cpu = score_names(conv.cpu(), words, vocab, method="fast")
    assert (first.nll - cpu.nll).abs().max().item() <= 1e-4


@cuda_only
def test_compiled_with_cuda_graphs_equals_eager_on_cuda():
    """torch.compile in mode "reduce-overhead" (inductor's kernels in CUDA graphs), one block shape."""
    _, conv = make_pair(ModelConfig(n_embd=8, n_hidden=16, n_layers=3, activation="gated", skip=True), torch.float32,
                        device="cuda")
    words = random_words(40, seed=2, max_len=7)
    eager = scored(conv, words, block_positions=(256,))
    tokens, lengths, _ = encode_names(words, VOCAB)
    scorer = BucketedScorer(conv, compile=True, block_positions=(256,))
    for _ in range(3):  # compiled and recorded, then replayed
        nll, char_nll = scorer(tokens, lengths, per_char=True)
        assert (eager[0] - nll.cpu()).abs().max().item() <= 1e-5
        assert (eager[1] - char_nll.cpu()).abs().max().item() <= 1e-5



@pytest.mark.parametrize("n,width", [(1, 8), (8, 8), (9, 16), (64, 64), (65, 128), (128, 128), (129, 256)])
def test_width_of_is_the_narrowest_that_holds_the_name(n, width):
    assert bucketed.width_of(n) == width


def test_block_losses_take_the_softmax_in_float32_at_least():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 27, generator=g).bfloat16()
    y = torch.randint(0, 27, (2, 5), generator=g)
    rows, per = runners.block_losses(logits, y)
    rows32, per32 = runners.block_losses(logits.float(), y)
    assert per.dtype == torch.float32 and torch.equal(per, per32) and torch.equal(rows, rows32)


@pytest.mark.parametrize("precision", ["float32", "tf32", "bfloat16"])
def test_matmul_precision_puts_the_tf32_flags_back(precision):
    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = cuda.allow_tf32, cudnn.allow_tf32
    try:
        for before in [(True, True), (False, False), (False, True)]:
            cuda.allow_tf32, cudnn.allow_tf32 = before
            with runners.matmul_precision(precision):
                assert cuda.allow_tf32 == cudnn.allow_tf32 == (precision == "tf32")
            assert (cuda.allow_tf32, cudnn.allow_tf32) == before
    finally:
        cuda.allow_tf32, cudnn.allow_tf32 = saved


@cuda_only
@pytest.mark.parametrize("precision", ["float32", "tf32", "bfloat16"])
def test_on_cuda_a_name_has_one_score_per_block_shape_and_stays_within_its_bound_elsewhere(precision):
    """What batch invariance holds on a GPU: a list scored in another order fills the same block shapes,
    and every name keeps its bits wherever it lands in them; in another list (other block shapes) a
    name's score may move, within the precision's bound against float64."""
    _, conv = make_pair(ModelConfig(), torch.float32, device="cuda")
    words = sorted(set(load_names(BUNDLED_NAMES)[:3000]))
    vocab = Vocab.from_words(load_names(BUNDLED_NAMES))
    tokens, lengths, _ = encode_names(words, vocab)
    scorer = BucketedScorer(conv, precision=precision, graphs=True)
    whole = scorer(tokens, lengths)[0].cpu()
    order = torch.randperm(len(words), generator=torch.Generator().manual_seed(0))
    shuffled = [words[i] for i in order]
    t2, l2, _ = encode_names(shuffled, vocab)
    assert torch.equal(scorer(t2, l2)[0].cpu(), whole[order])  # the same shapes: the same bits, any row
    part = order[:77]
    t3, l3, _ = encode_names([words[i] for i in part], vocab)
    ref = score_names(copy.deepcopy(conv).double().cpu(), [words[i] for i in part], vocab).nll
    per_name, _ = ERROR_BOUNDS[precision]
    assert ((scorer(t3, l3)[0].cpu() - ref).abs() / ref).max().item() <= per_name
