"""Smoke test of benchmarks/ray_scoring.py (the local command and a Ray job on the same list, names per
second, peak memory per worker): ``--quick`` in its own process under a time limit, with
``--benchmark-disable`` (CI); skipped in a timing run and without Ray.

    python -m pytest benchmarks/bench_ray.py --benchmark-disable
"""

import importlib.util
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def test_ray_scoring_quick(request):
    if not request.config.getoption("benchmark_disable"):
        pytest.skip("smoke test of benchmarks/ray_scoring.py: run with --benchmark-disable")
    if importlib.util.find_spec("ray") is None:
        pytest.skip("needs ray[data] (the ray extra)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, os.path.join(HERE, "ray_scoring.py"), "--quick"], capture_output=True,
                       text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    table = p.stdout.splitlines()[-2:]  # | engine | workers | start | job | names/s | peak RSS per worker |
    assert [row.split(" | ")[:2] for row in table] == [["| local", "1"], ["| ray", "1"]]
    assert all(float(row.split(" | ")[4].replace(",", "")) > 0 for row in table)
