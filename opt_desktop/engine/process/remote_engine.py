"""An engine at the other end of a byte pipe, behind the same `Engine` interface as EngineService.

It speaks process_messages.py's messages in protocol.py's frames over any `Transport`: a child
process (engine_process.py) or `ssh host opt-desktop-engine` (ssh.py). Nothing here depends on what
carries the bytes; the transport supplies the words for what went wrong at its other end.

Every job it accepts ends exactly once, whatever happens on the way: if the other end dies, sends
something that is not a frame of this protocol, speaks another version of it (or is another
release of OPT Desktop), or does not say Hello within `hello_timeout` seconds, the other end is
ended, every job it had (running and queued) ends with reason "error" and one line saying which of
those it was, `on_died` is called with that line, and `restart()` connects afresh.

Over a network (`transport.heavy_arrays_stay`), generations run with `rows_on_demand`: their
residual rows and full attention rows are never sent; the lens table and a head's attention rows
are computed there when a view asks for them.
"""

from __future__ import annotations

import itertools
import logging
import threading
from concurrent.futures import Future
from typing import Any, Callable

from ... import __version__
from ..jobs.dispatch import job_kind
from ..jobs.engine import Engine
from ..jobs.job import Job, JobEnd
from ..messages import errors
from ..messages.events import ModelInfo
from ..messages.settings import GenerationRequest
from . import protocol
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
from .transport import Transport

log = logging.getLogger(__name__)

EXIT_GRACE_S = 5.0  # an engine that closed its output has this long to exit before it is ended
# From its start to its Hello: a Python start and the engine's imports (not torch's), plus ssh's
# handshake; a command that stays silent longer is not an engine.
HELLO_TIMEOUT_S = 30.0


class EngineDied(errors.EngineError):
    """The engine ended without being asked to, or was ended because it could not be understood."""


class EngineFailure(errors.EngineError):
    """A job failed in the engine for an unexpected reason; its JobEnd has the details."""


class RemoteJob(Job):
    """A job whose work runs at the other end; stopping it sends the stop there."""

    def __init__(self, engine: "RemoteEngine", *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._engine = engine

    def stop(self) -> None:
        self.stop_event.set()
        self._engine._send(Stop(self.id))

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


class _OtherRelease(protocol.ProtocolError):
    """The engine speaks this protocol but is another release of OPT Desktop (its requests may differ)."""

    def __init__(self, release: str):
        super().__init__(f"the engine is OPT Desktop {release}, this window {__version__}")
        self.release = release


class RemoteEngine(Engine):
    def __init__(self, connect: Callable[[], Transport], on_died: Callable[[str], None] | None = None,
                 hello_timeout: float = HELLO_TIMEOUT_S):
        """`connect()` opens a fresh transport to a fresh engine (at start, and on restart)."""
        self.on_died = on_died
        self.hello: Hello | None = None  # the engine's greeting, once it has come
        self.hello_timeout = hello_timeout
        self._connect = connect
        self._info: ModelInfo | None = None
        self._jobs: dict[int, RemoteJob] = {}
        self._counts: dict[int, Future] = {}
        self._asks = itertools.count(1)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed = False
        self._gone: str | None = None  # why the other end is gone: new jobs then end at once, with this line
        self._running: RemoteJob | None = None
        self._start()

    def _start(self) -> None:
        self.hello = None
        self._transport = self._connect()
        self._gone = None
        self._reader = threading.Thread(target=self._read, args=(self._transport,), name="opt-engine-reader",
                                        daemon=True)
        self._reader.start()

    # --- the Engine interface ---------------------------------------------------------------------

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        return (self._reader,)

    @property
    def heavy_arrays_stay(self) -> bool:
        """Residual rows and full attention rows stay with the engine (the link is a network)."""
        return self._transport.heavy_arrays_stay

    def submit(self, request, *, origin: Any = None, on_event: Callable[[Any], None] | None = None,
               stop: threading.Event | None = None, on_start: Callable[[], None] | None = None) -> Job:
        if isinstance(request, GenerationRequest) and self.heavy_arrays_stay and not request.inspect.rows_on_demand:
            request = request.model_copy(update={"inspect": request.inspect.model_copy(
                update={"rows_on_demand": True})})
        job = RemoteJob(self, job_kind(request), request, origin=origin, on_event=on_event, stop=stop)
        job.on_start = on_start
        try:
            frame = protocol.encode(Submit(job.id, request))
        except protocol.Unsendable as exc:  # a request holding what no frame carries: a bug, but the job ends
            frame = None
            message, details = errors.describe_error(exc, "Sending the job to the engine")
            log.error("%s\n%s", message, details)
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine has been shut down")
            gone = self._gone
            if frame is not None and gone is None:
                self._jobs[job.id] = job
        if frame is None:
            job._remote_end(JobEnd("error", message, details), "")
        elif gone is not None:
            job._remote_end(JobEnd("error", gone), "EngineDied")
        else:
            self._write(frame)  # if the pipe is broken, the reader sees the end and ends this job too
        return job

    def stop(self) -> None:
        self._send(Stop(0))

    def _change_head_mask(self, mask) -> None:
        self._send(SetHeadMask(mask))

    def count_tokens_later(self, text: str) -> Future:
        future: Future = Future()
        ask = next(self._asks)
        with self._lock:
            gone = self._gone is not None
            if not gone:
                self._counts[ask] = future
        if gone:
            future.set_result(None)
        else:
            self._send(CountTokens(ask, text))
        return future

    def restart(self) -> None:
        """A fresh engine after this one died (no model loaded)."""
        if self._gone is None:
            raise RuntimeError("the engine is still running")
        self._info = None
        self._start()

    def kill(self) -> None:
        """End the other end at once (what the operating system does when memory runs out)."""
        self._transport.kill()

    def shutdown(self, wait: bool = True) -> None:
        """Ask the engine to stop its job and exit; with `wait`, until it has."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._send(Shutdown())
        self._transport.close_input()
        if wait:
            self.join(None)

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` s for the engine to exit; past that it is ended (a load that cannot be
        interrupted must not hold the window). True if it ended in time."""
        ended = self._transport.wait(timeout) is not None
        if not ended:
            self._transport.kill()
            self._transport.wait(None)
        self._reader.join(5.0)
        return ended

    # --- the pipe ---------------------------------------------------------------------------------

    def _send(self, message) -> bool:
        return self._write(protocol.encode(message))

    def _write(self, parts: list) -> bool:
        """Write one encoded frame; False if the pipe is closed (the reader then ends every job)."""
        with self._send_lock:
            try:
                for part in parts:
                    self._transport.to_engine.write(part)
                self._transport.to_engine.flush()
                return True
            except (OSError, ValueError):
                return False

    def _read(self, transport: Transport) -> None:
        problem = ""  # why this side ended the other, if it did
        silent = threading.Event()  # set when the other end said nothing like Hello in time
        timer = threading.Timer(self.hello_timeout, self._hello_late, args=(transport, silent))
        timer.name, timer.daemon = "opt-engine-hello-wait", True
        timer.start()
        try:
            while True:
                self._dispatch(protocol.read(transport.from_engine))
        except EOFError:
            pass
        except protocol.VersionMismatch as exc:
            problem = self._version_line(transport, exc.version, str(exc.fields.get("engine", "")))
        except _OtherRelease as exc:
            problem = self._version_line(transport, PROTOCOL_VERSION, exc.release)
        except protocol.ProtocolError as exc:
            problem = (f"{transport.name} sent something that is not an engine frame ({exc}), so it was stopped. "
                       f"{transport.recovery if self.hello is not None else transport.not_an_engine}")
        except Exception as exc:  # noqa: BLE001 - a message this side could not follow: the jobs must still end
            log.exception("A message from the engine could not be handled")
            problem = (f"A message from the engine could not be handled ({errors.one_line(exc)}), so it was "
                       f"stopped. {transport.recovery}")
        finally:
            timer.cancel()
        if not problem and silent.is_set():
            problem = (f"{transport.name} did not answer as an OPT Desktop engine within {self.hello_timeout:.0f} s, "
                       f"so it was stopped. {transport.not_an_engine}")
        if problem:
            log.error("%s", problem)
            transport.kill()
        status = transport.wait(None if problem or self._closed else EXIT_GRACE_S)
        if status is None:
            problem = f"{transport.name} closed its output but did not exit, so it was stopped. {transport.recovery}"
            log.error("%s", problem)
            transport.kill()
            status = transport.wait(None)
        if self._closed and not problem:
            self._end_all("The engine was closed.", cancelled=True)
            return
        line = problem or transport.describe_end(status, self.hello is not None)
        if not problem:
            log.error("%s", line)
        self._end_all(line)
        if self.on_died is not None and not self._closed:
            self.on_died(line)

    def _hello_late(self, transport: Transport, silent: threading.Event) -> None:
        if self.hello is None and transport is self._transport:
            silent.set()
            transport.kill()

    @staticmethod
    def _version_line(transport: Transport, their_protocol: int, their_release: str) -> str:
        if their_protocol != PROTOCOL_VERSION:
            what = f"{transport.name} speaks protocol version {their_protocol} and this window version {PROTOCOL_VERSION}"
            if their_release:
                what += f" (OPT Desktop {their_release} there, {__version__} here)"
        else:
            what = f"{transport.name} runs OPT Desktop {their_release} and this window {__version__}"
        return f"{what}: {transport.install_advice(__version__)}"

    def _greeted(self, hello: Hello) -> None:
        """The engine said Hello (on the reader thread): a subclass reports the connection ready."""

    def _dispatch(self, message) -> None:
        if isinstance(message, JobEvent):
            job = self._jobs.get(message.job)
            if job is not None:
                _guarded(job.emit, message.event)
        elif isinstance(message, JobRunning):
            job = self._jobs.get(message.job)
            if job is not None:
                self._running = job
                _guarded(job._remote_start)
        elif isinstance(message, JobEnded):
            self._info = message.model
            with self._lock:
                job = self._jobs.pop(message.job, None)
            if job is not None:
                if self._running is job:
                    self._running = None
                _guarded(job._remote_end, message.end, message.error)
        elif isinstance(message, TokenCount):
            with self._lock:
                future = self._counts.pop(message.ask, None)
            if future is not None and not future.done():
                future.set_result(message.n)
        elif isinstance(message, Hello):
            if message.version != PROTOCOL_VERSION:
                raise protocol.VersionMismatch(message.version, {"engine": message.engine})
            if message.engine and message.engine != __version__:
                raise _OtherRelease(message.engine)
            self.hello = message
            _guarded(self._greeted, message)
        else:
            raise protocol.ProtocolError(f"a {type(message).__name__} is not a message an engine sends")

    def _end_all(self, line: str, cancelled: bool = False) -> None:
        """End every job and question in flight, and every one asked from now on, with `line`."""
        with self._lock:
            self._gone = line
            jobs, self._jobs = list(self._jobs.values()), {}
            counts, self._counts = list(self._counts.values()), {}
        self._running = None
        self._info = None
        for job in jobs:
            job._remote_end(JobEnd("cancelled" if cancelled else "error", line), "" if cancelled else "EngineDied")
        for future in counts:
            if not future.done():
                future.set_result(None)


def _guarded(fn, *args) -> None:
    """Run a caller's callback (an event handler, a start hook) from the reader: its failure is
    logged, and the reader goes on hearing the engine."""
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        log.exception("A job's callback failed")

