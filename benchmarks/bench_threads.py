"""Smoke test of benchmarks/threads.py: every workload it times runs (once, small, in this process).
The timing itself needs separate processes and an idle machine: ``python benchmarks/threads.py``."""

import pytest

import threads


@pytest.mark.parametrize("name", threads.WORKLOADS)
def test_thread_workloads_run(name, request):
    if not request.config.getoption("benchmark_disable"):
        pytest.skip("smoke test of benchmarks/threads.py: run with --benchmark-disable")
    run, unit = threads.workload(name, quick=True)
    run()
    assert unit
