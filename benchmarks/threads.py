"""How many torch threads: the measurements behind the library's thread policy (``device.py``).

    python benchmarks/threads.py                 # every workload x threads 1, 2, auto x idle, loaded (about 5 minutes)
    python benchmarks/threads.py --quick         # a smoke run

Each workload runs in its own process with 1 or 2 torch threads (``torch.set_num_threads`` and
``OMP_NUM_THREADS``), or with ``threads="auto"`` (the library's policy, decided at every call), on an otherwise idle machine and beside one busy neighbour: a process that keeps one
core busy, as a second job (or another user) would. The workloads are what the subcommands do, at the lecture's
widths: a training step of the default recipe (128 whole names, AdamW), scoring the dev split with
the fast path, scoring 200,000 names, and sampling 1,000 names with the cached sampler at depths 3
and 6. Each time is the median of several repeats in that process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

WORKLOADS = ["train_step", "score_dev", "score_200k", "sample_d3", "sample_d6"]


def workload(name: str, quick: bool):
    """A function doing one unit of ``name``'s work, and a description of the unit."""
    import torch

    from baselines import load_split, make_model
    from wavenet_conv import sample_names, score_names
    from wavenet_conv.training.minibatches import NameBatches
    from wavenet_conv.models.config import recipe
    from wavenet_conv.device import resolve_precision
    from wavenet_conv.training.optim import make_optimizer
    from wavenet_conv.training.train import batch_loss

    train, dev, vocab = load_split()
    if name == "train_step":
        model = make_model(3, "cpu", vocab).train()
        batches = NameBatches(train, vocab, 128, 42, torch.device("cpu"))
        opt = make_optimizer(model, recipe("default"))
        dtype = resolve_precision("auto", torch.device("cpu"))  # the default recipe's step, as train() runs it
        step = iter(range(10**9))

        def run():
            loss = batch_loss(model.packed, *batches(next(step)), dtype)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run, "one step, 128 names"
    if name.startswith("score"):
        model = make_model(3, "cpu", vocab)
        names = dev if name == "score_dev" else (train * 8)[: 2000 if quick else 200_000]
        return (lambda: score_names(model, names, vocab)), f"{len(names):,} names"
    depth, n = int(name[-1]), 100 if quick else 1000
    model = make_model(depth, "cpu", vocab, train_words=train)
    g = torch.Generator()
    return (lambda: sample_names(model, n, vocab, generator=g.manual_seed(0))), f"{n:,} names"


def child(name: str, threads: int | str, quick: bool) -> None:
    """Runs in the measured process: prints the median seconds of one unit of ``name``."""
    import torch

    from wavenet_conv.device import torch_threads

    if threads == "auto":  # the threads decided at every call
        unit_of_work, unit = workload(name, quick)

        def run():
            with torch_threads("auto", "threads.py"):
                unit_of_work()
    else:
        torch.set_num_threads(threads)
        run, unit = workload(name, quick)
    run()  # warm up
    times = []
    deadline = time.perf_counter() + (1 if quick else 8)
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 200):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"median": statistics.median(times), "repeats": len(times), "unit": unit}))


def busy_neighbour() -> subprocess.Popen:
    """A process that keeps one core busy (a pure-Python loop: no threads of its own)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure(name: str, threads: int | str, quick: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads != "auto":
        env["OMP_NUM_THREADS"] = str(threads)
    argv = [sys.executable, os.path.join(HERE, "threads.py"), "--child", name, "--threads", str(threads)]
    out = subprocess.run(argv + (["--quick"] if quick else []), capture_output=True, text=True, env=env,
                         cwd=HERE, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=lambda s: s if s == "auto" else int(s), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--only", help="comma-separated workloads (" + ", ".join(WORKLOADS) + ")")
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.threads, args.quick)
        return []
    from ratios import machine_line

    names = args.only.split(",") if args.only else WORKLOADS
    rows = []
    for load in ("idle", "loaded"):
        neighbour = busy_neighbour() if load == "loaded" else None
        try:
            for name in names:
                r = {t: measure(name, t, args.quick)["median"] for t in (1, 2, "auto")}
                rows.append(dict(workload=name, load=load, one=r[1], two=r[2], auto=r["auto"]))
                print(f"{name:11s} {load:6s} 1 thread {r[1] * 1e3:9.2f} ms   2 threads {r[2] * 1e3:9.2f} ms   "
                      f"auto {r['auto'] * 1e3:9.2f} ms", flush=True)
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()
    print(f"\nMachine: {machine_line()}\n")
    print("| workload | machine | 1 thread | 2 threads | auto | auto vs the better of 1 and 2 |\n"
          "|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workload']} | {r['load']} | {r['one'] * 1e3:,.2f} ms | {r['two'] * 1e3:,.2f} ms | "
              f"{r['auto'] * 1e3:,.2f} ms | {r['auto'] / min(r['one'], r['two']):.2f}x |")
    return rows


if __name__ == "__main__":
    main()
