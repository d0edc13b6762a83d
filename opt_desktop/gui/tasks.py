"""The coroutines one part of the window runs on the event loop: held until they end (the loop keeps
only weak references), an exception logged with its traceback rather than lost, all cancelled at close."""

from __future__ import annotations

import asyncio
import logging
from typing import Coroutine

log = logging.getLogger("opt_desktop.gui")


class Tasks:
    def __init__(self, owner: str):
        """`owner` names the part in the log: "the window", "the model manager"."""
        self._owner = owner
        self._running: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._running.add(task)
        task.add_done_callback(self._done)
        return task

    def __bool__(self) -> bool:
        """True while any of them runs."""
        return bool(self._running)

    def cancel_all(self) -> None:
        for task in list(self._running):
            task.cancel()

    def _done(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("A background task of %s failed", self._owner, exc_info=(type(exc), exc, exc.__traceback__))
