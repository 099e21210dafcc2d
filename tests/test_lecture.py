"""from_lecture: a model trained with the lecture's own layers comes over with the same logits."""

import pytest
import torch

import lecture_layers as LL
from helpers import VOCAB, random_words
from wavenet_conv import ConvModel, FlatModel, TreeModel, contexts, from_lecture, sequences


@pytest.fixture(scope="module")
def words():
    return random_words(300, seed=1, min_len=2, max_len=12)


@pytest.mark.parametrize(
    "n_embd,n_hidden,n_layers,hidden_bias",
    [(24, 128, 3, False), (10, 68, 3, False), (6, 9, 1, False), (6, 9, 4, False), (6, 9, 2, True),
     (6, 12, 3, False), (5, 27, 2, True)],
    ids=["lecture", "lecture-22k", "depth-1", "depth-4", "hidden-bias",
         "square-first-linear", "square-output-linear"],  # 2*n_embd == n_hidden; n_hidden == vocab size
)
def test_imported_model_gives_the_same_logits(words, n_embd, n_hidden, n_layers, hidden_bias):
    X, Y = contexts(words, VOCAB, 2**n_layers)
    lec = LL.train_steps(LL.lecture_model(27, n_embd, n_hidden, n_layers, hidden_bias), X, Y)
    g = torch.Generator().manual_seed(n_hidden)
    for layer in lec.layers:  # what training leaves alone: a hidden Linear's bias (BatchNorm zeroes its
        if isinstance(layer, LL.Linear) and layer.bias is not None:  # gradient), and BatchNorm's eps
            layer.bias = torch.randn(layer.bias.shape, generator=g)
        if isinstance(layer, LL.BatchNorm1d):
            layer.eps = 0.5
    first_bn = lec.layers[3]  # 3-D input: its buffers carry leading unit axes now
    assert first_bn.running_mean.shape == ((1, 1, n_hidden) if n_layers > 1 else (1, n_hidden))
    tree = from_lecture(lec)
    assert isinstance(tree, TreeModel) and not tree.training
    assert tree.config.n_layers == n_layers and tree.num_params() == sum(p.numel() for p in lec.parameters()) - (
        n_layers * n_hidden if hidden_bias else 0
    )
    with torch.no_grad():
        ref = lec(X)
        assert (tree(X) - ref).abs().max() <= 1e-5
        conv = ConvModel.from_tree(tree)  # and on to the conv form, every position
        batch = sequences(words, VOCAB)
        assert (conv(batch.x)[batch.mask] - ref).abs().max() <= 1e-5


def test_list_of_layers_and_float64(words):
    X, Y = contexts(words, VOCAB, 8)
    lec = LL.train_steps(LL.lecture_model(27, 5, 7, 3), X, Y)
    for layer in lec.layers:
        for name in ("weight", "bias", "gamma", "beta", "running_mean", "running_var"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                setattr(layer, name, t.detach().double())
    tree = from_lecture(list(lec.layers))
    assert next(tree.parameters()).dtype == torch.float64
    with torch.no_grad():
        assert (tree(X) - lec(X)).abs().max() <= 1e-12


@pytest.mark.parametrize("n_hidden,params", [(200, 12097), (30, 2067)], ids=["lecture", "square"])
def test_flat_baseline(words, n_hidden, params):
    X, Y = contexts(words, VOCAB, 3)
    lec = LL.train_steps(LL.flat_model(n_hidden=n_hidden), X, Y)  # 30: a square (30, 30) first Linear
    flat = from_lecture(lec)
    assert isinstance(flat, FlatModel) and flat.num_params() == params
    with torch.no_grad():
        assert (flat(X) - lec(X)).abs().max() <= 1e-5


class Dropout:  # a layer the tree model does not know
    def __call__(self, x):
        return x


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda L: L.insert(3, Dropout()), r"layer 3 \(Dropout\).*unknown layer"),
        (lambda L: setattr(L[2], "weight", torch.randn(47, 24)), r"layer 2 \(Linear\).*\(47, 24\)"),
        (lambda L: setattr(L[3], "gamma", torch.ones(5)), r"layer 3 \(BatchNorm1d\).*gamma"),
        (lambda L: L.pop(4), r"layer 4 \(FlattenConsecutive\).*expected Tanh"),
        (lambda L: L.pop(), r"output Linear needs a bias|ends after|expected Linear"),
        (lambda L: setattr(L[-1], "weight", torch.randn(24, 27)), r"Linear.*\(24, 27\)"),
        (lambda L: setattr(L[-1], "weight", torch.randn(24, 20)), r"Linear.*\(24, 20\)"),
        (lambda L: L.clear(), r"no layers"),
    ],
    ids=["unknown-layer", "linear-shape", "bn-shape", "missing-tanh", "missing-output", "output-fan-in", "output-classes", "empty"],
)
def test_errors_name_the_layer(mutate, message):
    lec = LL.lecture_model(27, 24, 16, 3)
    layers = list(lec.layers)
    mutate(layers)
    with pytest.raises(ValueError, match=message):
        from_lecture(layers)


@pytest.mark.parametrize("n_layers", [1, 3])
def test_training_mode_matches_the_lecture(words, n_layers):
    """Batch statistics over every leading axis, unbiased variance, EMA buffers: step for step the
    lecture's training loop and TreeModel's give the same losses, weights and running statistics."""
    X, Y = contexts(words, VOCAB, 2**n_layers)
    lec = LL.lecture_model(27, 6, 9, n_layers)
    for layer in lec.layers:  # float64 so that the comparison is tight
        for name in ("weight", "bias", "gamma", "beta", "running_mean", "running_var"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                setattr(layer, name, t.detach().double().requires_grad_(name not in ("running_mean", "running_var")))
    tree = from_lecture(lec).train()
    opt = torch.optim.SGD(tree.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        ix = torch.randint(0, X.shape[0], (32,), generator=g)
        ref = torch.nn.functional.cross_entropy(lec(X[ix]), Y[ix])
        for p in lec.parameters():
            p.grad = None
        ref.backward()
        with torch.no_grad():
            for p in lec.parameters():
                p -= 0.1 * p.grad
        loss = torch.nn.functional.cross_entropy(tree(X[ix]), Y[ix])
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert abs(loss.item() - ref.item()) <= 1e-12
    bn_lec, bn_tree = lec.layers[-3], tree.blocks[-1].norm
    assert (bn_lec.running_mean.reshape(-1) - bn_tree.running_mean).abs().max() <= 1e-12
    assert (bn_lec.running_var.reshape(-1) - bn_tree.running_var).abs().max() <= 1e-12
    assert (lec.layers[-1].weight.T - tree.lm_head.weight).abs().max() <= 1e-12
