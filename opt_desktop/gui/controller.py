"""The window's only door to the engine: jobs submitted on the GUI thread, awaited in coroutines.

One idiom for all background work in the GUI: a job is submitted (and counts as busy at once,
synchronously, so a second click finds the window busy), its events hop to the GUI thread through
an `EventPump`, and a qasync coroutine awaits its end. The worker never touches a Qt object, and
no timer polls a future.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Any, Callable, Coroutine, Sequence

from PySide6.QtCore import QObject, Signal

from ..engine import EngineService, LoadRequest
from ..engine.jobs.engine import Engine, LocalEngine
from ..engine.jobs.job import Job, JobEnd
from ..engine.messages.threads import AUTO, ThreadSetting, ThreadsRequest
from .tasks import Tasks

log = logging.getLogger(__name__)

DELIVERY_INTERVAL_S = 1 / 30  # a job's events reach the views at most ~30 times a second

EventsFn = Callable[[list], None]  # called on the GUI thread with the events that arrived, in order

# Kinds of job that hold the worker for long: while one is queued or running the window is busy.
_LOAD, _GENERATE = "load", "generate"
_BACKGROUND = "lens_table"  # computed while the window is idle, stopped for anything the person starts
_QUIET = {"lens", _BACKGROUND, "probe", "threads"}  # small or background jobs that never make the window busy


class EventPump:
    """Carries one job's events from the worker thread to the GUI thread, in order, coalesced.

    `put` (any thread) queues an event and, unless a delivery is already scheduled, schedules one
    on the event loop; deliveries are at least DELIVERY_INTERVAL_S apart, so a fast model wakes
    the GUI thread ~30 times a second, not once per token.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: EventsFn, interval: float = DELIVERY_INTERVAL_S):
        self._loop = loop
        self._deliver = deliver
        self._interval = interval
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._scheduled = False
        self._last = 0.0
        self._closed = False

    def put(self, event: Any) -> None:
        self._events.put(event)
        with self._lock:
            if self._scheduled or self._closed:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._schedule)
        except RuntimeError:  # the loop closed under a job that was still ending
            pass

    def _schedule(self) -> None:
        delay = self._last + self._interval - time.monotonic()
        if delay > 0:
            self._loop.call_later(delay, self.flush)
        else:
            self.flush()

    def flush(self) -> None:
        """Deliver everything that has arrived (on the GUI thread)."""
        with self._lock:
            self._scheduled = False
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        self._last = time.monotonic()
        if events and not self._closed:
            self._deliver(events)

    def close(self) -> None:
        self._closed = True


class Controller(QObject):
    busy_changed = Signal()
    model_changed = Signal(object)  # ModelInfo | None: after every load that ended
    engine_died = Signal(str)  # the engine process ended unexpectedly: one line saying so

    def __init__(self, engine: Engine | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.engine: Engine = engine or EngineService()
        self._local = isinstance(self.engine, LocalEngine)  # its tokenizer is at hand
        loop = asyncio.get_event_loop()
        self.engine.on_died = lambda line: loop.call_soon_threadsafe(self._on_engine_died, line)
        self._active: dict[int, Job] = {}  # submitted and not yet ended
        self._ends: dict[int, asyncio.Task] = {}  # per job, the task that resolves to its JobEnd
        self._pumps: dict[int, EventPump] = {}
        self._tasks = Tasks("the window")
        self._closed = False
        self._threads: ThreadSetting = AUTO  # what the engine was told (a fresh engine starts at "auto")

    # --- state ---------------------------------------------------------------------------------

    @property
    def model(self):
        return self.engine.info

    def _any(self, kinds) -> bool:
        return any(job.kind in kinds for job in self._active.values())

    @property
    def is_loading(self) -> bool:
        return self._any({_LOAD})

    @property
    def is_running(self) -> bool:
        return self._any({_GENERATE})

    @property
    def is_analysing(self) -> bool:
        return any(job.kind not in _QUIET | {_LOAD, _GENERATE} for job in self._active.values())

    @property
    def is_busy(self) -> bool:
        return any(job.kind not in _QUIET for job in self._active.values())

    @property
    def closed(self) -> bool:
        return self._closed

    def tokenizer(self):
        """The model's tokenizer when the engine runs in this process; None for an engine elsewhere
        (the window then names tokens from what the runs recorded, or by id)."""
        return self.engine.tokenizer if self._local else None

    def jobs(self, kind: str | None = None) -> list[Job]:
        """The jobs submitted and not yet ended (of one kind), oldest first."""
        return [j for j in self._active.values() if kind is None or j.kind == kind]

    # --- jobs ------------------------------------------------------------------------------------

    def submit(self, request, *, origin: Any = None, on_events: EventsFn | None = None) -> Job:
        """Hand a job to the engine now (GUI thread). `on_events` gets its events on the GUI thread."""
        if self._closed:
            raise RuntimeError("the window is closing")
        loop = asyncio.get_event_loop()
        pump = EventPump(loop, on_events) if on_events is not None else None
        job = self.engine.submit(request, origin=origin, on_event=pump.put if pump is not None else None)
        if job.kind not in _QUIET:
            for background in self.jobs(_BACKGROUND):
                background.stop()  # it gives way to what the person asked for (and is computed again later)
        self._active[job.id] = job
        if pump is not None:
            self._pumps[job.id] = pump
        self._ends[job.id] = self.spawn(self._follow(job, pump))
        if job.kind not in _QUIET:  # quiet jobs never change whether the window is busy
            self.busy_changed.emit()
        return job

    async def wait(self, job: Job) -> JobEnd:
        """The job's end, once all its events have been delivered."""
        task = self._ends.get(job.id)
        if task is not None:
            return await asyncio.shield(task)
        return job.end or JobEnd("cancelled", "The job was never started.")

    async def _follow(self, job: Job, pump: EventPump | None) -> JobEnd:
        try:
            await asyncio.wrap_future(job.future)
        except BaseException:  # noqa: BLE001 - the job's end says what happened
            pass
        if pump is not None:
            pump.flush()
            pump.close()
        end = job.end or JobEnd("cancelled", "The job was never started.")
        if self._closed:
            return end
        self._active.pop(job.id, None)
        self._ends.pop(job.id, None)
        self._pumps.pop(job.id, None)
        if job.kind == _LOAD:
            self.model_changed.emit(self.engine.info)
        if job.kind not in _QUIET:
            self.busy_changed.emit()
        return end

    def load(self, request: LoadRequest, on_events: EventsFn | None = None) -> Job:
        """Load a model; a generation or analysis queued behind it waits for it."""
        for job in self.jobs(_GENERATE):
            job.stop()  # the run in progress belongs to the model being replaced
        return self.submit(request, on_events=on_events)

    def drain(self) -> None:
        """Deliver every event that has arrived, now (closing the window must not wait for the loop)."""
        for pump in list(self._pumps.values()):
            pump.flush()

    def stop(self) -> None:
        """Stop the job that holds the worker now (a generation, an analysis)."""
        self.engine.stop()

    def stop_all(self, kinds: Sequence[str] | None = None) -> None:
        for job in list(self._active.values()):
            if kinds is None or job.kind in kinds:
                job.stop()

    def set_threads(self, setting: ThreadSetting) -> Job | None:
        """The engine's CPU threads from its next job or decode step on; None if nothing changes."""
        if setting == self._threads:
            return None
        self._threads = setting
        return self.submit(ThreadsRequest(setting))

    def set_head_mask(self, mask) -> None:
        """During a run, the new mask applies from the next token; otherwise the next request carries it."""
        if self.is_running:
            self.engine.set_head_mask(tuple(mask))

    # --- coroutines --------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine) -> asyncio.Task:
        """Run a coroutine on the window's loop; an exception in it is logged, never lost."""
        return self._tasks.spawn(coro)

    def _on_engine_died(self, line: str) -> None:
        if not self._closed:
            self.model_changed.emit(None)
            self.engine_died.emit(line)

    def restart_engine(self) -> None:
        """A fresh engine process after the last one died (the model must be loaded again)."""
        self.engine.restart()
        setting, self._threads = self._threads, AUTO
        self.set_threads(setting)  # the fresh process starts at "auto"

    # --- closing ---------------------------------------------------------------------------------

    def shutdown(self, timeout: float = 1.0) -> bool:
        """Stop every job and wait up to `timeout` s for the worker thread; True if it ended."""
        self._closed = True
        self.engine.shutdown(wait=False)
        ended = self.engine.join(timeout)
        self._tasks.cancel_all()
        return ended
