"""benchmarks/device_check.py: the one command for a GPU machine, run small on this one (--quick), and
its frame: a failing section is a row, not the end; a section the time left does not cover is skipped."""

import json
import os
import subprocess
import sys
import types

import pytest
import torch

from helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import device_check  # noqa: E402

SECTIONS = [name for name, _, _ in device_check.SECTIONS]


def test_quick_check_runs_every_section_and_writes_its_results(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "benchmarks/device_check.py", "--quick", "--out", str(tmp_path)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert [s["name"] for s in doc["sections"]] == SECTIONS
    assert not doc["failures"], doc["failures"]
    for s in doc["sections"]:
        assert s["status"] == "ok" or s["status"].startswith("skipped"), (s["name"], s["status"])
        assert all(not str(r.get("status", "ok")).startswith("failed") for r in s["rows"]), s["rows"]
    ran = {s["name"] for s in doc["sections"] if s["status"] == "ok"}
    assert {"environment", "model and data", "ceilings", "cost model", "equivalence"} <= ran
    md = (tmp_path / "results.md").read_text()
    assert md.startswith("# Device check") and all(f"## {name} (" in md for name in SECTIONS)
    assert "## sampling" in p.stdout  # the tables are printed too
    equivalence = next(s for s in doc["sections"] if s["name"] == "equivalence")
    f32 = next(r for r in equivalence["rows"] if r["runner"] == "folded" and r["precision"] == "float32")
    assert float(f32["nats rel, worst name"]) <= 1e-5  # the forms agree with float64 here too


def frame(tmp_path, budget=100.0):
    args = types.SimpleNamespace(quick=True, device="cpu", budget=budget, out=str(tmp_path))
    return device_check.Check(args)


def test_a_failing_section_is_a_row_and_the_check_goes_on(tmp_path):
    check = frame(tmp_path)

    def broken(check):
        raise RuntimeError("no such kernel")

    check.section("broken", broken, needs=0)
    check.section("fine", lambda check: {"rows": [{"what": "x", "value": 1}], "notes": []}, needs=0)
    assert [s["status"] for s in check.sections] == ["failed: RuntimeError: no such kernel", "ok"]
    assert "no such kernel" in check.log[0]
    doc = json.loads((tmp_path / "results.json").read_text())  # written after every section
    assert [s["name"] for s in doc["sections"]] == ["broken", "fine"]


def test_sections_and_rows_the_time_left_does_not_cover_are_skipped(tmp_path):
    check = frame(tmp_path, budget=10.0)
    check.section("slow", lambda check: pytest.fail("must not run"), needs=60)
    assert check.sections[0]["status"].startswith("skipped")
    rows = []
    check.guarded(rows, {"contender": "slow"}, lambda: pytest.fail("must not run"), needs=60)
    check.guarded(rows, {"contender": "quick"}, lambda: {"median ms": 1.0}, needs=0)
    check.guarded(rows, {"contender": "broken"}, lambda: 1 / 0, needs=0)
    assert [r["status"].split(" ")[0] for r in rows] == ["skipped", "ok", "failed:"]


def test_the_tally_counts_kernels_bytes_and_multiply_adds():
    a, w = torch.randn(64, 16), torch.randn(16, 8)
    bias, out = torch.randn(8), torch.empty(64, 8)
    ops = device_check.tally(lambda: (torch.addmm(bias, a, w, out=out), out[:, 2:].add_(1), out.view(-1)))
    assert [o for o, _, _ in ops] == ["addmm", "add_"]  # the view is no kernel
    (_, addmm_bytes, macs), (_, add_bytes, _) = ops
    assert macs == 64 * 8 * 16
    assert addmm_bytes == 4 * (8 + 64 * 16 + 16 * 8 + 64 * 8)  # inputs read, out written once
    assert add_bytes == 4 * 2 * 64 * 6  # read and written
