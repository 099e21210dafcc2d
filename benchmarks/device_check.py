"""The device check (#17): one command that tells a user with a GPU what this library does there.

    PYTHONPATH=. python benchmarks/device_check.py            # on a GPU: about 5 minutes
    PYTHONPATH=. python benchmarks/device_check.py --quick    # the same, small: under a minute on a CPU (CI)

Sections, in this order; each one is wrapped (an error is a row of the results, and the check goes
on) and starts only if the time left (``--budget``) covers its estimate, else it is marked skipped:

  environment  the device, torch, CUDA, cuDNN, the CPU, the checkout's commit
  ceilings     this device's copy bandwidth, the rate of the scoring's GEMM shape in each precision,
               the cost of one launch, eager and inside a CUDA graph
  cost model   per contender: kernels, bytes and multiply-adds of one block, counted op by op; the
               time each should take from the ceilings, for the dev split and for a million names
  tests        pytest on every test parametrized over cuda and the CUDA-only ones (``-k cuda``)
  equivalence  each form and precision on the device against float64 on the CPU, bundled dev split:
               the largest logit difference, nats relative error (the worst name, the mean)
  scoring      the dev split and 1,000,000 names (the bundled names repeated, shuffled), for each
               contender: the first call (compiling, capturing) and the median of the next
  training     the default and gpu recipes on the bundled names: steps/s, val, time
  sampling     cached sampling, names/s at batch 1, 1,000 and 100,000

Writes ``results.md`` and ``results.json`` to ``--out`` (default benchmarks/results/device/) after
every section, so that a run cut short still leaves what it measured, and prints the tables at the
end. Times are medians of repeats, taken after ``torch.cuda.synchronize`` (``device_clock``);
compiling and capturing are the first call's, kept apart.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [p for p in (ROOT, HERE) if p not in sys.path]

from baselines import BUNDLED_NAMES, make_model  # noqa: E402
from ratios import cpu_model  # noqa: E402
from wavenet_conv import (TreeModel, Vocab, contexts, lecture_split, load_names,  # noqa: E402
                          recipe, sample_names, score_names, sequences, train)
from wavenet_conv.inference.bucketed import (BLOCK_POSITIONS, SCORING_PRECISIONS, BucketedScorer,  # noqa: E402
                                             block_rows, buckets, choose_scoring_path, padded_names)
from wavenet_conv.inference.runners import matmul_precision  # noqa: E402
from wavenet_conv.inference.scoring import _score_fast, encode_names  # noqa: E402
from wavenet_conv.validate import string_list  # noqa: E402
from wavenet_conv.inference.folded import fold  # noqa: E402
from wavenet_conv.device import device_clock  # noqa: E402

# An H200 to predict with off a GPU: the copy bandwidth measured on this workplace's H200s (4.3 TB/s);
# the rates of the scoring's narrow GEMM shape (M x 128) @ (128 x 256) assumed: about 60% of the
# datasheet's fp32 67 TFLOP/s, and tf32/bf16 tensor cores far under their 495/990 (K = 128 is short);
# a launch from Python about 5 us, a kernel inside a graph about 1.5 us (assumed). The GPU run measures
# all of these (section "ceilings") and predicts with its own.
REFERENCE = {"device": "assumed, except the copy bandwidth", "copy_GBps": 4300.0,
             "gemm_TFLOPs": {"float32": 40.0, "tf32": 200.0, "bfloat16": 300.0},
             "launch_eager_us": 5.0, "launch_graph_us": 1.5}
MILLION = 1_000_000


# ----------------------------------------------------------------------------------------------
# the frame: sections, time, results


class Check:
    """The run: its options, the device, the deadline, and every section's result."""

    def __init__(self, args):
        self.args, self.quick = args, args.quick
        self.device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
        self.t0 = time.perf_counter()
        self.sections = []
        self.log = []  # tracebacks of the failures
        self.data = {}  # what sections hand on to later ones

    def left(self) -> float:
        return self.args.budget - (time.perf_counter() - self.t0)

    def section(self, name: str, fn, needs: float) -> None:
        """Run section ``fn(check) -> {"rows": [...], "notes": [...]}`` if ``needs`` seconds are left."""
        t = time.perf_counter()
        result = {"rows": [], "notes": []}
        if self.left() < needs:
            status = f"skipped: {self.left():.0f} s left of the budget, the section needs about {needs:.0f} s"
        else:
            try:
                result = fn(self)
                status = "ok"
            except Exception as e:  # a failure is a row, not the end of the check
                status = f"failed: {type(e).__name__}: {str(e)[:300]}"
                self.log.append(f"== {name}\n{traceback.format_exc()}")
        self.sections.append({"name": name, "status": status, "seconds": round(time.perf_counter() - t, 1), **result})
        print(f"[{time.perf_counter() - self.t0:6.1f} s] {name}: {status}", flush=True)
        write_results(self)

    def guarded(self, rows: list, label: dict, fn, needs: float) -> None:
        """One row of a section: ``label`` updated with ``fn()``'s dict, or the failure or skip."""
        if self.left() < needs:
            rows.append({**label, "status": f"skipped ({self.left():.0f} s left)"})
            return
        try:
            rows.append({**label, **fn(), "status": "ok"})
        except Exception as e:
            rows.append({**label, "status": f"failed: {type(e).__name__}: {str(e)[:200]}"})
            self.log.append(f"== {label}\n{traceback.format_exc()}")


def timed(fn, device, repeats: int):
    """(the first call's seconds, the median of ``repeats`` more, the first call's result), each
    call timed from and to a finished device."""
    t = device_clock(device)
    result = fn()
    first = device_clock(device) - t
    times = []
    for _ in range(repeats):
        t = device_clock(device)
        fn()
        times.append(device_clock(device) - t)
    return first, statistics.median(times) if times else first, result


# ----------------------------------------------------------------------------------------------
# environment and ceilings


def environment(check: Check) -> dict:
    d = check.device
    info = {"device": str(d), "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "cpu": f"{cpu_model()}, {os.cpu_count()} cores", "torch_threads": torch.get_num_threads(),
            "commit": git_commit(), "quick": check.quick}
    if d.type == "cuda":
        p = torch.cuda.get_device_properties(d)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
                    memory_GiB=round(p.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version(),
                    bf16=torch.cuda.is_bf16_supported())
    return {"rows": [{"what": k, "value": str(v)} for k, v in info.items()], "notes": []}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def event_time(fn, device, repeats: int = 5) -> float:
    """Median seconds of ``fn()`` over ``repeats``, after one warm-up: CUDA events on a GPU."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def ceilings(check: Check) -> dict:
    """The rates the cost model predicts with, measured on this device."""
    d, small = check.device, check.quick or check.device.type == "cpu"
    n = (16 if small else 256) << 20  # float32 elements: 64 MB or 1 GB a copy
    a, b = torch.randn(n, device=d), torch.empty(n, device=d)
    copy = 2 * a.numel() * 4 / event_time(lambda: b.copy_(a), d)  # bytes read + written a second
    rows = [{"what": "copy bandwidth (read + write)", "value": f"{copy / 1e9:,.0f} GB/s"}]
    M = (1 << 13) if small else (1 << 17)  # the scoring's GEMM: (positions, 128) @ (128, 256)
    gemm = {}
    for precision in SCORING_PRECISIONS:
        dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        x, w = torch.randn(M, 128, device=d, dtype=dtype), torch.randn(128, 256, device=d, dtype=dtype)
        with matmul_precision(precision):
            gemm[precision] = 2 * M * 128 * 256 / event_time(lambda: x @ w, d)
        rows.append({"what": f"GEMM ({M}x128)@(128x256), {precision}", "value": f"{gemm[precision] / 1e12:,.2f} TFLOP/s"})
    launch = launch_costs(d, 200 if small else 2000)
    rows += [{"what": "one launch, eager (tiny kernel)", "value": f"{launch['eager'] * 1e6:.2f} us"}]
    if "graph" in launch:
        rows += [{"what": "one kernel inside a CUDA graph", "value": f"{launch['graph'] * 1e6:.2f} us"}]
    check.data["ceilings"] = {"device": str(d), "copy_GBps": copy / 1e9, "gemm_TFLOPs": {k: v / 1e12 for k, v in gemm.items()},
                              "launch_eager_us": launch["eager"] * 1e6, "launch_graph_us": launch.get("graph", 0.0) * 1e6}
    return {"rows": rows, "notes": []}


def launch_costs(device, n: int) -> dict:
    """Seconds per tiny kernel: ``n`` adds launched from Python, and replayed as one CUDA graph."""
    x = torch.zeros(8, device=device)

    def adds():
        for _ in range(n):
            x.add_(1)

    out = {"eager": event_time(adds, device, 3) / n}
    if device.type == "cuda":
        graph = torch.cuda.CUDAGraph()
        adds()  # warm
        with torch.cuda.graph(graph):
            adds()
        out["graph"] = event_time(graph.replay, device, 3) / n
    return out


# ----------------------------------------------------------------------------------------------
# the cost model: one block counted op by op


GEMMS = {"mm", "addmm", "bmm", "linear", "convolution", "conv1d"}
NOT_KERNELS = {"new_empty", "empty", "promote_types", "detach", "_to_copy_meta"}  # allocations, metadata
KERNELS = {"cross_entropy_loss": 2}  # ops seen whole that run as several kernels (log_softmax, nll_loss)


class OpTally(TorchDispatchMode):
    """Counts the kernels (ops that are not views, allocations or copies of a view onto itself), the
    bytes each moves (its inputs read, an ``out=`` not; its outputs written) and the multiply-adds of
    the GEMMs and convolutions, of what runs under this mode. Bytes are an upper bound on device
    memory traffic: a small input read by every position (a table, a weight) stays in cache."""

    def __init__(self):
        super().__init__()
        self.ops = []  # (name, bytes, multiply-adds), one per kernel

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.__name__.split(".")[0]
        if func.is_view or name in NOT_KERNELS or (name == "copy_" and same_view(args[0], args[1])):
            return out
        reads = [t for t in torch.utils._pytree.tree_leaves((args, {k: v for k, v in kwargs.items() if k != "out"}))
                 if isinstance(t, torch.Tensor)]
        writes = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        moved = sum(t.numel() * t.element_size() for t in reads + writes)
        n = KERNELS.get(name, 1)
        self.ops += [(name, moved / n, gemm_macs(name, args, out) / n)] * n
        return out


def same_view(a, b) -> bool:
    return a.data_ptr() == b.data_ptr() and a.stride() == b.stride() and a.shape == b.shape and a.dtype == b.dtype


def gemm_macs(name: str, args, out) -> int:
    """Multiply-adds of a GEMM or convolution from its shapes: each output element takes one dot
    product, over C_in * kernel (convolutions) or the inner dimension."""
    if name not in GEMMS:
        return 0
    if name in ("convolution", "conv1d", "linear"):  # weight (C_out, C_in[, kernel]) is args[1]
        return out.numel() * args[1][0].numel()
    a = args[-2] if name == "addmm" else args[0]
    return out.numel() * a.shape[-1]


def tally(fn) -> list:
    with torch.inference_mode(), OpTally() as mode:
        fn()
    return mode.ops


def predict(ops: list, rates: dict, precision: str, graphed: bool) -> dict:
    """Seconds of a counted call on a device of ``rates``: each kernel at the slower of its bytes and
    its multiply-adds, and (not overlapped, the worst case) its launch."""
    bw, gemm = rates["copy_GBps"] * 1e9, rates["gemm_TFLOPs"][precision] * 1e12
    work = sum(max(b / bw, 2 * m / gemm) for _, b, m in ops)
    launch = len(ops) * (rates["launch_graph_us"] if graphed else rates["launch_eager_us"]) * 1e-6
    return {"work_s": work, "launch_s": launch, "total_s": work + launch}


def cost_model(check: Check) -> dict:
    """Count one block of each block runner and one fast-path group on real names; predict each contender's
    time for the dev split and the large list from this device's ceilings, and off a GPU also from an
    H200's, with the GPU's op list counted on the meta device (shapes, no data)."""
    _, dev, vocab, model = check.data["split"]
    cpu_fast = None
    where = [("this device", check.data["ceilings"], check.device)]
    if check.device.type != "cuda":
        where.append(("H200 (reference)", REFERENCE, torch.device("meta")))
    rows = []
    notes = [f"{name}: {describe_rates(rates)}" for name, rates, _ in where]
    for name, rates, device in where:
        costs = contender_costs(model, dev, vocab, device)
        cpu_fast = cpu_fast or next((c for c in costs if c[0] == "fast"), None)
        costs = costs if any(c[0] == "fast" for c in costs) else costs + [cpu_fast]
        for label, names in lists(check):
            shape = list_shape(names)
            if name == "this device":
                notes.append(f"{label}: {len(names):,} names, {shape['targets'] / len(names):.3f} targets a name; bucketed: "
                             f"{shape['positions'] / shape['targets']:.3f} positions a target (padding), {shape['blocks']} "
                             f"blocks; fast path: {shape['groups']} length groups and chunks")
            rows += [predicted_row(name, label, names, shape, cost, rates) for cost in costs]
    check.data["predicted"] = {(r["list"], r["contender"]): r["predicted ms"] for r in rows if r["for"] == "this device"}
    notes.append("launches are counted as if not overlapped with the work (the worst case), a graph's kernels at the "
                 "graph's cost each; compiled contenders are not counted (inductor fuses); off a GPU the fast path's "
                 "ops are the CPU's (4 elementwise kernels a group more than a GPU's)")
    return {"rows": rows, "notes": notes}


def predicted_row(where: str, label: str, names, shape: dict, cost, rates: dict) -> dict:
    """One contender's counts scaled from its counted block to the list, and its predicted time."""
    name, ops_per, per_position, graphed, precision = cost
    fast = name == "fast"
    scale, count = (shape["targets"], shape["groups"]) if fast else (shape["positions"], shape["blocks"])
    ops = [(o, b / per_position * scale / count, m / per_position * scale / count) for o, b, m in ops_per] * count
    p = predict(ops, rates, precision, graphed)
    return {"for": where, "list": label, "contender": name, "kernels": len(ops),
            "bytes/position": round(sum(b for _, b, _ in ops_per) / per_position),
            "MACs/position": round(sum(m for _, _, m in ops_per) / per_position),
            "predicted ms": round(1e3 * p["total_s"], 3), "launches ms": round(1e3 * p["launch_s"], 3),
            "names/s": f"{len(names) / p['total_s']:,.0f}"}


def describe_rates(r: dict) -> str:
    gemm = ", ".join(f"{k} {v:,.2f}" for k, v in r["gemm_TFLOPs"].items())
    return (f"copy {r['copy_GBps']:,.0f} GB/s; the scoring's GEMM shape {gemm} TFLOP/s; a launch {r['launch_eager_us']:.1f} us "
            f"eager, {r['launch_graph_us']:.1f} us in a graph ({r['device']})")


def list_shape(names) -> dict:
    """Targets; the bucketed path's positions and blocks; the fast path's length groups and chunks."""
    lengths = torch.tensor([len(w) for w in names])
    groups = buckets(lengths.numpy())
    return {"targets": int(lengths.sum()) + len(names),
            "positions": sum(T * sum(block_rows(len(i), T)) for T, i in groups),
            "blocks": sum(len(block_rows(len(i), T)) for T, i in groups),
            "groups": sum(-(-c * (n + 1) // 8192) for n, c in enumerate(torch.bincount(lengths).tolist()) if c)}


def contender_costs(model, dev, vocab, device):
    """[(contender, the ops of one block, its positions, graphed, precision)]: the bucketed runners on a
    (2048, 8) block of real names, and (not on meta: it reads lengths) the fast path on a group of
    1,000 names of 6 characters, counted on ``device``."""
    words = [w for w in dev if len(w) <= 7]
    tokens, lengths, _ = encode_names(words, vocab)
    starts = torch.cumsum(lengths, 0) - lengths
    B = BLOCK_POSITIONS[-1] // 8 // 8  # a block of 2,048 rows: large enough that the ops scale
    x, y = (t.to(device) for t in padded_names(tokens, starts, lengths, 8, B))
    model = model if device.type == next(model.parameters()).device.type else copy.deepcopy(model).to(device)
    out, gpu = [], device.type != "cpu"
    for runner, precision, graphed in (("folded", "float32", gpu), ("folded", "bfloat16", gpu), ("forward", "float32", False)):
        scorer = BucketedScorer(model, runner, precision)
        ops = tally(lambda: scorer.runner.losses(x, y, scorer.work))
        out.append((f"bucketed {runner} {precision}" + (" graphs" if graphed else " eager"), ops, B * 8, graphed, precision))
    if device.type != "meta":
        six = [w for w in dev if len(w) == 6][:1000]
        t6, l6, _ = encode_names(six, vocab)
        folded = fold(model)
        out.append(("fast", tally(lambda: _score_fast(folded, t6, l6, 8192)), int(l6.sum()) + len(six), False, "float32"))
    return out


# ----------------------------------------------------------------------------------------------
# tests, equivalence


def cuda_tests(check: Check) -> dict:
    """pytest -k cuda: every test parametrized over cuda, and the CUDA-only ones (their names say cuda).
    Without CUDA (``--quick`` on a CPU) only the bucketed path's, which then skip: the plumbing."""
    where = ["tests"] if check.device.type == "cuda" else ["tests/test_bucketed.py"]
    with tempfile.TemporaryDirectory() as tmp:
        xml = os.path.join(tmp, "junit.xml")
        cmd = [sys.executable, "-m", "pytest", *where, "-k", "cuda", "-q", "-p", "no:cacheprovider",
               "--benchmark-disable", f"--junitxml={xml}"]
        env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        limit = max(30.0, min(150.0, check.left() - 150))
        try:
            p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=limit)
            code, out = p.returncode, p.stdout or p.stderr
        except subprocess.TimeoutExpired as e:  # what it printed so far, and the rest of the check goes on
            code, out = f"timed out after {limit:.0f} s", (e.stdout or b"").decode(errors="replace")
        rows = junit_rows(xml) if os.path.exists(xml) else []
    counts = {s: sum(r["outcome"] == s for r in rows) for s in ("passed", "failed", "skipped")}
    summary = {"what": "pytest " + " ".join(where) + " -k cuda", "exit": code, **counts}
    bad = [r for r in rows if r["outcome"] == "failed"]
    return {"rows": [summary] + bad, "notes": [line for line in out.strip().splitlines()[-3:]]}


def junit_rows(path: str) -> list:
    rows = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        message = next((c.get("message", "")[:200] for c in case if c.tag in ("failure", "error")), "")
        rows.append({"what": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome, "message": message})
    return rows


def equivalence(check: Check) -> dict:
    """Each block runner and precision on the device against the float64 tree on the CPU, bundled dev split."""
    _, dev, vocab, model = check.data["split"]
    dev = dev[:800] if check.quick else dev
    tree64 = TreeModel.from_model(model).cpu().double().eval()
    X, _ = contexts(dev, vocab, tree64.block_size)
    with torch.no_grad():
        ref_logits = tree64(X)  # (targets, V)
    ref = score_names(tree64, dev, vocab)
    b = sequences(dev, vocab).to(check.device)
    tokens, lengths, _ = encode_names(dev, vocab)
    rows = []
    for runner in ("folded", "forward"):
        for precision in SCORING_PRECISIONS:
            for graphs in ((False, True) if runner == "folded" and check.device.type == "cuda" else (False,)):
                label = {"runner": runner, "precision": precision, "graphs": graphs}
                check.guarded(rows, label, lambda: compare(model, runner, precision, graphs, b, ref_logits, ref,
                                                           tokens, lengths), needs=10)
    return {"rows": rows, "notes": [f"reference: the tree in float64 on the CPU; {len(dev):,} names, "
                                    f"{int(ref.n_targets.sum()):,} targets; the model: the lecture's widths, random "
                                    "weights and BatchNorm statistics"]}


def compare(model, runner, precision, graphs, b, ref_logits, ref, tokens, lengths) -> dict:
    scorer = BucketedScorer(model, runner, precision, graphs=graphs)
    with torch.inference_mode(), matmul_precision(precision):
        logits = scorer.runner.logits(b.x)  # (B, T, V)
    diff = (logits[b.mask].double().cpu() - ref_logits).abs().max().item()
    nll = scorer(tokens, lengths)[0].cpu()
    rel = ((nll - ref.nll).abs() / ref.nll).max().item()
    mean = abs(nll.sum().item() / ref.n_targets.sum().item() - ref.mean_loss) / ref.mean_loss
    return {"largest logit diff": f"{diff:.2e}", "nats rel, worst name": f"{rel:.2e}", "nats rel, mean": f"{mean:.2e}"}


# ----------------------------------------------------------------------------------------------
# scoring, training, sampling


def million_names(check: Check) -> list:
    """1,000,000 names (4,000 with --quick): the bundled names repeated and shuffled, seed 0."""
    if "million" not in check.data:
        words = load_names(BUNDLED_NAMES)
        n = 4_000 if check.quick else MILLION
        rng = random.Random(0)
        check.data["million"] = [words[rng.randrange(len(words))] for _ in range(n)]
    return check.data["million"]


def lists(check: Check) -> list:
    """[(label, names)]: the dev split (its first 1,000 with --quick) and the large list."""
    dev = check.data["split"][1][: 1000 if check.quick else None]
    million = million_names(check)
    return [("dev split" if not check.quick else "dev split, 1,000", dev), (f"{len(million):,} names", million)]


def scoring_contenders(check: Check, model, vocab):
    """[(name, what it is, names -> nats on the host, compiles)]: the chosen path and the graphs first,
    the compiled ones last (each block shape compiles once: tens of seconds)."""
    d = check.device
    path = choose_scoring_path(d)
    out = [("auto", f"score_names(): choose_scoring_path -> {path.why}", lambda names: score_names(model, names, vocab).nll, False),
           ("fast", "score_names(method='fast'): length groups, folded, eager",
            lambda names: score_names(model, names, vocab, method="fast").nll, False),
           ("forward", "score_names(method='forward'): ConvModel.forward, batches of 8,192 names padded, eager",
            lambda names: score_names(model, names, vocab, method="forward").nll, False)]
    plans = [("folded", p, True, False) for p in SCORING_PRECISIONS] if d.type == "cuda" else []
    plans += [("folded", "float32", False, False), ("forward", "float32", False, False)]
    if d.type == "cuda" or not check.quick:  # compiling takes longer than the smoke test's minute on a CPU
        plans += [("folded", "float32", False, True), ("forward", "float32", False, True)]
    for runner, precision, graphs, compiled in plans:  # compiled: one block size a width, two compilations in all
        sizes = BLOCK_POSITIONS[-1:] if compiled else BLOCK_POSITIONS
        scorer = BucketedScorer(model, runner, precision, graphs=graphs, compile=compiled, block_positions=sizes)
        how = "graphs" if graphs else "compiled" if compiled else "eager"
        out.append((f"bucketed {runner} {precision} {how}", f"BucketedScorer({runner!r}, {precision!r}, {how})",
                    lambda names, s=scorer: s(*encode_names(names, vocab)[:2])[0].cpu(), compiled))
    return out


def scoring(check: Check) -> dict:
    _, _, vocab, model = check.data["split"]
    rows = []
    contenders = scoring_contenders(check, model, vocab)
    for (list_name, names), repeats in zip(lists(check), (1, 1) if check.quick else (20, 3)):
        fast = score_names(model, names, vocab, method="fast").nll
        for name, what, fn, compiles in contenders:
            def measure(fn=fn, names=names, name=name, list_name=list_name):
                first, median, nll = timed(lambda: fn(names), check.device, repeats)
                return {"first call s": round(first, 4), "median ms": round(1e3 * median, 3),
                        "names/s": f"{len(names) / median:,.0f}", "max |nats - fast|": f"{(nll - fast).abs().max().item():.1e}",
                        "predicted ms": check.data.get("predicted", {}).get((list_name, name))}
            big = len(names) > 10_000
            check.guarded(rows, {"list": list_name, "contender": name}, measure, needs=(60 if compiles else 20) if big else 5)
        rows.append({"list": list_name, "contender": "(host alone: string_list + encode_names)", **host_encoding(names, vocab)})
    chosen = choose_scoring_path(check.device)
    timed_rows = [r for r in rows if r.get("status") == "ok" and "first call s" in r and r["contender"] != "auto"]
    notes = [f"choose_scoring_path({check.device.type!r}) -> {chosen.method}, {chosen.runner}, graphs={chosen.graphs}: "
             f"{chosen.why}", "names/s: end to end, Python strings in, nats on the host (checks, encoding, transfers "
             "included); first call: with folding, capturing or compiling",
             "max |nats - fast|: against the fast path on this device, float32 (bfloat16 rows differ by its rounding)"]
    for list_name, _ in lists(check):
        mine = [r for r in timed_rows if r["list"] == list_name]
        if mine:
            best = min(mine, key=lambda r: r["median ms"])
            notes.append(f"fastest on the {list_name} (measured): {best['contender']}, {best['median ms']} ms")
    return {"rows": rows, "notes": notes}


def host_encoding(names, vocab) -> dict:
    """The host's share of score_names before any device work: the checks and the encoding."""
    _, median, _ = timed(lambda: encode_names(string_list("device_check", "names", names), vocab), torch.device("cpu"), 3)
    return {"median ms": round(1e3 * median, 3), "names/s": f"{len(names) / median:,.0f}", "status": "ok"}


def training(check: Check) -> dict:
    """The default recipe and the gpu recipe on the bundled names (--quick: 30 steps each)."""
    rows = []
    for name in ("default", "gpu"):
        def run(name=name):
            steps = {"steps": 30, "warmup": 5} if check.quick else {}
            tc = recipe(name, device=str(check.device), checkpoint_every=0, **steps)
            t = device_clock(check.device)
            result = train(None, tc, data=BUNDLED_NAMES, out=None, log=None, progress=False)
            wall = device_clock(check.device) - t
            m = result.metrics
            return {"steps": m["steps"], "batch": tc.batch_size, "precision": tc.precision,
                    "steps/s": round(m["steps"] / max(m["train_seconds"], 1e-9), 1), "ms/step": m["ms_per_step"],
                    "training s": m["train_seconds"], "whole train() s": round(wall, 2), "val": round(m["val_loss"], 4),
                    "test": round(m["test_loss"], 4)}
        check.guarded(rows, {"recipe": name}, run, needs=15 if check.quick else 40)
    return {"rows": rows, "notes": ["bundled names; val = the lecture's dev split of them; "
                                    "whole train(): data, model, steps, the three splits' losses"]}


def sampling(check: Check) -> dict:
    _, _, vocab, model = check.data["split"]
    rows = []
    for n in ((1, 100, 1000) if check.quick else (1, 1000, 100_000)):
        def run(n=n):
            g = torch.Generator(device=check.device).manual_seed(0)
            first, median, _ = timed(lambda: sample_names(model, n, vocab, generator=g), check.device, 3)
            return {"first call s": round(first, 4), "median ms": round(1e3 * median, 3), "names/s": f"{n / median:,.0f}"}
        check.guarded(rows, {"batch": n}, run, needs=10)
    return {"rows": rows, "notes": ["cached sampling (sample_names), the lecture's widths, random weights; "
                                    "one batch of n names, each up to 64 characters"]}


def split_and_model(check: Check) -> dict:
    """The bundled names' split and the model every section scores with."""
    words = load_names(BUNDLED_NAMES)
    train_words, dev, _ = lecture_split(words)
    vocab = Vocab.from_words(words)
    model = make_model(3, str(check.device), vocab, train_words)  # lecture's widths, random weights and statistics
    check.data["split"] = (train_words, dev, vocab, model)
    return {"rows": [{"what": "model", "value": f"{model.num_params():,} parameters, {model.config}"},
                     {"what": "dev split", "value": f"{len(dev):,} names"}], "notes": []}


# ----------------------------------------------------------------------------------------------
# results


def write_results(check: Check) -> None:
    os.makedirs(check.args.out, exist_ok=True)
    doc = {"budget_s": check.args.budget, "elapsed_s": round(time.perf_counter() - check.t0, 1),
           "sections": check.sections, "failures": check.log}
    with open(os.path.join(check.args.out, "results.json"), "w") as f:
        json.dump(doc, f, indent=1, default=str)
    with open(os.path.join(check.args.out, "results.md"), "w") as f:
        f.write(markdown(check))


def markdown(check: Check) -> str:
    env = next((s for s in check.sections if s["name"] == "environment"), {"rows": []})
    info = {r["what"]: r["value"] for r in env["rows"]}
    head = (f"# Device check\n\n`PYTHONPATH=. python benchmarks/device_check.py{' --quick' if check.quick else ''}` "
            f"on {info.get('gpu', info.get('device', '?'))}: torch {info.get('torch', '?')}, CUDA {info.get('cuda', '-')}, "
            f"commit {info.get('commit', '?')}; {time.perf_counter() - check.t0:.0f} s of a {check.args.budget:.0f} s budget.\n")
    parts = [head]
    for s in check.sections:
        parts.append(f"\n## {s['name']} ({s['status']}, {s['seconds']} s)\n")
        parts += [f"- {n}\n" for n in s["notes"]]
        parts.append(table(s["rows"]))
    return "".join(parts)


def table(rows: list) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n" + "\n".join(lines) + "\n"


SECTIONS = [  # (name, function, seconds it needs at most, on a GPU)
    ("environment", environment, 1),
    ("model and data", split_and_model, 5),
    ("ceilings", ceilings, 10),
    ("cost model", cost_model, 15),
    ("equivalence", equivalence, 30),
    ("tests", cuda_tests, 60),
    ("scoring", scoring, 90),
    ("training", training, 40),
    ("sampling", sampling, 20),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(HERE, "results", "device"), help="folder for results.md and results.json")
    p.add_argument("--quick", action="store_true", help="everything small: the smoke test (under a minute on a CPU)")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole check (330; --quick 50)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available)")
    args = p.parse_args(argv)
    args.budget = args.budget or (50.0 if args.quick else 330.0)
    torch.manual_seed(0)
    check = Check(args)
    for name, fn, needs in SECTIONS:
        check.section(name, fn, needs / 4 if args.quick else needs)
    print(markdown(check))
    print(f"written: {os.path.join(args.out, 'results.md')}, results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
