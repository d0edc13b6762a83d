"""One engine process shared by the window tests that run on both engines.

Starting an engine process costs seconds (its Python, torch's import in it), so the window tests
that drive jobs through it share one. Each window borrows it: every job goes to that real engine
process, over its pipe and frames; closing the window stops and waits for this window's own jobs
and leaves the process to the next test. The tests of an engine process's own life (closing
during a run, its death, its restart) start one of their own.
"""

from __future__ import annotations

import threading
import time

from opt_desktop.engine.jobs.engine import Engine
from opt_desktop.engine.process.engine_process import EngineProcess


class BorrowedEngine(Engine):
    def __init__(self, engine: EngineProcess):
        self._engine = engine
        self._jobs: list = []
        self._closed = False
        self.on_died = None  # the shared process outlives the tests; its death would fail them anyway

    @property
    def info(self):
        return self._engine.info

    @property
    def running(self):
        return self._engine.running

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        return ()  # the reader is the shared process's

    def submit(self, request, **kwargs):
        if self._closed:
            raise RuntimeError("the engine has been shut down")
        job = self._engine.submit(request, **kwargs)
        self._jobs.append(job)
        return job

    def stop(self) -> None:
        self._engine.stop()

    def _change_head_mask(self, mask) -> None:
        self._engine._change_head_mask(mask)

    def count_tokens_later(self, text: str):
        return self._engine.count_tokens_later(text)

    def restart(self) -> None:
        self._engine.restart()

    def shutdown(self, wait: bool = True) -> None:
        self._closed = True
        for job in self._jobs:
            if job.state != "ended":
                job.stop()
        if wait:
            self.join(None)

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for job in self._jobs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if job.wait(left) is None:
                return False
        return True
