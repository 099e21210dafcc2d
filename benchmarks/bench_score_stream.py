"""Smoke test of benchmarks/score_stream.py (streamed scoring end to end, peak memory, the limit):
``--quick``, with ``--benchmark-disable`` (CI); skipped in a timing run.

    python -m pytest benchmarks/bench_score_stream.py --benchmark-disable
"""

import pytest

import score_stream


def test_score_stream_quick(request):
    if not request.config.getoption("benchmark_disable"):
        pytest.skip("smoke test of benchmarks/score_stream.py: run with --benchmark-disable")
    rows = score_stream.main(["--quick", "--sprinkle", "100"])
    assert [r["names"] for r in rows] == [2000, 5000]
    last = rows[-1]
    assert last["reported"] > 0 and last["empty"] > 0
    assert last["scored"] + last["reported"] + last["empty"] == 5000
    assert all(r["rss"] > 0 and r["wall"] > 0 for r in rows)
