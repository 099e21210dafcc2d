"""ConvModel.forward is one graph: torch.compile(fullgraph=True), torch.export, the meta device, ONNX,
and no host syncs on a GPU. Few and small: compiling costs CI time."""

import copy
import importlib.util
import logging
import re

import pytest
import torch

from helpers import VOCAB, cuda_only, make_pair, random_words
from wavenet_conv import ConvModel, ModelConfig, contexts, sequences

# every kind of op the forward has: dilated convs, BatchNorm, the gate, 1x1 residual and skip convs
WAVENET = ModelConfig(n_embd=5, n_hidden=6, n_layers=3, activation="gated", residual=True, skip=True)
SHAPES = [(3, 5), (4, 11), (2, 17)]  # (B, T), T past the receptive field 8


def batch(B: int, T: int, seed: int = 0):
    """(B, T) names of unequal lengths, right-padded to T (plus one row exactly T - 1 long)."""
    words = random_words(B - 1, seed=seed, max_len=T - 1) + random_words(1, seed=seed, min_len=T - 1, max_len=T - 1)
    b = sequences(words, VOCAB, pad_to=T)
    return b.x, b.mask


def max_grad_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """Largest |grad difference| over all parameters, relative to the largest gradient (some are
    zero in exact arithmetic, e.g. a bias that the next BatchNorm subtracts out)."""
    scale = max(p.grad.abs().max().item() for p in b.parameters())
    assert scale > 0, "zero gradients: the check would be vacuous"
    return max((p.grad - q.grad).abs().max().item() for p, q in zip(a.parameters(), b.parameters())) / scale


@pytest.mark.slow
def test_compiled_forward_eval_equals_eager():
    _, conv = make_pair(WAVENET, torch.float32)
    compiled = torch.compile(conv, fullgraph=True, dynamic=True)
    for B, T in SHAPES:
        x, _ = batch(B, T)
        with torch.no_grad():
            assert (compiled(x) - conv(x)).abs().max().item() <= 1e-5


@pytest.mark.slow
def test_compiled_training_step_equals_eager():
    """Forward and backward in training mode (BatchNorm statistics over the mask), several shapes."""
    _, eager = make_pair(WAVENET, torch.float32)
    eager.train()
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, fullgraph=True, dynamic=True)
    for B, T in SHAPES:
        x, mask = batch(B, T, seed=T)
        out_c, out_e = compiled(x, mask), eager(x, mask)  # (B, T, V)
        assert (out_c - out_e).abs().max().item() <= 1e-5
        (out_c[mask].logsumexp(-1).sum()).backward()
        (out_e[mask].logsumexp(-1).sum()).backward()
        assert max_grad_diff(twin, eager) <= 1e-5
        twin.zero_grad()
        eager.zero_grad()
    for b1, b2 in zip(twin.buffers(), eager.buffers()):  # the running statistics moved the same way
        assert (b1 - b2).abs().max().item() <= 1e-5


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_forward_runs_on_the_meta_device(training):
    """No value of the input is ever read on the host: the meta device has none."""
    model = ConvModel(WAVENET).to("meta").train(training)
    x = torch.zeros(4, 9, dtype=torch.long, device="meta")
    mask = torch.ones(4, 9, dtype=torch.bool, device="meta")
    out = model(x, mask)
    assert out.device.type == "meta" and out.shape == (4, 9, WAVENET.vocab_size)


def test_export_with_dynamic_batch_and_length():
    _, conv = make_pair(WAVENET, torch.float32)
    x, _ = batch(3, 5)
    dims = {0: torch.export.Dim("B"), 1: torch.export.Dim("T")}
    program = torch.export.export(conv, (x,), dynamic_shapes={"idx": dims})
    for B, T in SHAPES:
        x, _ = batch(B, T)
        with torch.no_grad():
            assert (program.module()(x) - conv(x)).abs().max().item() <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("config", [ModelConfig(n_layers=3), ModelConfig(
    n_embd=8, n_hidden=12, n_layers=4, activation="glu", norm="layer", residual=True, skip=True)], ids=["lecture", "wavenet"])
def test_onnx_export_runs_in_onnxruntime(tmp_path, config):
    pytest.importorskip("onnxruntime")
    from wavenet_conv import export_onnx
    import onnxruntime

    _, conv = make_pair(config, torch.float32)
    level = logging.getLogger("torch.onnx").level
    path = export_onnx(conv, tmp_path / "model.onnx")
    assert logging.getLogger("torch.onnx").level == level  # quieted during the export only
    session = onnxruntime.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == ["tokens"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    for words in (["a"], ["abcdefghijklmnopqrstuvw", "ab", "xyz", "q"]):  # unequal, past the receptive field
        x = sequences(words, VOCAB).x
        (logits,) = session.run(None, {"tokens": x.numpy()})
        assert logits.shape == (*x.shape, config.vocab_size) and str(logits.dtype) == "float32"
        with torch.no_grad():
            assert (torch.from_numpy(logits) - conv(x)).abs().max().item() <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("form", ["tree", "conv"])
def test_onnx_export_keeps_batchnorm_eps(tmp_path, form):
    """BatchNorm's eps is not in a state dict: the export carries it (``from_model``). A model whose
    BatchNorm has eps=1e-3 and small random running variances (so that eps moves the logits by far
    more than float32 rounding) gives the same logits from onnxruntime at every position."""
    pytest.importorskip("onnxruntime")
    from wavenet_conv import export_onnx
    from wavenet_conv.models.blocks import BatchNorm
    import onnxruntime

    tree, conv = make_pair(WAVENET, torch.float32, seed=4)
    model = tree if form == "tree" else conv
    g = torch.Generator().manual_seed(1)
    norms = [m for m in model.modules() if isinstance(m, BatchNorm)]
    assert norms
    with torch.no_grad():
        for norm in norms:
            norm.eps, norm.momentum = 1e-3, 0.3
            norm.running_var.copy_(0.002 + 0.02 * torch.rand(norm.num_features, generator=g))
    path = export_onnx(model, tmp_path / "model.onnx")
    words = ["abcdefghijklm", "ab", "xyz", "q"]  # unequal, past the receptive field
    b = sequences(words, VOCAB)
    (logits,) = onnxruntime.InferenceSession(str(path)).run(None, {"tokens": b.x.numpy()})  # (B, T, V)
    X = contexts(words, VOCAB, model.block_size)[0]

    @torch.no_grad()
    def own_logits(m):  # (targets, V) the model's own forward: the tree's on one context per position
        return m(X) if form == "tree" else m(b.x)[b.mask]

    expected = own_logits(model)
    default_eps = copy.deepcopy(model)
    for norm in default_eps.modules():
        if isinstance(norm, BatchNorm):
            norm.eps = 1e-5
    assert (own_logits(default_eps) - expected).abs().max() > 1e-3  # eps matters here: the test can fail
    torch.testing.assert_close(torch.from_numpy(logits)[b.mask], expected, rtol=1e-5, atol=1e-5)


def test_onnx_export_says_how_to_get_the_extra(monkeypatch, tmp_path):
    from wavenet_conv import export_onnx
    from wavenet_conv.inference.export import MissingExtraError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(MissingExtraError, match=re.escape("pip install onnx onnxscript onnxruntime (in a checkout: "
                                                          "pip install -e '.[onnx]')")):
        export_onnx(ConvModel(ModelConfig(n_layers=1)), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@cuda_only
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_forward_does_not_sync_on_cuda(training):
    """On a GPU the forward (and, in training, the backward) never waits for the device."""
    _, conv = make_pair(WAVENET, torch.float32, device="cuda")
    conv.train(training)
    x, mask = (t.cuda() for t in batch(4, 11))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = conv(x, mask)
        if training:
            out.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == (4, 11, WAVENET.vocab_size)
