"""Smoke test of the scaling curves (benchmarks/scaling.py): ``--quick`` into a temporary folder, then
the CSV and the three PNGs are checked. Runs with ``--benchmark-disable`` (CI); skipped in a timing run,
where it would only add load between the benchmarks.

    python -m pytest benchmarks/bench_scaling.py --benchmark-disable
"""

import csv
import math
import os

import pytest

import scaling


def test_scaling_quick(request, tmp_path):
    if not request.config.getoption("benchmark_disable"):
        pytest.skip("smoke test of benchmarks/scaling.py: run with --benchmark-disable")
    out = str(tmp_path)
    scaling.main(["--quick", "--threads", "1", "--out", out])

    with open(os.path.join(out, "scaling.csv"), newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == scaling.COLUMNS
        rows = list(reader)
    points = {(r["sweep"], r["contender"]) for r in rows}
    assert {("depth", c) for c in scaling.SCORERS + scaling.SAMPLERS} <= points
    assert {("length", c) for c in scaling.SCORERS} <= points
    assert ("batch", "cached") in points
    for r in rows:
        for k in ("seconds_per_unit", "macs_per_unit", "model_seconds_per_unit", "units"):
            v = float(r[k])
            assert math.isfinite(v) and v > 0, (k, r)
        assert float(r["seconds_min"]) <= float(r["seconds_per_unit"]) <= float(r["seconds_max"]), r

    # the multiply-add model: the tree's work per target grows faster with depth than the conv's
    macs = {(r["contender"], int(r["x"])): float(r["macs_per_unit"]) for r in rows if r["sweep"] == "depth"}
    depths = sorted({d for _, d in macs if d >= 2})  # at depth 1 both are one pair operation
    lo, hi = depths[0], depths[-1]
    grows = {c: macs[c, hi] - macs[c, lo] for c in ("lecture", "fast", "cached")}
    assert grows["lecture"] > 2 * grows["fast"] > 0 and grows["lecture"] > 2 * grows["cached"] > 0

    for name in ("depth.png", "length.png", "batch.png"):
        with open(os.path.join(out, name), "rb") as f:
            head = f.read(8)
        assert head == b"\x89PNG\r\n\x1a\n", name
        assert os.path.getsize(os.path.join(out, name)) > 10_000, name
    assert open(os.path.join(out, "machine.txt")).read().startswith("Machine: ")
