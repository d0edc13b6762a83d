"""One object per engine job: its request, its own stop, its event channel, and how it ended.

A job is made where the work is asked for (the CLI, a test, the window) and handed to the
engine's worker, which hands it to the work itself: a Job is the work's `JobContext`
(messages/job_context.py), so a stop is always `job.check()` raising `JobCancelled`. Whoever holds
it can stop it, whether it is still queued (it then never starts) or running (it ends at its next
check: between decode steps, between decoder layers, between chunks of an analysis or a load).
Every job ends exactly once, with a `JobEnd`; its `future` gives the result, or raises the error,
for callers that prefer a plain `concurrent.futures.Future`.

Events (a generation's tokens, an analysis's progress) are passed to `on_event` on the worker
thread; a front end that must not run code there hops threads itself (the GUI's controller does).
"""

from __future__ import annotations

import itertools
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Literal

from ..messages.errors import EngineError, JobCancelled, describe_error
from ..messages.job_context import STOPPED, JobContext, JobProgress

__all__ = ["EndReason", "Job", "JobEnd", "JobProgress", "JobState"]  # JobProgress: the context's, named here too

log = logging.getLogger(__name__)

EndReason = Literal["done", "cancelled", "error"]
JobState = Literal["queued", "running", "ended"]

_ids = itertools.count(1)


@dataclass(frozen=True)
class JobEnd:
    """How a job ended. `message` is one line for the person; `details` the traceback of an
    unexpected error (for the log and a "Details…" button); `result` what the job produced
    (a partial result where a job can stop part-way, else None when it did not finish)."""

    reason: EndReason
    message: str = ""
    details: str = ""
    result: Any = None


class Job(JobContext):
    """A unit of engine work and everything about it that travels with it."""

    def __init__(self, kind: str, request: Any, *, origin: Any = None,
                 on_event: Callable[[Any], None] | None = None, stop: threading.Event | None = None,
                 between_steps: bool = False):
        super().__init__(on_event=on_event, stop=stop)
        self.id = next(_ids)
        self.kind = kind
        self.request = request
        self.origin = origin  # the caller's plain data (where a run came from); the engine never reads it
        self.between_steps = between_steps  # small enough to run between a generation's decode steps
        self.future: Future = Future()
        self.end: JobEnd | None = None
        self.state: JobState = "queued"
        self._ended = threading.Event()
        self._lock = threading.Lock()  # the worker claiming the job vs. the caller stopping it while queued
        self.on_start: Callable[[], None] | None = None  # called on the worker as the job starts running

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.kind} {self.state}>"

    # --- the caller's side ----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the job: a queued job ends at once and never starts, a running one ends at its next check."""
        self.stop_event.set()
        self._end_if_queued(JobEnd("cancelled", "Cancelled before it started."))

    def wait(self, timeout: float | None = None) -> JobEnd | None:
        """Block until the job has ended (never from the worker itself); None on timeout."""
        self._ended.wait(timeout)
        return self.end

    # --- the worker's side (emit, progress, check, set_partial: JobContext's) -----------------------

    def run(self, work: Callable[["Job"], Any], doing: str) -> None:
        """Run `work(self)` on the calling (worker) thread and end the job with what happened."""
        with self._lock:
            if self.state != "queued":
                return  # stopped while it waited: already ended
            self.state = "running"
        if self.stopped or not self.future.set_running_or_notify_cancel():
            self._finish(JobEnd("cancelled", "Cancelled before it started."), exc=JobCancelled("Cancelled."))
            return
        try:
            if self.on_start is not None:
                self.on_start()
            result = work(self)
        except JobCancelled as exc:
            partial = self.partial  # a stopped job hands over what it had made, if anything
            said = str(exc)  # the work's own words ("Loading X was stopped."), else what the job was doing
            end = JobEnd("cancelled", said if said and said != STOPPED else f"{doing} was stopped.", result=partial)
            if partial is None:
                self._finish(end, exc=exc)
            else:
                self._finish(end, result=partial)
        except BaseException as exc:  # every failure ends the job; none may kill the worker
            message, details = describe_error(exc, doing)
            level = logging.WARNING if isinstance(exc, EngineError) else logging.ERROR
            log.log(level, "%s (job %d, %s)\n%s", message, self.id, self.kind, details)
            self._finish(JobEnd("error", message, details), exc=exc)
        else:
            reason = "cancelled" if getattr(result, "reason", None) == "cancelled" else "done"  # a stopped run
            self._finish(JobEnd(reason, result=result), result=result)

    def abandon(self) -> None:
        """End a job that will never run (the engine shut down while it was queued)."""
        self._end_if_queued(JobEnd("cancelled", "The engine was closed."))

    def _end_if_queued(self, end: JobEnd) -> None:
        with self._lock:
            if self.state != "queued":
                return
            self.state = "ended"
        self._finish(end, exc=JobCancelled(end.message))

    def _finish(self, end: JobEnd, result: Any = None, exc: BaseException | None = None) -> None:
        self.end = end
        self.state = "ended"
        if not self.future.done():
            if exc is not None:
                self.future.set_exception(exc)
            else:
                self.future.set_result(result)
        self._ended.set()
