"""Scoring a list on Ray against the local command: names per second for 1,000,000 lines with
`wavenet-conv score` (one process, one thread) and with `score_files` (the job behind `--engine ray`)
on a local Ray cluster at 1 and 2 workers of one CPU each, and the peak memory of each worker.

    python benchmarks/ray_scoring.py                  # 1,000,000 lines, 1 and 2 workers (a few minutes)
    python benchmarks/ray_scoring.py --lines 4000000 --workers 1,2,4
    python benchmarks/ray_scoring.py --quick          # a smoke run (CI): 20,000 lines, 1 worker

The list is the names of data/names.txt (or the lecture's names.txt at the repository's root)
repeated, with a bad or empty line every 1,000 lines; the model has the lecture's widths (random
weights: speed does not depend on training), saved as a run folder. The local command runs in its own
process (model load included, `--format tsv --skip-invalid`); its peak memory is the kernel's count
for that process. A Ray job is timed from a started cluster to the last Parquet file written (the
cluster's start is timed apart); each worker records its own peak resident memory (``ru_maxrss``)
after every batch.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import resource
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from baselines import load_split  # noqa: E402
from ratios import machine_line  # noqa: E402
from score_stream import run_command, run_folder, write_list  # noqa: E402
from wavenet_conv.cluster.scorer import BatchScorer  # noqa: E402


class MemoryScorer(BatchScorer):
    """A ``BatchScorer`` that appends ``PID PEAK_RSS_KB`` to ``log`` after every batch."""

    def __init__(self, run, log: str, **kwargs):
        super().__init__(run, **kwargs)
        self.log = log

    def kwargs(self) -> dict:
        return {**super().kwargs(), "log": self.log}

    def __call__(self, batch):
        out = super().__call__(batch)
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\n")
        return out


def peak_per_worker(log: str) -> dict[int, float]:
    """{pid: peak RSS in MB} from a ``MemoryScorer`` log."""
    peaks = {}
    with open(log) as f:
        for line in f:
            pid, kb = map(int, line.split())
            peaks[pid] = max(peaks.get(pid, 0), kb / 1024)
    return peaks


def ray_job(run: str, path: str, out: str, workers: int) -> dict:
    """One job on a fresh local cluster of ``workers + 1`` CPUs: start, job and peak memory per worker."""
    import ray

    from wavenet_conv.cluster.job import score_files

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    log = out + ".mem"
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=workers + 1, include_dashboard=False, logging_level="WARNING")
    try:
        t1 = time.perf_counter()
        counts = score_files(MemoryScorer(run, log), path, out, workers=workers, skip_invalid=True)  # as --skip-invalid
        t2 = time.perf_counter()
    finally:
        ray.shutdown()
    peaks = peak_per_worker(log)
    return dict(engine="ray", workers=workers, start=t1 - t0, wall=t2 - t1, rows=counts.rows,
                scored=counts.names, rss=max(peaks.values()), rss_all=sorted(peaks.values()))


def local_job(run: str, path: str, out: str) -> dict:
    cmd = [sys.executable, "-m", "wavenet_conv", "score", run, path, "--format", "tsv", "--skip-invalid",
           "--device", "cpu"]
    wall, rss, err = run_command(cmd, out)
    with open(out) as f:
        scored = sum(1 for _ in f) - 1  # the header
    reported = sum(1 for line in err.splitlines() if re.match(rf"{re.escape(path)}:\d+: ", line))
    return dict(engine="local", workers=1, start=0.0, wall=wall, rows=scored + reported, scored=scored, rss=rss,
                rss_all=[rss])


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000, help="lines in the list (1,000,000)")
    ap.add_argument("--workers", default="1,2", help="Ray workers to try, comma-separated (1,2)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 20,000 lines, 1 worker")
    args = ap.parse_args(argv)
    lines, workers = (20_000, [1]) if args.quick else (args.lines, [int(w) for w in args.workers.split(",")])
    os.environ["PYTHONPATH"] = os.pathsep.join([ROOT, HERE, *filter(None, [os.environ.get("PYTHONPATH")])])  # workers
    train, dev, vocab = load_split()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = run_folder(os.path.join(tmp, "run"), vocab, depth=3)
        path = os.path.join(tmp, "names.txt")
        counts = write_list(path, train + dev, lines, sprinkle=1000)
        rows.append(local_job(run, path, os.path.join(tmp, "local.tsv")))
        for w in workers:
            rows.append(ray_job(run, path, os.path.join(tmp, f"ray{w}"), w))
    expected = lines - counts["empty"]
    print(f"Machine: {machine_line()}; load average {os.getloadavg()[0]:.2f} at the end")
    print(f"{lines:,} lines ({counts['bad']:,} bad, {counts['empty']:,} empty); depth 3, lecture widths; one thread "
          "per process")
    print("| engine | workers | cluster start | job | names/s (job) | peak RSS per worker |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        assert r["rows"] == expected, r  # one row (or reported line) per non-empty line
        print(f"| {r['engine']} | {r['workers']} | {r['start']:.1f} s | {r['wall']:.2f} s | "
              f"{r['scored'] / r['wall']:,.0f} | {' / '.join(f'{m:.0f}' for m in r['rss_all'])} MB |")
    return rows


if __name__ == "__main__":
    main()
