"""Scoring speed against the vocabulary: the bundled model's shapes (the lecture's model with the
letters of three scripts) against the same model with 1.1's 28 tokens (a-z, the boundary, the unknown
token), random weights and BatchNorm statistics, each scoring the same 3,247 dev names of data/names.txt
on one thread with a ``Scorer`` built once, as ``score`` builds one per process (the fast path; the
folding, whose pair table of layers 0 and 1 has V² rows, is not timed). The head's GEMM grows with V,
and the pair table's rows outgrow the cache.

    python -m pytest benchmarks/bench_vocab.py            # the timings, grouped
    python -m pytest benchmarks/bench_vocab.py --benchmark-disable   # smoke: each once
"""

import pytest
import torch

from baselines import BUNDLED_NAMES
from wavenet_conv import ConvModel, ModelConfig, Vocab, lecture_split, load_model, load_names
from wavenet_conv.inference.scoring import Scorer

_cache = {}


def setup(kind: str):
    if kind not in _cache:
        bundled = load_model()
        vocab = bundled.vocab if kind == "bundled" else Vocab("abcdefghijklmnopqrstuvwxyz", "both", unknown=True)
        torch.manual_seed(0)
        model = ConvModel(ModelConfig(**{**bundled.model.config.to_dict(), "vocab_size": len(vocab)})).eval()
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name.endswith("running_var"):
                    b.uniform_(0.5, 1.5)
        _cache[kind] = (Scorer.of(model, vocab, threads=1), lecture_split(load_names(BUNDLED_NAMES))[1])
    return _cache[kind]


@pytest.mark.parametrize("kind", ["lecture vocabulary (28)", "bundled"])
def test_score_dev_split(benchmark, kind):
    scorer, dev = setup("bundled" if kind == "bundled" else "lecture")
    benchmark.group = "scoring 3,247 names by vocabulary size, 1 thread"
    benchmark.extra_info["vocab_size"] = len(scorer.vocab)
    result = benchmark(scorer.names, dev)  # the scorer's own thread count: 1
    assert len(result.nll) == len(dev) and torch.isfinite(result.nll).all()
