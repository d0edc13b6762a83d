"""One way to run an analysis in the window: a `Runner` per view, one engine job at a time.

The shape of Orange3's `ConcurrentMixin`, on the controller's jobs and the qasync loop:

    runner = Runner(controller, view, on_done=show, report=banner.show_error)
    runner.start(request, origin)  # stops the job this runner started before and disconnects it
    runner.stop()                  # the Stop button: the job ends soon; a partial result still arrives
    runner.cancel()                # what it was for went away: stop it, and nothing of it arrives

Only the job started last ever reaches the view, on the GUI thread:
- `view.set_running(True)` when it starts, `view.set_running(False)` when it ends (or is cancelled);
- `view.set_progress(done, total)` for each `JobProgress` (coalesced to ~30 Hz by the controller's pump);
- `on_partial(event, origin)` for every other event it emits;
- at its end, `on_done(result, origin)` when there is a result (a stopped job's partial one too); else
  the end's one line in the view's status (`view.set_message`): "Stopped." for a stop, and for an error
  the same line in the window's banner too (`report(line, details)`, whose Details… has the traceback),
  for every analysis alike; last, `on_end(end, origin)` whatever happened.

`view` is anything with set_running, set_progress and set_message (`JobView`); `ViewHooks` makes one
from plain functions for views that show a job differently (the logit lens), or none at all.
A new job is not refused here: whether one may start now (a model loaded, the worker free) is the
caller's business, as is anything it shows before starting.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from ...engine.jobs.job import Job, JobEnd, JobProgress

DoneFn = Callable[[Any, Any], None]  # (result, origin)
EndFn = Callable[[JobEnd, Any], None]  # (end, origin)
ReportFn = Callable[[str, str], None]  # (one line, details)


class JobView(Protocol):
    def set_running(self, running: bool) -> None: ...
    def set_progress(self, done: int, total: int) -> None: ...
    def set_message(self, text: str) -> None: ...


def _nothing(*_args) -> None:
    return None


@dataclass
class ViewHooks:
    """A `JobView` made of functions; those left out do nothing."""

    set_running: Callable[[bool], None] = _nothing
    set_progress: Callable[[int, int], None] = _nothing
    set_message: Callable[[str], None] = _nothing


class _Task:
    """One start of a runner: its job, its origin, and whether it may still reach the view."""

    def __init__(self, origin: Any):
        self.origin = origin
        self.job: Job | None = None
        self.live = True
        self.waiter: asyncio.Task | None = None


class Runner:
    def __init__(self, controller, view: JobView | None = None, *, on_done: DoneFn,
                 on_partial: DoneFn | None = None, on_end: EndFn | None = None, report: ReportFn | None = None):
        """`report` gets an error's line and details (the window's banner) for jobs the person started;
        without it (background work, the lens of a clicked token) an error is only said in the view."""
        self._controller = controller
        self._view = view if view is not None else ViewHooks()
        self._on_done = on_done
        self._on_partial = on_partial
        self._on_end = on_end
        self._report = report
        self._task: _Task | None = None

    @property
    def running(self) -> bool:
        """True from start until the job's end has been handled (or it was cancelled)."""
        return self._task is not None

    @property
    def job(self) -> Job | None:
        return self._task.job if self._task is not None else None

    @property
    def origin(self) -> Any:
        """What the running job is about (its run, its token…); None when nothing runs."""
        return self._task.origin if self._task is not None else None

    def start(self, request, origin: Any = None) -> Job:
        """Submit `request`; the job this runner started before is stopped and never heard from again."""
        self._drop()
        task = _Task(origin)
        task.job = self._controller.submit(request, origin=origin, on_events=lambda events: self._events(task, events))
        self._task = task
        self._view.set_running(True)
        task.waiter = self._controller.spawn(self._follow(task))
        return task.job

    def stop(self) -> None:
        """Ask the job to stop; its end (a partial result, or "Stopped.") still reaches the view."""
        if self._task is not None and self._task.job is not None:
            self._task.job.stop()

    def cancel(self) -> None:
        """Stop the job and disconnect it: the view hears nothing more of it, and is idle again."""
        if self._drop():
            self._view.set_running(False)

    # --- internals ---------------------------------------------------------------------------------

    def _drop(self) -> bool:
        task, self._task = self._task, None
        if task is None:
            return False
        task.live = False
        if task.job is not None:
            task.job.stop()
        if task.waiter is not None:
            task.waiter.cancel()  # the controller's own follower goes on: the job still ends once
        return True

    def _events(self, task: _Task, events: list) -> None:
        if not task.live:
            return
        progress = [e for e in events if isinstance(e, JobProgress)]
        if progress:
            self._view.set_progress(progress[-1].done, progress[-1].total)
        if self._on_partial is not None:
            for event in events:
                if not isinstance(event, JobProgress) and task.live:
                    self._on_partial(event, task.origin)

    async def _follow(self, task: _Task) -> None:
        end = await self._controller.wait(task.job)
        if not task.live:
            return
        self._task = None
        task.live = False
        self._view.set_running(False)
        if end.result is not None:
            self._on_done(end.result, task.origin)
        elif end.reason == "error":
            self._view.set_message(end.message)
            if self._report is not None:
                self._report(end.message, end.details)
        else:
            self._view.set_message(end.message or "Stopped.")
        if self._on_end is not None:
            self._on_end(end, task.origin)
