"""The cost of batch invariance: the dev split scored by 1.0's fast path (every GEMM in blocks of
``folded.ROWS`` rows, each name's sum a running sum: a name's bits do not depend on the list around
it) against a copy of 0.3's (plain GEMMs over each length group), in one run, one thread.

    python benchmarks/ratios.py -k invariance      # medians and the ratio, with the machine named
"""

import pytest
import torch

from baselines import load_split, make_model, plain_gemm_nll
from wavenet_conv import score_names

CONTENDERS = ["plain_gemm", "fixed_blocks"]
_cache = {}


def setup(depth: int, smoke: bool):
    if (depth, smoke) not in _cache:
        _, dev, vocab = load_split()
        dev = dev[:300] if smoke else dev
        _cache[(depth, smoke)] = dev, vocab, make_model(depth, "cpu", vocab)
    return _cache[(depth, smoke)]


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("depth", [3, 6])
def test_score_dev_split_invariant(benchmark, request, depth, contender):
    smoke = request.config.getoption("benchmark_disable")
    dev, vocab, conv = setup(depth, smoke)
    benchmark.group = f"invariance: score dev split, depth {depth}, cpu"
    run = {
        "plain_gemm": lambda: plain_gemm_nll(conv, dev, vocab),
        "fixed_blocks": lambda: score_names(conv, dev, vocab).nll,
    }[contender]
    nll = benchmark.pedantic(run, rounds=1 if smoke else 21, warmup_rounds=0 if smoke else 2)
    torch.testing.assert_close(nll, score_names(conv, dev, vocab).nll, rtol=1e-6, atol=1e-6)
    benchmark.extra_info.update(names=len(dev), baseline=contender == "plain_gemm")
