"""What every piece of engine work receives from its job: its stop, its progress, its events, its
partial result (Orange's `TaskState`, one object for all of them).

Loading, generating and every analysis take a `JobContext` and call `check()` between chunks of
work: a stopped job raises `JobCancelled` there, the one exception a stop raises anywhere, and the
job ends "cancelled" (with the partial result, if the work left one). The engine's `Job`
(jobs/job.py) is a JobContext with a life (queued, running, ended); the CLI, tests and benchmarks
may hand plain JobContexts to the same functions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from .errors import JobCancelled

STOPPED = "Stopped."  # what check() says: the job's end then says what was stopped (Job.run)


@dataclass(frozen=True)
class JobProgress:
    """`done` of `total` steps of a job are finished (heads ablated, chunks read, bytes loaded...)."""

    done: int
    total: int


class JobContext:
    def __init__(self, *, on_event: Callable[[Any], None] | None = None, stop: threading.Event | None = None):
        self.stop_event = stop if stop is not None else threading.Event()
        self._on_event = on_event
        self.partial: Any = None  # what the work had made when it was stopped (None: nothing usable)

    def stop(self) -> None:
        """Ask the work to end at its next check."""
        self.stop_event.set()

    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set()

    def check(self) -> None:
        """Raise JobCancelled if the job was asked to stop: long work calls this between chunks."""
        if self.stop_event.is_set():
            raise JobCancelled(STOPPED)

    def emit(self, event: Any) -> None:
        """Hand an event to whoever follows the job (on the worker thread)."""
        if self._on_event is not None:
            self._on_event(event)

    def progress(self, done: int, total: int) -> None:
        self.emit(JobProgress(done, total))

    def set_partial(self, result: Any) -> None:
        """Keep what the work has made so far: a stop then ends the job "cancelled" with this result."""
        self.partial = result
