"""Training throughput, targets per second, same parameters: the tree on context minibatches (the
lecture's 32 random contexts; and all the contexts of a batch of names) vs the conv form on the same
batch of whole names: right-padded through ``forward`` (the Conv1d layers), packed end to end through
``packed`` (the library's training step), and packed with bfloat16 matmuls. One round = forward,
backward and one SGD step."""

import pytest
import torch
import torch.nn.functional as F

from baselines import devices, load_split, make_model, median_s
from wavenet_conv import TreeModel, contexts, sequences
from wavenet_conv.data import IGNORE
from wavenet_conv.training.train import batch_loss

NAMES_PER_BATCH = 64


def batches(depth: int, device: str, n: int = 8):
    """n batches of NAMES_PER_BATCH training names, as contexts (X, Y) and as sequences."""
    train, _, vocab = load_split()
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        words = [train[i] for i in torch.randint(len(train), (NAMES_PER_BATCH,), generator=g).tolist()]
        X, Y = contexts(words, vocab, 2**depth)
        seq = sequences(words, vocab).to(device)
        positions = torch.arange(seq.x.shape[1], device=device).expand_as(seq.x)
        packed = (seq.x[seq.mask], seq.y[seq.mask], positions[seq.mask])  # (N,) each: no padding
        out.append((X.to(device), Y.to(device), seq, packed))
    return out, vocab


def round_fn(kind: str, depth: int, device: str):
    """A function running one training round on the next batch; returns the targets it trained on."""
    data, vocab = batches(depth, device)
    conv = make_model(depth, device, vocab).train()
    model = TreeModel.from_conv(conv) if kind.startswith("tree") else conv
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    it = iter(range(10**9))

    def step():
        X, Y, seq, packed = data[next(it) % len(data)]
        if kind == "tree_lecture_32":  # the lecture's minibatch: 32 contexts drawn with replacement
            ix = torch.randint(len(Y), (32,), generator=g).to(device)
            loss, n = F.cross_entropy(model(X[ix]), Y[ix]), 32
        elif kind == "tree_contexts":  # every context of the batch's names
            loss, n = F.cross_entropy(model(X), Y), len(Y)
        elif kind == "conv_padded":  # whole names right-padded, BatchNorm statistics over real positions only
            logits = model(seq.x, seq.mask)  # (B, T, V)
            loss = F.cross_entropy(logits.transpose(1, 2), seq.y, ignore_index=IGNORE)
            n = int(seq.lengths.sum())
        else:  # packed end to end, as train() does; float32 or bfloat16 matmuls
            dtype = torch.bfloat16 if kind == "conv_packed_bf16" else torch.float32
            loss, n = batch_loss(model.packed, *packed, dtype), len(packed[0])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # wait for the device
        return n

    return step


@pytest.mark.parametrize("kind", ["tree_lecture_32", "tree_contexts", "conv_padded", "conv_packed", "conv_packed_bf16"])
@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("depth", [3, 6])
def test_train_throughput(benchmark, request, depth, device, kind):
    smoke = request.config.getoption("benchmark_disable")
    step = round_fn(kind, depth, device)
    benchmark.group = f"train, {NAMES_PER_BATCH} names or 32 contexts per step, depth {depth}, {device}"
    targets = benchmark.pedantic(step, rounds=1 if smoke else 30, warmup_rounds=0 if smoke else 3)
    med = median_s(benchmark)
    # targets per round: the lecture's 32, or the batch's names' targets (about the same every round)
    benchmark.extra_info.update(targets_per_round=targets, baseline=kind == "tree_contexts")
    if med:
        benchmark.extra_info["targets_per_s"] = round(targets / med)
