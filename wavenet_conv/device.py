"""Where and how the work runs: the device, the matmul precision, the clock, and torch's CPU threads.

Threads. torch's default is one thread per core, which on a small CPU shared with other work is many
times slower for this model's small GEMMs (OpenMP's threads spin waiting for cores that are busy).
Threads are set once, where a process starts its work: the command line (its threads option, for the
whole command), a Ray worker (the CPUs Ray allotted it), ``train``, and a ``Scorer`` that holds a
count of its own; every other function runs on the threads its caller set. A count is "auto" (the
CPUs that are free right now, at least one and at most ``OMP_NUM_THREADS`` where that is set: see
``auto_threads``), an integer, or None: torch's setting as it is. The caller's setting is restored
when the work returns (``torch_threads``). The command line's scoring and sampling default to
"auto"; training defaults to 1: a training step gains little from a
second thread on an idle CPU, and its weights depend on the thread count in their last bits, so a
fixed count keeps resume exact whatever else the machine runs. Scores depend on it too, in float32's
last bit (a GEMM's kernel differs with the thread count: about one name in 5,000 moves by 2e-7 nats):
at one thread count they are the same bits run after run; pass an integer where that matters.
benchmarks/PERFORMANCE.md ("Threads") has the measurements behind the policy.
"""

from __future__ import annotations

import operator
import os
import platform
import time
from contextlib import contextmanager

import torch

from .errors import ArgumentError, ConfigError

DEVICES = ("auto", "cpu", "cuda")
MAX_THREADS = 4096  # far more than any CPU here has: a larger count is a typo (torch overflows past 2**63)
TRAINING_PRECISIONS = ("auto", "float32", "bfloat16")  # TrainConfig.precision (scoring's: bucketed.SCORING_PRECISIONS)


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> cuda when available, else cpu; any other name as ``torch.device`` takes it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r}: not a device name (expected one of {DEVICES})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r}: CUDA is not available here")
    return dev


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 natively: a CUDA GPU that supports it, or a CPU with the
    AVX-512 BF16 or AMX instructions (Linux's /proc/cpuinfo; elsewhere, False). Elsewhere bfloat16
    matmuls are emulated, slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of the training steps' matmuls (autocast; float32: none)."""
    if precision == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    return getattr(torch, precision)


def device_clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


# ----------------------------------------------------------------------------- threads


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def running_threads() -> int | None:
    """Threads running or ready to run on the whole machine now (Linux's /proc/loadavg), None where it
    cannot be read."""
    try:
        with open("/proc/loadavg", "rb") as f:
            return int(f.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return None


def own_running_threads() -> int:
    """This process's threads running or ready to run now (/proc/self/task), the caller among them:
    torch's own worker threads spin for a while after a parallel op, and are not someone else's load."""
    running = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # the thread has ended
            continue
        running += stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"R"
    return max(running, 1)


def busy_cpus(reads: int = 3) -> int | None:
    """Other processes' threads running right now: the machine's, less this process's own, the least of
    a few reads (a burst is not the load); None where the machine's count cannot be read."""
    counts = []
    for _ in range(reads):
        machine = running_threads()
        if machine is None:
            return None
        counts.append(machine - own_running_threads())
    return max(0, min(counts))


def thread_cap() -> int | None:
    """``OMP_NUM_THREADS`` as a positive integer (the user's own limit, which torch's default follows
    too; of a nested list "4,2", the first), None where it is unset or not one."""
    try:
        cap = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
    except ValueError:
        return None
    return cap if cap >= 1 else None


def auto_threads() -> int:
    """The threads for "auto": the usable CPUs that no other process is running on now, at least 1 (1
    where the load cannot be read), at most ``OMP_NUM_THREADS`` where that is set."""
    busy = busy_cpus()
    free = 1 if busy is None else max(1, usable_cpus() - busy)
    cap = thread_cap()
    return free if cap is None else min(free, cap)


def check_threads(threads, who: str) -> int | None:
    """``threads`` ("auto", a positive integer, or None) as the count to use, or None: leave torch's."""
    if threads is None:
        return None
    if threads == "auto":
        return auto_threads()
    try:
        n = operator.index(threads)  # numpy's integers too
    except TypeError:
        n = None
    if n is None or isinstance(threads, bool) or not 1 <= n <= MAX_THREADS:
        raise ArgumentError(who, "threads", f"must be 'auto' or an integer from 1 to {MAX_THREADS:,} (None: torch's "
                            f"setting), got {threads!r}")
    return n


@contextmanager
def torch_threads(threads, who: str):
    """Run the block with ``threads`` torch CPU threads ("auto", N or None: see the module's docstring),
    then put the caller's setting back."""
    n = check_threads(threads, who)
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def cpu_name() -> str:
    """This CPU's model name and widest vector unit, from /proc/cpuinfo (e.g. "Intel(R) Xeon(R)
    Processor, AVX-512"): float32 results can differ in their last bits from one CPU to another (a
    BLAS picks its kernels by the CPU), so a record of exact numbers names the CPU that made them."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    units = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name or platform.machine()}, {units}"
