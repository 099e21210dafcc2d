"""How the cost grows: scaling curves of the tree and the conv form, each beside its multiply-add model.

    python benchmarks/scaling.py                          # all three sweeps (about 10-15 min, one thread)
    python benchmarks/scaling.py --quick                  # a small subset (CI's smoke run)
    python benchmarks/scaling.py --threads 1 --device cuda --out DIR --sweep depth

Sweeps (random weights and BatchNorm statistics, eval, float32, the lecture's widths):

1. depth 1-8 (receptive field 2-256): seconds per target for scoring the lecture's dev split
   (``lecture``: TreeModel on all contexts; ``tree_folded``: the tree with BatchNorm folded, the fast
   path's kernels; ``conv1d_forward``: ``ConvModel.forward`` on right-padded names; ``fast``:
   ``score_names``), and seconds per sampled character for 1,000 names (``window``: the lecture's
   sampler; ``cached``: per-layer caches of the older halves, L pair operations per character);
2. name length 4-256 (synthetic random names, one length per point, depth 6): seconds per target of
   the same four scoring contenders;
3. batch size 1-10,000 (names sampled at once, depth 6): seconds per character of the cached sampler.

Each scoring contender gets a prefix of its names, grown until one call takes about ``--call-s``
seconds (or the whole set is used): time per target is the metric, and the work per target does not
depend on how many names share a call, except through cache effects (noted in the CSV: ``names``).
Each point is the median over ``--repeats`` timed repeats after a warm-up call; a repeat of a call
shorter than ``--call-s`` runs it several times (``inner``). On CUDA, clocks are read after a
synchronize.

The model line of a contender is its multiply-adds per unit divided by the GEMM rate of this machine,
measured here: an fp32 (8192 x 128) @ (128 x 256) matmul (the fast path's GEMM), median. Multiply-adds
per unit, as each contender runs:

* lecture, window: the tree, ``2^(L-1)·2EH + Σ_{l=1}^{L-1} 2^(L-1-l)·2H² + HV`` per target;
* tree_folded: the same, with the output layer padded to 32 columns (H·32 instead of HV);
* conv1d_forward: ``2EH + (L-1)·2H² + HV`` per position it computes, right-padding included;
* fast, cached: ``max(L-2, 0)·2H² + H·32`` (layers 0 and 1 are one lookup in a table of token pairs).

Writes ``scaling.csv`` (every point), ``depth.png``, ``length.png``, ``batch.png`` and
``machine.txt`` into ``--out`` and prints the machine and every point.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import statistics
import textwrap
import time

import torch
import torch.nn.functional as F

from baselines import FoldedTree, fast_work_per_target, lecture_loss, load_split, make_model, work_per_target
from ratios import machine_line
from wavenet_conv import TreeModel, contexts, sample_names, score_names, sequences

HERE = os.path.dirname(os.path.abspath(__file__))

SCORERS = ["lecture", "tree_folded", "conv1d_forward", "fast"]
SAMPLERS = ["window", "cached"]
COLORS = {"lecture": "tab:red", "tree_folded": "tab:orange", "conv1d_forward": "tab:blue", "fast": "tab:green",
          "window": "tab:red", "cached": "tab:green"}
COLUMNS = ["sweep", "device", "threads", "x", "contender", "seconds_per_unit", "unit", "units", "names",
           "macs_per_unit", "model_seconds_per_unit", "repeats", "inner", "seconds_min", "seconds_max"]
GEMM = (8192, 128, 256)  # rows x inner x columns: the fast path's GEMM at its default chunk

FULL = dict(depths=[1, 2, 3, 4, 5, 6, 7, 8], lengths=[4, 8, 16, 32, 64, 128, 256],
            batches=[1, 3, 10, 30, 100, 300, 1000, 3000, 10000], sample_names=1000, max_names=None,
            max_targets=32768, call_s=0.25, repeats=7, budget_s=5.0)
QUICK = dict(depths=[1, 2, 4], lengths=[4, 32], batches=[1, 100], sample_names=50, max_names=200,
             max_targets=2048, call_s=0.01, repeats=3, budget_s=0.3)


# ----------------------------------------------------------------------------------------------
# clocks


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def clock(fn, device: str) -> tuple[float, object]:
    """One call of ``fn``: (seconds, its result), the device synchronized before each clock read."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def measure(fn, device: str, call_s: float, repeats: int, budget_s: float) -> dict:
    """Median seconds per call of ``fn`` over timed repeats, after a warm-up call. A repeat runs ``fn``
    ``inner`` times when one call is shorter than ``call_s``; repeats beyond 3 stop at ``budget_s``."""
    t, _ = clock(fn, device)  # warm-up: allocations, oneDNN primitives, caches
    if t < 2 * call_s:  # a long call's warm-up time is estimate enough
        t, _ = clock(fn, device)
    inner = 1 if t >= call_s else max(1, math.ceil(call_s / max(t, 1e-7)))
    reps = max(3, min(repeats, int(budget_s / max(inner * t, 1e-9))))
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync(device)
        times.append((time.perf_counter() - t0) / inner)
    return dict(median=statistics.median(times), min=min(times), max=max(times), repeats=reps, inner=inner)


def gemm_rate(device: str, repeats: int) -> float:
    """Multiply-adds per second of one fp32 (8192 x 128) @ (128 x 256) matmul on ``device``, median."""
    m, k, n = GEMM
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g).to(device)
    b = torch.randn(k, n, generator=g).to(device)
    c = torch.empty(m, n, device=device)
    for _ in range(3):
        torch.mm(a, b, out=c)
    times = []
    for _ in range(max(5, 3 * repeats)):
        t, _ = clock(lambda: torch.mm(a, b, out=c), device)
        times.append(t)
    return m * k * n / statistics.median(times)


# ----------------------------------------------------------------------------------------------
# multiply-adds per unit, as each contender runs (see the module docstring)


def macs(contender: str, depth: int, config, positions_per_target: float = 1.0) -> float:
    E, H, V = config.n_embd, config.n_hidden, config.vocab_size
    tree, conv = work_per_target(depth, E, H, V)
    v_pad = -(-V // 16) * 16  # the folded head's columns
    if contender in ("lecture", "window"):
        return tree
    if contender == "tree_folded":
        return tree - H * V + H * v_pad
    if contender == "conv1d_forward":
        return conv * positions_per_target
    if contender in ("fast", "cached"):  # layers 0 and 1 are one lookup in a table of token pairs
        return fast_work_per_target(depth, H, V)
    raise ValueError(contender)


# ----------------------------------------------------------------------------------------------
# scoring contenders: make(words) -> (fn, targets, positions per target)


def forward_loss(model, names) -> float:
    """The loss from one call of ``ConvModel.forward`` on right-padded names (as bench_scoring)."""
    with torch.inference_mode():
        logits = model(names.x)  # (B, T, V)
        return F.cross_entropy(logits[names.mask], names.y[names.mask]).item()


class Scorers:
    """The four scoring contenders on one model (random weights), inputs built per list of names."""

    def __init__(self, depth: int, device: str, vocab):
        self.device, self.vocab = device, vocab
        self.conv = make_model(depth, device, vocab)
        self.tree = TreeModel.from_conv(self.conv)
        self.folded = FoldedTree(self.conv)

    def make(self, contender: str, words):
        d, v = self.device, self.vocab
        if contender in ("lecture", "tree_folded"):
            X, Y = contexts(words, v, self.tree.block_size)
            X, Y = X.to(d), Y.to(d)
            fn = (lambda: lecture_loss(self.tree, X, Y)) if contender == "lecture" else (lambda: self.folded.loss(X, Y))
            return fn, len(Y), 1.0
        if contender == "conv1d_forward":
            names = sequences(words, v).to(d)
            targets = int(names.lengths.sum())
            return (lambda: forward_loss(self.conv, names)), targets, names.x.numel() / targets
        if contender == "fast":
            return (lambda: score_names(self.conv, words, v).mean_loss), sum(len(w) + 1 for w in words), 1.0
        raise ValueError(contender)


def check_agree(scorers: Scorers, words, where: str) -> None:
    """Every contender computes the same loss on the same names (a wrong setup would race nothing)."""
    losses = {c: scorers.make(c, words)[0]() for c in SCORERS}
    ref = losses["lecture"]
    bad = {c: l for c, l in losses.items() if not math.isclose(l, ref, rel_tol=1e-4)}
    if bad:
        raise AssertionError(f"{where}: losses disagree with the lecture's {ref:.6f}: {bad}")


def grow_and_measure(scorers: Scorers, contender: str, words, opts: dict):
    """Time ``contender`` on a prefix of ``words`` grown until one call takes about call_s seconds
    (or all of ``words``); returns (measure() of the last prefix, targets, names, positions/target)."""
    device, call_s = scorers.device, opts["call_s"]
    n = min(len(words), 16)
    for _ in range(6):
        fn, targets, ppt = scorers.make(contender, words[:n])
        clock(fn, device)  # warm-up at this size
        t, _ = clock(fn, device)
        if t >= call_s / 2 or n == len(words):
            break
        n = min(len(words), max(2 * n, int(n * call_s / max(t, 1e-7))))
    m = measure(fn, device, call_s, opts["repeats"], opts["budget_s"])
    return m, targets, n, ppt


# ----------------------------------------------------------------------------------------------
# the sweeps


class Recorder:
    def __init__(self, device: str, threads: int, rate: float):
        self.device, self.threads, self.rate, self.rows = device, threads, rate, []
        self.t_last = time.perf_counter()

    def add(self, sweep, x, contender, m, unit, units, names, macs_per_unit):
        per = m["median"] / units
        row = dict(sweep=sweep, device=self.device, threads=self.threads, x=x, contender=contender,
                   seconds_per_unit=per, unit=unit, units=units, names=names, macs_per_unit=round(macs_per_unit, 1),
                   model_seconds_per_unit=macs_per_unit / self.rate, repeats=m["repeats"], inner=m["inner"],
                   seconds_min=m["min"] / units, seconds_max=m["max"] / units)
        self.rows.append(row)
        wall, self.t_last = time.perf_counter() - self.t_last, time.perf_counter()
        print(f"  {sweep:6s} {x:>6} {contender:15s} {per * 1e6:11.3f} us/{unit}   model {row['model_seconds_per_unit'] * 1e6:9.3f}"
              f"   x{per / row['model_seconds_per_unit']:7.1f}   ({units:,} {unit}s, {names:,} names, "
              f"{m['repeats']}x{m['inner']}; {wall:.1f} s)", flush=True)


def sweep_depth(rec: Recorder, opts: dict, device: str) -> None:
    train, dev, vocab = load_split()
    dev = dev[: opts["max_names"]] if opts["max_names"] else dev
    for depth in opts["depths"]:
        scorers = Scorers(depth, device, vocab)
        check_agree(scorers, dev[:20], f"depth {depth}")
        for c in SCORERS:
            m, targets, n, ppt = grow_and_measure(scorers, c, dev, opts)
            rec.add("depth", depth, c, m, "target", targets, n, macs(c, depth, scorers.conv.config, ppt))
        model = make_model(depth, device, vocab, train_words=train)
        for c in SAMPLERS:
            def run(c=c):
                g = torch.Generator().manual_seed(0)
                return sample_names(model, opts["sample_names"], vocab, generator=g, cached=c == "cached")
            chars = sum(len(w) + 1 for w in run())  # one row-step of the model per character (end token included)
            m = measure(run, device, opts["call_s"], opts["repeats"], opts["budget_s"])
            rec.add("depth", depth, c, m, "char", chars, opts["sample_names"], macs(c, depth, model.config))


def synthetic(vocab, length: int, count: int, seed: int = 0) -> list[str]:
    letters = [ch for ch in vocab.chars if ch != "."]
    rng = random.Random(seed + length)
    return ["".join(rng.choice(letters) for _ in range(length)) for _ in range(count)]


def sweep_length(rec: Recorder, opts: dict, device: str, depth: int = 6) -> None:
    _, _, vocab = load_split()
    scorers = Scorers(depth, device, vocab)
    for length in opts["lengths"]:
        words = synthetic(vocab, length, max(2, opts["max_targets"] // (length + 1)))
        check_agree(scorers, words[:4], f"length {length}")
        for c in SCORERS:
            m, targets, n, ppt = grow_and_measure(scorers, c, words, opts)
            rec.add("length", length, c, m, "target", targets, n, macs(c, depth, scorers.conv.config, ppt))


def sweep_batch(rec: Recorder, opts: dict, device: str, depth: int = 6) -> None:
    train, _, vocab = load_split()
    model = make_model(depth, device, vocab, train_words=train)
    for batch in opts["batches"]:
        def run(batch=batch):
            g = torch.Generator().manual_seed(0)
            return sample_names(model, batch, vocab, generator=g, cached=True)
        chars = sum(len(w) + 1 for w in run())
        m = measure(run, device, opts["call_s"], opts["repeats"], opts["budget_s"])
        rec.add("batch", batch, "cached", m, "char", chars, batch, macs("cached", depth, model.config))


# ----------------------------------------------------------------------------------------------
# output


def write_csv(rows: list[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def plot(rows: list[dict], out: str, title: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def curves(ax, sweep, contenders, unit):
        for c in contenders:
            pts = sorted((r["x"], r["seconds_per_unit"], r["model_seconds_per_unit"]) for r in rows
                         if r["sweep"] == sweep and r["contender"] == c)
            if not pts:
                continue
            xs, ys, ms = zip(*pts)
            ax.plot(xs, [y * 1e6 for y in ys], "o-", color=COLORS[c], label=c)
            ax.plot(xs, [y * 1e6 for y in ms], "--", color=COLORS[c], alpha=0.7)
        ax.plot([], [], "--", color="gray", label="its multiply-adds / GEMM rate")
        ax.set_yscale("log")
        ax.set_ylabel(f"µs per {unit} (log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)

    title = textwrap.fill(title, 120)
    written = []
    sweeps = {r["sweep"] for r in rows}
    if "depth" in sweeps:
        fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.8))
        curves(a, "depth", SCORERS, "target")
        a.set_title("scoring the dev split")
        curves(b, "depth", SAMPLERS, "character")
        n = sorted({r["names"] for r in rows if r["sweep"] == "depth" and r["unit"] == "char"})
        b.set_title(f"sampling {', '.join(f'{k:,}' for k in n)} names at once")
        for ax in (a, b):
            depths = sorted({r["x"] for r in rows if r["sweep"] == "depth"})
            ax.set_xticks(depths, [f"{d}\n({2 ** d})" for d in depths])
            ax.set_xlabel("depth L (receptive field 2^L)")
        fig.suptitle(f"Cost per unit vs depth: solid measured, dashed multiply-add model\n{title}", fontsize=8)
        written.append(save(fig, plt, os.path.join(out, "depth.png")))
    if "length" in sweeps:
        fig, ax = plt.subplots(figsize=(8, 5.2))
        curves(ax, "length", SCORERS, "target")
        ax.set_xscale("log", base=2)
        lengths = sorted({r["x"] for r in rows if r["sweep"] == "length"})
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.set_xlabel("name length (synthetic names, one length per point), depth 6")
        fig.suptitle(f"Scoring cost per target vs name length\n{title}", fontsize=8)
        written.append(save(fig, plt, os.path.join(out, "length.png")))
    if "batch" in sweeps:
        fig, ax = plt.subplots(figsize=(8, 5.2))
        curves(ax, "batch", ["cached"], "character")
        ax.set_xscale("log")
        ax.set_xlabel("names sampled at once (batch), depth 6")
        fig.suptitle(f"Cached sampling cost per character vs batch size\n{title}", fontsize=8)
        written.append(save(fig, plt, os.path.join(out, "batch.png")))
    return written


def save(fig, plt, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------


def read_csv(path: str) -> list[dict]:
    """The rows of a scaling.csv, numbers as numbers (for --replot)."""
    def num(v):
        try:
            return int(v)
        except ValueError:
            try:
                return float(v)
            except ValueError:
                return v
    with open(path, newline="") as f:
        return [{k: num(v) for k, v in r.items()} for r in csv.DictReader(f)]


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small subset (CI's smoke run, seconds)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "scaling"), help="folder for the CSV and the PNGs")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--sweep", action="append", choices=["depth", "length", "batch"],
                    help="run only this sweep (repeatable; default: all three)")
    ap.add_argument("--depths", type=int, nargs="+", help="override the depth sweep's depths")
    ap.add_argument("--lengths", type=int, nargs="+", help="override the length sweep's name lengths")
    ap.add_argument("--batches", type=int, nargs="+", help="override the batch sweep's batch sizes")
    ap.add_argument("--repeats", type=int, help="timed repeats per point (median)")
    ap.add_argument("--call-s", type=float, help="seconds a timed call should take at least (prefixes grow to it)")
    ap.add_argument("--replot", metavar="CSV", nargs="+",
                    help="measure nothing: draw the plots into --out from these scaling.csv files")
    return ap.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.replot:
        rows = [r for path in args.replot for r in read_csv(path)]
        os.makedirs(args.out, exist_ok=True)
        info = os.path.join(os.path.dirname(os.path.abspath(args.replot[0])), "machine.txt")
        title = ("; ".join(open(info).read().splitlines()[:2]).replace("Machine: ", "") if os.path.exists(info)
                 else "machine not recorded")
        print("wrote", ", ".join(plot(rows, args.out, title)))
        return rows
    opts = dict(QUICK if args.quick else FULL)
    for k in ("depths", "lengths", "batches", "repeats", "call_s"):
        if getattr(args, k) is not None:
            opts[k] = getattr(args, k)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("scaling.py: --device cuda, but torch sees no CUDA device")
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return measure_all(args, opts)
    finally:
        torch.set_num_threads(threads_before)  # main() may run inside a test session


def measure_all(args, opts: dict) -> list[dict]:
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()
    rate = gemm_rate(args.device, opts["repeats"])
    machine = f"{machine_line()}, device {args.device}"
    gemm = f"GEMM rate: {rate / 1e9:.1f} GMAC/s (fp32 {GEMM[0]}x{GEMM[1]} @ {GEMM[1]}x{GEMM[2]}, median)"
    print(f"Machine: {machine}\n{gemm}" + ("  [--quick]" if args.quick else ""), flush=True)
    rec = Recorder(args.device, torch.get_num_threads(), rate)
    sweeps = args.sweep or ["depth", "length", "batch"]
    for s in sweeps:
        print(f"sweep {s}:", flush=True)
        {"depth": sweep_depth, "length": sweep_length, "batch": sweep_batch}[s](rec, opts, args.device)

    csv_path = os.path.join(args.out, "scaling.csv")
    write_csv(rec.rows, csv_path)
    pngs = plot(rec.rows, args.out, f"{machine}; {gemm}")
    elapsed = time.perf_counter() - t_start
    with open(os.path.join(args.out, "machine.txt"), "w") as f:
        f.write(f"Machine: {machine}\n{gemm}\nsweeps: {', '.join(sweeps)}{' (--quick)' if args.quick else ''}; "
                f"wall time {elapsed:.0f} s\n")
    print(f"wrote {csv_path}, {', '.join(pngs)} ({elapsed:.1f} s)")
    return rec.rows


if __name__ == "__main__":
    main()
