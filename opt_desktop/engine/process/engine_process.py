"""The engine in a child process, behind the same interface as EngineService.

The window's interpreter then never imports torch, builds a tokenizer or runs the model, so
nothing of the engine's can hold its GIL: the window stays responsive while a model loads. The
child is `python -m opt_desktop.engine.process.worker` (or the bundle's own executable with
--engine-worker); messages are process_messages.py's, framed by protocol.py.

If the child dies (killed, out of memory), every job it had ends with reason "error", `on_died`
is called with one line saying so, and the window's session stays as it was; `restart()` makes a
fresh engine process (with no model: load one again).
"""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
import threading
from concurrent.futures import Future
from typing import Any, Callable

from ..messages import errors

from . import protocol
from ..messages.events import ModelInfo
from ..jobs.job import Job, JobEnd
from .process_messages import (
    PROTOCOL_VERSION,
    CountTokens,
    Hello,
    JobEnded,
    JobEvent,
    JobRunning,
    SetHeadMask,
    Shutdown,
    Stop,
    Submit,
    TokenCount,
)
from ..jobs.dispatch import job_kind

log = logging.getLogger(__name__)

WORKER_FLAG = "--engine-worker"


def worker_command() -> list[str]:
    """How to start the engine process: this Python with the worker module, or in a frozen bundle
    (PyInstaller) the bundle's executable with a flag its entry point hands to worker.main."""
    if getattr(sys, "frozen", False):
        return [sys.executable, WORKER_FLAG]
    return [sys.executable, "-m", "opt_desktop.engine.process.worker"]


class EngineDied(errors.EngineError):
    """The engine process ended without being asked to."""


class EngineFailure(errors.EngineError):
    """A job failed in the engine process for an unexpected reason; its JobEnd has the details."""


class RemoteJob(Job):
    """A job whose work runs in the engine process; stopping it sends the stop there."""

    def __init__(self, client: "EngineProcess", *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._client = client

    def stop(self) -> None:
        self.stop_event.set()
        self._client._send(Stop(self.id))

    def _remote_start(self) -> None:
        with self._lock:
            if self.state == "queued":
                self.state = "running"
        self.future.set_running_or_notify_cancel()
        if self.on_start is not None:
            self.on_start()

    def _remote_end(self, end: JobEnd, error: str) -> None:
        with self._lock:
            if self.state == "ended":
                return
            self.state = "ended"
        if end.reason == "done" or (end.reason == "cancelled" and end.result is not None):
            self._finish(end, result=end.result)
        else:
            kind = getattr(errors, error, None) if error else None
            if end.reason == "cancelled":
                exc_type = errors.JobCancelled
            elif isinstance(kind, type) and issubclass(kind, errors.EngineError):
                exc_type = kind
            else:
                exc_type = EngineDied if error == "EngineDied" else EngineFailure
            self._finish(end, exc=exc_type(end.message))


class EngineProcess:
    def __init__(self, on_died: Callable[[str], None] | None = None, command: list[str] | None = None):
        self.on_died = on_died
        self._command = command or worker_command()
        self._info: ModelInfo | None = None
        self._jobs: dict[int, RemoteJob] = {}
        self._counts: dict[int, Future] = {}
        self._asks = itertools.count(1)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed = False
        self._running: RemoteJob | None = None
        self._start()

    def _start(self) -> None:
        # stderr is inherited: what the libraries print there reaches the terminal, if any.
        self._proc = subprocess.Popen(self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self._reader = threading.Thread(target=self._read, name="opt-engine-reader", daemon=True)
        self._reader.start()

    # --- the interface the window uses (as EngineService's) ---------------------------------------

    @property
    def info(self) -> ModelInfo | None:
        return self._info

    @property
    def tokenizer(self):
        return None  # the tokenizer lives in the engine process: see count_tokens_later

    @property
    def running(self) -> Job | None:
        return self._running

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pid(self) -> int:
        return self._proc.pid

    def submit(self, request, *, origin: Any = None, on_event: Callable[[Any], None] | None = None,
               stop: threading.Event | None = None, on_start: Callable[[], None] | None = None) -> Job:
        job = RemoteJob(self, job_kind(request), request, origin=origin, on_event=on_event, stop=stop)
        job.on_start = on_start
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine has been shut down")
            self._jobs[job.id] = job
        if not self._send(Submit(job.id, request)):
            self._end_all("The engine process is not running: restart it.")
        return job

    def stop(self) -> None:
        self._send(Stop(0))

    def set_head_mask(self, mask) -> None:
        from ..messages.interventions_spec import check_head_mask, normalize_head_mask

        mask = normalize_head_mask(mask)
        if self._info is not None:
            check_head_mask(mask, self._info.n_layers, self._info.n_heads, self._info.label)
        self._send(SetHeadMask(mask))

    def count_tokens(self, text: str) -> int | None:
        return None  # never block the window on the other process; use count_tokens_later

    def count_tokens_later(self, text: str) -> Future:
        future: Future = Future()
        ask = next(self._asks)
        with self._lock:
            self._counts[ask] = future
        if not self._send(CountTokens(ask, text)):
            future.set_result(None)
        return future

    # --- the pipe ---------------------------------------------------------------------------------

    def _send(self, message) -> bool:
        with self._send_lock:
            try:
                protocol.write(self._proc.stdin, message)
                return True
            except (BrokenPipeError, OSError, ValueError):
                return False

    def _read(self) -> None:
        stream = self._proc.stdout
        reason = ""
        try:
            while True:
                message = protocol.read(stream)
                self._dispatch(message)
        except EOFError:
            pass
        except protocol.ProtocolError as exc:
            reason = str(exc)
            log.error("The engine process sent a malformed frame: %s", exc)
        code = self._proc.wait()
        if self._closed:
            self._end_all("The engine was closed.", cancelled=True)
            return
        why = "it was killed or ran out of memory" if code in (-9, 137) else f"exit code {code}"
        line = (f"The engine process stopped unexpectedly ({why}{'; ' + reason if reason else ''}). "
                "The session is safe: restart the engine and load the model again.")
        log.error(line)
        self._info = None
        self._end_all(line)
        if self.on_died is not None:
            self.on_died(line)

    def _dispatch(self, message) -> None:
        if isinstance(message, JobEvent):
            job = self._jobs.get(message.job)
            if job is not None:
                job.emit(message.event)
        elif isinstance(message, JobRunning):
            job = self._jobs.get(message.job)
            if job is not None:
                self._running = job
                job._remote_start()
        elif isinstance(message, JobEnded):
            self._info = message.model
            with self._lock:
                job = self._jobs.pop(message.job, None)
            if job is not None:
                if self._running is job:
                    self._running = None
                job._remote_end(message.end, message.error)
        elif isinstance(message, TokenCount):
            with self._lock:
                future = self._counts.pop(message.ask, None)
            if future is not None and not future.done():
                future.set_result(message.n)
        elif isinstance(message, Hello):
            if message.version != PROTOCOL_VERSION:
                raise protocol.ProtocolError(f"engine protocol {message.version}, window {PROTOCOL_VERSION}")

    def _end_all(self, line: str, cancelled: bool = False) -> None:
        with self._lock:
            jobs, self._jobs = list(self._jobs.values()), {}
            counts, self._counts = list(self._counts.values()), {}
        self._running = None
        for job in jobs:
            job._remote_end(JobEnd("cancelled" if cancelled else "error", line), "" if cancelled else "EngineDied")
        for future in counts:
            if not future.done():
                future.set_result(None)

    # --- life and death -------------------------------------------------------------------------------

    def restart(self) -> None:
        """A fresh engine process after this one died (no model loaded)."""
        if self._proc.poll() is None:
            raise RuntimeError("the engine process is still running")
        self._info = None
        self._start()

    def kill(self) -> None:
        """End the engine process at once (what the operating system does when memory runs out)."""
        self._proc.kill()

    def shutdown(self, wait: bool = True) -> None:
        """Ask the engine process to stop its job and exit; with `wait`, until it has."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._send(Shutdown())
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        if wait:
            self.join(None)

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` s for the engine process to exit; past that it is killed (a load
        that cannot be interrupted must not hold the window). True if it ended in time."""
        try:
            self._proc.wait(timeout)
            ended = True
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            ended = False
        self._reader.join(5.0)
        return ended

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        return (self._reader,)
