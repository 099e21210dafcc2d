"""Scoring lists of any size end to end: `wavenet-conv score FILE --format tsv > out` against
`score_names` on the same names already in memory, the peak memory of the command at each size, and
the multiply-add limit of this CPU for the same work.

    python benchmarks/score_stream.py                     # 100k, 1M and 4M names (about 2 minutes a thread)
    python benchmarks/score_stream.py --sizes 1000000 --threads 2
    python benchmarks/score_stream.py --quick             # a smoke run (CI)

The lists are the names of data/names.txt (or the lecture's names.txt at the repository's root)
repeated; the largest also gets a sprinkling of lines that are not names (digits, spaces, '.',
non-ASCII, empty lines), scored with --skip-invalid: its scored rows + reported lines + empty lines
must add up to its lines. The model has the lecture's widths (random weights: speed does not depend
on training), saved as a run folder. Each command runs in its own process; its peak resident memory
is the kernel's count for that process (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from baselines import fast_work_per_target, load_split, make_model, names_file
from ratios import machine_line
from scaling import gemm_rate
from wavenet_conv import load_model, score_names
from wavenet_conv.store.checkpoint import Checkpoint
from wavenet_conv.models.config import recipe

BAD = ["x1", "mary ann", "j.r", "zoë", "", "Emma", "", "4"]  # one bad or empty line in every SPRINKLE


def write_list(path: str, names: list[str], n: int, sprinkle: int | None) -> dict:
    """``n`` lines of ``names`` repeated, every ``sprinkle``-th replaced by a bad or empty line."""
    counts = {"lines": n, "empty": 0, "bad": 0}
    with open(path, "w") as f:
        for i in range(n):
            if sprinkle and i % sprinkle == sprinkle - 1:
                line = BAD[(i // sprinkle) % len(BAD)]
                counts["empty" if not line else "bad"] += 1
            else:
                line = names[i % len(names)]
            f.write(line + "\n")
    return counts


def run_folder(path: str, vocab, depth: int) -> str:
    """A run folder holding a checkpoint of the lecture's widths at ``depth`` (random weights)."""
    model = make_model(depth, "cpu", vocab)
    Checkpoint.of_model(model, vocab, train_config=recipe("default"), step=0).save(os.path.join(path, "checkpoint.pt"))
    return path


def run_command(argv: list[str], stdout_path: str, threads: int | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stderr) of one command in its own process (``OMP_NUM_THREADS``
    set to ``threads`` where given)."""
    env = {**os.environ, **({} if threads is None else {"OMP_NUM_THREADS": str(threads)})}
    with open(stdout_path, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, env=env)
        err = proc.stderr.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {err}")
    return wall, usage.ru_maxrss / 1024, err


def in_memory_rate(run: str, path: str) -> tuple[float, int, int]:
    """(seconds, names, targets) of ``score_names`` on the file's names, already in memory."""
    model, vocab, _ = load_model(run)
    with open(path) as f:
        names = f.read().split()
    score_names(model, names[:1000], vocab)  # warm up
    t0 = time.perf_counter()
    r = score_names(model, names, vocab)
    return time.perf_counter() - t0, len(names), int(r.n_targets.sum())


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000,4000000", help="list lengths (comma-separated)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, in the command and in memory (1)")
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--sprinkle", type=int, default=1000, help="every N-th line of the largest list is bad or empty")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the side-by-side rate (3)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2,000 and 5,000 names, one round")
    args = ap.parse_args(argv)
    sizes = [2000, 5000] if args.quick else [int(s) for s in args.sizes.split(",")]
    args.rounds = 1 if args.quick else args.rounds
    torch.set_num_threads(args.threads)
    train, dev, vocab = load_split()
    names = train + dev
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = run_folder(os.path.join(tmp, "run"), vocab, args.depth)
        for n in sizes:
            path = os.path.join(tmp, f"names_{n}.txt")
            sprinkle = args.sprinkle if n == sizes[-1] else None
            counts = write_list(path, names, n, sprinkle)
            cmd = [sys.executable, "-m", "wavenet_conv", "score", run, path, "--format", "tsv", "--device", "cpu"]
            cmd += ["--skip-invalid"] if sprinkle else []
            wall, rss, err = run_command(cmd, os.path.join(tmp, "out.tsv"), args.threads)
            with open(os.path.join(tmp, "out.tsv")) as f:
                scored = sum(1 for _ in f) - 1  # the header
            reported = sum(1 for line in err.splitlines() if re.match(rf"{re.escape(path)}:\d+: ", line))
            assert scored + reported + counts["empty"] == n, (scored, reported, counts)
            rows.append(dict(names=n, scored=scored, reported=reported, empty=counts["empty"], wall=wall, rss=rss))
            print(f"{n:>10,} lines: {wall:6.2f} s end to end, peak RSS {rss:6.1f} MB; {scored:,} scored, "
                  f"{reported:,} reported, {counts['empty']:,} empty", flush=True)
        # the rate, side by side: the command and score_names in memory, interleaved, medians
        mid = next((n for n in sizes if n >= 1_000_000), sizes[0])
        mid_path = os.path.join(tmp, f"names_{mid}.txt")
        write_list(mid_path, names, mid, None)
        cmd = [sys.executable, "-m", "wavenet_conv", "score", run, mid_path, "--format", "tsv", "--device", "cpu"]
        cmd_times, mem_times = [], []
        for _ in range(args.rounds):
            cmd_times.append(run_command(cmd, os.path.join(tmp, "out.tsv"), args.threads)[0])
            mem_s, mem_names, targets = in_memory_rate(run, mid_path)
            mem_times.append(mem_s)
        cmd_wall, mem_s = statistics.median(cmd_times), statistics.median(mem_times)
    gemm = gemm_rate("cpu", 7)
    L, H = args.depth, 128
    macs = fast_work_per_target(L, H)
    print()
    print(f"Machine: {machine_line()}; data {os.path.relpath(names_file())} repeated; depth {L}, lecture widths")
    print(f"medians of {args.rounds} interleaved rounds:")
    print(f"score_names, {mem_names:,} names in memory: {mem_s:.2f} s = {mem_names / mem_s:,.0f} names/s, "
          f"{targets / mem_s:,.0f} targets/s")
    print(f"wavenet-conv score --format tsv, the same {mid:,} names from a file: {cmd_wall:.2f} s = "
          f"{mid / cmd_wall:,.0f} names/s ({mem_s / cmd_wall:.0%} of the in-memory rate; process start and "
          f"model load included)")
    print(f"multiply-add limit: {macs:,} MACs per target at {gemm / 1e9:.1f} GMAC/s (measured fp32 GEMM) = "
          f"{gemm / macs:,.0f} targets/s; score_names reaches {targets / mem_s / (gemm / macs):.0%} of it")
    return rows


if __name__ == "__main__":
    main()
