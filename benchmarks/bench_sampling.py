"""Sampling 1,000 names: the lecture's window sampler (the tree on the last 2**L tokens, every step)
vs cached generation (L pair operations per character), at depth 3 and depth 6."""

import pytest
import torch

from baselines import devices, load_split, make_model
from wavenet_conv import sample_names

_cache = {}


def model_for(depth: int, device: str):
    if (depth, device) not in _cache:
        train, _, vocab = load_split()
        _cache.clear()
        _cache[depth, device] = make_model(depth, device, vocab, train_words=train), vocab
    return _cache[depth, device]


@pytest.mark.parametrize("sampler", ["window", "cached"])
@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("depth", [3, 6])
def test_sample_1000(benchmark, request, depth, device, sampler):
    smoke = request.config.getoption("benchmark_disable")
    model, vocab = model_for(depth, device)
    n = 100 if smoke else 1000
    benchmark.group = f"sample {n} names, depth {depth}, {device}"

    def run():
        g = torch.Generator().manual_seed(0)
        return sample_names(model, n, vocab, generator=g, cached=sampler == "cached")

    names = benchmark.pedantic(run, rounds=1 if smoke else 5, warmup_rounds=0 if smoke else 1)
    assert len(names) == n
    chars = sum(len(w) + 1 for w in names)
    benchmark.extra_info.update(names=n, chars=chars, baseline=sampler == "window")
