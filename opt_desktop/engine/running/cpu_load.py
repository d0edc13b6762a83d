"""How many of this process's cores other programs keep busy: the load signal the thread tuner reads.

From the system's CPU time counters (psutil; /proc/stat on Linux), over the cores this process may
run on, minus this process's own CPU time. Time of processes at a lowered priority (a positive nice
value: indexers, background builds, a training job at nice 19) is left out: they give way to us.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

MIN_WINDOW_S = 0.2  # a shorter window is a handful of 10 ms clock ticks: the last full window stands


def usable_cores() -> list[int] | None:
    """The CPUs this process may run on, or None where the system does not say."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def core_count() -> int:
    """How many CPUs this process may run on."""
    cores = usable_cores()
    return len(cores) if cores else (os.cpu_count() or 1)


def _busy(t) -> float:
    # Linux's user time already includes guest time; iowait is idle. Windows adds interrupt and dpc.
    return sum(getattr(t, name, 0.0) for name in ("user", "system", "irq", "softirq", "steal", "interrupt", "dpc"))


@dataclass(frozen=True)
class _Reading:
    wall: float
    busy: float  # CPU seconds of the usable cores spent at normal or higher priority, all processes
    own: float  # this process's CPU seconds counted in `busy`


class CpuLoad:
    """`others()`: cores busy with other programs, averaged since the previous reading at least
    MIN_WINDOW_S ago (the last such average when called sooner)."""

    def __init__(self) -> None:
        self.cores = usable_cores()
        per_cpu = psutil.cpu_times(percpu=True)
        # Per-CPU counters are indexed by CPU number only when every CPU is listed.
        self._per_cpu = self.cores is not None and len(per_cpu) == (os.cpu_count() or 0)
        total = len(per_cpu) or os.cpu_count() or 1
        self.n_cores = len(self.cores) if self.cores else total
        self._share = self.n_cores / total  # for the all-CPU counters: the part that falls on our cores
        self._last = self._read()
        self._value = 0.0

    def _read(self) -> _Reading:
        if self._per_cpu:
            times = psutil.cpu_times(percpu=True)
            busy = sum(_busy(times[i]) for i in self.cores if i < len(times))
        else:
            busy = _busy(psutil.cpu_times()) * self._share
        try:
            niced = os.getpriority(os.PRIO_PROCESS, 0) > 0
        except (AttributeError, OSError):
            niced = False
        # A niced process's time is counted as "nice", outside `busy`: then none of it is to subtract.
        own = 0.0 if niced else time.process_time()
        return _Reading(time.monotonic(), busy, own)

    def others(self) -> float:
        now = self._read()
        window = now.wall - self._last.wall
        if window >= MIN_WINDOW_S:
            used = (now.busy - self._last.busy) - (now.own - self._last.own)
            self._value = min(float(self.n_cores), max(0.0, used / window))
            self._last = now
        return self._value


class NoReading:
    """Where the counters cannot be read: every core counts as free (the tuner's timings still steer)."""

    def __init__(self) -> None:
        self.n_cores = core_count()

    def others(self) -> float:
        return 0.0
