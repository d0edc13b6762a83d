"""How many threads torch computes with on the engine's worker, chosen for the machine as it is now.

torch's intra-op threads wait for each other at the end of every operation, so one of them sharing
its core with another program (a browser tab, an indexer, a compiler) holds every step back: on 2
cores with one busy process, 2 threads decode 5-10x slower than 1. "auto" therefore starts from the
cores other programs leave free (cpu_load.py), and while a generation runs it keeps timing decode
steps: now and then it tries one thread fewer or (when the load leaves room) one more for a few
steps and keeps whichever is faster, and it gives way at once when other programs start.

torch keeps its thread count per thread (OpenMP's), so everything here runs on the worker thread
that computes; `set` may be called from any thread and is applied there. No torch at import.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import threading
import time
from collections import Counter, deque
from typing import Callable

from ..messages.threads import AUTO, ThreadSetting, ThreadsState, parse_threads

LOAD_EVERY_S = 0.5  # how often a generation re-reads the load
FIRST_TRY = 24  # decode steps at a count before trying a neighbour; doubled after each try that lost
LAST_TRY = 256
TRY_STEPS = 2  # steps timed at the neighbour, unless the first is clearly slower
MARGIN = 0.03  # a neighbour must be this much faster to be kept: noise must not make it wander
GIVE_UP = 1.15  # a trial step this many times the current count's median ends the trial at once
ROOM = 0.25  # one thread more is tried only if the cores left free exceed the threads in use by this much


log = logging.getLogger(__name__)
_local = threading.local()


def worker_tuner() -> "ThreadTuner":
    """The tuner bound to the calling thread (an engine worker): torch's thread count is per thread."""
    tuner = getattr(_local, "tuner", None)
    if tuner is None:
        raise RuntimeError("the thread count is set on an engine's worker thread")
    return tuner


BLOCK_TIME_MS = "3"  # LLVM's and Intel's OpenMP: how long a waiting thread spins (their default: 200 ms)


def prepare_environment(environ=os.environ) -> None:
    """Call before torch is imported (the engine process, the CLI): how OpenMP's threads wait.

    GNU OpenMP (torch's Linux wheels) is left at its default: a waiting thread spins ~3 ms, which
    bridges the gaps between one decode step's operations. Spinning only costs other programs when
    the engine uses more threads than the cores they leave free, and "auto" drops to the free cores
    within half a second of another program starting. Shortened to ~0.3 ms (GOMP_SPINCOUNT=30000),
    busy_machine.py measured idle decoding at 0.89x of the default's, with no gain beside busy
    processes. LLVM's and Intel's runtimes spin 200 ms by default, long enough to hold a core through
    a whole pause between tokens: they get GNU's ~3 ms. A wait policy the person set is kept."""
    if "OMP_WAIT_POLICY" in environ:
        return
    environ.setdefault("KMP_BLOCKTIME", BLOCK_TIME_MS)


def _torch_threads(n: int | None) -> int:
    """Set torch's intra-op threads on this thread (None: leave them); returns the count in force."""
    import torch

    if n is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


class ThreadTuner:
    """One per engine worker thread. `load` gives the cores other programs keep busy (a CpuLoad);
    `apply(n)` sets the count on the calling thread and returns the count in force (apply(None) only
    reads it); `most` caps the count (default: torch's own default, all the usable cores)."""

    def __init__(self, setting: ThreadSetting = AUTO, *, load=None, apply: Callable[[int | None], int] = _torch_threads,
                 clock: Callable[[], float] = time.perf_counter, most: int | None = None):
        self._setting = parse_threads(setting)
        self._pending: ThreadSetting | None = None
        self._lock = threading.Lock()
        self._load = load
        self._apply = apply
        self._clock = clock
        self._most = most
        self.threads: int | None = None  # the count in force on the worker (None before the first job)
        self._want: int | None = None  # the count the load suggested last
        # What the steps of earlier runs chose under the load they saw: (suggested count, chosen count, next try).
        self._learned: tuple[int, int, int] | None = None
        self._new_run()

    # --- any thread ----------------------------------------------------------------------------------

    @property
    def setting(self) -> ThreadSetting:
        with self._lock:
            return self._pending if self._pending is not None else self._setting

    def set(self, setting: ThreadSetting) -> None:
        """Use `setting` from the worker's next job or decode step on."""
        setting = parse_threads(setting)
        with self._lock:
            self._pending = setting

    # --- the worker thread ---------------------------------------------------------------------------

    def bind(self) -> None:
        """Make this the calling thread's tuner (worker_tuner()); the worker calls it as it starts.
        The load's first window opens here, so the first job after a model load has a reading."""
        _local.tuner = self
        self.load.others()

    def configure(self, setting: ThreadSetting) -> ThreadsState:
        """Switch to `setting` now (on the worker, between jobs or decode steps); what is in force."""
        self.set(setting)
        self._take_pending()
        self._forget_times()
        self._choose()
        return self.state()

    def state(self) -> ThreadsState:
        return ThreadsState(self._setting, self.threads or self._apply(None), self.most)

    @property
    def most(self) -> int:
        if self._most is None:
            self._most = max(1, min(self.load.n_cores, self._apply(None)))  # before any change: torch's default
        return self._most

    @property
    def load(self):
        if self._load is None:
            from .cpu_load import CpuLoad, NoReading

            try:
                self._load = CpuLoad()
            except Exception:  # noqa: BLE001 - a system that hides its CPU counters: the step timings still steer
                log.warning("Cannot read the CPU load; choosing threads by timing alone", exc_info=True)
                self._load = NoReading()
        return self._load

    def start_job(self, new_model: bool = False) -> None:
        """Before each job: a fixed count, or the count the load suggests (or what the last run under
        the same load settled on). `new_model`: forget what the previous model's runs learned."""
        self._take_pending()
        if new_model:
            self._learned = None
        self._new_run()
        self._choose()

    def idle(self) -> None:
        """While the worker waits for work: keep the load reading recent for the next job's choice."""
        if self._setting == AUTO:
            self.load.others()

    def restart_clock(self) -> None:
        """What ran since the last step was not decoding (a small job between steps): do not time it."""
        self._last = self._clock()

    def step(self) -> None:
        """Between two decode steps: time the step that just ended; perhaps change the count."""
        now = self._clock()
        last, self._last = self._last, now
        if self._take_pending():
            self._forget_times()
            self._choose()
            return
        if last is None:
            return  # the first token's step: it was the prompt's prefill
        n = self.threads
        self._steps[n] += 1
        if self._setting != AUTO:
            return
        self._times.setdefault(n, deque(maxlen=6)).append(now - last)
        if now - self._load_at >= LOAD_EVERY_S and self._follow_load(now):
            return
        if self._trial_from is not None:
            self._judge_trial()
            return
        self._countdown -= 1
        if self._countdown <= 0 and len(self._times[n]) >= TRY_STEPS:
            self._try_neighbour()

    def summary(self) -> str:
        """The decode steps of the last run per thread count, for the log ("2 threads for 60 steps, 1 for 3")."""
        parts = [f"{n} thread{'s' if n > 1 else ''} for {k} step{'s' if k > 1 else ''}"
                 for n, k in self._steps.most_common()]
        return f"{', '.join(parts) or 'no decode steps'} ({self._setting})"

    # --- the choice ----------------------------------------------------------------------------------

    def _choose(self) -> None:
        if self._setting != AUTO:
            self._use(self._setting)
            return
        self._want = want = self._from_load()
        if self._learned is not None and self._learned[0] == want:
            _, want, self._next_try = self._learned  # and no sooner a trial than that run had reached
            self._countdown = self._next_try
        self._use(want)

    def _from_load(self) -> int:
        free = self.load.n_cores - self.load.others()
        return max(1, min(self.most, math.floor(free + 0.5)))

    def _room_for_more(self) -> bool:
        return self.load.n_cores - self.load.others() >= self.threads + ROOM

    def _follow_load(self, now: float) -> bool:
        """Every LOAD_EVERY_S: fewer threads at once when other programs took cores; a sooner try of
        more when they left. True if the count changed."""
        self._load_at = now
        want, before = self._from_load(), self._want
        self._want = want
        if want < self.threads:
            self._forget_times()
            self._use(want)
            return True
        if before is not None and want > before:
            self._forget_times()  # the times before the load left are not the machine's any more
            self._countdown = TRY_STEPS
        return False

    def _try_neighbour(self) -> None:
        n = self.threads
        fewer = n - 1 if n > 1 else None
        more = n + 1 if n < self.most and self._room_for_more() else None
        if fewer and more:
            pick = fewer if self._tried_more else more
        else:
            pick = fewer or more
        self._countdown = self._next_try
        if pick is None:
            return
        self._tried_more = pick == more
        self._trial_from = n
        self._times.pop(pick, None)
        self._use(pick)

    def _judge_trial(self) -> None:
        base = statistics.median(self._times[self._trial_from])
        trial = self._times[self.threads]
        if trial[-1] <= GIVE_UP * base and len(trial) < TRY_STEPS:
            return  # close: time another step
        if trial[-1] <= GIVE_UP * base and statistics.median(trial) < base * (1 - MARGIN):
            self._next_try = FIRST_TRY  # moved: look around again soon
        else:
            self._use(self._trial_from)
            self._next_try = min(LAST_TRY, self._next_try * 2)
        self._trial_from = None
        self._countdown = self._next_try
        self._learned = (self._want, self.threads, self._next_try)

    def _use(self, n: int) -> None:
        if n != self.threads:
            log.debug("threads %s -> %d (setting %s, the load suggests %s)", self.threads, n, self._setting, self._want)
            self.threads = self._apply(n)

    def _take_pending(self) -> bool:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None or pending == self._setting:
            return False
        self._setting = pending
        return True

    def _new_run(self) -> None:
        self._steps: Counter = Counter()
        self._last: float | None = None
        self._forget_times()

    def _forget_times(self) -> None:
        self._times: dict[int, deque] = {}
        self._trial_from: int | None = None
        self._tried_more = False
        self._next_try = FIRST_TRY
        self._countdown = FIRST_TRY
        self._load_at = self._clock()
