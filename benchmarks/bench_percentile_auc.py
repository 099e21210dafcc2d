"""Smoke test of benchmarks/percentile_auc.py (the percentile's ROC AUC beside the nats per target's):
``--quick`` on the bundled model, with ``--benchmark-disable`` (CI); skipped in a timing run.

    python -m pytest benchmarks/bench_percentile_auc.py --benchmark-disable
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import percentile_auc  # noqa: E402


def test_percentile_auc_quick(request, capsys):
    if not request.config.getoption("benchmark_disable"):
        pytest.skip("smoke test of benchmarks/percentile_auc.py: run with --benchmark-disable")
    percentile_auc.main(["--quick"])
    rows = capsys.readouterr().out.splitlines()[-3:]  # | negatives | AUC x3 | share at the 99th | distinct |
    assert [r.split(" | ")[0] for r in rows] == ["| random letters", "| keyboard walks", "| repeated patterns"]
    for row in rows:
        cells = row.strip("| ").split(" | ")
        nats, percentile, step = (float(c) for c in cells[1:4])
        distinct, scores = (int(c.replace(",", "")) for c in cells[5].split(" (")[0].split(" / "))
        assert 0.9 < min(nats, percentile, step) and percentile >= step and distinct >= 0.9 * scores
