"""Run the speed benchmarks (or read a pytest-benchmark JSON) and print the medians and the speed-ups
over each group's baseline as a markdown table, with the machine they were measured on.

    python benchmarks/ratios.py                      # runs pytest on benchmarks/bench_*.py, then prints
    python benchmarks/ratios.py --json results.json  # reads a saved --benchmark-json file
    python benchmarks/ratios.py -k scoring           # passes -k to pytest
    python benchmarks/ratios.py --save run.json      # also keeps the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PARAM_KEYS = ("contender", "sampler", "kind")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def vector_units() -> str:
    """The widest vector instructions the CPU has, as the kernels see them: "AVX-512 with BF16",
    "AVX-512", "AVX2", or torch's own word for it where /proc/cpuinfo cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    if "avx512f" in flags:
        return "AVX-512 with BF16" if "avx512_bf16" in flags or "amx_bf16" in flags else "AVX-512, no BF16"
    if "avx2" in flags:
        return "AVX2, no AVX-512"
    return f"CPU capability {torch.backends.cpu.get_cpu_capability()}"


def machine_line() -> str:
    parts = [f"CPU: {cpu_model()}, {os.cpu_count()} cores, {vector_units()}", f"torch {torch.__version__}",
             f"{torch.get_num_threads()} threads"]
    omp = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ}
    if omp:
        parts.append(" ".join(f"{k}={v}" for k, v in omp.items()))
    if torch.cuda.is_available():
        parts.append(f"GPU: {torch.cuda.get_device_name(0)}")
    return ", ".join(parts)


def run_benchmarks(extra_args: list[str], save: str | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.abspath(save) if save else os.path.join(tmp, "bench.json")
        cmd = [sys.executable, "-m", "pytest", HERE, "-q", "-p", "no:cacheprovider", f"--benchmark-json={path}",
               "--benchmark-columns=median,iqr,rounds", *extra_args]
        print("$", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, cwd=ROOT, check=True)
        with open(path) as f:
            return json.load(f)


def contender(bench: dict) -> str:
    params = bench.get("params") or {}
    return next((str(params[k]) for k in PARAM_KEYS if k in params), bench["name"])


def table(data: dict) -> str:
    groups: dict[str, list[dict]] = {}
    for b in data["benchmarks"]:
        groups.setdefault(b["group"] or b["name"], []).append(b)
    lines = ["| group | contender | median | speed-up | notes |", "|---|---|---:|---:|---|"]
    for group, benches in groups.items():
        base = next((b for b in benches if b["extra_info"].get("baseline")), benches[0])
        for b in benches:
            med = b["stats"]["median"]
            info = b["extra_info"]
            notes = []
            if "macs_per_target" in info:
                notes.append(f"{info['macs_per_target']:,} MACs/target")
            if "targets_per_s" in info:
                notes.append(f"{info['targets_per_s']:,} targets/s")
            if "chars" in info:
                notes.append(f"{info['chars']:,} characters")
            if "targets_per_s" in info and "targets_per_s" in base["extra_info"]:  # throughput
                speed = info["targets_per_s"] / base["extra_info"]["targets_per_s"]
            else:
                speed = base["stats"]["median"] / med
            lines.append(f"| {group} | {contender(b)} | {med * 1e3:,.1f} ms | {speed:.2f}x | {'; '.join(notes)} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="a pytest-benchmark JSON file to read instead of running the benchmarks")
    ap.add_argument("-k", help="pytest -k expression (which benchmarks to run)")
    ap.add_argument("--save", help="keep the pytest-benchmark JSON of the run here")
    args = ap.parse_args(argv)
    if args.json:
        with open(args.json) as f:
            data = json.load(f)
    else:
        data = run_benchmarks(["-k", args.k] if args.k else [], args.save)
    print(f"Machine: {machine_line()}" + ("" if not args.json else f" (now; the JSON says: {data['machine_info'].get('cpu', {}).get('brand_raw', '?')})"))
    print()
    print("Speed-up: the group's baseline median / this median; for training, targets/s over the baseline's")
    print("(baselines: the lecture's way, the window sampler, the tree on the same names' contexts).")
    print()
    print(table(data))


if __name__ == "__main__":
    main()
