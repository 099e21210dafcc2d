"""device.py: the threads policy ("auto" from the load the kernel reports, the checks of a thread
count) and the training steps' precision. Putting the caller's count back: test_cleanup.py."""

import builtins
import contextlib
import io
import itertools
import os

import numpy as np
import pytest
import torch

import wavenet_conv.device as device_module
from wavenet_conv import ArgumentError, InputError
from wavenet_conv.models.config import recipe
from wavenet_conv.device import (auto_threads, check_threads, native_bfloat16, resolve_precision, torch_threads,
                                 usable_cpus)

from helpers import threads_set_to


def fake_proc(monkeypatch, path: str, reads):
    """``open(path)`` gives each of ``reads`` in turn, round and round (bytes, or an exception to
    raise); every other path opens as usual."""
    real_open, reads = builtins.open, itertools.cycle(reads)

    def fake_open(p, *args, **kwargs):
        if p != path:
            return real_open(p, *args, **kwargs)
        read = next(reads)
        if isinstance(read, Exception):
            raise read
        return io.BytesIO(read) if "b" in (args[0] if args else kwargs.get("mode", "r")) else io.StringIO(read.decode())

    monkeypatch.setattr(builtins, "open", fake_open)


@pytest.mark.parametrize("reads,threads", [
    ([(1, 1)], 4),  # idle: only the reader runs
    ([(3, 2)], 3),  # one other thread busy; this process's own spinning worker is not load
    ([(2, 1)], 3),  # one other thread busy
    ([(4, 1)], 1),  # three busy
    ([(9, 1)], 1),  # more busy than there are CPUs: still one
    ([(5, 1), (2, 1), (5, 1)], 3),  # the least of a few reads: a burst is not the load
    ([(None, 1)], 1),  # no /proc/loadavg: one thread
], ids=["idle", "own-worker", "one-busy", "three-busy", "overloaded", "burst", "unreadable"])
def test_auto_threads_are_the_usable_cpus_no_one_else_runs_on(reads, threads, monkeypatch):
    """(the machine's running threads, this process's own) at each read -> the threads "auto" picks
    of 4 usable CPUs."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(device_module, "usable_cpus", lambda: 4)
    machine, own = itertools.cycle(r[0] for r in reads), itertools.cycle(r[1] for r in reads)
    monkeypatch.setattr(device_module, "running_threads", lambda: next(machine))
    monkeypatch.setattr(device_module, "own_running_threads", lambda: next(own))
    assert auto_threads() == threads
    assert check_threads("auto", "f") == threads


@pytest.mark.parametrize("omp,threads", [
    ("1", 1), ("2", 2), ("8", 3), (" 2 ", 2), ("0", 3), ("-1", 3), ("two", 3), ("", 3), ("2,1", 2), ("8,2", 3),
])
def test_auto_threads_stay_within_omp_num_threads(omp, threads, monkeypatch):
    """3 free CPUs of 4; OMP_NUM_THREADS, where it is a positive integer, caps "auto"."""
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.setattr(device_module, "usable_cpus", lambda: 4)
    monkeypatch.setattr(device_module, "running_threads", lambda: 2)
    monkeypatch.setattr(device_module, "own_running_threads", lambda: 1)
    assert auto_threads() == threads


@pytest.mark.parametrize("loadavg,running", [
    ([b"0.52 0.63 0.82 3/78 17743\n"], 3),
    ([OSError(2, "No such file or directory")], None),
    ([b"0.52 0.63\n"], None),
    ([b"0.52 0.63 0.82 lots/78 1\n"], None),
], ids=["read", "no-file", "short", "garbled"])
def test_running_threads_are_read_from_loadavg(loadavg, running, monkeypatch):
    fake_proc(monkeypatch, "/proc/loadavg", loadavg)
    assert device_module.running_threads() == running


def test_own_running_threads_count_this_process_at_least():
    """On Linux the caller itself is running when it counts; elsewhere the count is 1."""
    assert 1 <= device_module.own_running_threads() <= len(os.listdir("/proc/self/task")) if os.path.isdir(
        "/proc/self/task") else device_module.own_running_threads() == 1


def test_usable_cpus_are_the_affinity_mask_or_the_cpu_count(monkeypatch):
    if hasattr(os, "sched_getaffinity"):
        assert usable_cpus() == len(os.sched_getaffinity(0))
        monkeypatch.delattr(os, "sched_getaffinity")  # as on macOS and Windows
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert usable_cpus() == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown
    assert usable_cpus() == 1


@pytest.mark.parametrize("threads", [0, -1, True, 1.5, "2", "all", [2], 4097, 10**20])
def test_check_threads_refuses_what_is_not_a_thread_count(threads):
    """An ``ArgumentError`` (an ``InputError``: the command line's exit status 2) naming the function
    and ``threads``; ``torch_threads`` refuses it before it changes anything."""
    with pytest.raises(ArgumentError) as e:
        check_threads(threads, "score_names")
    assert isinstance(e.value, InputError) and (e.value.who, e.value.argument) == ("score_names", "threads")
    assert e.value.problem.startswith("must be 'auto' or an integer from 1 to 4,096") and repr(threads) in e.value.problem
    with threads_set_to(2):
        with pytest.raises(ArgumentError):
            with torch_threads(threads, "score_names"):
                pass  # pragma: no cover
        assert torch.get_num_threads() == 2


@pytest.mark.parametrize("raises", [False, True], ids=["returns", "raises"])
def test_torch_threads_sets_the_count_then_puts_the_callers_back(raises):
    with threads_set_to(3):
        with pytest.raises(KeyError) if raises else contextlib.nullcontext():
            with torch_threads(1, "f"):
                assert torch.get_num_threads() == 1
                if raises:
                    raise KeyError("in the block")
        assert torch.get_num_threads() == 3
        with torch_threads(None, "f"):  # None: torch's setting, untouched
            assert torch.get_num_threads() == 3


@pytest.mark.parametrize("threads,count", [(None, None), (1, 1), (12, 12), (np.int64(3), 3)],
                         ids=["None", "1", "12", "numpy"])
def test_check_threads_takes_none_and_whole_numbers(threads, count):
    """None: torch's setting stays; a whole number, numpy's too (the library's numbers may be numpy's)."""
    assert check_threads(threads, "f") == count


def test_precision_auto_is_bfloat16_only_where_native(monkeypatch):
    cpu = torch.device("cpu")
    for flags, native in (("fpu avx2 avx512f avx512_bf16", True), ("fpu avx2 amx_bf16", True), ("fpu avx2 avx512f", False)):
        fake_proc(monkeypatch, "/proc/cpuinfo", [f"flags\t: {flags}\n".encode()])
        assert native_bfloat16(cpu) is native
        assert resolve_precision("auto", cpu) == (torch.bfloat16 if native else torch.float32)
        assert resolve_precision("float32", cpu) == torch.float32
        assert resolve_precision("bfloat16", cpu) == torch.bfloat16
    fake_proc(monkeypatch, "/proc/cpuinfo", [OSError(2, "No such file or directory")])
    assert native_bfloat16(cpu) is False and resolve_precision("auto", cpu) == torch.float32
    assert recipe("lecture").precision == "float32" and recipe("default").precision == "auto"
